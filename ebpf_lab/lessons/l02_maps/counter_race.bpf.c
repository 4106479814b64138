// counter_race.bpf.c: one event, counted three ways, to see which way keeps every count.
//
// Lesson 02's experiment. On every getppid() system call made by the UID in target[0], the
// program adds 1 to that UID's entry in three maps:
//
//   plain   BPF_HASH         plain.increment(uid): BCC writes `*value += 1`, which clang
//                            compiles to three instructions: load the value, add 1, store it.
//   atomic  BPF_HASH         atomic.atomic_increment(uid): one atomic add instruction
//                            (BPF_ATOMIC | BPF_ADD, `lock xadd` on x86): the CPU adds in memory
//                            and no other CPU can come in between.
//   percpu  BPF_PERCPU_HASH  percpu.increment(uid): every CPU has its own copy of the value and
//                            only that CPU ever writes it, so a plain add is safe; user space
//                            sums the copies.
//
// A BPF program runs on every CPU at once. If two CPUs run `plain`'s load-add-store at the same
// moment, both can load the same old value n and both store n + 1: two calls, one count.
//
// The lab creates the three entries (at 0) before the load starts. BCC's increment() creates a
// missing entry with an insert that fails if another CPU inserted the same key a moment before,
// and then that 1 is dropped: another race, at the first call only, left out of this experiment.

BPF_ARRAY(target, u32, 1);            // [0]: the UID to count, set by the lab (0: not set yet)
BPF_HASH(plain, u32, u64);            // key: UID, value: getppid() calls
BPF_HASH(atomic, u32, u64);
BPF_PERCPU_HASH(percpu, u32, u64);    // key: UID, value: one count per CPU

int count_getppid(void *ctx)
{
    int zero = 0;
    u32 *want = target.lookup(&zero);
    u32 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    if (!want || *want == 0 || uid != *want)
        return 0;

    plain.increment(uid);             // RACES ON PURPOSE: load, add, store; two CPUs can lose a count
    atomic.atomic_increment(uid);     // exact: one atomic add
    percpu.increment(uid);            // exact: this CPU's own copy, no other CPU writes it
    return 0;
}
