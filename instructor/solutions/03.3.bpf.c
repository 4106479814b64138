// 03.3: the command name *after* exec. sched:sched_process_exec fires once the new program has
// replaced the old one, so the current comm is already the new program's name.
struct key_t {
    char comm[16];
};

BPF_HASH(counts, struct key_t, u64);

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    struct key_t key = {};

    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    counts.atomic_increment(key);
    return 0;
}
