"""Workloads run by the lab's small C helpers (``ebpf_lab/workloads/c/``, built on first use by
:mod:`ebpf_lab.workloads.native`): fast execs, getppid() loops on several CPUs at once, a
threaded stream of one-byte reads, and a loop of calls of the lab's own function with a USDT
probe in each."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Mapping, Sequence

import pandas as pd

from ebpf_lab.core.errors import HelperBuildError
from ebpf_lab.core.guards import check_uid
from ebpf_lab.core.replay import replayable
from ebpf_lab.core.run import stop_requested
from ebpf_lab.show.frames import Schema
from ebpf_lab.workloads import native
from ebpf_lab.workloads.checks import (
    MAX_CALLS,
    MAX_EXECS,
    MAX_GETPPID_CALLS,
    MAX_STREAM_READS,
    check_count,
    check_cpus,
    check_threads,
)
from ebpf_lab.workloads.gated import GatedChild, ReportingChild

#: the frame :func:`getppid_loop` returns: its columns, in order, and their dtypes
LOOPS_FRAME = Schema(
    **{
        "uid": "int64",
        "cpu": "int64",
        "calls": "int64",
        "start_ns": "int64",
        "end_ns": "int64",
        "loop_seconds": "float64",
    }
)


def _run_native(argv: list[str], what: str, why: Mapping[int, str]) -> str:
    """Run a native helper (``argv``), ending it early on Stop or an interrupt; return its
    stdout. ``what`` names it in errors, ``why`` explains its exit codes."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    with proc:
        while proc.poll() is None:  # Stop or an interrupt ends the loop early
            if stop_requested():
                proc.kill()
                proc.wait()
                raise RuntimeError(f"{what} was stopped")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.05)
        stdout = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {why.get(proc.returncode, proc.returncode)}")
    return stdout


def fast_execs(uid: int, count: int) -> pd.DataFrame:
    """Exec ``/bin/true`` exactly ``count`` times as ``uid``, fast, from a small C helper.

    :func:`execs` runs each exec from this Python process, and to switch UID Python forks the
    whole process (~20 ms per exec for a lab kernel of a few hundred MB). This runs
    ``ebpf_lab/workloads/c/exec_loop.c`` (built with gcc on first use) instead: it switches to
    ``uid`` once, then vforks and execs ``/bin/true`` ``count`` times, one after the other
    (~0.7 ms each here). A program keeping execve calls by ``uid`` sees exactly ``count``.

    Returns:
        One row: ``uid``, ``execs``, ``loop_seconds`` (the helper's own timing of its loop),
        ``execs_per_s``.

    Raises:
        ValueError: a bad UID or count (before anything is built or started).
        HelperBuildError: the helper could not be built (no gcc: says what to install).
        RuntimeError: the helper failed (it says how).
    """
    check_uid(uid)
    check_count(count, "count", MAX_EXECS)
    binary = native.build("exec_loop")
    stdout = _run_native(
        [str(binary), str(count), str(uid)],
        f"exec_loop {count} {uid}",
        {2: "could not switch to the UID (not root?)", 3: "an exec of /bin/true failed"},
    )
    seconds = int(stdout.strip()) / 1e9
    return pd.DataFrame(
        {
            "uid": [uid],
            "execs": [count],
            "loop_seconds": [seconds],
            "execs_per_s": [count / seconds if seconds > 0 else float("nan")],
        }
    )


def parse_loops(stdout: str, uid: int, calls: int, cpus: Sequence[int]) -> pd.DataFrame:
    """:func:`getppid_loop`'s frame from the helper's report (``"<cpu> <calls> <start_ns>
    <end_ns>"`` a line); RuntimeError unless it ran ``calls`` calls on each of ``cpus``."""
    rows = []
    try:
        for line in stdout.splitlines():
            cpu, done, start, end = (int(x) for x in line.split())
            rows.append(
                {
                    "uid": uid,
                    "cpu": cpu,
                    "calls": done,
                    "start_ns": start,
                    "end_ns": end,
                    "loop_seconds": (end - start) / 1e9,
                }
            )
    except ValueError:
        rows = []
    if [r["cpu"] for r in rows] != list(cpus) or any(r["calls"] != calls for r in rows):
        raise RuntimeError(f"getppid_loop reported {stdout!r} for {calls} calls on {list(cpus)}")
    return LOOPS_FRAME.frame(rows)


@replayable
def getppid_loop(uid: int, calls: int, cpus: Sequence[int]) -> pd.DataFrame:
    """Exactly ``calls`` getppid() calls as ``uid`` on each CPU of ``cpus``, all at the same time.

    Runs ``ebpf_lab/workloads/c/getppid_loop.c`` (built with gcc on first use): it switches to
    ``uid``, starts one thread per CPU, pins each to its CPU (``sched_setaffinity``) and, once
    all are pinned, each makes ``calls`` getppid() system calls as fast as it can. So ``uid``
    makes exactly ``calls * len(cpus)`` getppid() calls, with the CPUs busy side by side: a
    program that counts them by UID updates one map entry from several CPUs at once.

    Args:
        uid: the UID to make the calls as (one nobody else uses, for an exact count).
        calls: getppid() calls per CPU (0 .. 10,000,000).
        cpus: the CPUs, e.g. ``[0, 1]``: distinct, each one this process may use.

    Returns:
        One row per CPU: ``uid``, ``cpu``, ``calls``, ``start_ns`` and ``end_ns`` (that CPU's
        loop, ``time.monotonic_ns()`` clock) and ``loop_seconds``.

    Raises:
        ValueError: a bad UID, count or CPU list (before anything is built or started).
        HelperBuildError: the helper could not be built (no gcc: says what to install).
        RuntimeError: the helper failed or was stopped (it says how).
    """
    check_uid(uid)
    check_count(calls, "calls", MAX_GETPPID_CALLS)
    cpu_list = check_cpus(cpus)
    binary = native.build("getppid_loop")
    stdout = _run_native(
        [str(binary), str(calls), str(uid), *map(str, cpu_list)],
        f"getppid_loop {calls} {uid} {cpu_list}",
        {
            2: "could not switch to the UID or pin a thread to its CPU (not root?)",
            3: "a thread was not on its CPU after its loop",
        },
    )
    return parse_loops(stdout, uid, calls, cpu_list)


class ReadLoopChild(ReportingChild):
    """The gated C read loop (:func:`read_loop_child`); :meth:`run` adds the child's own timing.

    The row's ``loop_seconds`` is the wall time of the reads as the child measured it
    (``CLOCK_MONOTONIC`` from the start barrier to the last thread's end), and ``cpu_seconds``
    is replaced by the CPU time of the whole process over that span, every thread included
    (``CLOCK_PROCESS_CPUTIME_ID``; the parent's measurement sees only the main thread). Both
    are NaN when the child was killed.
    """

    def _columns(self, text: str | None) -> dict[str, float]:
        try:
            loop_ns, cpu_ns = (int(x) for x in (text or "").split())
        except ValueError:
            return {"loop_seconds": float("nan"), "cpu_seconds": float("nan")}
        return {"loop_seconds": loop_ns / 1e9, "cpu_seconds": cpu_ns / 1e9}


def read_loop_child(reads: int, threads: int = 1) -> ReadLoopChild:
    """A gated C program making exactly ``reads`` one-byte ``read()`` calls of fd 0, in threads.

    A faster source than :func:`read_stream_child`: ``ebpf_lab/workloads/c/read_loop.c``, built
    with gcc on first use (:func:`.native.build`), opens ``/dev/zero`` as fd 0 and starts
    its ``threads`` threads (one process, one tgid) before its gate; once released, the threads
    share the ``reads`` calls (as evenly as they divide) and the process makes no other
    ``read()`` at all, so a program keeping ``read()`` system calls of ``child.pid`` (the tgid)
    sees exactly ``reads`` of them, whatever their fd. No writes between reads, as dd makes.

    Returns:
        A :class:`ReadLoopChild`; its ``run()`` row has ``reads``, ``threads``, the usual
        columns, ``loop_seconds`` and ``cpu_seconds`` (all threads).

    Raises:
        ValueError: ``reads`` or ``threads`` out of range (before anything is built or started).
        HelperBuildError: the helper could not be built (no gcc: says what to install).
    """
    check_count(reads, "reads", MAX_STREAM_READS)
    check_threads(threads)
    binary = native.build("read_loop")
    report = ReadLoopChild.new_report("reads")
    return ReadLoopChild(
        [str(binary), str(reads), str(threads), report],
        report=report,
        program=f"read_loop (C): 1-byte reads of /dev/zero, {threads} thread(s)",
        work={"reads": reads, "threads": threads},
    )


#: the function of ``probe_loop`` that a uprobe can watch, and its USDT probe
PROBE_LOOP_FUNCTION = "lab_tick"
PROBE_LOOP_USDT = "ebpf_lab:tick"


def probe_loop_child(calls: int) -> GatedChild:
    """A gated C program calling its own function ``lab_tick(i)`` exactly ``calls`` times.

    ``ebpf_lab/workloads/c/probe_loop.c`` (built with gcc on first use; its USDT probe needs
    ``sys/sdt.h``, from the ``systemtap-sdt-dev`` package that ``sudo make setup`` installs)
    stops at its gate; once released, for ``i`` = 0 .. ``calls``-1 it calls
    ``unsigned long lab_tick(unsigned long i)``, which returns ``3*i + 7``, then fires the USDT
    probe ``DTRACE_PROBE2(ebpf_lab, tick, i, value)`` with that value. So a uprobe on
    ``<binary>:lab_tick`` sees ``calls`` calls whose first arguments sum to
    ``calls*(calls-1)/2``, a uretprobe ``calls`` returns whose values sum to
    ``3*calls*(calls-1)/2 + 7*calls``, and the USDT probe ``ebpf_lab:tick`` both pairs.

    Returns:
        A :class:`GatedChild`; ``child.program`` ends with the binary's path (uprobes name it),
        ``child.work`` is ``{"calls": calls}``.

    Raises:
        ValueError: ``calls`` out of range (1 .. 1,000,000; before anything is built or started).
        HelperBuildError: the helper could not be built (no gcc, or no sys/sdt.h: says what to
            install).
    """
    check_count(calls, "calls", MAX_CALLS)
    if calls == 0:
        raise ValueError("calls must be at least 1")
    try:
        binary = native.build("probe_loop")
    except HelperBuildError as exc:
        if "sys/sdt.h" not in exc.log:
            raise
        raise HelperBuildError(
            "the lab's C helper probe_loop.c defines a USDT probe with <sys/sdt.h>, which is "
            "missing: `sudo apt-get install systemtap-sdt-dev` (or `sudo make setup`)",
            exc.log,
        ) from None
    return GatedChild(
        [str(binary), str(calls)],
        program=str(binary),
        work={"calls": calls},
    )
