// hello.bpf.c: say "Hello World!" every time any process calls execve.
// (The seed's hello.py.)
//
// bpf_trace_printk() writes a line into the kernel's trace buffer. That buffer is shared by
// every BPF program on the machine, so each line carries a tag that is different for every run.
// The lab writes the run's tag into the map run_tag before it attaches the program, keeps only
// lines with its tag and strips the tag off again: the message column says "Hello World!".
// (The tag comes through a map, not through the program's text, so the text is the same for
// every run and is compiled only once.)
// The tag also carries the caller's name (comm), so the lab need not guess it: the trace buffer
// only knows names of tasks it saw being scheduled, and shows "<...>" for the others.

BPF_ARRAY(run_tag, u32, 1);

static __always_inline int say_hello(void)
{
    int zero = 0;
    u32 *tag = run_tag.lookup(&zero);
    char comm[16];

    if (tag == NULL) // cannot happen (key 0 of a one-entry array), but the verifier wants it
        return 0;
    bpf_get_current_comm(&comm, sizeof(comm));
    bpf_trace_printk("[ebpf-lab %x %s] Hello World!", *tag, comm);
    return 0;
}

// The seed's way: a kprobe on the execve system call (needs CONFIG_KPROBES).
int hello_kprobe(struct pt_regs *ctx)
{
    return say_hello();
}

// The stable way: the syscalls:sys_enter_execve tracepoint.
int hello_tracepoint(void *ctx)
{
    return say_hello();
}
