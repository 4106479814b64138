// 07.1: getppid() calls per process, at the syscalls:sys_enter_getppid tracepoint.
BPF_HASH(counts, u32, u64);

int count(void *ctx)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;   // the upper half: the process (tgid)

    counts.atomic_increment(pid);
    return 0;
}
