// 02.4: getppid() calls per UID, exact even when two CPUs make a UID's first calls at once.
BPF_HASH(counts, u32, u64);

int count(void *ctx)
{
    u32 uid = bpf_get_current_uid_gid();  // the lower 32 bits: the UID
    u64 zero = 0;

    // lookup_or_try_init(): look up; if missing, insert 0 (that insert fails harmlessly when
    // another CPU inserted the key a moment before) and look up again. Either way we get the
    // one entry of this UID, and no call's 1 is dropped.
    u64 *n = counts.lookup_or_try_init(&uid, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);       // one atomic add: two CPUs at once lose nothing
    return 0;
}
