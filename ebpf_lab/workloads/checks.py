"""The workloads' limits, argument checks and frame shapes: pure logic, nothing is started.

Every workload checks what it is asked for here first, so bad input is a clear
:class:`ValueError` (or :class:`PermissionError`) before any child process, compiler or BPF
program is started. Nothing here needs root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ebpf_lab.core.guards import check_uid, check_whole

#: at most this many execs per call (a bounded lab, not a fork bomb)
MAX_EXECS = 100_000
#: at most this many read()/write() calls per call of :func:`writes` or :func:`reads`
MAX_CALLS = 1_000_000
#: the largest single read() or write() the workloads make, in bytes (16 MiB)
MAX_IO_SIZE = 1 << 24
#: the most CPUs :func:`getppid_loop` runs its loops on at once (``workloads/c/getppid_loop.c``)
MAX_LOOP_CPUS = 64
#: the most getppid() calls :func:`getppid_child` makes (and :func:`getppid_loop`, per CPU)
MAX_GETPPID_CALLS = 10_000_000
#: the most CPU-seconds :func:`spin_child` spins
MAX_SPIN_SECONDS = 60.0
#: the most read() calls :func:`read_stream_child` makes
MAX_STREAM_READS = 50_000_000
#: the most threads :func:`read_loop_child` splits its reads over (``workloads/c/read_loop.c``)
MAX_READ_THREADS = 64
#: the most open() calls (each kind) :func:`opens_child` makes
MAX_OPENS = 1_000_000
#: the most busy children :func:`busy_children` starts at once
MAX_BUSY_CHILDREN = 16


def check_count(value: Any, name: str, maximum: int) -> int:
    """Return ``value`` if it is a whole number from 0 to ``maximum``, else ValueError."""
    return check_whole(value, name, 0, maximum)


def check_seconds(value: Any, name: str, maximum: float, *, zero: bool = False) -> float:
    """Return ``value`` as a float if it is a number in ``(0, maximum]`` (``[0, maximum]`` with
    ``zero=True``), else ValueError."""
    number = not isinstance(value, bool) and isinstance(value, (int, float))
    if not number or not (value <= maximum and (value >= 0 if zero else value > 0)):
        interval = f"[0, {maximum:g}]" if zero else f"(0, {maximum:g}]"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def check_threads(threads: Any) -> int:
    """Return ``threads`` if it is a thread count :func:`read_loop_child` takes, else ValueError."""
    return check_whole(threads, "threads", 1, MAX_READ_THREADS)


def check_cpu(cpu: Any) -> int | None:
    """Return ``cpu`` if it is None or a CPU this process may use, else ValueError."""
    if cpu is None:
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu not in allowed:
        raise ValueError(
            f"cpu must be one of the CPUs this process may use ({allowed}), got {cpu!r}"
        )
    return cpu


def check_cpu_list(cpus: Any, maximum: int | None = None) -> list[int]:
    """Return ``cpus`` as a list if it is a non-empty list of CPUs this process may use (at most
    ``maximum`` of them), else ValueError. The same CPU may appear twice."""
    if isinstance(cpus, (str, bytes)) or not isinstance(cpus, Sequence) or not cpus:
        raise ValueError(f"cpus must be a non-empty list of CPU numbers, e.g. [0, 1], got {cpus!r}")
    if maximum is not None and len(cpus) > maximum:
        raise ValueError(f"cpus names {len(cpus)} CPUs; at most {maximum}")
    checked = []
    for cpu in cpus:
        if cpu is None:
            raise ValueError(f"cpus must be CPU numbers, got {list(cpus)!r}")
        checked.append(int(check_cpu(cpu)))  # type: ignore[arg-type]
    return checked


def check_cpus(cpus: Any) -> list[int]:
    """Return ``cpus`` as a list if it names distinct CPUs this process may use, else ValueError."""
    checked = check_cpu_list(cpus, MAX_LOOP_CPUS)
    if len(set(checked)) != len(checked):
        raise ValueError(f"cpus must name each CPU once, got {list(cpus)!r}")
    return checked


def check_sizes(sizes: Any) -> list[int]:
    """Return ``sizes`` as a list if it is a list of read()/write() sizes the workloads make."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise ValueError(f"sizes must be a list of byte counts, e.g. [1, 100, 4096], got {sizes!r}")
    if len(sizes) > MAX_CALLS:
        raise ValueError(f"{len(sizes)} calls is more than the limit of {MAX_CALLS}")
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_IO_SIZE:
            raise ValueError(
                f"each size must be a whole number of bytes from 0 to {MAX_IO_SIZE}, got {n!r}"
            )
    return list(sizes)


def check_plan(plan: Any) -> int:
    """Check an exec plan ``{uid: count}``; return the number of execs it asks for."""
    if not isinstance(plan, Mapping) or not plan:
        raise ValueError(f"plan must be a non-empty mapping {{uid: count}}, got {plan!r}")
    total = 0
    for uid, count in plan.items():
        check_uid(uid)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"exec count for uid {uid} must be a whole number >= 0, got {count!r}")
        total += count
    if total > MAX_EXECS:
        raise ValueError(f"{total} execs is more than the limit of {MAX_EXECS}")
    return total


def check_may_switch_to(uids: Any, what: str) -> None:
    """PermissionError if any of ``uids`` is not this process's UID and this is not root."""
    if any(uid != os.geteuid() for uid in uids) and os.geteuid() != 0:
        raise PermissionError(f"{what} needs root: start the lab with sudo")


def exec_order(plan: Mapping[int, int], interleave: bool) -> list[int]:
    """The UID of each exec of ``plan``, in the order they run: one UID after the other, or
    (``interleave``) taking UIDs in turn."""
    if not interleave:
        return [uid for uid, count in plan.items() for _ in range(count)]
    left = dict(plan)
    order = []
    while any(left.values()):
        for uid in left:
            if left[uid]:
                order.append(uid)
                left[uid] -= 1
    return order
