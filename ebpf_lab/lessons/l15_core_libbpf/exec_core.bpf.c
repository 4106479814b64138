// exec_core.bpf.c: lesson 03's exec events, written the libbpf way (CO-RE).
//
// Compiled once by clang (-target bpf -g -O2) against vmlinux.h, the kernel's types as C
// (`bpftool btf dump file /sys/kernel/btf/vmlinux format c`). No kernel headers, no offsets
// passed in: BPF_CORE_READ records *which* field it reads (task_struct's real_parent, then
// its tgid) in the object's BTF, and libbpf writes the field's offset in the running kernel
// into the instruction when it loads the program.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define FILENAME_LEN 256

char LICENSE[] SEC("license") = "GPL";

struct event {
    __u64 ktime_ns;             // bpf_ktime_get_ns(): monotonic clock, nanoseconds
    __u32 pid;                  // process id (the kernel's tgid)
    __u32 ppid;                 // real parent's process id, read with CO-RE
    __u32 uid;
    char command[16];           // the task's comm at the call (before exec replaces it)
    char filename[FILENAME_LEN];  // the path being executed
};

// One ring buffer shared by all CPUs (BPF_MAP_TYPE_RINGBUF, Linux 5.8+): 256 KiB.
struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 256 * 1024);
} events SEC(".maps");

// Records the ring buffer had no room for (user space reads it at the end).
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} dropped SEC(".maps");

// The stable hook lesson 03 uses too: the syscalls:sys_enter_execve tracepoint.
SEC("tp/syscalls/sys_enter_execve")
int exec_core(struct trace_event_raw_sys_enter *ctx)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    const char *filename = (const char *)ctx->args[0];
    struct event *e;

    e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e) {
        __u32 zero = 0;
        __u64 *n = bpf_map_lookup_elem(&dropped, &zero);
        if (n)
            __sync_fetch_and_add(n, 1);
        return 0;
    }
    e->ktime_ns = bpf_ktime_get_ns();
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->ppid = BPF_CORE_READ(task, real_parent, tgid);  // task->real_parent->tgid, relocated
    e->uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    bpf_get_current_comm(&e->command, sizeof(e->command));
    if (bpf_probe_read_user_str(&e->filename, sizeof(e->filename), filename) < 0)
        e->filename[0] = '\0';
    bpf_ringbuf_submit(e, 0);
    return 0;
}
