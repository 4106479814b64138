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
from collections.abc import Mapping, Sequence

import pandas as pd

from .guards import check_uid
from .run import stop_requested

#: at most this many execs per call (a bounded lab, not a fork bomb)
MAX_EXECS = 100_000


def execs(plan: Mapping[int, int], program: str = "/bin/true",
          args: Sequence[str] = ()) -> pd.DataFrame:
    """Run ``program`` exactly ``plan[uid]`` times as each ``uid``; return what was started.

    Each exec is a child of this Python process, run with that UID and GID (no user needs to
    exist: the kernel only deals in numbers) and no supplementary groups. Runs are sequential,
    UID by UID, in the order given.

    Args:
        plan: ``{uid: count}``, e.g. ``{1000: 5, 65534: 3}``.
        program: absolute path of the program to exec (default ``/bin/true``).
        args: extra arguments for the program.

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
    rows = []
    for uid, count in plan.items():
        for _ in range(count):
            if stop_requested():
                break
            kwargs = {}
            if uid != os.geteuid():
                kwargs = {"user": uid, "group": uid, "extra_groups": []}
            proc = subprocess.Popen([program, *args], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    close_fds=True, **kwargs)
            rows.append({"pid": proc.pid, "uid": uid, "program": program,
                         "returncode": proc.wait()})
    df = pd.DataFrame(rows, columns=["pid", "uid", "program", "returncode"])
    return df.astype({"pid": "int64", "uid": "int64", "returncode": "int64"})
