// syscall_prefix.bpf.c: BCC's syscall__ prefix, which turns a syscall's arguments into C
// parameters.
//
// A kprobe on a system call's kernel entry (__x64_sys_execve on x86-64) gets one struct pt_regs
// whose registers hold... another struct pt_regs pointer, the user's registers: on kernels with
// syscall wrappers (x86-64 since 4.17) the arguments are one level further away than
// PT_REGS_PARM1(ctx). A function whose name starts with syscall__ is rewritten by BCC so that
// its parameters after ctx ARE the system call's arguments, read from the right place on this
// kernel. Here: execve(const char *filename, argv, envp): filename is a user-space pointer, read
// with bpf_probe_read_user_str().
//
// The lab attaches it as a kprobe on the execve syscall ("syscall:execve"). Only execs by the
// UID in `target_uid` are kept: each adds 1 to the count of its filename.

#include <uapi/linux/ptrace.h>

struct name_t {
    char filename[64];
};

BPF_ARRAY(target_uid, u32, 1);        // written by the lab before anything is attached
BPF_HASH(execs, struct name_t, u64, 64);

int syscall__execve(struct pt_regs *ctx, const char __user *filename,
                    const char __user *const __user *argv,
                    const char __user *const __user *envp)
{
    u32 zero = 0;
    u32 *uid = target_uid.lookup(&zero);
    if (!uid || (u32)bpf_get_current_uid_gid() != *uid)
        return 0;
    struct name_t key = {};
    bpf_probe_read_user_str(&key.filename, sizeof(key.filename), filename);
    execs.increment(key);
    return 0;
}
