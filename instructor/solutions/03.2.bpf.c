// 03.2: execve calls per parent process. The caller of execve is the child that is about to
// become the new program; its parent is task->real_parent. As in exec_events.bpf.c, both reads
// use byte offsets the lab takes from the running kernel's BTF (-DTASK_REAL_PARENT_OFF,
// -DTASK_TGID_OFF), so no kernel header is needed.
BPF_HASH(counts, u32, u64);

int count(void *ctx)
{
    u64 task = bpf_get_current_task();
    u64 parent = 0;
    u32 ppid = 0;

    bpf_probe_read_kernel(&parent, sizeof(parent), (void *)(task + TASK_REAL_PARENT_OFF));
    bpf_probe_read_kernel(&ppid, sizeof(ppid), (void *)(parent + TASK_TGID_OFF));
    counts.atomic_increment(ppid);
    return 0;
}
