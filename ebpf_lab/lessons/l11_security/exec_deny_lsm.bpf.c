// exec_deny_lsm.bpf.c: refuse to exec the paths on a denylist (enforcement, with BPF LSM).
//
// Linux Security Modules (SELinux, AppArmor, landlock, ...) are asked "may this happen?" at fixed
// points in the kernel, the LSM hooks. With CONFIG_BPF_LSM and "bpf" in the list of active LSMs,
// a BPF program can answer too: returning 0 allows, returning a negative errno refuses, and the
// system call fails with that error.
//
// bprm_check_security runs during execve(), after the file has been opened and before the new
// program replaces the old one. Denying here makes execve() fail with EPERM and leaves the calling
// process running its old program. The hook gets the `struct linux_binprm` being built for the
// exec. Its `filename` member (a `const char *`: the path as given to execve) is read at the byte
// offset the lab takes from the running kernel's BTF (BPRM_FILENAME_OFF), never through header
// files of another kernel version.
//
// BCC's LSM_PROBE() loads and attaches the program as soon as the C is compiled; it stays
// attached until the lab releases it. While attached it applies to every process on the machine.

#include <uapi/linux/errno.h>

#define PATH_LEN 128

struct linux_binprm;                // only the pointer is used: no layout from any header

struct path_t {
    char path[PATH_LEN];
};
BPF_HASH(denylist, struct path_t, u32, DENY_MAX);   // path -> its index in the denylist
BPF_HASH(denied, struct path_t, u64, DENY_MAX);     // path -> execs refused

LSM_PROBE(bprm_check_security, struct linux_binprm *bprm)
{
    struct path_t key = {};
    u64 filename = 0;
    bpf_probe_read_kernel(&filename, sizeof(filename), (void *)((u64)bprm + BPRM_FILENAME_OFF));
    bpf_probe_read_kernel_str(&key.path, sizeof(key.path), (void *)filename);

    if (!denylist.lookup(&key))
        return 0;                   // not on the list: allow (other LSMs may still refuse)

    u64 zero = 0;
    u64 *n = denied.lookup_or_try_init(&key, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return -EPERM;                  // refuse: execve() returns -1 with errno EPERM
}
