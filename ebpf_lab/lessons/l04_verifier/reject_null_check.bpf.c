// reject_null_check.bpf.c: a map lookup used without checking for NULL (chapter 04).
//
// `lookup()` returns a pointer to the value, or NULL when the key is not in the map. For a hash
// map the verifier cannot know which, so the pointer's type is "map_value_or_null", and reading
// through it is refused: "R0 invalid mem access 'map_value_or_null'". After `if (count)` the
// verifier knows that on that branch the pointer is a real map value, and allows the access.
//
// Compiled as is, this is the learner's bug. Compiled with -DFIXED, the NULL case is handled.

BPF_HASH(counts, u32, u64);               // key: UID, value: how many times we saw it

int count_uid(void *ctx)
{
    u32 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    u64 *count = counts.lookup(&uid);
#ifndef FIXED
    *count += 1;                          // BUG: count is NULL the first time a UID is seen
#else
    if (count) {                          // FIX: only touch the value when there is one
        *count += 1;
    } else {
        u64 one = 1;                      // first time: create the entry
        counts.update(&uid, &one);
    }
#endif
    return 0;
}
