// helper_probe.bpf.c: one tiny function per helper, each calling just that helper.
//
// The lab loads every function as several program types (tracepoint, raw_tracepoint, kprobe,
// perf_event, xdp, ...) and never attaches any. Loading is enough: the verifier checks each
// helper call against the list of helpers allowed for the program's type, and refuses the
// program with "program of this type cannot use helper ..." (or "... not supported for
// program type N") when the helper is not on it. What a program type may call depends on the
// kernel version, its configuration, lockdown and your privileges: ask the kernel, as here.
//
// The arguments are dummies (NULL pointers): these programs are never attached, so never run.

int probe_ktime_get_ns(void *ctx) { bpf_ktime_get_ns(); return 0; }

int probe_get_current_pid_tgid(void *ctx) { bpf_get_current_pid_tgid(); return 0; }

int probe_get_current_uid_gid(void *ctx) { bpf_get_current_uid_gid(); return 0; }

int probe_get_current_comm(void *ctx)
{
    char comm[16];
    bpf_get_current_comm(&comm, sizeof(comm));
    return 0;
}

int probe_probe_read_user_str(void *ctx)
{
    char buf[16];
    bpf_probe_read_user_str(&buf, sizeof(buf), (void *)0);
    return 0;
}

int probe_get_smp_processor_id(void *ctx) { bpf_get_smp_processor_id(); return 0; }

int probe_trace_printk(void *ctx) { bpf_trace_printk("never printed"); return 0; }

int probe_get_prandom_u32(void *ctx) { bpf_get_prandom_u32(); return 0; }

// the old, unsplit probe_read: tracing programs only
int probe_probe_read(void *ctx)
{
    char buf[8];
    bpf_probe_read(&buf, sizeof(buf), (void *)0);
    return 0;
}

// a stack trace needs a task and a place in the kernel: tracing programs
int probe_get_stack(void *ctx)
{
    char buf[64];
    bpf_get_stack(ctx, &buf, sizeof(buf), 0);
    return 0;
}

// the address of the probed function: only where there is one (kprobes)
int probe_get_func_ip(void *ctx) { bpf_get_func_ip(ctx); return 0; }

// the counter value of the perf event that fired: perf_event programs only
int probe_perf_prog_read_value(void *ctx)
{
    struct bpf_perf_event_value value = {};
    bpf_perf_prog_read_value(ctx, &value, sizeof(value));
    return 0;
}

// send the packet elsewhere: networking programs only
int probe_redirect(void *ctx) { bpf_redirect(1, 0); return 0; }

// move the start of the packet: XDP only
int probe_xdp_adjust_head(void *ctx) { bpf_xdp_adjust_head(ctx, 0); return 0; }

// the owner of the packet's socket: socket filters and tc
int probe_get_socket_uid(void *ctx) { bpf_get_socket_uid(ctx); return 0; }

// write into a process's memory: tracing programs, unless lockdown forbids it
int probe_probe_write_user(void *ctx)
{
    u64 value = 0;
    bpf_probe_write_user((void *)0, &value, sizeof(value));
    return 0;
}
