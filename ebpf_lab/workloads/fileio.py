"""File I/O: known read(), write() and open() calls, from one child process each.

:func:`writes` and :func:`reads` make calls of chosen sizes as a chosen UID on a chosen CPU;
:func:`opens_child` opens a file (and a missing one) a known number of times;
:func:`read_stream_child` is dd making one-byte reads as fast as it can.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import pandas as pd

from ebpf_lab.core.guards import check_uid
from ebpf_lab.core.replay import replayable
from ebpf_lab.core.run import stop_requested
from ebpf_lab.show.frames import Schema
from ebpf_lab.workloads.checks import (
    MAX_OPENS,
    MAX_STREAM_READS,
    check_count,
    check_cpu,
    check_may_switch_to,
    check_sizes,
)
from ebpf_lab.workloads.gated import SH_GATE, GatedChild, ReportingChild

#: the frame :func:`writes` and :func:`reads` return: its columns, in order, and their dtypes
CALLS_FRAME = Schema(
    **{
        "pid": "int64",
        "uid": "int64",
        "cpu": "Int64",
        "syscall": "category",
        "size": "int64",
    }
)

# The child that makes the calls. Everything it needs (imports, the plan on stdin, its buffer,
# the CPU pin) happens while it still runs as the parent's user; then it switches to the asked
# UID and makes exactly the planned calls and nothing else: open, the calls, close, exit. So a
# program that filters on that UID sees the planned calls and only them.
_IO_CHILD = r"""
import json, os, sys
plan = json.loads(sys.stdin.buffer.read())
sizes = plan["sizes"]
buf = memoryview(bytearray(max(sizes, default=0)))
if plan["cpu"] is not None:
    os.sched_setaffinity(0, {plan["cpu"]})
if plan["uid"] is not None:
    os.setgroups([])
    os.setgid(plan["uid"])
    os.setuid(plan["uid"])
if plan["op"] == "write":
    fd = os.open("/dev/null", os.O_WRONLY)
    for n in sizes:
        if os.write(fd, buf[:n]) != n:
            os._exit(3)
else:
    fd = os.open("/dev/zero", os.O_RDONLY)
    for n in sizes:
        if len(os.read(fd, n)) != n:
            os._exit(3)
os.close(fd)
os._exit(0)
"""


def _io_calls(op: str, sizes: Sequence[int], uid: int | None, cpu: int | None) -> pd.DataFrame:
    sizes = check_sizes(sizes)
    if uid is not None:
        check_uid(uid)
        check_may_switch_to([uid], "making calls as another UID")
    cpu = check_cpu(cpu)
    if stop_requested():
        return CALLS_FRAME.frame([])
    plan = json.dumps({"op": op, "sizes": sizes, "uid": uid, "cpu": cpu}).encode()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _IO_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        close_fds=True,
    )
    _out, err = proc.communicate(plan)
    if proc.returncode != 0:
        raise RuntimeError(
            f"the {op}() workload child failed (exit {proc.returncode}): "
            f"{err.decode(errors='replace').strip()[-500:]}"
        )
    uid = os.geteuid() if uid is None else uid
    return CALLS_FRAME.frame(
        {"pid": proc.pid, "uid": uid, "cpu": cpu, "syscall": op, "size": sizes}
    )


@replayable
def writes(sizes: Sequence[int], *, uid: int | None = None, cpu: int | None = None) -> pd.DataFrame:
    """Make one ``write()`` system call of each size in ``sizes`` to ``/dev/null``, in order.

    The calls come from one child process, which first pins itself to ``cpu`` and switches to
    ``uid``, and then makes exactly these calls: a program filtering on that UID sees them and
    nothing else (the child's start-up, as the caller's user, is not counted). ``/dev/null``
    accepts every byte, so each call writes exactly its size.

    Args:
        sizes: bytes per call, e.g. ``[1, 100, 100, 4096]`` (0 .. 16 MiB each, at most 1,000,000
            calls).
        uid: the UID making the calls (None: this process's UID). No account is needed.
        cpu: run the child on this CPU only (None: wherever the scheduler puts it).

    Returns:
        One row per call, in order: ``pid`` (the child), ``uid``, ``cpu`` (<NA> when not pinned),
        ``syscall`` ("write"), ``size``. Empty if the run was stopped before it started.

    Raises:
        ValueError: bad sizes, uid or cpu. PermissionError: another UID without root.
        RuntimeError: the child failed.
    """
    return _io_calls("write", sizes, uid, cpu)


@replayable
def reads(sizes: Sequence[int], *, uid: int | None = None, cpu: int | None = None) -> pd.DataFrame:
    """Make one ``read()`` system call of each size in ``sizes`` from ``/dev/zero``, in order.

    Like :func:`writes`: one child, pinned to ``cpu``, switched to ``uid``, then exactly these
    calls. ``/dev/zero`` always fills the whole buffer, so each call reads exactly its size.

    Returns:
        One row per call: ``pid``, ``uid``, ``cpu``, ``syscall`` ("read"), ``size``.
    """
    return _io_calls("read", sizes, uid, cpu)


def read_stream_child(reads: int) -> GatedChild:
    """A gated ``dd if=/dev/zero of=/dev/null bs=1 count=<reads>``: a fast stream of syscalls.

    Once released, dd makes exactly ``reads`` one-byte ``read()`` calls on file descriptor 0
    (``/dev/zero``) and as many ``write()`` calls on fd 1, as fast as it can (about a million
    reads per second here). Its own start-up reads (the dynamic loader's, on other fds) come after
    the gate too, so filter on ``fd == 0`` to see exactly the ``reads`` calls.
    """
    check_count(reads, "reads", MAX_STREAM_READS)
    dd = shutil.which("dd") or "/bin/dd"
    argv = ["/bin/sh", "-c", SH_GATE, "ebpf-lab-gate", dd, "if=/dev/zero", "of=/dev/null"]
    argv += ["bs=1", f"count={reads}", "status=none"]
    return GatedChild(argv, program="dd if=/dev/zero of=/dev/null bs=1", work={"reads": reads})


# Everything that is not the work happens before the gate: imports, and opening the report file
# the child writes its own timing to. After the gate: exactly `opens` openat() calls that succeed
# (each followed by a close()) and `missing` that fail with ENOENT, then one write() and one
# close() for the report. No other openat(). (With a 6th argument "nogate" it does not stop:
# for running it under another tracer, e.g. strace.)
_PY_OPENS = r"""
import os, signal, sys, time
path, missing, n, m = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
report = open(sys.argv[5], "w")
clock = time.perf_counter_ns
if sys.argv[6:] != ["nogate"]:
    os.kill(os.getpid(), signal.SIGSTOP)
t0 = clock()
for _ in range(n):
    os.close(os.open(path, os.O_RDONLY))
for _ in range(m):
    try:
        os.close(os.open(missing, os.O_RDONLY))
    except FileNotFoundError:
        pass
t1 = clock()
report.write(str(t1 - t0))
report.close()
"""


def opens_argv(
    path: str, missing_path: str, opens: int, missing: int, report: str, *, gate: bool = True
) -> list[str]:
    """The command line of the open() loop child (``gate=False``: it does not stop itself)."""
    argv = [sys.executable, "-I", "-S", "-c", _PY_OPENS, path, missing_path]
    return argv + [str(opens), str(missing), report] + ([] if gate else ["nogate"])


class OpensChild(ReportingChild):
    """A :class:`GatedChild` that opens files; :meth:`run` adds the child's own loop timing.

    The child measures its open() loop itself (``time.perf_counter_ns`` around the loop, read
    through the vDSO, so no system call), which leaves out Python's start-up and exit: the
    column ``loop_seconds`` is the time the open() calls took (NaN if killed), and nothing else.
    """

    def _columns(self, text: str | None) -> dict[str, float]:
        try:
            return {"loop_seconds": int(text or "nan") / 1e9}
        except ValueError:
            return {"loop_seconds": float("nan")}


def opens_child(
    path: str, opens: int, missing: int = 0, *, missing_path: str | None = None
) -> OpensChild:
    """A gated Python child: ``opens`` opens of ``path``, then ``missing`` opens of a missing file.

    Once released (:meth:`GatedChild.run`), the child calls ``os.open(path, O_RDONLY)`` and
    ``os.close()`` ``opens`` times, then ``os.open(missing_path, O_RDONLY)`` ``missing`` times,
    each failing with ``ENOENT``. Each ``os.open`` is exactly one ``openat()`` system call, and
    the child makes no other ``openat()`` after the gate, so a program filtering on ``child.pid``
    sees exactly ``opens + missing`` calls.

    Args:
        path: an existing regular file the child may read (e.g. ``/etc/hostname``).
        opens: successful opens (0 .. 1,000,000).
        missing: opens of a file that does not exist (0 .. 1,000,000).
        missing_path: the path that must not exist (default: a fresh name in the temporary
            directory).

    Returns:
        An :class:`OpensChild` (a :class:`GatedChild`); its ``run()`` row has ``opens``,
        ``missing``, ``path``, ``missing_path``, the usual columns and ``loop_seconds``.

    Raises:
        ValueError: ``path`` is not a readable regular file, ``missing_path`` exists, or a count
            is out of range.
    """
    check_count(opens, "opens", MAX_OPENS)
    check_count(missing, "missing", MAX_OPENS)
    if not isinstance(path, str) or not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError(f"path must be an existing, readable regular file, got {path!r}")
    if missing_path is None:
        missing_path = os.path.join(
            tempfile.gettempdir(), f"ebpf-lab-missing-{os.getpid()}-{random.getrandbits(48):x}"
        )
    if not isinstance(missing_path, str) or os.path.lexists(missing_path):
        raise ValueError(f"missing_path must be a path that does not exist, got {missing_path!r}")
    report = OpensChild.new_report("opens")
    argv = opens_argv(path, missing_path, opens, missing, report)
    work = {"opens": opens, "missing": missing, "path": path, "missing_path": missing_path}
    return OpensChild(argv, report=report, program="python: os.open() loop", work=work)
