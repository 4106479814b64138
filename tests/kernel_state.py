"""What this process holds in the kernel, for leak checks that other processes cannot disturb.

bpftool here is built without BPF skeletons, so ``bpftool prog show`` has no ``pids`` field.
Instead, every BPF program, map and perf event a process holds is an open file descriptor, and
``/proc/self/fdinfo/N`` names the program or map id. A run that leaks leaves one of these behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Held:
    prog_ids: frozenset[int]
    map_ids: frozenset[int]
    perf_events: int
    fds: frozenset[int]
    instances: tuple[str, ...]
    netns: tuple[str, ...]

    def diff(self, other: Held, fds: bool = True) -> str:
        """What ``other`` holds that this did not ("" when nothing); ``fds=False`` ignores
        plain file descriptors (e.g. a Jupyter client's sockets)."""
        parts = []
        for name in ("prog_ids", "map_ids", "fds") if fds else ("prog_ids", "map_ids"):
            new = getattr(other, name) - getattr(self, name)
            if new:
                parts.append(f"new {name}: {sorted(new)}")
        if other.perf_events != self.perf_events:
            parts.append(f"perf events {self.perf_events} -> {other.perf_events}")
        # only new ones are leaks: any run removes what killed processes left (core.leftovers)
        for name, label in (("instances", "tracefs instances"), ("netns", "netns")):
            new = sorted(set(getattr(other, name)) - set(getattr(self, name)))
            if new:
                parts.append(f"new {label}: {new}")
        return "; ".join(parts)


def held() -> Held:
    """Programs, maps, perf events and fds this process holds, plus the lab's tracefs instances."""
    prog_ids, map_ids, perf, fds = set(), set(), 0, set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            info = open(f"/proc/self/fdinfo/{fd}").read()
        except OSError:
            continue  # the fd used by listdir itself, or closed meanwhile
        fds.add(fd)
        for line in info.splitlines():
            if line.startswith("prog_id:"):
                prog_ids.add(int(line.split()[1]))
            elif line.startswith("map_id:"):
                map_ids.add(int(line.split()[1]))
        if target == "anon_inode:[perf_event]":
            perf += 1
    from ebpf_lab.core.tracefs import lab_instances

    instances = tuple(p.name for p in lab_instances() if _ours_or_orphaned(p.name.split("_")[2]))
    try:
        names = os.listdir("/var/run/netns")
    except OSError:
        names = []
    netns = tuple(
        sorted(n for n in names if n.startswith("ebpf-lab") and _ours_or_orphaned(n.split("-")[-1]))
    )
    return Held(frozenset(prog_ids), frozenset(map_ids), perf, frozenset(fds), instances, netns)


def _ours_or_orphaned(pid_text: str) -> bool:
    """Whether a lab object named after process ``pid_text`` is this process's, or left behind
    by a process that no longer exists (a leak). Live other processes' objects are theirs."""
    if not pid_text.isdigit():
        return True
    pid = int(pid_text)
    return pid == os.getpid() or not os.path.exists(f"/proc/{pid}")


def settle(before: Held, timeout: float = 3.0, fds: bool = True) -> Held:
    """Wait (the kernel frees objects a moment after their last fd closes) until back to before."""
    deadline = time.monotonic() + timeout
    while True:
        now = held()
        if not before.diff(now, fds) or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def global_prog_ids() -> set[int]:
    """Every BPF program id loaded on the machine (``bpftool prog show``)."""
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {p["id"] for p in json.loads(out or "[]")}


def global_map_ids() -> set[int]:
    """Every BPF map id on the machine (``bpftool map show``)."""
    out = subprocess.run(
        ["bpftool", "-j", "map", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {m["id"] for m in json.loads(out or "[]")}
