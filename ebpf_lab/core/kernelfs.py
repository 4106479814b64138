"""Facts about the running kernel that need no BPF program: release, tracefs, headers, kprobes.

These are cheap file checks used to decide things before anything loads. The full, probing answer
("can this kernel really do X?") is :func:`ebpf_lab.doctor`, which loads tiny programs.
"""

from __future__ import annotations

import gzip
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")


def release() -> str:
    """The running kernel's release, as ``uname -r`` prints it."""
    return platform.release()


def held_prog_ids(pid: int | str = "self") -> set[int]:
    """Ids of the BPF programs process ``pid`` holds open now (its fds' ``prog_id`` in fdinfo).

    A process that ended, or one whose fds cannot be read, holds none.
    """
    ids: set[int] = set()
    try:
        entries = list(Path(f"/proc/{pid}/fdinfo").iterdir())
    except OSError:
        return ids
    for entry in entries:
        try:
            text = entry.read_text()
        except OSError:
            continue
        for row in text.splitlines():
            if row.startswith("prog_id:"):
                ids.add(int(row.split()[1]))
    return ids


def tracefs_root() -> Path | None:
    """Where tracefs is mounted (the directory holding ``trace_pipe``), or None."""
    for path in TRACEFS_CANDIDATES:
        try:
            if (path / "trace_pipe").exists():
                return path
        except OSError:  # not root: tracefs is mode 700
            continue
    return None


def require_tracefs() -> Path:
    """Return the tracefs root or raise an error that says how to mount it."""
    root = tracefs_root()
    if root is None:
        from ebpf_lab.core.errors import UnsupportedFeature

        raise UnsupportedFeature(
            "tracefs",
            "tracefs is not mounted (no /sys/kernel/tracing/trace_pipe)",
            "`sudo mount -t tracefs tracefs /sys/kernel/tracing` (or rerun `sudo make lab`, "
            "whose setup mounts it)",
        )
    return root


#: the kprobe PMU: BPF programs attach to kprobes through perf_event_open (CONFIG_KPROBE_EVENTS)
KPROBE_PMU = Path("/sys/bus/event_source/devices/kprobe")
#: debugfs lists the kprobes in place here when the kernel has CONFIG_KPROBES (and debugfs is up)
DEBUGFS_KPROBES = Path("/sys/kernel/debug/kprobes")


def kprobes_available() -> tuple[bool, str]:
    """Whether a BPF program can be attached to a kprobe here, and why (files, no program).

    A kprobe is attached through the kprobe PMU or tracefs's ``kprobe_events``; both exist only
    when the kernel was built with CONFIG_KPROBES and CONFIG_KPROBE_EVENTS.
    """
    if KPROBE_PMU.is_dir():
        return True, f"kprobe PMU present ({KPROBE_PMU})"
    root = tracefs_root()
    if root is not None and (root / "kprobe_events").exists():
        return True, f"{root}/kprobe_events present"
    if root is None:
        return False, "no kprobe PMU and tracefs is not mounted, so kprobe_events cannot be checked"
    missing = f"no kprobe PMU ({KPROBE_PMU}) and no {root}/kprobe_events"
    if os.path.isdir(DEBUGFS_KPROBES):
        return False, (
            f"{missing}: the kernel has kprobes ({DEBUGFS_KPROBES} exists) but was built "
            "without CONFIG_KPROBE_EVENTS, which BPF programs need to attach to them"
        )
    return False, f"{missing}: the kernel was built without CONFIG_KPROBES"


def syscall_tracepoint_exists(name: str) -> bool:
    """Whether ``syscalls:sys_enter_<name>`` exists in tracefs."""
    root = tracefs_root()
    return bool(root and (root / "events" / "syscalls" / f"sys_enter_{name}").is_dir())


@dataclass(frozen=True)
class HeaderStatus:
    """What ``/lib/modules/$(uname -r)/build`` holds.

    ``state`` is ``"matched"`` (headers for this kernel), ``"fallback"`` (another version's headers
    linked in: helper-only programs compile, struct layouts are wrong) or ``"missing"``.
    """

    state: str
    version: str | None
    path: str | None

    @property
    def detail(self) -> str:
        if self.state == "matched":
            return f"matched: headers for {release()} at {self.path}"
        if self.state == "fallback":
            return (
                f"fallback from version {self.version} at {self.path}: "
                "helper-only programs compile, "
                "struct field reads through these headers are wrong (the lab reads BTF instead)"
            )
        return (
            f"missing: no /lib/modules/{release()}/build; rerun `sudo make lab` "
            "(its setup installs or links headers)"
        )


def _headers_version(build: Path) -> str | None:
    """The kernel release the headers at ``build`` were made for."""
    for rel in ("include/config/kernel.release", "include/generated/utsrelease.h"):
        f = build / rel
        if f.is_file():
            text = f.read_text(errors="replace")
            m = re.search(r'"([^"]+)"', text)
            return m.group(1) if m else text.strip()
    m = re.search(r"linux-headers-(.+)$", os.path.realpath(build))
    return m.group(1) if m else None


def header_status() -> HeaderStatus:
    """Whether headers for this kernel are installed, linked from another version, or absent."""
    build = Path("/lib/modules") / release() / "build"
    if not build.exists():
        return HeaderStatus("missing", None, None)
    version = _headers_version(build)
    real = os.path.realpath(build)
    if version == release():
        return HeaderStatus("matched", version, real)
    return HeaderStatus("fallback", version, real)


def lockdown_mode() -> str | None:
    """The lockdown mode in force (``none``, ``integrity``, ``confidentiality``), if known."""
    f = Path("/sys/kernel/security/lockdown")
    try:
        m = re.search(r"\[(\w+)\]", f.read_text())
    except OSError:
        return None
    return m.group(1) if m else None


def active_lsms() -> list[str]:
    """The Linux Security Modules enabled at boot (``/sys/kernel/security/lsm``)."""
    try:
        return [x for x in Path("/sys/kernel/security/lsm").read_text().strip().split(",") if x]
    except OSError:
        return []


def config_option(option: str) -> str | None:
    """``CONFIG_<option>`` of the running kernel's build configuration.

    Read from ``/proc/config.gz`` or ``/boot/config-$(uname -r)``. Returns the value
    (``"y"``, ``"250"``...), ``"not set"``, or None when no configuration file is readable or
    it does not mention the option.
    """
    for path in (Path("/proc/config.gz"), Path(f"/boot/config-{release()}")):
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode(errors="replace")
        m = re.search(rf"^CONFIG_{option}=(.*)$", text, re.M)
        if m:
            return m.group(1).strip('"')
        if re.search(rf"^# CONFIG_{option} is not set$", text, re.M):
            return "not set"
        return None
    return None


def cpu_emulated() -> bool:
    """True when the CPU is emulated in software (QEMU's TCG: ``model name : QEMU TCG CPU``).

    There every instruction is translated, and timer interrupts arrive late: a periodic sampler
    then counts fewer samples than its CPU time allows (perf counts one sample per late tick).
    Hardware virtualization (KVM) and bare metal are not emulated.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return "QEMU TCG" in line
    except OSError:
        pass
    return False
