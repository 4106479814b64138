// 02.1: execve calls per command name, counted in a hash map keyed by the comm.
struct key_t {
    char comm[16];                        // TASK_COMM_LEN
};

BPF_HASH(counts, struct key_t, u64);

int count(void *ctx)
{
    struct key_t key = {};                // zeroed: the bytes after the name are part of the key

    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    counts.atomic_increment(key);
    return 0;
}
