"""CPU load and system-call loops from gated Python children: a getppid() loop, a spin, a CPU
profile with two known towers (user space, then the kernel), and busy children competing for
CPUs."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import pandas as pd

from ebpf_lab.core.guards import check_required_int
from ebpf_lab.core.replay import replayable
from ebpf_lab.workloads.checks import (
    MAX_BUSY_CHILDREN,
    MAX_GETPPID_CALLS,
    MAX_SPIN_SECONDS,
    check_count,
    check_cpu_list,
    check_seconds,
)
from ebpf_lab.workloads.gated import PY_GATE, GatedChild, run_together

_PY_GETPPID = PY_GATE + "for _ in range(int(sys.argv[1])):\n    os.getppid()\n"
_PY_SPIN = (
    PY_GATE + "import time\nend = time.process_time() + float(sys.argv[1])\n"
    "while time.process_time() < end:\n    pass\n"
)
# ... and one that stops again when its work is done, before Python's (and the kernel's) exit
_PY_SPIN_STOP = _PY_SPIN + "os.kill(os.getpid(), signal.SIGSTOP)\n"

# User space, then the kernel: the interpreter's own loop (CPython's bytecode evaluator, in
# /usr/bin/python3.x), then read() from /dev/zero into a 1 MiB buffer (the kernel's code that
# fills user memory with zeros). Each phase runs for a set amount of the child's CPU time.
_PY_MIXED = (
    PY_GATE
    + r"""
import time
def interpreter_spin(seconds):
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        for i in range(10000):
            x += i * i
    return x
def kernel_zeroing(seconds):
    fd = os.open("/dev/zero", os.O_RDONLY)
    buf = bytearray(1 << 20)
    end = time.process_time() + seconds
    while time.process_time() < end:
        os.readv(fd, [buf])
    os.close(fd)
interpreter_spin(float(sys.argv[1]))
kernel_zeroing(float(sys.argv[2]))
"""
)


def _python(code: str, *args: object) -> list[str]:
    """The command line of a Python child running ``code`` with ``args``, isolated from the lab."""
    return [sys.executable, "-I", "-S", "-c", code, *map(str, args)]


def getppid_child(calls: int) -> GatedChild:
    """A gated Python child that calls ``os.getppid()`` exactly ``calls`` times once released.

    Each call is one call of libc's ``getppid()`` and one ``getppid`` system call; the child
    makes no others (Python's start-up does not call it, and it happens before the gate anyway).
    """
    check_count(calls, "calls", MAX_GETPPID_CALLS)
    argv = _python(_PY_GETPPID, calls)
    return GatedChild(argv, program="python: os.getppid() loop", work={"calls": calls})


def spin_child(cpu_seconds: float, *, stop_after: bool = False) -> GatedChild:
    """A gated Python child that, once released, spins on the CPU for ``cpu_seconds`` of CPU time.

    It uses its own CPU time (``time.process_time()``), so it spins just as long on a busy machine;
    :meth:`GatedChild.run` reports the CPU time it really used (the spin plus Python's exit; with
    ``stop_after=True`` the child stops again after the spin, and ``cpu_seconds`` is the spin
    alone).
    """
    seconds = check_seconds(cpu_seconds, "cpu_seconds", MAX_SPIN_SECONDS)
    argv = _python(_PY_SPIN_STOP if stop_after else _PY_SPIN, repr(seconds))
    work = {"spin_seconds": seconds}
    return GatedChild(argv, program="python: spin", work=work, stops_after=stop_after)


def mixed_cpu_child(user_seconds: float = 0.5, kernel_seconds: float = 0.5) -> GatedChild:
    """A gated Python child that burns CPU first in user space, then in the kernel.

    Once released it (1) runs a Python arithmetic loop for ``user_seconds`` of its CPU time,
    where the CPU executes the interpreter (``_PyEval_EvalFrameDefault`` and friends in
    ``/usr/bin/python3.x``), then (2) calls ``readv()`` on ``/dev/zero`` with a 1 MiB buffer
    for ``kernel_seconds``, where the CPU runs the kernel's ``read_iter_zero`` /
    ``iov_iter_zero``, writing zeros into the child's memory. A CPU profile of it has two
    known towers.

    Args:
        user_seconds, kernel_seconds: CPU-seconds of each phase (each 0 .. 60, sum > 0).
    """
    user = check_seconds(user_seconds, "user_seconds", MAX_SPIN_SECONDS, zero=True)
    kernel = check_seconds(kernel_seconds, "kernel_seconds", MAX_SPIN_SECONDS, zero=True)
    if user + kernel <= 0:
        raise ValueError("user_seconds + kernel_seconds must be > 0")
    return GatedChild(
        _python(_PY_MIXED, repr(user), repr(kernel)),
        program="python: interpreter loop, then read(/dev/zero)",
        work={"user_seconds": user, "kernel_seconds": kernel},
    )


@replayable
def busy_children(n: int, cpu_seconds: float, cpus: Sequence[int] | None = None) -> pd.DataFrame:
    """Start ``n`` CPU-bound children at once, optionally all on the CPUs ``cpus``; wait for all.

    Each child is a :func:`spin_child` that spins for ``cpu_seconds`` of its own CPU time. With
    more children than CPUs they take turns, and each spends time *runnable but waiting* in a
    run queue: 4 children on 1 CPU wait, together, at least 0+1+2+3 = 6 times ``cpu_seconds``
    (the least any order of turns gives), on top of whatever else the machine runs.

    Args:
        n: how many children (1 .. 16).
        cpu_seconds: CPU-seconds each spins (0 < s <= 60).
        cpus: pin every child to these CPUs (e.g. ``[0]``); None: wherever the scheduler likes.

    Returns:
        One row per child, as :func:`run_together`, plus ``cpus`` (the pin, as text).
    """
    n = check_required_int(n, "n", MAX_BUSY_CHILDREN, 4)
    check_seconds(cpu_seconds, "cpu_seconds", MAX_SPIN_SECONDS)
    pin = None if cpus is None else set(check_cpu_list(cpus))
    children: list[GatedChild] = []
    try:
        for _ in range(n):
            children.append(spin_child(cpu_seconds))
        if pin is not None:
            for c in children:
                os.sched_setaffinity(c.pid, pin)
        df = run_together(children)
    finally:
        for c in children:
            c.kill()
    df["cpus"] = ",".join(map(str, sorted(pin))) if pin is not None else "any"
    return df
