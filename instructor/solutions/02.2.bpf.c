// 02.2: execve calls per (uid, gid). bpf_get_current_uid_gid() returns gid << 32 | uid.
struct key_t {
    u32 uid;
    u32 gid;
};

BPF_HASH(counts, struct key_t, u64);

int count(void *ctx)
{
    u64 id = bpf_get_current_uid_gid();
    struct key_t key = {
        .uid = id & 0xFFFFFFFF,           // the lower 32 bits
        .gid = id >> 32,                  // the upper 32 bits
    };

    counts.atomic_increment(key);
    return 0;
}
