// exec_count.bpf.c: count execve calls per user ID in a BPF hash map.
// (The seed's hello-map.py.)
//
// The map lives in the kernel. The program only adds 1 to the entry for the calling task's UID;
// user space reads the whole map now and then. Counting in the kernel is cheap: no event is
// copied out, however many execs happen.

BPF_HASH(counter_table, u32, u64);        // key: UID, value: number of execve calls

static __always_inline int count_exec(void)
{
    // bpf_get_current_uid_gid() returns gid << 32 | uid
    u32 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    // atomic_increment(): if the UID has an entry, add 1 with one atomic instruction (two CPUs
    // may exec at the same moment; increment() would load, add and store, and lose a count when
    // they overlap). If not, insert it at 1. (Two CPUs inserting the same new UID at the same
    // instant: one insert fails and that exec is not counted; lesson 02, exercise 4.)
    counter_table.atomic_increment(uid);
    return 0;
}

// The seed's way: a kprobe on the execve system call (needs CONFIG_KPROBES).
int count_kprobe(struct pt_regs *ctx)
{
    return count_exec();
}

// The stable way: the syscalls:sys_enter_execve tracepoint.
int count_tracepoint(void *ctx)
{
    return count_exec();
}
