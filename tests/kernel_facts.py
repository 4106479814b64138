"""Facts about the running kernel, read by the tests themselves, never through ``ebpf_lab``.

The doctor decides what the kernel can do; the tests check its answers against these facts,
which come straight from the kernel's own files (``/proc/kallsyms``, ``/proc/config.gz`` or
``/boot/config-$(uname -r)``, sysfs, securityfs, ``/proc/self/mounts``). A fact that cannot be
read here is ``None`` ("unknown"), never a guess, so a test can say what it can and no more.
"""

from __future__ import annotations

import functools
import gzip
import os
import platform
import re
from pathlib import Path

RELEASE = os.uname().release


@functools.cache
def kernel_config() -> dict[str, str] | None:
    """The kernel's build configuration, ``{"CONFIG_X": "y" | "m" | "n" | value}``, or None.

    Read from ``/proc/config.gz`` (CONFIG_IKCONFIG_PROC) or ``/boot/config-<release>``. Options
    marked ``is not set`` are ``"n"``.
    """
    raw: str | None = None
    try:
        raw = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode(errors="replace")
    except OSError:
        try:
            raw = Path(f"/boot/config-{RELEASE}").read_text(errors="replace")
        except OSError:
            return None
    config: dict[str, str] = {}
    for line in raw.splitlines():
        if m := re.match(r"^(CONFIG_\w+)=(.*)$", line):
            config[m.group(1)] = m.group(2).strip('"')
        elif m := re.match(r"^# (CONFIG_\w+) is not set$", line):
            config[m.group(1)] = "n"
    return config


def config(option: str) -> str | None:
    """``CONFIG_<option>`` (``"y"``, ``"m"``, ``"n"`` or a value), or None without a readable
    config. An option the file does not mention at all was not selectable: ``"n"``."""
    cfg = kernel_config()
    if cfg is None:
        return None
    return cfg.get(f"CONFIG_{option}", "n")


def config_enabled(option: str) -> bool | None:
    """Whether ``CONFIG_<option>`` is built in or a module; None without a readable config."""
    value = config(option)
    return None if value is None else value in ("y", "m")


@functools.cache
def kallsyms() -> frozenset[str] | None:
    """Every symbol name in ``/proc/kallsyms`` (names are listed even when addresses are hidden),
    or None when the kernel has no kallsyms."""
    try:
        text = Path("/proc/kallsyms").read_text()
    except OSError:
        return None
    names = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            names.add(parts[2])
    return frozenset(names) if names else None


def has_symbol(name: str) -> bool | None:
    """Whether the kernel has the function ``name`` (kallsyms), None without kallsyms."""
    names = kallsyms()
    return None if names is None else name in names


def mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of this process's mounts."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3:
            out.append((fields[1], fields[2]))
    return out


def tracefs_mount() -> Path | None:
    """Where tracefs is mounted, preferring /sys/kernel/tracing, or None."""
    points = [Path(point) for point, fstype in mounts() if fstype == "tracefs"]
    for preferred in (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")):
        if preferred in points:
            return preferred
    return None


def debugfs_mounted() -> bool:
    return any(fstype == "debugfs" and point == "/sys/kernel/debug" for point, fstype in mounts())


def lockdown() -> str | None:
    """The lockdown mode in brackets in ``/sys/kernel/security/lockdown``, or None."""
    try:
        text = Path("/sys/kernel/security/lockdown").read_text()
    except OSError:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def active_lsms() -> list[str] | None:
    """The active LSMs from ``/sys/kernel/security/lsm``, or None when it cannot be read."""
    try:
        text = Path("/sys/kernel/security/lsm").read_text().strip()
    except OSError:
        return None
    return [x for x in text.split(",") if x]


def btf_present() -> bool:
    return Path("/sys/kernel/btf/vmlinux").is_file()


def pmu(name: str) -> bool:
    """Whether the perf PMU ``name`` (kprobe, uprobe, software...) is registered."""
    return Path(f"/sys/bus/event_source/devices/{name}").is_dir()


def release_at_least(major: int, minor: int) -> bool:
    m = re.match(r"(\d+)\.(\d+)", RELEASE)
    assert m, RELEASE
    return (int(m.group(1)), int(m.group(2))) >= (major, minor)


def kprobes_built_in() -> bool | None:
    """CONFIG_KPROBES, from whichever of three independent sources can say: the config,
    ``register_kprobe`` in kallsyms, and debugfs's ``kprobes`` directory. They must agree."""
    answers = {}
    if (value := config_enabled("KPROBES")) is not None:
        answers["config"] = value
    if (value := has_symbol("register_kprobe")) is not None:
        answers["kallsyms"] = value
    if debugfs_mounted():
        try:
            os.stat("/sys/kernel/debug/kprobes")
            answers["debugfs"] = True
        except FileNotFoundError:
            answers["debugfs"] = False
        except OSError:  # debugfs refuses (lockdown): this source cannot say
            pass
    if not answers:
        return None
    assert len(set(answers.values())) == 1, f"the kernel's own facts disagree: {answers}"
    return next(iter(answers.values()))


def kprobe_interface() -> bool:
    """Whether a BPF program can be attached to a kprobe: the kprobe PMU (perf_event_open) or
    tracefs's kprobe_events (CONFIG_KPROBE_EVENTS)."""
    root = tracefs_mount()
    return pmu("kprobe") or bool(root and (root / "kprobe_events").exists())


def kprobes_attachable() -> bool:
    """Whether the kernel lets a BPF program attach to a kprobe, as far as its files tell: built
    with kprobes (or unknown), an interface to attach through, and no lockdown=confidentiality
    (which refuses kprobes)."""
    if kprobes_built_in() is False or lockdown() == "confidentiality":
        return False
    return kprobe_interface()


def headers_release() -> str | None:
    """The release the headers at /lib/modules/<release>/build were made for, or None."""
    build = Path(f"/lib/modules/{RELEASE}/build")
    for rel in ("include/config/kernel.release", "include/generated/utsrelease.h"):
        f = build / rel
        if f.is_file():
            text = f.read_text(errors="replace")
            m = re.search(r'"([^"]+)"', text)
            return m.group(1) if m else text.strip()
    m = re.search(r"linux-headers-(.+)$", os.path.realpath(build))
    return m.group(1) if m else None


MACHINE = platform.machine()
