"""Known workloads: things to do while a program is attached, that say exactly what they did.

A lesson's count is only convincing next to the truth. These helpers perform a known amount of
work and return a record of it, so a notebook (or a test) can compare what the kernel saw with
what really happened::

    done = {}
    df = ebpf_lab.exec_counts(duration=3, workload=lambda: done.update(plan=execs({1000: 5})))

Long workloads check :func:`ebpf_lab.core.run.stop_requested` between steps, so Stop and
interrupts end them promptly.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, TypeVar

import pandas as pd

from ebpf_lab.core.guards import check_uid
from ebpf_lab.core.replay import replayable
from ebpf_lab.core.run import stop_requested

#: at most this many execs per call (a bounded lab, not a fork bomb)
MAX_EXECS = 100_000


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
    from ebpf_lab.workloads import native

    check_uid(uid)
    _check_count(count, "count", MAX_EXECS)
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


#: the most CPUs :func:`getppid_loop` runs its loops on at once (``workloads/c/getppid_loop.c``)
MAX_LOOP_CPUS = 64


def check_cpus(cpus: Any) -> list[int]:
    """Return ``cpus`` as a list if it names distinct CPUs this process may use, else ValueError."""
    if isinstance(cpus, (str, bytes)) or not isinstance(cpus, Sequence) or not cpus:
        raise ValueError(f"cpus must be a non-empty list of CPU numbers, e.g. [0, 1], got {cpus!r}")
    if len(cpus) > MAX_LOOP_CPUS:
        raise ValueError(f"cpus names {len(cpus)} CPUs; at most {MAX_LOOP_CPUS}")
    checked = [_check_cpu(cpu) for cpu in cpus]
    if len(set(checked)) != len(checked):
        raise ValueError(f"cpus must name each CPU once, got {list(cpus)!r}")
    return [int(cpu) for cpu in checked if cpu is not None]


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
    from ebpf_lab.workloads import native

    check_uid(uid)
    _check_count(calls, "calls", MAX_GETPPID_CALLS)
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
    rows = []
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
    if [r["cpu"] for r in rows] != cpu_list or any(r["calls"] != calls for r in rows):
        raise RuntimeError(f"getppid_loop reported {stdout!r} for {calls} calls on {cpu_list}")
    df = pd.DataFrame(rows, columns=["uid", "cpu", "calls", "start_ns", "end_ns", "loop_seconds"])
    return df.astype({c: "int64" for c in ("uid", "cpu", "calls", "start_ns", "end_ns")})


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


# ---------------------------------------------------------------- read() and write() calls

#: at most this many read()/write() calls per call of :func:`writes` or :func:`reads`
MAX_CALLS = 1_000_000
#: the largest single read() or write() the workloads make, in bytes (16 MiB)
MAX_IO_SIZE = 1 << 24

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


def _check_sizes(sizes: Sequence[int]) -> list[int]:
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


def _check_cpu(cpu: int | None) -> int | None:
    if cpu is None:
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu not in allowed:
        raise ValueError(
            f"cpu must be one of the CPUs this process may use ({allowed}), got {cpu!r}"
        )
    return cpu


def _io_calls(op: str, sizes: Sequence[int], uid: int | None, cpu: int | None) -> pd.DataFrame:
    sizes = _check_sizes(sizes)
    if uid is not None:
        check_uid(uid)
        if uid != os.geteuid() and os.geteuid() != 0:
            raise PermissionError("making calls as another UID needs root: start the lab with sudo")
    cpu = _check_cpu(cpu)
    columns = ["pid", "uid", "cpu", "syscall", "size"]
    if stop_requested():
        return pd.DataFrame(columns=columns).astype(
            {"pid": "int64", "uid": "int64", "cpu": "Int64", "size": "int64"}
        )
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
    df = pd.DataFrame(
        {
            "pid": proc.pid,
            "uid": os.geteuid() if uid is None else uid,
            "cpu": cpu,
            "syscall": op,
            "size": sizes,
        },
        columns=columns,
    )
    return df.astype(
        {"pid": "int64", "uid": "int64", "cpu": "Int64", "syscall": "category", "size": "int64"}
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
    cpu = _check_cpu(cpu)
    if not callable(work):
        raise ValueError(f"work must be a callable taking no arguments, got {work!r}")
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        return work()
    finally:
        os.sched_setaffinity(0, before)


# ---------------------------------------------------------------- gated child processes

#: the most getppid() calls :func:`getppid_child` makes
MAX_GETPPID_CALLS = 10_000_000
#: the most CPU-seconds :func:`spin_child` spins
MAX_SPIN_SECONDS = 60.0
#: the most read() calls :func:`read_stream_child` makes
MAX_STREAM_READS = 50_000_000

# A Python child that stops itself (SIGSTOP) once it has started, then does its work. Python's
# start-up happens before the stop, so everything after SIGCONT is the work and nothing else.
_PY_GATE = "import os, signal, sys\nos.kill(os.getpid(), signal.SIGSTOP)\n"
_PY_GETPPID = _PY_GATE + "for _ in range(int(sys.argv[1])):\n    os.getppid()\n"
_PY_SPIN = (
    _PY_GATE + "import time\nend = time.process_time() + float(sys.argv[1])\n"
    "while time.process_time() < end:\n    pass\n"
)
# ... and one that stops again when its work is done, before Python's (and the kernel's) exit
_PY_SPIN_STOP = _PY_SPIN + "os.kill(os.getpid(), signal.SIGSTOP)\n"
# For a program that cannot stop itself (dd): a shell stops itself, then execs the program (the
# same process: the pid stays).
_SH_GATE = 'kill -STOP $$ && exec "$@"'


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
        with open(f"/proc/{self.pid}/schedstat") as f:
            return int(f.read().split()[0])

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
        pidfd = os.pidfd_open(self.pid)
        killed = False
        cpu_work: int | None = None
        work_done: float | None = None
        try:
            cpu_before = self.cpu_ns()
            self.released_at = time.monotonic()
            os.kill(self.pid, signal.SIGCONT)
            wait = 0.005 if self.stops_after else 0.05
            while not select.select([pidfd], [], [], wait)[0]:
                if stop_requested() and not killed:
                    os.kill(self.pid, signal.SIGKILL)
                    killed = True
                if self.stops_after and cpu_work is None and not killed and self._stopped_again():
                    work_done = time.monotonic()
                    cpu_work = self.cpu_ns()
                    if at_end is not None:
                        at_end()
                    os.kill(self.pid, signal.SIGCONT)
                    wait = 0.05
            self.exited_at = time.monotonic()
        finally:
            os.close(pidfd)
        os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)  # a zombie: its CPU time is final
        cpu_after = self.cpu_ns()
        _, status, usage = os.wait4(self.pid, 0)
        self._reaped = True
        returncode = os.waitstatus_to_exitcode(status)
        if returncode != 0 and not killed:
            raise RuntimeError(f"{self.program} (pid {self.pid}) exited with {returncode}")
        end_cpu = cpu_after if cpu_work is None else cpu_work
        row = {
            "pid": self.pid,
            "program": self.program,
            **self.work,
            "returncode": returncode,
            "wall_seconds": (work_done or self.exited_at) - self.released_at,
            "cpu_seconds": (end_cpu - cpu_before) / 1e9,
            "context_switches": usage.ru_nvcsw + usage.ru_nivcsw,
        }
        if self.stops_after:
            row["exit_cpu_seconds"] = (cpu_after - end_cpu) / 1e9
        df = pd.DataFrame([row])
        return df.astype({"pid": "int64", "returncode": "int64", "context_switches": "int64"})

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


def _check_count(value: int, name: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ValueError(f"{name} must be a whole number from 0 to {maximum}, got {value!r}")
    return value


def check_threads(threads: Any) -> int:
    """Return ``threads`` if it is a thread count :func:`read_loop_child` takes, else ValueError."""
    if (
        isinstance(threads, bool)
        or not isinstance(threads, int)
        or not 1 <= threads <= MAX_READ_THREADS
    ):
        raise ValueError(
            f"threads must be a whole number from 1 to {MAX_READ_THREADS}, got {threads!r}"
        )
    return threads


def getppid_child(calls: int) -> GatedChild:
    """A gated Python child that calls ``os.getppid()`` exactly ``calls`` times once released.

    Each call is one call of libc's ``getppid()`` and one ``getppid`` system call; the child
    makes no others (Python's start-up does not call it, and it happens before the gate anyway).
    """
    _check_count(calls, "calls", MAX_GETPPID_CALLS)
    argv = [sys.executable, "-I", "-S", "-c", _PY_GETPPID, str(calls)]
    return GatedChild(argv, program="python: os.getppid() loop", work={"calls": calls})


def spin_child(cpu_seconds: float, *, stop_after: bool = False) -> GatedChild:
    """A gated Python child that, once released, spins on the CPU for ``cpu_seconds`` of CPU time.

    It uses its own CPU time (``time.process_time()``), so it spins just as long on a busy machine;
    :meth:`GatedChild.run` reports the CPU time it really used (the spin plus Python's exit; with
    ``stop_after=True`` the child stops again after the spin, and ``cpu_seconds`` is the spin
    alone).
    """
    if (
        isinstance(cpu_seconds, bool)
        or not isinstance(cpu_seconds, (int, float))
        or not (0 < cpu_seconds <= MAX_SPIN_SECONDS)
    ):
        raise ValueError(
            f"cpu_seconds must be a number in (0, {MAX_SPIN_SECONDS:g}], got {cpu_seconds!r}"
        )
    code = _PY_SPIN_STOP if stop_after else _PY_SPIN
    argv = [sys.executable, "-I", "-S", "-c", code, repr(float(cpu_seconds))]
    return GatedChild(
        argv,
        program="python: spin",
        work={"spin_seconds": float(cpu_seconds)},
        stops_after=stop_after,
    )


def read_stream_child(reads: int) -> GatedChild:
    """A gated ``dd if=/dev/zero of=/dev/null bs=1 count=<reads>``: a fast stream of syscalls.

    Once released, dd makes exactly ``reads`` one-byte ``read()`` calls on file descriptor 0
    (``/dev/zero``) and as many ``write()`` calls on fd 1, as fast as it can (about a million
    reads per second here). Its own start-up reads (the dynamic loader's, on other fds) come after
    the gate too, so filter on ``fd == 0`` to see exactly the ``reads`` calls.
    """
    _check_count(reads, "reads", MAX_STREAM_READS)
    dd = shutil.which("dd") or "/bin/dd"
    argv = [
        "/bin/sh",
        "-c",
        _SH_GATE,
        "ebpf-lab-gate",
        dd,
        "if=/dev/zero",
        "of=/dev/null",
        "bs=1",
        f"count={reads}",
        "status=none",
    ]
    return GatedChild(argv, program="dd if=/dev/zero of=/dev/null bs=1", work={"reads": reads})


#: the most threads :func:`read_loop_child` splits its reads over (``workloads/c/read_loop.c``)
MAX_READ_THREADS = 64


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
    import tempfile

    from ebpf_lab.workloads import native

    _check_count(reads, "reads", MAX_STREAM_READS)
    check_threads(threads)
    binary = native.build("read_loop")
    fd, report = tempfile.mkstemp(prefix="ebpf-lab-reads-", suffix=".txt")
    os.close(fd)
    return ReadLoopChild(
        [str(binary), str(reads), str(threads), report],
        report=report,
        program=f"read_loop (C): 1-byte reads of /dev/zero, {threads} thread(s)",
        work={"reads": reads, "threads": threads},
    )


# ---------------------------------------------------------------- open() calls, CPU profiles,
# ---------------------------------------------------------------- run-queue contention

#: the most open() calls (each kind) :func:`opens_child` makes
MAX_OPENS = 1_000_000
#: the most busy children :func:`busy_children` starts at once
MAX_BUSY_CHILDREN = 16

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
    import tempfile

    _check_count(opens, "opens", MAX_OPENS)
    _check_count(missing, "missing", MAX_OPENS)
    if not isinstance(path, str) or not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError(f"path must be an existing, readable regular file, got {path!r}")
    if missing_path is None:
        missing_path = os.path.join(
            tempfile.gettempdir(), f"ebpf-lab-missing-{os.getpid()}-{random.getrandbits(48):x}"
        )
    if not isinstance(missing_path, str) or os.path.lexists(missing_path):
        raise ValueError(f"missing_path must be a path that does not exist, got {missing_path!r}")
    fd, report = tempfile.mkstemp(prefix="ebpf-lab-opens-", suffix=".txt")
    os.close(fd)
    argv = opens_argv(path, missing_path, opens, missing, report)
    work = {"opens": opens, "missing": missing, "path": path, "missing_path": missing_path}
    return OpensChild(argv, report=report, program="python: os.open() loop", work=work)


# User space, then the kernel: the interpreter's own loop (CPython's bytecode evaluator, in
# /usr/bin/python3.x), then read() from /dev/zero into a 1 MiB buffer (the kernel's code that
# fills user memory with zeros). Each phase runs for a set amount of the child's CPU time.
_PY_MIXED = (
    _PY_GATE
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
    for name, value in (("user_seconds", user_seconds), ("kernel_seconds", kernel_seconds)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (0 <= value <= MAX_SPIN_SECONDS)
        ):
            raise ValueError(f"{name} must be a number in [0, {MAX_SPIN_SECONDS:g}], got {value!r}")
    if user_seconds + kernel_seconds <= 0:
        raise ValueError("user_seconds + kernel_seconds must be > 0")
    argv = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _PY_MIXED,
        repr(float(user_seconds)),
        repr(float(kernel_seconds)),
    ]
    return GatedChild(
        argv,
        program="python: interpreter loop, then read(/dev/zero)",
        work={"user_seconds": float(user_seconds), "kernel_seconds": float(kernel_seconds)},
    )


def _schedstat(pid: int) -> tuple[int, int, int]:
    """``/proc/<pid>/schedstat``: CPU time (ns), run-queue wait (ns), times run on a CPU."""
    with open(f"/proc/{pid}/schedstat") as f:
        cpu, wait, slices = (int(x) for x in f.read().split()[:3])
    return cpu, wait, slices


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
    if any(c.released_at is not None or c._reaped for c in children):
        raise RuntimeError("every child must be gated and not yet run")
    before = {c.pid: _schedstat(c.pid) for c in children}
    pidfds: dict[int, int] = {}
    exited: dict[int, float] = {}
    killed = False
    try:
        for c in children:
            pidfds[c.pid] = os.pidfd_open(c.pid)
        released = time.monotonic()
        for c in children:
            c.released_at = released
            os.kill(c.pid, signal.SIGCONT)
        pending = dict(pidfds)
        while pending:
            ready = select.select(list(pending.values()), [], [], 0.05)[0]
            now = time.monotonic()
            for pid, fd in list(pending.items()):
                if fd in ready:
                    exited[pid] = now
                    del pending[pid]
            if pending and stop_requested() and not killed:
                for pid in pending:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                killed = True
    finally:
        for fd in pidfds.values():
            os.close(fd)
    rows = []
    for c in children:
        os.waitid(os.P_PID, c.pid, os.WEXITED | os.WNOWAIT)  # a zombie: its counters are final
        cpu, wait, slices = _schedstat(c.pid)
        _, status, usage = os.wait4(c.pid, 0)
        c._reaped = True
        c.exited_at = exited.get(c.pid, time.monotonic())
        returncode = os.waitstatus_to_exitcode(status)
        if returncode != 0 and not killed:
            raise RuntimeError(f"{c.program} (pid {c.pid}) exited with {returncode}")
        cpu0, wait0, slices0 = before[c.pid]
        rows.append(
            {
                "pid": c.pid,
                "program": c.program,
                **c.work,
                "returncode": returncode,
                "wall_seconds": c.exited_at - c.released_at,
                "cpu_seconds": (cpu - cpu0) / 1e9,
                "run_delay_seconds": (wait - wait0) / 1e9,
                "timeslices": slices - slices0,
                "context_switches": usage.ru_nvcsw + usage.ru_nivcsw,
            }
        )
    df = pd.DataFrame(rows)
    return df.astype(
        {"pid": "int64", "returncode": "int64", "timeslices": "int64", "context_switches": "int64"}
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
    from ebpf_lab.core.guards import check_positive_int

    n = check_positive_int(n, "n", MAX_BUSY_CHILDREN)
    if n is None:
        raise ValueError("n must be a positive whole number of children, e.g. 4")
    pin = None
    if cpus is not None:
        if isinstance(cpus, (str, bytes)) or not isinstance(cpus, Sequence) or not cpus:
            raise ValueError(f"cpus must be a non-empty list of CPU numbers, got {cpus!r}")
        pin = {_check_cpu(c) for c in cpus}
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
