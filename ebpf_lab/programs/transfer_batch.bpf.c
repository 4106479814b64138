// transfer_batch.bpf.c: the same event stream as transfer.bpf.c, sent to user space in batches.
//
// Sending one record per event costs user space one callback per event: a few microseconds of
// Python each, so at a million events per second it cannot keep up. Here the program collects
// BATCH events in a per-CPU staging area (a BPF_PERCPU_ARRAY: each CPU has its own copy, so no
// locking is needed) and sends them as ONE ring buffer record when the batch is full. User space
// gets one callback per BATCH events and decodes the whole record at once with numpy.
//
// What is still in a staging area when the stream ends, user space reads from the map itself.
// A batch the ring buffer has no room for is lost whole: BATCH events, counted.

struct event_t {
    u64 ktime_ns;                     // bpf_ktime_get_ns(): when
    u32 seq;                          // 0, 1, 2, ... in the order the events happened
    u32 cpu;                          // the CPU it happened on
};

struct batch_t {
    u32 n;                            // events in rec[] so far
    u32 pad;
    struct event_t rec[BATCH];
};

#define GENERATED 0                   // events seen
#define BATCH_LOST 1                  // events in batches the ring buffer refused
BPF_ARRAY(counters, u64, 2);
BPF_PERCPU_ARRAY(staging, struct batch_t, 1);
BPF_RINGBUF_OUTPUT(batches, RING_PAGES);

int on_read(struct tracepoint__syscalls__sys_enter_read *args)
{
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET_TGID || args->fd != 0)
        return 0;

    int zero = 0;
    u64 *generated = counters.lookup(&zero);
    struct batch_t *b = staging.lookup(&zero);       // this CPU's staging area
    if (!generated || !b)
        return 0;
    u32 n = b->n;
    if (n >= BATCH)                   // cannot happen, but the verifier wants rec[n] in bounds
        n = 0;
    b->rec[n].seq = __sync_fetch_and_add(generated, 1);
    b->rec[n].ktime_ns = bpf_ktime_get_ns();
    b->rec[n].cpu = bpf_get_smp_processor_id();
    n++;
    if (n == BATCH) {
        // One copy of BATCH * 16 bytes into the ring buffer, one wake-up of user space.
        if (batches.ringbuf_output(&b->rec, sizeof(b->rec), 0) != 0) {
            int lost = BATCH_LOST;
            u64 *l = counters.lookup(&lost);
            if (l)
                __sync_fetch_and_add(l, BATCH);
        }
        n = 0;
    }
    b->n = n;
    return 0;
}
