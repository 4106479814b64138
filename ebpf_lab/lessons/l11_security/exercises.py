"""Lesson 11 (security): checkable exercises. The check runs exec_watch() in the kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from ebpf_lab.classroom.checks import Right, Wrong, exercise
from ebpf_lab.core.errors import UnsupportedFeature

#: the PATH the workload's shell-style start of python3 searches
SEARCH_PATH = "/usr/bin:/bin"


@exercise(
    "11.3",
    title="A watchlist for python3",
    asks="a list of absolute paths for exec_watch() such that every one of three ways to start "
    "Python raises an alert: `python3 -c pass` found through PATH=/usr/bin:/bin, "
    "`/usr/bin/python3 -c pass`, and the file /usr/bin/python3 really is "
    "(os.path.realpath) started by that name",
    needs_kernel=True,
)
def python_watchlist(answer: Any) -> Right:
    from ebpf_lab.lessons.l11_security.exec_watch import exec_watch

    found = shutil.which("python3", path=SEARCH_PATH)
    if found is None:
        raise UnsupportedFeature("python3", f"there is no python3 in {SEARCH_PATH} here", "")
    real = os.path.realpath(found)
    ways = {
        f"python3 (found through PATH: {found})": ["python3", "-c", "pass"],
        found: [found, "-c", "pass"],
        f"{real} (the file itself)": [real, "-c", "pass"],
    }
    pids: dict[str, int] = {}

    def run() -> None:
        for label, argv in ways.items():
            proc = subprocess.Popen(argv, env={"PATH": SEARCH_PATH}, stdin=subprocess.DEVNULL)
            proc.wait()
            pids[label] = proc.pid

    if isinstance(answer, str):
        raise Wrong(f"give a list of paths, e.g. [{answer!r}], not one string")
    try:
        alerts = exec_watch(list(answer), duration=0.2, workload=run, live=False)
    except (TypeError, ValueError) as err:
        raise Wrong(f"exec_watch() refused your watchlist: {err}") from None
    alerted = set(alerts["pid"])
    missed = [label for label, pid in pids.items() if pid not in alerted]
    if not missed:
        return Right(
            f"right: all three starts raised an alert. Two paths were needed: {found} and "
            f"{real}. python3 found through PATH is execve'd as {found}; the symlink is not "
            "followed before the match, so the real file's own name is a different key",
            alerts=alerts,
        )
    if missed == [f"{real} (the file itself)"]:
        raise Wrong(
            f"{real}, started by its own name, raised no alert: {found} is a symlink to it, "
            "and the watchlist matches the path given to execve() byte for byte. Watch the "
            "real file's name too",
            alerts=alerts,
        )
    if real in answer and found not in answer:
        raise Wrong(
            f"only the real file's name is watched: starting {found} (a symlink) or python3 "
            f"through PATH passes {found} to execve(), and that string is what is matched",
            alerts=alerts,
        )
    raise Wrong(
        f"no alert for: {'; '.join(missed)}. A shell finds `python3` in PATH and passes the full "
        f"path ({found}) to execve(); exec_watch() compares that string with the watchlist",
        alerts=alerts,
    )
