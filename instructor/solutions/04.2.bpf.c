// 04.2: per UID, the sum of the bytes of the command name at every execve, with a bounded loop.
// The loop's bound is a constant (16), so the verifier can see that it ends: clang may unroll
// it, or the kernel's verifier walks it 16 times (bounded loops are allowed since 5.3).
BPF_HASH(sums, u32, u64);

int count(void *ctx)
{
    char comm[16] = {};
    u32 uid = bpf_get_current_uid_gid();  // the lower 32 bits: the UID
    u64 sum = 0;

    bpf_get_current_comm(&comm, sizeof(comm));
    for (int i = 0; i < 16; i++)
        sum += (unsigned char)comm[i];    // the bytes after the name's NUL are zeros
    sums.atomic_increment(uid, sum);
    return 0;
}
