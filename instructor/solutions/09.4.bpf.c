// 09.4: openat() latency as a log2 histogram per *thread*. The same two tracepoints as
// syscall_latency.bpf.c; only the histogram's key changes: the thread id (the lower 32 bits of
// bpf_get_current_pid_tgid()) instead of the process id (the upper 32 bits).
struct key_t {
    u32 tid;
    u32 slot;                      // bpf_log2l(latency_ns): slot s counts 2^(s-1) .. 2^s - 1 ns
};

BPF_HASH(start, u64, u64);        // entry time, by thread (one system call at a time each)
BPF_HASH(hist, struct key_t, u64);

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 now = bpf_ktime_get_ns();

    start.update(&id, &now);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 *ts = start.lookup(&id);

    if (!ts)                       // the call began before the program was attached
        return 0;
    struct key_t key = {.tid = (u32)id, .slot = bpf_log2l(bpf_ktime_get_ns() - *ts)};
    start.delete(&id);
    hist.atomic_increment(key);
    return 0;
}
