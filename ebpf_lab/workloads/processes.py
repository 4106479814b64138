"""Processes and execs: known execs as chosen UIDs, a UID nobody uses, the calling thread's name
and CPU pin."""

from __future__ import annotations

import os
import pwd
import random
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Callable, TypeVar

import pandas as pd

from ebpf_lab.core.replay import replayable
from ebpf_lab.core.run import stop_requested
from ebpf_lab.show.frames import Schema
from ebpf_lab.workloads.checks import (
    check_cpu,
    check_may_switch_to,
    check_plan,
    check_seconds,
    exec_order,
)

#: the frame :func:`execs` returns: its columns, in order, and their dtypes
EXECS_FRAME = Schema(**{"pid": "int64", "uid": "int64", "program": None, "returncode": "int64"})


@replayable
def execs(
    plan: Mapping[int, int],
    program: str = "/bin/true",
    args: Sequence[str] = (),
    per_second: float | None = None,
    interleave: bool = False,
) -> pd.DataFrame:
    """Run ``program`` exactly ``plan[uid]`` times as each ``uid``; return what was started.

    Each exec is a child of this Python process, run with that UID and GID (no user needs to
    exist: the kernel only deals in numbers) and no supplementary groups. Each exec finishes
    before the next starts.

    Args:
        plan: ``{uid: count}``, e.g. ``{1000: 5, 65534: 3}``.
        program: absolute path of the program to exec (default ``/bin/true``).
        args: extra arguments for the program.
        per_second: at most this many execs per second in all (None: as fast as possible),
            so that a rate plot shows the workload spread over time.
        interleave: take UIDs in turn (round robin) instead of one UID after the other.

    Returns:
        A frame with one row per exec: ``pid``, ``uid``, ``program``, ``returncode``.
        It has fewer rows than planned only if the run was stopped midway.

    Raises:
        ValueError: a bad UID or count, or a program that is not an executable file.
        PermissionError: switching to another UID needs root.
    """
    check_plan(plan)
    if not (os.path.isabs(program) and os.path.isfile(program) and os.access(program, os.X_OK)):
        raise ValueError(f"program must be an absolute path to an executable file, got {program!r}")
    if per_second is not None:
        check_seconds(per_second, "per_second", 100_000)
    check_may_switch_to(plan, "running programs as other UIDs")
    rows = []
    start = time.monotonic()
    for i, uid in enumerate(exec_order(plan, interleave)):
        if stop_requested():
            break
        if per_second is not None:
            wait = start + i / per_second - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        kwargs = {}
        if uid != os.geteuid():
            kwargs = {"user": uid, "group": uid, "extra_groups": []}
        proc = subprocess.Popen(
            [program, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            **kwargs,
        )
        rows.append({"pid": proc.pid, "uid": uid, "program": program, "returncode": proc.wait()})
    return EXECS_FRAME.frame(rows)


def unused_uid(low: int = 100_000, high: int = 2**31 - 1) -> int:
    """A random UID in ``[low, high)`` with no account and no process running as it right now.

    Use it for exact counts in a notebook: nothing else on the machine makes calls as that UID.
    """
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low < high <= 2**32 - 1):
        raise ValueError(f"need 0 <= low < high <= 4294967295, got low={low!r}, high={high!r}")
    busy = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        busy.update(int(u) for u in line.split()[1:])
                        break
        except OSError:
            continue
    rng = random.SystemRandom()
    for _ in range(1000):
        uid = rng.randrange(low, high)
        if uid in busy:
            continue
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise RuntimeError(f"found no unused UID in [{low}, {high})")  # pragma: no cover


def thread_comm() -> str:
    """The kernel's name (``comm``) of the calling thread, as ``bpf_get_current_comm()`` sees it.

    A process started from this thread has this comm until it execs another program.
    """
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().rstrip("\n")


_T = TypeVar("_T")


def on_cpu(cpu: int, work: Callable[[], _T]) -> _T:
    """Run ``work()`` with the calling thread pinned to ``cpu``; restore the old CPU set after.

    Processes ``work`` starts (e.g. :func:`execs`) inherit the pin, so a program can be checked
    against the CPU everything ran on::

        workload=lambda: on_cpu(1, lambda: execs({4242: 3}))
    """
    if cpu is None:
        raise ValueError("cpu must be one of the CPUs this process may use, got None")
    cpu = check_cpu(cpu)
    if not callable(work):
        raise ValueError(f"work must be a callable taking no arguments, got {work!r}")
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        return work()
    finally:
        os.sched_setaffinity(0, before)
