// 05.4: write() calls per file descriptor, for one UID, in an array of 64 counters.
BPF_ARRAY(by_fd, u64, 64);

int count_fd(struct tracepoint__syscalls__sys_enter_write *args)
{
    if ((u32)bpf_get_current_uid_gid() != FILTER_UID)   // the lower 32 bits: the UID
        return 0;
    u32 fd = args->fd;
    if (fd >= 64)               // the array has no slot for it (lookup would give NULL)
        return 0;
    by_fd.atomic_increment(fd);
    return 0;
}
