// run_queue_latency.bpf.c: how long runnable tasks wait for a CPU. (BCC's runqlat.)
//
// A task that can run but finds every CPU busy waits in a run queue. The wait starts when it
// becomes runnable and ends when the scheduler switches it in:
//
//   sched:sched_wakeup, sched:sched_wakeup_new   a sleeping (or new) task became runnable
//   sched:sched_switch, prev_state "R" or "R+"     a running task was switched out but is still
//                                                  runnable (preempted): it waits again
//   sched:sched_switch, next_pid                   the wait of next_pid ends now
//
// The start times live in a hash keyed by the task's id (the kernel's pid: one per thread).
// At the switch-in the program adds the wait to a log2 histogram per task and to per-task
// totals. Only tracepoint fields are used (their layout comes from tracefs, so it matches the
// running kernel), never a task_struct field.

struct hist_key_t {
    u32 pid;                       // the task (thread) id
    u32 slot;                      // bpf_log2l(wait_ns): slot s counts 2^(s-1) .. 2^s - 1 ns
};

struct task_t {
    u64 waits;                     // how many waits ended (times it was switched in)
    u64 total_ns;                  // their sum
    u64 max_ns;                    // the longest
    char comm[16];
};

BPF_HASH(enqueued, u32, u64, 65536);            // task -> when it became runnable
BPF_HASH(run_hist, struct hist_key_t, u64, 65536);
BPF_HASH(tasks, u32, struct task_t, 16384);
BPF_ARRAY(stats, u64, 4);          // 0 waits measured  1 start not stored (enqueued full)
                                   // 2 histogram slot refused  3 task totals refused (maps full)

// prev_state as the sched_switch tracepoint reports it: 0 ("R") runnable; bits 0-7 a sleeping
// state (S, D, T, t, X, Z, P, I); 0x100 ("R+") preempted, i.e. still runnable. (See the
// "print fmt" line of /sys/kernel/tracing/events/sched/sched_switch/format.)
#define SLEEP_STATE_BITS 0xff

static __always_inline void runnable_now(u32 pid)
{
    if (pid == 0)                  // the idle task never waits
        return;
    u64 ts = bpf_ktime_get_ns();
    if (enqueued.update(&pid, &ts) != 0)
        stats.atomic_increment(1);
}

int on_wakeup(struct tracepoint__sched__sched_wakeup *args)
{
    runnable_now(args->pid);
    return 0;
}

int on_wakeup_new(struct tracepoint__sched__sched_wakeup_new *args)
{
    runnable_now(args->pid);
    return 0;
}

int on_switch(struct tracepoint__sched__sched_switch *args)
{
    u32 prev = args->prev_pid;
    if (prev != 0) {
        if ((args->prev_state & SLEEP_STATE_BITS) == 0)
            runnable_now(prev);        // preempted: back in the queue
        else
            enqueued.delete(&prev);    // went to sleep: its next wakeup starts the next wait
    }

    u32 next = args->next_pid;
    if (next == 0)
        return 0;
    u64 *start = enqueued.lookup(&next);
    if (!start)                        // became runnable before the program was attached
        return 0;
    u64 wait = bpf_ktime_get_ns() - *start;
    enqueued.delete(&next);
    stats.atomic_increment(0);

    struct hist_key_t key = {.pid = next, .slot = bpf_log2l(wait)};
    u64 zero = 0;
    u64 *count = run_hist.lookup_or_try_init(&key, &zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        stats.atomic_increment(2);

    struct task_t fresh = {};
    struct task_t *t = tasks.lookup_or_try_init(&next, &fresh);
    if (!t) {
        stats.atomic_increment(3);
        return 0;
    }
    __sync_fetch_and_add(&t->waits, 1);
    __sync_fetch_and_add(&t->total_ns, wait);
    if (wait > t->max_ns)              // a task is switched in on one CPU at a time: no race
        t->max_ns = wait;
    bpf_probe_read_kernel(&t->comm, sizeof(t->comm), args->next_comm);
    return 0;
}
