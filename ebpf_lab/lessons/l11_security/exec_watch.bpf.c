// exec_watch.bpf.c: alert when a program on a watchlist is executed (detection, not enforcement).
//
// User space fills `watchlist` with the paths to watch before anything runs, and may change it
// while the program is attached. On every successful exec the program looks the executed path up
// in that map; for a watched path it sends an alert (who ran it, from which parent) to user space
// through a perf buffer. Execs of other paths are only counted.
//
// The hook is the sched:sched_process_exec tracepoint. It fires once the new program has replaced
// the old one, so only for execs that succeeded, in the context of the process that now runs the
// new program: its pid, its uid, its new comm. Its `filename` field is the path as it was given
// to execve() (e.g. "/usr/bin/id" or "./id": not resolved), copied into the trace record, i.e.
// into kernel memory: read it with bpf_probe_read_kernel_str().
//
// The tracepoint hands the program a record, not the arguments of a function: its layout is
// described in tracefs (events/sched/sched_process_exec/format), and BCC builds the struct below
// from that description for the running kernel. A `__data_loc` field holds where the string is
// inside the record: the low 16 bits are its offset from the start of the record.
//
// The real parent's pid and comm come from the task_struct at byte offsets that the lab takes
// from the running kernel's BTF (TASK_REAL_PARENT_OFF, TASK_TGID_OFF, TASK_COMM_OFF), never from
// header files of another kernel version.

#define PATH_LEN 128                // watched paths are shorter than this (the key's size)

struct path_t {
    char path[PATH_LEN];            // NUL-terminated, the rest zero: the whole array is the key
};
BPF_HASH(watchlist, struct path_t, u32, WATCH_MAX);   // path -> its index in the watchlist

struct alert_t {
    u64 ktime_ns;
    u32 pid;                        // the process that now runs the watched program
    u32 ppid;                       // its real parent
    u32 uid;
    u32 watch_index;                // which watchlist entry matched
    char comm[16];                  // the new program's name (exec has already set it)
    char parent_comm[16];
    char filename[PATH_LEN];        // also the lookup key: zeroed, then the path copied in
};
BPF_PERF_OUTPUT(alerts);

BPF_ARRAY(seen, u64, 2);            // [0]: execs seen, [1]: execs of watched paths

int on_exec(struct tracepoint__sched__sched_process_exec *args)
{
    struct alert_t alert = {};      // zero the whole struct: the key must have no stray bytes
    u16 offset = args->data_loc_filename & 0xFFFF;
    bpf_probe_read_kernel_str(&alert.filename, sizeof(alert.filename), (void *)args + offset);
    seen.atomic_increment(0);

    // alert.filename has the layout of struct path_t (PATH_LEN chars): use it as the key
    u32 *index = watchlist.lookup((struct path_t *)&alert.filename);
    if (!index)
        return 0;                   // not watched
    seen.atomic_increment(1);

    alert.ktime_ns = bpf_ktime_get_ns();
    alert.pid = args->pid;
    alert.uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    alert.watch_index = *index;
    bpf_get_current_comm(&alert.comm, sizeof(alert.comm));

    u64 task = bpf_get_current_task();
    u64 parent = 0;
    bpf_probe_read_kernel(&parent, sizeof(parent), (void *)(task + TASK_REAL_PARENT_OFF));
    bpf_probe_read_kernel(&alert.ppid, sizeof(alert.ppid), (void *)(parent + TASK_TGID_OFF));
    bpf_probe_read_kernel_str(&alert.parent_comm, sizeof(alert.parent_comm),
                              (void *)(parent + TASK_COMM_OFF));

    alerts.perf_submit(args, &alert, sizeof(alert));
    return 0;
}
