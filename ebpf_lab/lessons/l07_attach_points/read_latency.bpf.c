// read_latency.bpf.c: the latency of one kernel function, vfs_read(), per call, for one process.
//
// Two ways to see a kernel function's entry and return:
//
//   on_read_entry / on_read_return   a kprobe and a kretprobe on vfs_read (CONFIG_KPROBES):
//                                    the arguments are in the registers, PT_REGS_PARM1..5(ctx);
//                                    at the return, the return value is PT_REGS_RC(ctx)
//   kfunc__vfs_read / kretfunc__...  fentry and fexit (BPF trampolines, found by BTF): the
//                                    arguments are C parameters, and fexit gets the return
//                                    value as one more; compiled in only with -DFENTRY, since
//                                    BCC loads and attaches KFUNC_PROBEs while it compiles
//
// ssize_t vfs_read(struct file *file, char __user *buf, size_t count, loff_t *pos): the third
// argument is the byte count the process asked read() for. The entry remembers the time per
// thread; the return puts (now - then) into a log2 histogram of nanoseconds. Only the process
// in `target` (written by the lab before anything is attached) is kept.

#include <uapi/linux/ptrace.h>

struct totals_t {
    u64 entries;                      // calls seen at the entry
    u64 returns;                      // returns seen (with a start time)
    u64 bytes_asked;                  // the sum of the count argument
    u64 bytes_returned;               // the sum of the return values
};

BPF_ARRAY(target, u32, 1);            // the process (tgid) to watch
BPF_HASH(start, u32, u64, 10240);     // thread id -> time of its vfs_read entry
BPF_HISTOGRAM(latency, int, 64);      // floor(log2(ns)) + 1 -> calls (bucket 11: 1024..2047 ns)
BPF_ARRAY(totals, struct totals_t, 1);

static __always_inline int watched(void)
{
    u32 zero = 0;
    u32 *tgid = target.lookup(&zero);
    return tgid && *tgid && (bpf_get_current_pid_tgid() >> 32) == *tgid;
}

static __always_inline int enter(u64 count)
{
    if (!watched())
        return 0;
    u32 tid = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();
    start.update(&tid, &now);
    u32 zero = 0;
    struct totals_t *t = totals.lookup(&zero);
    if (t) {
        __sync_fetch_and_add(&t->entries, 1);
        __sync_fetch_and_add(&t->bytes_asked, count);
    }
    return 0;
}

static __always_inline int leave(s64 ret)
{
    if (!watched())
        return 0;
    u32 tid = bpf_get_current_pid_tgid();
    u64 *then = start.lookup(&tid);
    if (!then)
        return 0;                     // entered before the probes were attached
    latency.increment(bpf_log2l(bpf_ktime_get_ns() - *then));
    start.delete(&tid);
    u32 zero = 0;
    struct totals_t *t = totals.lookup(&zero);
    if (t) {
        __sync_fetch_and_add(&t->returns, 1);
        __sync_fetch_and_add(&t->bytes_returned, ret);
    }
    return 0;
}

int on_read_entry(struct pt_regs *ctx)
{
    return enter(PT_REGS_PARM3(ctx));     // size_t count, the third argument
}

int on_read_return(struct pt_regs *ctx)
{
    return leave(PT_REGS_RC(ctx));        // ssize_t: bytes read, or -errno
}

#ifdef FENTRY
KFUNC_PROBE(vfs_read, void *file, char *buf, size_t count, void *pos)
{
    return enter(count);
}

KRETFUNC_PROBE(vfs_read, void *file, char *buf, size_t count, void *pos, long ret)
{
    return leave(ret);
}
#endif
