// watch_list.bpf.c: a program that takes its orders from user space, through maps.
//
// User space decides, while the program runs, whose write() calls count and how much each is
// worth: it writes `watched[uid] = weight`, changes a weight, deletes a UID, or clears the map,
// with the bpf() system call. The program reads `watched` on every call, so the next call
// already sees the change; nothing is recompiled or reattached.
//
// `step` (an array of one slot) is set by user space too: it labels which step of the
// demonstration a call belongs to, so one run can show every step separately.

BPF_HASH(watched, u32, u64, 64);        // UID -> weight: what each of its write() calls adds
BPF_ARRAY(step, u32, 1);                // the current step of the demonstration

struct score_key {
    u32 step;
    u32 uid;
};
BPF_HASH(scores, struct score_key, u64, 1024);   // (step, UID) -> sum of weights

int score_write(void *ctx)
{
    u32 uid = bpf_get_current_uid_gid();         // low 32 bits: the UID
    u64 *weight = watched.lookup(&uid);
    if (!weight)
        return 0;                                // not watched (any more): ignore the call
    int zero = 0;
    u32 *current = step.lookup(&zero);
    if (!current)
        return 0;
    struct score_key key = {.step = *current, .uid = uid};
    u64 start = 0;
    u64 *score = scores.lookup_or_try_init(&key, &start);
    if (score)
        __sync_fetch_and_add(score, *weight);
    return 0;
}
