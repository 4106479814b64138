// profile.bpf.c: a sampling CPU profiler. (BCC's profile tool, and what `perf record -g` does.)
//
// A perf event (the software cpu-clock, a timer) interrupts every CPU SAMPLE_FREQ times a second.
// Each time, this program asks: who is on this CPU, and what was it doing? The answer is two
// stacks of return addresses:
//
//   the kernel stack: if the CPU was running kernel code (a system call, an interrupt), the
//                     chain of kernel functions that led there;
//   the user stack:   the chain of functions of the process itself (walked through frame
//                     pointers: a program built without them gives its innermost function and
//                     then garbage or nothing).
//
// bpf_get_stackid() copies a stack into the BPF_STACK_TRACE map and returns its id (the same
// stack gets the same id), so the program only counts (process, user stack id, kernel stack id)
// in a hash map. User space turns addresses into function names afterwards (symbolization).
//
// Set by the lab with -D:
//   FILTER_TGID     defined: only samples of the process whose id the lab writes into the map
//                   target_tgid before attaching (a map, not the text: one compile serves every
//                   process); undefined: every process
//   STACK_ENTRIES   room in the stack map (distinct stacks)
//   COUNT_ENTRIES   room in the count map (distinct (process, stack, stack) combinations)

#define EFAULT 14                         // errno numbers are ABI: the same in every kernel

struct key_t {
    u32 pid;                             // the process (tgid) that was on the CPU
    s32 user_stack_id;                   // id in stack_traces, or -errno
    s32 kernel_stack_id;                 // id in stack_traces, or -EFAULT: CPU was in user mode
    char comm[16];
};

BPF_HASH(counts, struct key_t, u64, COUNT_ENTRIES);
BPF_STACK_TRACE(stack_traces, STACK_ENTRIES);
// 0 samples taken (every CPU)  1 of them on an idle CPU  2 kept (after the pid filter)
// 3 not counted: count map full  4 user stack lost  5 kernel stack lost (stack map full or
// a different stack with the same hash: bpf_get_stackid says -EEXIST)
BPF_ARRAY(stats, u64, 6);
#ifdef FILTER_TGID
BPF_ARRAY(target_tgid, u32, 1);
#endif

// The context of a perf event program is a struct bpf_perf_event_data (the sampled registers).
// bpf_get_stackid() only passes it on, so the program takes a void * and spares the compiler
// that header (including it costs seconds of compile time here).
int on_sample(void *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 pid = id >> 32;
    stats.atomic_increment(0);
    if (id == 0) {                       // the idle task: the CPU had nothing to run
        stats.atomic_increment(1);
        return 0;
    }
#ifdef FILTER_TGID
    int entry = 0;                       // the map's one entry
    u32 *tgid = target_tgid.lookup(&entry);
    if (tgid == NULL || pid != *tgid)
        return 0;
#endif
    stats.atomic_increment(2);

    struct key_t key = {.pid = pid};
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    key.user_stack_id = stack_traces.get_stackid(ctx, BPF_F_USER_STACK);
    key.kernel_stack_id = stack_traces.get_stackid(ctx, 0);
    // -EFAULT is the normal "there is no such stack" (a kernel thread has no user stack; a CPU
    // in user mode has no kernel stack). Anything else means a stack was lost: count it.
    if (key.user_stack_id < 0 && key.user_stack_id != -EFAULT)
        stats.atomic_increment(4);
    if (key.kernel_stack_id < 0 && key.kernel_stack_id != -EFAULT)
        stats.atomic_increment(5);

    u64 zero = 0;
    u64 *n = counts.lookup_or_try_init(&key, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        stats.atomic_increment(3);
    return 0;
}
