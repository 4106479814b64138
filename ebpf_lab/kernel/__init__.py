"""The kernel in front of you: what it can do, and facts read from it.

``features`` (the feature table: each feature's meaning, probe and dependencies, probed and
cached on its own: supported, unsupported or inconclusive, with the reason), ``probes`` (the tiny
programs those probes load), ``doctor`` (the table as a DataFrame), ``btf`` (struct offsets from
the kernel's own BTF), ``prose`` (sentences about this kernel computed at run time for the
notebooks), ``platforms`` (known-bad distribution/BCC/LLVM combinations), ``bpftool``
(``bpftool -j`` read into rows; the run-time statistics sysctl for a block). The raw facts (release,
tracefs, kprobes, lockdown, LSMs, config options, emulated CPU) are re-exported here from
:mod:`ebpf_lab.core.kernelfs`, so ``ebpf_lab.kernel.release()`` works.

May import: :mod:`ebpf_lab.core`.
"""

from ebpf_lab.core.kernelfs import (
    BTF_VMLINUX,
    HeaderStatus,
    active_lsms,
    config_option,
    cpu_emulated,
    header_status,
    kprobes_available,
    lockdown_mode,
    release,
    require_tracefs,
    syscall_tracepoint_exists,
    tracefs_root,
)

__all__ = [
    "BTF_VMLINUX",
    "HeaderStatus",
    "active_lsms",
    "config_option",
    "cpu_emulated",
    "header_status",
    "kprobes_available",
    "lockdown_mode",
    "release",
    "require_tracefs",
    "syscall_tracepoint_exists",
    "tracefs_root",
]
