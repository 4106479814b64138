// user_probes.bpf.c: three user-space attach points on one known loop, each reading what it can.
//
// The workload (ebpf_lab/workloads/c/probe_loop.c) calls its own function
// unsigned long lab_tick(unsigned long i), which returns 3*i + 7, for i = 0 .. N-1, and after
// each call fires its USDT probe DTRACE_PROBE2(ebpf_lab, tick, i, value). The lab attaches,
// for that process only:
//
//   on_tick_entry   uprobe on lab_tick: its first argument, PT_REGS_PARM1(ctx), is i
//   on_tick_return  uretprobe on lab_tick: its return value, PT_REGS_RC(ctx), is 3*i + 7
//   on_usdt_tick    the USDT probe ebpf_lab:tick: bpf_usdt_readarg(1..2) read i and value from
//                   wherever the compiler put them (BCC writes those readers from the binary's
//                   .note.stapsdt note, e.g. "8@%rdx 8@%rax": 8 bytes in rdx, 8 bytes in rax)
//
// Each adds 1 to its count and what it read to its sums. N calls give exactly N events at each,
// sums of i = N(N-1)/2, sums of value = 3N(N-1)/2 + 7N.

#include <uapi/linux/ptrace.h>

struct sums_t {
    u64 events;
    u64 first;                        // uprobe: the arguments i; uretprobe: the return values;
    u64 second;                       // usdt: first = its 1st argument (i), second = its 2nd
};

// key 0: uprobe, 1: uretprobe, 2: usdt
BPF_ARRAY(sums, struct sums_t, 3);

static __always_inline void add(u32 key, u64 first, u64 second)
{
    struct sums_t *s = sums.lookup(&key);
    if (!s)
        return;
    __sync_fetch_and_add(&s->events, 1);
    __sync_fetch_and_add(&s->first, first);
    __sync_fetch_and_add(&s->second, second);
}

int on_tick_entry(struct pt_regs *ctx)
{
    add(0, PT_REGS_PARM1(ctx), 0);    // the first argument, as the calling convention passes it
    return 0;
}

int on_tick_return(struct pt_regs *ctx)
{
    add(1, PT_REGS_RC(ctx), 0);       // the return value (rax on x86-64)
    return 0;
}

int on_usdt_tick(struct pt_regs *ctx)
{
    u64 i = 0, value = 0;
    bpf_usdt_readarg(1, ctx, &i);
    bpf_usdt_readarg(2, ctx, &value);
    add(2, i, value);
    return 0;
}
