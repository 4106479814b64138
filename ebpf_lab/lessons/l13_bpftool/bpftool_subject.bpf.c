// bpftool_subject.bpf.c: two programs on the execve tracepoint for bpftool to look at.
//
// count_light does little: one atomic add per exec of the workload's UID (which the lab writes
// into target_uid before attaching: a map, not a -D flag, so one compile serves every run) in a
// hash keyed by UID, and one in `runs` for every exec.
// count_heavy counts its runs too, after a loop of 64 map lookups and random numbers: the
// kernel's own statistics (run_cnt, run_time_ns) show what that extra work costs per run.
//
// Each program counts its own runs (runs[0], runs[1]): the kernel's run_cnt must equal it.

BPF_ARRAY(target_uid, u32, 1);      // [0]: the workload's UID (written by the lab)
BPF_HASH(execs_by_uid, u32, u64);   // key: UID, value: execve calls of that UID (count_light)
BPF_ARRAY(runs, u64, 2);            // runs[0]: count_light's runs, runs[1]: count_heavy's
BPF_ARRAY(scratch, u64, 64);        // count_heavy's busywork

int count_light(void *ctx)
{
    int zero = 0;
    u32 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    u32 *target = target_uid.lookup(&zero);
    if (target && uid == *target)
        execs_by_uid.atomic_increment(uid);
    runs.atomic_increment(0);
    return 0;
}

int count_heavy(void *ctx)
{
    u64 sum = 0;
#pragma unroll
    for (int i = 0; i < 64; i++) {
        int slot = i;
        u64 *value = scratch.lookup(&slot);
        if (value) {
            *value += bpf_get_prandom_u32();
            sum += *value;
        }
    }
    int last = 63;
    u64 *value = scratch.lookup(&last);
    if (value)
        *value = sum;
    runs.atomic_increment(1);
    return 0;
}
