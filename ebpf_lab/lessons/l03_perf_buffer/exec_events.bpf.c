// exec_events.bpf.c: one structured event per execve, sent to user space through a buffer.
// (The seed's hello-buffer.py.)
//
// USE_RINGBUF (set by the lab for buffer="ring") picks a BPF ring buffer, shared by all CPUs;
// otherwise a perf buffer, one ring per CPU, as in the seed.
//
// The parent's pid is read from the kernel's task_struct at byte offsets that the lab takes from
// the running kernel's BTF (TASK_REAL_PARENT_OFF, TASK_TGID_OFF), never from header files: with
// headers from another kernel version, task->real_parent->tgid compiles but reads garbage.

#include <uapi/linux/ptrace.h>    // struct pt_regs (an architecture ABI: stable across versions)

#define FILENAME_LEN 256

struct data_t {
    u64 ktime_ns;               // bpf_ktime_get_ns(): monotonic clock, nanoseconds
    u32 pid;                    // process id (the kernel's tgid)
    u32 ppid;                   // real parent's process id
    u32 uid;
    char command[16];           // the task's comm at the call (before exec replaces it)
    char message[12];
    char filename[FILENAME_LEN];  // the path being executed
};

#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_ARRAY(dropped, u64, 1);     // events the ring buffer had no room for
#else
BPF_PERF_OUTPUT(events);        // perf counts its own losses and reports them to user space
#endif

static __always_inline u32 parent_tgid(void)
{
    u64 task = bpf_get_current_task();
    u64 parent = 0;
    u32 tgid = 0;
    bpf_probe_read_kernel(&parent, sizeof(parent), (void *)(task + TASK_REAL_PARENT_OFF));
    bpf_probe_read_kernel(&tgid, sizeof(tgid), (void *)(parent + TASK_TGID_OFF));
    return tgid;
}

static __always_inline int send_event(void *ctx, const char *filename)
{
    struct data_t data = {};
    char message[12] = "Hello World";

    data.ktime_ns = bpf_ktime_get_ns();
    data.pid = bpf_get_current_pid_tgid() >> 32;
    data.ppid = parent_tgid();
    data.uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    bpf_get_current_comm(&data.command, sizeof(data.command));
    bpf_probe_read_kernel(&data.message, sizeof(data.message), message);
    bpf_probe_read_user_str(&data.filename, sizeof(data.filename), filename);

#ifdef USE_RINGBUF
    if (events.ringbuf_output(&data, sizeof(data), 0) != 0) {
        int zero = 0;
        u64 *n = dropped.lookup(&zero);
        if (n)
            __sync_fetch_and_add(n, 1);
    }
#else
    events.perf_submit(ctx, &data, sizeof(data));
#endif
    return 0;
}

// The seed's way: a kprobe on the execve system call. BCC's syscall__ prefix gives the
// syscall's own arguments.
int syscall__execve(struct pt_regs *ctx, const char __user *filename)
{
    return send_event(ctx, filename);
}

// The stable way: the syscalls:sys_enter_execve tracepoint; its fields are in args.
int events_tracepoint(struct tracepoint__syscalls__sys_enter_execve *args)
{
    return send_event(args, args->filename);
}
