// size_histogram.bpf.c: a power-of-two histogram of the byte counts asked of read() or write().
//
// BPF_HISTOGRAM(dist) is an array of 64 counters. bpf_log2l(n) picks the slot: for n >= 1 it is
// the number of bits needed to write n (1 -> 1, 2..3 -> 2, 4..7 -> 3, ..., 4096..8191 -> 13), and
// 0 shares slot 1 with 1. So slot b counts the calls of 2^(b-1) .. 2^b - 1 bytes. One add per
// call, in the kernel; user space reads 64 numbers at the end, however many calls there were.
// FILTER_UID (optional): count only calls made by one user ID, the one the lab writes into the
// map filter_uid before attaching (a map, not a number in the text: the text stays the same
// whatever the UID, and compiles once).

#ifdef FILTER_UID
BPF_ARRAY(filter_uid, u32, 1);
#endif

BPF_HISTOGRAM(dist);

static __always_inline int record(u64 bytes)
{
#ifdef FILTER_UID
    int zero = 0;
    u32 *uid = filter_uid.lookup(&zero);
    if (uid == NULL || (u32)bpf_get_current_uid_gid() != *uid)
        return 0;
#endif
    dist.atomic_increment(bpf_log2l(bytes));   // atomic: two CPUs may hit the same slot at once
    return 0;
}

// The tracepoints' `count` field is the byte count the caller asked for.
int hist_write(struct tracepoint__syscalls__sys_enter_write *args)
{
    return record(args->count);
}

int hist_read(struct tracepoint__syscalls__sys_enter_read *args)
{
    return record(args->count);
}
