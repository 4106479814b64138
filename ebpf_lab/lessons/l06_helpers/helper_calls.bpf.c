// helper_calls.bpf.c: call the common helpers once per execve and send user space what each
// returned.
//
// A helper is a function the kernel offers BPF programs (a program cannot call arbitrary kernel
// functions). Each one is called here exactly once per event, in this order, and its return
// value (or what it filled in) travels to user space in one struct through a perf buffer.
// The lab compares every value with what the workload knows: the pid it started, the UID it
// chose, the program it ran.
//
// The lab writes a tag chosen for each run into the map run_tag before it attaches the program:
// it marks this run's bpf_trace_printk lines. With -DFILTER_UID, only execs by the user ID the
// lab wrote into filter_uid count. Per-run values live in maps, not in the C text, so one
// compile serves every run.

#include <uapi/linux/ptrace.h>    // struct pt_regs (an architecture ABI: stable across versions)

#define FILENAME_LEN 128

struct helper_event {
    u64 seq;             // event number: 0, 1, 2, ... (from a counter map)
    u64 ktime_ns;        // bpf_ktime_get_ns(): nanoseconds since boot (monotonic clock)
    u64 pid_tgid;        // bpf_get_current_pid_tgid(): tgid << 32 | pid
    u64 uid_gid;         // bpf_get_current_uid_gid(): gid << 32 | uid
    s64 comm_ret;        // bpf_get_current_comm(): 0 on success
    s64 filename_ret;    // bpf_probe_read_user_str(): bytes copied including the NUL, or < 0
    s64 printk_ret;      // bpf_trace_printk(): bytes written to the trace buffer, or < 0
    u32 cpu;             // bpf_get_smp_processor_id(): the CPU running the program
    char comm[16];       // filled by bpf_get_current_comm()
    char filename[FILENAME_LEN];   // filled by bpf_probe_read_user_str()
};

BPF_PERF_OUTPUT(events);
BPF_ARRAY(next_seq, u64, 1);
BPF_ARRAY(run_tag, u32, 1);
#ifdef FILTER_UID
BPF_ARRAY(filter_uid, u32, 1);
#endif

static __always_inline int call_helpers(void *ctx, const char *filename)
{
    struct helper_event e = {};
    int zero = 0;
    u64 *seq = next_seq.lookup(&zero);
    u32 *tag = run_tag.lookup(&zero);
    if (!seq || !tag)   // cannot happen (key 0 of one-entry arrays), but the verifier wants it
        return 0;

    e.ktime_ns = bpf_ktime_get_ns();
    e.pid_tgid = bpf_get_current_pid_tgid();
    e.uid_gid = bpf_get_current_uid_gid();
#ifdef FILTER_UID
    u32 *uid = filter_uid.lookup(&zero);
    if (!uid || (u32)e.uid_gid != *uid)
        return 0;
#endif
    e.seq = __sync_fetch_and_add(seq, 1);
    e.comm_ret = bpf_get_current_comm(&e.comm, sizeof(e.comm));
    // filename points into the calling process's memory: only a helper may read it
    e.filename_ret = bpf_probe_read_user_str(&e.filename, sizeof(e.filename), filename);
    e.cpu = bpf_get_smp_processor_id();
    e.printk_ret = bpf_trace_printk("[ebpf-lab %x] helper event %llu", *tag, e.seq);

    events.perf_submit(ctx, &e, sizeof(e));
    return 0;
}

// The seed's way: a kprobe on the execve system call (needs CONFIG_KPROBES).
int syscall__execve(struct pt_regs *ctx, const char __user *filename)
{
    return call_helpers(ctx, filename);
}

// The stable way: the syscalls:sys_enter_execve tracepoint; its fields are in args.
int helpers_tracepoint(struct tracepoint__syscalls__sys_enter_execve *args)
{
    return call_helpers(args, args->filename);
}
