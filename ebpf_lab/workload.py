"""Known workloads: things to do while a program is attached, that say exactly what they did.

A lesson's count is only convincing next to the truth. These helpers perform a known amount of
work and return a record of it, so a notebook (or a test) can compare what the kernel saw with
what really happened::

    done = {}
    df = ebpf_lab.exec_counts(duration=3, workload=lambda: done.update(plan=execs({1000: 5})))

Long workloads check :func:`ebpf_lab.run.stop_requested` between steps, so Stop and interrupts end
them promptly.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence

import pandas as pd

from .guards import check_uid
from .run import stop_requested

#: at most this many execs per call (a bounded lab, not a fork bomb)
MAX_EXECS = 100_000


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
    if not (os.path.isabs(program) and os.path.isfile(program) and os.access(program, os.X_OK)):
        raise ValueError(f"program must be an absolute path to an executable file, got {program!r}")
    if any(uid != os.geteuid() for uid in plan) and os.geteuid() != 0:
        raise PermissionError("running programs as other UIDs needs root: start the lab with sudo")
    if per_second is not None:
        if (
            isinstance(per_second, bool)
            or not isinstance(per_second, (int, float))
            or not (0 < per_second <= 100_000)
        ):
            raise ValueError(f"per_second must be a number in (0, 100000], got {per_second!r}")
    rows = []
    start = time.monotonic()
    for i, uid in enumerate(_order(plan, interleave)):
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
    df = pd.DataFrame(rows, columns=["pid", "uid", "program", "returncode"])
    return df.astype({"pid": "int64", "uid": "int64", "returncode": "int64"})


def _order(plan: Mapping[int, int], interleave: bool) -> list[int]:
    """The UID of each exec, in the order they run."""
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
