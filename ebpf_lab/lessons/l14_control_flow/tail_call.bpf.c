// tail_call.bpf.c: one program jumps into another through a BPF_PROG_ARRAY.
//
// dispatch runs on every execve; for the workload's UID (written into target_uid by the lab) it
// counts itself, tries slot 2 of `jump` (left empty: the call fails and dispatch goes on), then
// slot 1, where the lab put second's fd. A tail call that works never returns: second runs in
// dispatch's place, and nothing after the call in dispatch runs.
//
// runs[0]: dispatch ran (for the UID)   runs[1]: after the call into the empty slot
// runs[2]: second ran                   runs[3]: after the call into slot 1 (never, if it worked)

BPF_PROG_ARRAY(jump, 4);
BPF_ARRAY(target_uid, u32, 1);
BPF_ARRAY(runs, u64, 4);

int dispatch(void *ctx)
{
    int zero = 0;
    u32 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    u32 *target = target_uid.lookup(&zero);
    if (!target || uid != *target)
        return 0;
    runs.atomic_increment(0);
    jump.call(ctx, 2);            // an empty slot: the call falls through
    runs.atomic_increment(1);
    jump.call(ctx, 1);            // second: it runs instead of the rest of dispatch
    runs.atomic_increment(3);
    return 0;
}

int second(void *ctx)
{
    runs.atomic_increment(2);
    return 0;
}
