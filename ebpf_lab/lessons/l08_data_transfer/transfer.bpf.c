// transfer.bpf.c: one stream of events, written to three buffers at once, to compare them.
//
// The events: the read() calls on file descriptor 0 of ONE process (target_tgid: a dd the
// lab starts, about a million one-byte reads per second). For each event the program
//   1. numbers it: seq = generated++, a kernel-side counter that user space checks against;
//   2. writes it to the trace buffer (bpf_trace_printk: a line of text)      if WITH_TRACE
//   3. writes it to the perf buffer  (perf_submit: this CPU's ring)          if WITH_PERF
//   4. writes it to the ring buffer  (ringbuf_output: one ring, all CPUs)    if WITH_RING
// and counts every write that failed for lack of room, so no loss goes unnoticed.
//
// One program doing all the writes for each event means the buffers get exactly the same events
// at the same moments; what differs is how each buffer stores them and what it does when full.
//
// The run's own values come through maps the lab writes before attaching, not through the text
// (which then compiles once for every run): target_tgid, the source's process id, and run_tag,
// the tag of this run's trace lines.

struct event_t {
    u64 ktime_ns;                     // bpf_ktime_get_ns(): when (monotonic clock)
    u32 seq;                          // 0, 1, 2, ... in the order the events happened
    u32 cpu;                          // the CPU it happened on
};

#define GENERATED 0                   // events seen
#define TRACE_FAILED 1                // writes that failed, per buffer
#define PERF_FAILED 2
#define RING_FAILED 3
BPF_ARRAY(counters, u64, 4);
BPF_ARRAY(target_tgid, u32, 1);       // the source's process id
#ifdef WITH_TRACE
BPF_ARRAY(run_tag, u32, 1);           // this run's tag on its trace lines
#endif

#ifdef WITH_PERF
BPF_PERF_OUTPUT(perf_events);         // one ring per CPU, PERF_PAGES each (sized by user space)
#endif
#ifdef WITH_RING
BPF_RINGBUF_OUTPUT(ring_events, RING_PAGES);  // one ring shared by all CPUs
#endif

static __always_inline void count(int index)
{
    u64 *n = counters.lookup(&index);
    if (n)
        __sync_fetch_and_add(n, 1);
}

int on_read(struct tracepoint__syscalls__sys_enter_read *args)
{
    // Keep only our source's reads of fd 0 (its input, /dev/zero).
    int zero = GENERATED;                          // also the one entry of target_tgid, run_tag
    u32 *tgid = target_tgid.lookup(&zero);
    if (!tgid || (bpf_get_current_pid_tgid() >> 32) != *tgid || args->fd != 0)
        return 0;

    u64 *generated = counters.lookup(&zero);
    if (!generated)
        return 0;
    struct event_t e = {};
    e.seq = __sync_fetch_and_add(generated, 1);   // returns the value before adding
    e.ktime_ns = bpf_ktime_get_ns();
    e.cpu = bpf_get_smp_processor_id();

#ifdef WITH_TRACE
    // The trace buffer takes text; the line carries this run's tag (other programs print too).
    u32 *tag = run_tag.lookup(&zero);
    if (!tag || bpf_trace_printk("[ebpf-lab-xfer %x] %u", *tag, e.seq) < 0)
        count(TRACE_FAILED);
#endif
#ifdef WITH_PERF
    if (perf_events.perf_submit(args, &e, sizeof(e)) != 0)    // -ENOSPC: this CPU's ring is full
        count(PERF_FAILED);
#endif
#ifdef WITH_RING
    if (ring_events.ringbuf_output(&e, sizeof(e), 0) != 0)    // no room in the shared ring
        count(RING_FAILED);
#endif
    return 0;
}
