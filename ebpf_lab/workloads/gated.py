"""Gated child processes: started, stopped before their work, released when probes are attached.

:class:`GatedChild` is the building block (a pid known before the work starts);
:class:`ReportingChild` adds the child's own measurements from a report file; :func:`run_together`
releases several at the same moment. All of them wait through one loop (:func:`_release`),
which ends the children when the run is stopped.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from ebpf_lab.core.run import stop_requested

# A Python child that stops itself (SIGSTOP) once it has started, then does its work. Python's
# start-up happens before the stop, so everything after SIGCONT is the work and nothing else.
PY_GATE = "import os, signal, sys\nos.kill(os.getpid(), signal.SIGSTOP)\n"
# For a program that cannot stop itself (dd): a shell stops itself, then execs the program (the
# same process: the pid stays).
SH_GATE = 'kill -STOP $$ && exec "$@"'
#: the integer columns of every row a gated child's run gives
INT_COLUMNS = {"pid": "int64", "returncode": "int64", "context_switches": "int64"}


def _schedstat(pid: int) -> tuple[int, int, int]:
    """``/proc/<pid>/schedstat``: CPU time (ns), run-queue wait (ns), times run on a CPU."""
    with open(f"/proc/{pid}/schedstat") as f:
        cpu, wait, slices = (int(x) for x in f.read().split()[:3])
    return cpu, wait, slices


class GatedChild:
    """A child process that stops (SIGSTOP) before its work, so probes can be aimed at its pid.

    Many attach points want a process id *before* the process does anything: a uprobe or a perf
    event opened for one pid, or a program compiled with ``-DTARGET_TGID=<pid>``. A gated child
    is started, stops itself, and waits; attach what you want to ``child.pid``, then
    :meth:`run` lets it go (SIGCONT) and waits until it has exited. Use it as a context manager
    (or call :meth:`kill`) so a child that was never run does not stay behind, stopped.

    A child made with ``stops_after=True`` also stops when its work is done: :meth:`run` then
    reads its CPU time at that moment and calls ``at_end`` before letting it exit, so what
    follows (interpreter and kernel exit) is kept out of the measurement.

    Attributes:
        pid: the child's process id (also its tgid, whatever threads it starts).
        program: what it runs, for the record.
        work: the known amount of work, e.g. ``{"calls": 1000}``.
        stops_after: the child stops itself again when its work is done.
        released_at, exited_at: ``time.monotonic()`` when it was let go and when it ended.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        program: str,
        work: Mapping[str, float],
        stops_after: bool = False,
    ) -> None:
        self.program = program
        self.work = dict(work)
        self.stops_after = stops_after
        self.released_at: float | None = None
        self.exited_at: float | None = None
        self._reaped = False
        devnull = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        self.pid = os.posix_spawn(argv[0], list(argv), dict(os.environ), file_actions=devnull)
        try:
            _, status = os.waitpid(self.pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):
                self._reaped = True
                raise RuntimeError(f"{program} ended before its gate (status {status:#x})")
        except BaseException:
            self.kill()
            raise

    def cpu_ns(self) -> int:
        """CPU time the child has used so far, in nanoseconds (``/proc/<pid>/schedstat``)."""
        return _schedstat(self.pid)[0]

    def _stopped_again(self) -> bool:
        """True once the child has stopped itself after its work (it is not reaped here)."""
        info = os.waitid(os.P_PID, self.pid, os.WSTOPPED | os.WNOHANG | os.WNOWAIT)
        return info is not None and info.si_code == os.CLD_STOPPED

    def run(self, at_end: Callable[[], object] | None = None) -> pd.DataFrame:
        """Let the child go and wait for it to exit; return what it did (one row).

        Checks :func:`~ebpf_lab.core.run.stop_requested` while waiting and kills the child when the
        run is stopped.

        Args:
            at_end: for a child made with ``stops_after``: called while the child is stopped
                after its work (e.g. to read a BPF map), before it is let go to exit.

        Returns:
            One row: ``pid``, ``program``, the ``work`` items, ``returncode``, ``wall_seconds``
            (from release to exit, or to the end of the work with ``stops_after``),
            ``cpu_seconds`` (CPU time after release, to the nanosecond; with ``stops_after``
            up to the end of the work, and ``exit_cpu_seconds`` for what came after),
            ``context_switches`` (voluntary + involuntary, whole life).

        Raises:
            RuntimeError: the child failed (not when it was killed because of a stop).
        """
        if self._reaped or self.released_at is not None:
            raise RuntimeError(f"child {self.pid} ({self.program}) has already run")
        (outcome,), _killed = _release([self], at_end)
        return pd.DataFrame([outcome.row(scheduler=False)]).astype(INT_COLUMNS)

    def kill(self) -> None:
        """Kill and reap the child if it is still there (idempotent; never raises)."""
        if self._reaped:
            return
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(self.pid, 0)
        self._reaped = True

    def __enter__(self) -> GatedChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


@dataclass
class _Outcome:
    """What one released child did, from its release: times, its scheduler counters before and
    after (``/proc/<pid>/schedstat``), and at the end of its work for a ``stops_after`` child."""

    child: GatedChild
    returncode: int
    before: tuple[int, int, int]
    after: tuple[int, int, int]
    work_end: tuple[float, int] | None  # (time.monotonic(), CPU ns) when it stopped after work
    context_switches: int

    def row(self, *, scheduler: bool) -> dict[str, Any]:
        """The child's row (``scheduler``: with ``run_delay_seconds`` and ``timeslices``)."""
        c = self.child
        assert c.released_at is not None and c.exited_at is not None
        end_time, end_cpu = self.work_end or (c.exited_at, self.after[0])
        row: dict[str, Any] = {
            "pid": c.pid,
            "program": c.program,
            **c.work,
            "returncode": self.returncode,
            "wall_seconds": end_time - c.released_at,
            "cpu_seconds": (end_cpu - self.before[0]) / 1e9,
        }
        if scheduler:
            row["run_delay_seconds"] = (self.after[1] - self.before[1]) / 1e9
            row["timeslices"] = self.after[2] - self.before[2]
        row["context_switches"] = self.context_switches
        if c.stops_after:
            row["exit_cpu_seconds"] = (self.after[0] - end_cpu) / 1e9
        return row


def _release(
    children: Sequence[GatedChild], at_end: Callable[[], object] | None = None
) -> tuple[list[_Outcome], bool]:
    """Let ``children`` go at the same moment and wait until all have exited; reap them.

    Kills the ones still running when the run is stopped. A ``stops_after`` child that has
    stopped after its work has its CPU time read, ``at_end()`` called, and is let go to exit.
    Returns each child's :class:`_Outcome` and whether they were killed; raises RuntimeError
    for a child that failed (not for one killed because of a stop).
    """
    if any(c._reaped or c.released_at is not None for c in children):
        raise RuntimeError("every child must be gated and not yet run")
    before = {c.pid: _schedstat(c.pid) for c in children}
    work_end: dict[int, tuple[float, int]] = {}
    pidfds: dict[int, int] = {}
    killed = False
    try:
        for c in children:
            pidfds[c.pid] = os.pidfd_open(c.pid)
        released = time.monotonic()
        for c in children:
            c.released_at = released
            os.kill(c.pid, signal.SIGCONT)
        pending = {c.pid: c for c in children}
        while pending:
            watched = [c for c in pending.values() if c.stops_after and c.pid not in work_end]
            wait = 0.005 if watched and not killed else 0.05
            ready = select.select([pidfds[pid] for pid in pending], [], [], wait)[0]
            now = time.monotonic()
            for pid, c in list(pending.items()):
                if pidfds[pid] in ready:
                    c.exited_at = now
                    del pending[pid]
            if pending and stop_requested() and not killed:
                for pid in pending:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                killed = True
            for c in watched:
                if not killed and c.pid in pending and c._stopped_again():
                    work_end[c.pid] = (time.monotonic(), c.cpu_ns())
                    if at_end is not None:
                        at_end()
                    os.kill(c.pid, signal.SIGCONT)
    finally:
        for fd in pidfds.values():
            os.close(fd)
    outcomes = []
    for c in children:
        os.waitid(os.P_PID, c.pid, os.WEXITED | os.WNOWAIT)  # a zombie: its counters are final
        after = _schedstat(c.pid)
        _, status, usage = os.wait4(c.pid, 0)
        c._reaped = True
        outcomes.append(
            _Outcome(
                child=c,
                returncode=os.waitstatus_to_exitcode(status),
                before=before[c.pid],
                after=after,
                work_end=work_end.get(c.pid),
                context_switches=usage.ru_nvcsw + usage.ru_nivcsw,
            )
        )
    for o in outcomes:
        if o.returncode != 0 and not killed:
            raise RuntimeError(f"{o.child.program} (pid {o.child.pid}) exited with {o.returncode}")
    return outcomes, killed


def run_together(children: Sequence[GatedChild]) -> pd.DataFrame:
    """Release several gated children at the same moment and wait until all have exited.

    Checks :func:`~ebpf_lab.core.run.stop_requested` while waiting and kills the children when the
    run is stopped.

    Returns:
        One row per child: ``pid``, ``program``, its ``work`` items, ``returncode``,
        ``wall_seconds``, ``cpu_seconds``, ``run_delay_seconds`` (time spent runnable but waiting
        for a CPU, as the kernel's own scheduler statistics count it, ``/proc/<pid>/schedstat``),
        ``timeslices`` (times it was put on a CPU) and ``context_switches``; all counted from
        the release.
    """
    if not children:
        raise ValueError("run_together needs at least one gated child")
    outcomes, _killed = _release(children)
    df = pd.DataFrame([o.row(scheduler=True) for o in outcomes])
    return df.astype({**INT_COLUMNS, "timeslices": "int64"})


class ReportingChild(GatedChild):
    """A :class:`GatedChild` that writes its own measurements to a report file.

    The report file is made by the parent and opened by the child before its gate; after its
    work the child writes what it measured there. :meth:`run` adds those measurements to the
    row (:meth:`_columns` turns the file's text, or None when there is none, into columns) and
    removes the file, as does :meth:`kill`.
    """

    def __init__(self, argv: Sequence[str], *, report: str, **kw: object) -> None:
        self.report = report
        try:
            super().__init__(argv, **kw)  # type: ignore[arg-type]
        except BaseException:
            self._remove_report()
            raise

    @staticmethod
    def new_report(kind: str) -> str:
        """A new, empty report file for a child (``kind`` goes into its name)."""
        fd, report = tempfile.mkstemp(prefix=f"ebpf-lab-{kind}-", suffix=".txt")
        os.close(fd)
        return report

    def _remove_report(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.report)

    def _columns(self, text: str | None) -> dict[str, float]:
        raise NotImplementedError

    def run(self) -> pd.DataFrame:  # type: ignore[override]
        """Let the child go and wait for it; the row also has the child's own measurements."""
        try:
            df = super().run()
            try:
                with open(self.report) as f:
                    text: str | None = f.read()
            except OSError:
                text = None
            for column, value in self._columns(text).items():
                df[column] = value
            return df
        finally:
            self._remove_report()

    def kill(self) -> None:
        """Kill and reap the child if it is still there, and remove its report file."""
        super().kill()
        self._remove_report()
