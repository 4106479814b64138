// syscall_latency.bpf.c: how long each openat() system call takes, measured in the kernel.
// (The idea of BCC's opensnoop and of its "funclatency"/"syscount -L" tools.)
//
// A system call has two tracepoints: syscalls:sys_enter_openat fires as the call starts,
// syscalls:sys_exit_openat as it returns. Neither alone knows the latency, so the two programs
// meet in a hash map keyed by the calling thread (bpf_get_current_pid_tgid(): a thread is in
// at most one system call at a time):
//
//   openat_enter (at sys_enter_openat):  start[thread] = {now, the filename pointer}
//   openat_exit  (at sys_exit_openat):   latency = now - start[thread].ts; delete start[thread];
//                                        add 1 to the log2 histogram slot of (process, latency);
//                                        send one event
//
// Every field comes from the tracepoints (their layout is read from tracefs by BCC, so it
// matches the running kernel) or from helpers: no kernel struct is read through headers.
//
// Set by the lab with -D:
//   FILTER_TGID     defined: only the process (its threads too) whose id the lab writes into
//                   the map target_tgid before attaching; undefined: every process. (The id is
//                   in a map, not in the text: one compile serves every process.)
//   SEND_EVENTS     1: one event per call through the ring buffer; 0: histogram only
//   FILENAME_LEN    bytes of the path kept per event
//   RINGBUF_PAGES   size of the ring buffer in 4 KiB pages (a power of two)

#define COMM_LEN 16

struct start_t {
    u64 ts;                        // bpf_ktime_get_ns() at entry
    const char *filename;          // user-space pointer to the path; read at exit
};

struct hist_key_t {
    char comm[COMM_LEN];           // the process's name
    u32 pid;                       // the process (tgid)
    u32 slot;                      // bpf_log2l(latency_ns): slot s counts 2^(s-1) .. 2^s - 1 ns
};

struct event_t {
    u64 ts;                        // entry time (monotonic ns)
    u64 latency_ns;                // exit - entry
    s64 ret;                       // the return value: a file descriptor, or -errno
    u32 pid;                       // process (tgid)
    u32 tid;                       // thread
    char comm[COMM_LEN];
    char filename[FILENAME_LEN];
};

BPF_HASH(start, u64, struct start_t, 10240);          // calls in flight, by thread
BPF_HASH(latency_hist, struct hist_key_t, u64, 10240);
BPF_ARRAY(stats, u64, 4);          // 0 events dropped (ring full)  1 entries not stored (start full)
                                   // 2 histogram slots refused (map full)  3 exits with no entry
#if SEND_EVENTS
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#endif

#ifdef FILTER_TGID
BPF_ARRAY(target_tgid, u32, 1);
#endif

static __always_inline int wanted(u64 pid_tgid)
{
#ifdef FILTER_TGID
    int zero = 0;
    u32 *tgid = target_tgid.lookup(&zero);
    return tgid != NULL && (pid_tgid >> 32) == *tgid;
#else
    return 1;
#endif
}

int openat_enter(struct tracepoint__syscalls__sys_enter_openat *args)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!wanted(id))
        return 0;
    struct start_t s = {.ts = bpf_ktime_get_ns(), .filename = args->filename};
    if (start.update(&id, &s) != 0)
        stats.atomic_increment(1);        // never silent: a full map is counted
    return 0;
}

int openat_exit(struct tracepoint__syscalls__sys_exit_openat *args)
{
    u64 now = bpf_ktime_get_ns();
    u64 id = bpf_get_current_pid_tgid();
    if (!wanted(id))
        return 0;
    struct start_t *s = start.lookup(&id);
    if (!s) {                      // the call began before the program was attached
        stats.atomic_increment(3);
        return 0;
    }
    u64 delta = now - s->ts;
    u64 ts = s->ts;
    const char *filename = s->filename;
    start.delete(&id);

    // (a) the histogram: one counter per (process, power-of-two slot), summed in the kernel
    struct hist_key_t key = {.pid = id >> 32, .slot = bpf_log2l(delta)};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    u64 zero = 0;
    u64 *count = latency_hist.lookup_or_try_init(&key, &zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        stats.atomic_increment(2);

#if SEND_EVENTS
    // (b) one event per call, reserved in the ring buffer and filled in place
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (!e) {
        stats.atomic_increment(0);
        return 0;
    }
    e->ts = ts;
    e->latency_ns = delta;
    e->ret = args->ret;
    e->pid = id >> 32;
    e->tid = (u32)id;
    __builtin_memcpy(e->comm, key.comm, COMM_LEN);
    // the kernel has copied the path by now, so its page is present: the read succeeds
    if (bpf_probe_read_user_str(e->filename, sizeof(e->filename), filename) < 0)
        e->filename[0] = 0;
    events.ringbuf_submit(e, 0);
#endif
    return 0;
}
