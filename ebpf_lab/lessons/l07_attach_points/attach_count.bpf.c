// attach_count.bpf.c: one tiny counter, seven places to attach it.
//
// The body is the same whatever the attach point: add 1 to the entry of the process (tgid) that
// was running when the event happened. Only the entry points differ, one per kind of attach
// point, because each kind hands the program a different context:
//
//   count_kprobe          a kprobe on the kernel function behind getppid()   (struct pt_regs)
//   count_kretprobe       a kretprobe: the same function, when it returns    (struct pt_regs)
//   kfunc__...            fentry: the same function's entry, through BTF     (its arguments)
//   count_tracepoint      the syscalls:sys_enter_getppid tracepoint         (the tracepoint's fields)
//   count_raw_tracepoint  the raw sys_enter tracepoint: EVERY system call    (raw arguments)
//   count_uprobe          a uprobe on libc's getppid(), in user space         (struct pt_regs)
//   count_perf_event      a perf event: a CPU-clock timer firing F times/s    (the sample)
//
// The lab attaches one entry point per run; the others stay in the file, unloaded. (The fentry
// one is compiled in only when asked for: see the end of the file.)

#include <asm/unistd.h>   // __NR_getppid: syscall numbers are ABI, stable across kernel versions

struct count_t {
    u64 events;                       // how many times the program ran for this process
    char comm[16];                    // the process's name at its latest event
};

BPF_HASH(counts, u32, struct count_t, 10240);  // key: tgid, the process id user space sees
BPF_ARRAY(missed, u64, 1);            // events not counted because the map was full (never silent)

static __always_inline int count_event(void)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct count_t zero = {};
    struct count_t *c = counts.lookup_or_try_init(&tgid, &zero);
    if (!c) {
        missed.atomic_increment(0);
        return 0;
    }
    __sync_fetch_and_add(&c->events, 1);   // atomic: two CPUs may count the same process at once
    bpf_get_current_comm(&c->comm, sizeof(c->comm));
    return 0;
}

// kprobe: runs at the entry of a kernel function (here __x64_sys_getppid); needs CONFIG_KPROBES.
int count_kprobe(struct pt_regs *ctx)
{
    return count_event();
}

// kretprobe: runs when that kernel function returns (its return value is in the registers);
// also needs CONFIG_KPROBES. Once per getppid() call, like the kprobe.
int count_kretprobe(struct pt_regs *ctx)
{
    return count_event();
}

// tracepoint: a hook the kernel developers put there on purpose; fires once per getppid() call.
int count_tracepoint(struct tracepoint__syscalls__sys_enter_getppid *args)
{
    return count_event();
}

// raw tracepoint: sys_enter fires for every system call of every process; args[1] is the
// syscall number, so the program keeps only getppid. Cheaper per event than a tracepoint (no
// copying of fields), but the program sees everything and must filter itself.
int count_raw_tracepoint(struct bpf_raw_tracepoint_args *ctx)
{
    if (ctx->args[1] != __NR_getppid)
        return 0;
    return count_event();
}

// uprobe: a breakpoint the kernel places on an instruction of a user-space program or library
// (here the first instruction of libc's getppid()); runs when any process using that libc
// calls it (or only one process, when the uprobe is opened for a pid). The library's file is
// never written: the breakpoint goes into the process's own copy of that page of its memory.
int count_uprobe(struct pt_regs *ctx)
{
    return count_event();
}

// perf event: a timer that interrupts the CPU at a set frequency; the program runs on each tick
// and counts who was on the CPU. Opened for one pid, it ticks only while that process runs.
// (Its context is a struct bpf_perf_event_data, with the sample's registers; this counter does
// not read it, so it takes a void * and spares the compiler that header.)
int count_perf_event(void *ctx)
{
    return count_event();
}

#ifdef FENTRY_FUNCTION
// fentry: runs at the entry of a kernel function through a BPF trampoline, found by its BTF type
// information: no CONFIG_KPROBES needed, and cheaper than a kprobe's breakpoint. BCC's
// KFUNC_PROBE(fn) names the function kfunc__<fn> and loads AND attaches it while the C is
// compiled, so it is only compiled in when the lab asks for it:
// -DFENTRY_FUNCTION=__do_sys_getppid (the body of getppid(), as the kernel's BTF names it).
#define FENTRY(fn) KFUNC_PROBE(fn)        // one more macro level, so FENTRY_FUNCTION is expanded
FENTRY(FENTRY_FUNCTION)
{
    return count_event();
}
#endif
