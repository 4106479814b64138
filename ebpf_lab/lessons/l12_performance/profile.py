"""Lesson 12: performance: a sampling CPU profiler with stacks, and run-queue latency.

:func:`cpu_profile` (``programs/profile.bpf.c``) attaches a program to a ``cpu-clock`` perf event
on every CPU, ``sample_freq`` times a second. Each time it records which process was on the CPU
and its user and kernel stacks (``BPF_STACK_TRACE`` + ``bpf_get_stackid``), counting identical
samples in the kernel. User space turns the addresses into function names with BCC's symbolizer
(``/proc/kallsyms`` for the kernel, the ELF symbol tables of the process's files for user code).
:func:`top_functions` and :func:`plot_flame` summarize the result.

:func:`run_queue_latency` (``programs/run_queue_latency.bpf.c``) measures, from the scheduler's
tracepoints, how long runnable tasks wait for a CPU: a log2 histogram and totals per task.

Known workloads: :func:`ebpf_lab.workloads.mixed_cpu_child` (CPU time first in the Python
interpreter, then in the kernel's ``read()`` of ``/dev/zero``) for the profiler, and
:func:`ebpf_lab.workloads.busy_children` (N spinning processes on chosen CPUs) for the run queue.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.attach import Probe
from ebpf_lab.core.collectors import fill_maps, tgid_filter
from ebpf_lab.core.guards import (
    check_choice,
    check_duration,
    check_pid,
    check_sample_freq,
    check_workload,
)
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Alternative, Collector, RunContext, bounded_run
from ebpf_lab.show.frames import Schema, decode_c_string, require_columns
from ebpf_lab.show.log2 import LATENCY_HISTOGRAM, latency_histogram

#: default samples per second per CPU: a prime, so the timer does not tick in step with the
#: scheduler's own tick (HZ) and the periodic work of other programs
DEFAULT_SAMPLE_FREQ = 997
#: room in the stack map and in the count map
STACK_ENTRIES = 16384
COUNT_ENTRIES = 16384
#: how often (seconds) the profiler looks for new processes to symbolize while they still exist
SYMBOLIZE_EVERY = 0.25

#: one row per distinct stack of one process
STACKS = Schema(
    pid="int64",
    comm="category",
    samples="int64",
    in_kernel="bool",
    leaf_function="category",
    leaf_module="category",
    frames="object",
    stack="string",
)
STACK_COLUMNS = STACKS.columns
_PROFILE_STATS = (
    "all_samples",
    "idle_samples",
    "kept_samples",
    "count_map_full",
    "user_stacks_lost",
    "kernel_stacks_lost",
)
EFAULT = 14
UNKNOWN = "[unknown]"


# ------------------------------------------------------------------------------- symbols


def kernel_symbols_visible() -> tuple[bool, str]:
    """Whether ``/proc/kallsyms`` shows real addresses to this process, and why (or why not).

    The kernel hides the addresses (shows zeros) when ``kernel.kptr_restrict`` says so or the
    reader lacks ``CAP_SYSLOG``. Lockdown in ``integrity`` mode does not hide them;
    ``confidentiality`` mode is meant to keep kernel memory secret.
    """
    try:
        with open("/proc/kallsyms") as f:
            first = f.readline().split()
    except OSError as exc:
        return False, f"/proc/kallsyms cannot be read: {exc}"
    try:
        restrict = Path("/proc/sys/kernel/kptr_restrict").read_text().strip()
    except OSError:
        restrict = "?"
    lockdown = kernel.lockdown_mode() or "none"
    context = f"kptr_restrict={restrict}, lockdown={lockdown}, euid={os.geteuid()}"
    if not first or int(first[0], 16) == 0:
        return False, (
            f"/proc/kallsyms shows zero addresses ({context}): kernel stacks cannot be named; "
            "run as root with kernel.kptr_restrict=0 or 1"
        )
    return True, f"/proc/kallsyms shows addresses ({context})"


class Symbolizer:
    """Addresses -> ``(function, module)`` with BCC's symbol caches, one per process.

    A process's cache reads its ``/proc/<pid>/maps`` when it is created, so it must be created
    while the process is alive (:meth:`remember`); a process that exited before that gets
    ``[unknown]`` user frames, which is what BCC's own ``profile`` tool shows for short-lived
    processes. The caches are freed by :meth:`close`.
    """

    def __init__(self) -> None:
        from bcc import SymbolCache

        self._cls = SymbolCache
        self._caches: dict[int, Any] = {}
        self._names: dict[tuple[int, int], tuple[str, str]] = {}

    def remember(self, pid: int) -> None:
        """Create the cache of ``pid`` now (reads its memory map) if it does not exist yet."""
        if pid not in self._caches and (pid == -1 or Path(f"/proc/{pid}").exists()):
            self._caches[pid] = self._cls(pid)

    def resolve(self, pid: int, addr: int) -> tuple[str, str]:
        """``(function, module)`` of ``addr`` in process ``pid`` (-1: the kernel)."""
        key = (pid, addr)
        if key in self._names:
            return self._names[key]
        self.remember(pid)
        cache = self._caches.get(pid)
        name, module = None, None
        if cache is not None:
            raw_name, _offset, raw_module = cache.resolve(addr, pid != -1)
            name = raw_name.decode(errors="replace") if raw_name else None
            module = raw_module.decode(errors="replace") if raw_module else None
        if pid == -1:
            module = "kernel" if module in (None, "kernel") else module.strip("[]")
        elif module:
            module = os.path.basename(module)
        result = (name or UNKNOWN, module or UNKNOWN)
        self._names[key] = result
        return result

    def close(self) -> None:
        """Free every cache (BCC's C memory)."""
        from bcc.libbcc import lib

        for pid, cache in self._caches.items():
            with contextlib.suppress(Exception):
                lib.bcc_free_symcache(cache.cache, pid)
        self._caches.clear()


# ------------------------------------------------------------------------------ cpu_profile


class _Sampler(Collector):
    """Symbolizes processes while they live; builds the stack frame from the maps at the end."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.symbols: Symbolizer | None = None
        self.next_scan = 0.0

    def prepare(self, bpf: Any) -> None:
        fill_maps(bpf, tgid_filter(self.pid)[1])  # the pid to sample, if any

    def start(self, ctx: RunContext) -> None:
        self.symbols = Symbolizer()
        self.symbols.remember(-1)
        if self.pid is not None:
            self.symbols.remember(self.pid)
        self.next_scan = time.monotonic() + SYMBOLIZE_EVERY

    def poll(self, ctx: RunContext, timeout: float) -> None:
        if timeout > 0:
            time.sleep(timeout)
        if self.pid is None and time.monotonic() >= self.next_scan and self.symbols:
            for key in ctx.table("counts").keys():
                self.symbols.remember(int(key.pid))
            self.next_scan = time.monotonic() + SYMBOLIZE_EVERY

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        assert self.symbols is not None
        stats = ctx.table("stats")
        for i, name in enumerate(_PROFILE_STATS):
            ctx.attrs[name] = int(stats[i].value)
        stacks = ctx.table("stack_traces")
        rows = []
        for key, value in ctx.table("counts").items():
            pid, comm = int(key.pid), decode_c_string(key.comm)
            user = _walk(stacks, int(key.user_stack_id))
            kern = _walk(stacks, int(key.kernel_stack_id))
            user_frames = tuple(self.symbols.resolve(pid, a) for a in reversed(user))
            kernel_frames = tuple(self.symbols.resolve(-1, a) for a in reversed(kern))
            if int(key.user_stack_id) < 0 and int(key.user_stack_id) != -EFAULT and not kern:
                user_frames = ((f"[user stack lost: {key.user_stack_id}]", UNKNOWN),)
            rows.append(stack_row(pid, comm, int(value.value), user_frames, kernel_frames))
        return stacks_frame(rows)

    def close(self, ctx: RunContext | None) -> None:
        if self.symbols is not None:
            self.symbols.close()


def stack_row(
    pid: int,
    comm: str,
    samples: int,
    user: tuple[tuple[str, str], ...],
    kernel: tuple[tuple[str, str], ...],
) -> dict[str, Any]:
    """One :data:`STACKS` row from a stack's ``(function, module)`` frames, outermost first."""
    frames = user + kernel
    leaf = frames[-1] if frames else (UNKNOWN, UNKNOWN)
    folded = ";".join([comm] + [f for f, _ in user] + [f"{f}_[k]" for f, _ in kernel])
    return {
        "pid": pid,
        "comm": comm,
        "samples": samples,
        "in_kernel": bool(kernel),
        "leaf_function": leaf[0],
        "leaf_module": leaf[1],
        "frames": frames,
        "stack": folded,
    }


def stacks_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A :data:`STACKS` frame of ``rows``, most samples first."""
    df = STACKS.frame(rows)
    return df.sort_values("samples", ascending=False, kind="stable", ignore_index=True)


def _walk(stacks: Any, stack_id: int) -> list[int]:
    """The addresses of a stack, innermost first ([] for a negative id)."""
    if stack_id < 0:
        return []
    try:
        return [int(a) for a in stacks.walk(stack_id)]
    except KeyError:
        return []


def cpu_profile(
    duration: float = 1.0,
    workload: Callable[[], Any] | None = None,
    *,
    pid: int | None = None,
    sample_freq: int = DEFAULT_SAMPLE_FREQ,
    live: bool | None = None,
) -> pd.DataFrame:
    """Sample what every CPU runs, ``sample_freq`` times a second, with user and kernel stacks.

    Args:
        duration: seconds to sample (0 < duration <= 3600); the run also waits for ``workload``.
        workload: a callable run once attached, e.g. ``child.run`` of
            :func:`ebpf_lab.workloads.mixed_cpu_child`.
        pid: keep only samples of this process (the filter runs in the kernel; the timer still
            fires on every CPU). None: every process (idle CPUs are counted, not kept).
        sample_freq: samples per second per CPU (1 .. ``kernel.perf_event_max_sample_rate``).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per distinct (process, user stack, kernel stack), most samples first: ``pid``,
        ``comm``, ``samples``, ``in_kernel`` (the CPU was running kernel code for it),
        ``leaf_function`` and ``leaf_module`` (where the CPU was), ``frames`` (a tuple of
        ``(function, module)`` from the outermost caller to the leaf: user frames, then kernel
        frames), ``stack`` (the same as one line of Brendan Gregg's "folded" format, kernel
        frames marked ``_[k]``, for flamegraph.pl). ``df.attrs``: ``sample_freq``, ``pid``,
        ``all_samples`` (every CPU), ``idle_samples``, ``kept_samples``, ``count_map_full``,
        ``user_stacks_lost``, ``kernel_stacks_lost``, ``kernel_symbols`` (why kernel names are
        or are not visible), and the core's ``attach``, ``duration``, ``kernel``...

    Raises:
        ValueError: bad duration, workload, pid or sample_freq (before anything loads).
        PermissionError: not root.
    """
    duration = check_duration(duration)
    check_workload(workload)
    pid = check_pid(pid)
    sample_freq = check_sample_freq(sample_freq)
    visible, why = kernel_symbols_visible()
    probe = Probe("perf_event", "software:cpu-clock", "on_sample", sample_freq=sample_freq)
    return bounded_run(
        name="cpu_profile",
        source=program_source("profile"),
        alternatives=[
            Alternative("perf_event", [probe], f"software cpu-clock at {sample_freq} Hz per CPU")
        ],
        collector=_Sampler(pid),
        duration=duration,
        workload=workload,
        cflags=[
            *tgid_filter(pid)[0],
            f"-DSTACK_ENTRIES={STACK_ENTRIES}",
            f"-DCOUNT_ENTRIES={COUNT_ENTRIES}",
        ],
        live=live,
        attrs={
            "sample_freq": sample_freq,
            "pid": pid,
            "kernel_symbols_visible": visible,
            "kernel_symbols": why,
        },
    )


#: share of the expected samples allowed for a sampling timer that fires late (virtual machines)
TIMER_SLACK = 0.03


def sampling_bound(expected: float, timeslices: int, ncpus: int | None = None) -> float:
    """How far a process's sample count may be from ``sample_freq`` x its CPU-seconds.

    Each CPU's timer fires every ``1/sample_freq`` seconds whoever runs. A process that ran in
    ``k`` separate stretches (time slices) of lengths ``L_i`` gets, in each, ``L_i * freq``
    samples rounded up or down: an error of less than one sample per slice, which (the timer's
    phase being unrelated to where a slice starts) averages zero with a standard deviation of at
    most ``1/2``. Over ``k`` slices the sum's standard deviation is at most ``sqrt(k) / 2``.

    The bound is four of those standard deviations plus one partial period per CPU, capped by
    the hard limit ``k + ncpus`` (one sample per slice), plus :data:`TIMER_SLACK` of the expected
    count for the timer itself: in a VM the sampling timer fires late now and then, and a late
    tick still counts one sample (the CI of this lab once saw 620 samples for 607 expected, 13
    off where rounding alone allows 7): ``min(2 * sqrt(k), k) + ncpus + TIMER_SLACK * expected``.

    Args:
        expected: ``sample_freq * cpu_seconds`` (only checked to be finite).
        timeslices: how many slices the process ran in: at most its context switches + 1.
        ncpus: CPUs (default: those this process may use).
    """
    if not math.isfinite(expected):
        raise ValueError(f"expected must be a finite number of samples, got {expected!r}")
    if ncpus is None:
        ncpus = len(os.sched_getaffinity(0))
    k = max(int(timeslices), 1)
    return min(2.0 * math.sqrt(k), float(k)) + ncpus + TIMER_SLACK * abs(expected)


# -------------------------------------------------------------------------- summaries


#: :func:`top_functions`' frame
FUNCTIONS = Schema(
    function="string", module="category", where="category", samples="int64", percent="float64"
)
FUNCTION_COLUMNS = FUNCTIONS.columns


def top_functions(stacks: pd.DataFrame, n: int = 15, by: str = "self") -> pd.DataFrame:
    """The functions the CPU spent its samples in, from a :func:`cpu_profile` frame.

    Args:
        stacks: the frame (filter it first, e.g. to one pid).
        n: how many rows (the most samples first).
        by: ``"self"``: samples where the function was the leaf (the CPU was executing *its*
            instructions); ``"total"``: samples where it was anywhere on the stack (it or what it
            called), each sample counted once per function.

    Returns:
        ``function``, ``module``, ``where`` (``"user"`` or ``"kernel"``), ``samples``,
        ``percent`` (of all the frame's samples).
    """
    check_choice(by, "by", ("self", "total"))
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive whole number, got {n!r}")
    require_columns(stacks, {"frames", "samples", "in_kernel"}, "top_functions", "a cpu_profile")
    counts: dict[tuple[str, str, str], int] = {}
    total = int(stacks["samples"].sum())
    for frames, samples in zip(stacks["frames"], stacks["samples"]):
        chosen = frames[-1:] if by == "self" else frames
        seen = set()
        for function, module in chosen:
            where = "kernel" if module == "kernel" else "user"
            key = (function, module, where)
            if key in seen:
                continue
            seen.add(key)
            counts[key] = counts.get(key, 0) + int(samples)
    rows = [
        {"function": f, "module": m, "where": w, "samples": s, "percent": 100.0 * s / total}
        for (f, m, w), s in counts.items()
    ]
    df = pd.DataFrame(rows, columns=FUNCTION_COLUMNS)
    df = df.sort_values(["samples", "function"], ascending=[False, True], ignore_index=True)
    df = FUNCTIONS.frame(df.head(n))
    df.attrs.update({"by": by, "total_samples": total})
    return df


# ------------------------------------------------------------------------ run_queue_latency

#: per task, its waits for a CPU
RUNQ_TASKS = Schema(
    pid="int64",
    comm="category",
    waits="int64",
    total_wait_ns="int64",
    max_wait_ns="int64",
    mean_wait_ns="float64",
)
RUNQ_HIST_COLUMNS = LATENCY_HISTOGRAM.columns
RUNQ_TASK_COLUMNS = RUNQ_TASKS.columns
_RUNQ_STATS = ("waits", "enqueued_map_full", "hist_map_full", "task_map_full")


class RunQueueLatency(NamedTuple):
    """What :func:`run_queue_latency` returns: two frames from one run (both carry ``attrs``).

    Attributes:
        histogram: per task and power-of-two slot, how many waits.
        tasks: per task, the number of waits, their total, longest and mean.
    """

    histogram: pd.DataFrame
    tasks: pd.DataFrame


class _RunQueueReader(Collector):
    def __init__(self) -> None:
        self.tasks = pd.DataFrame()

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        stats = ctx.table("stats")
        for i, name in enumerate(_RUNQ_STATS):
            ctx.attrs[name] = int(stats[i].value)
        comms: dict[int, str] = {}
        task_rows = []
        for key, t in ctx.table("tasks").items():
            pid = int(key.value)
            comms[pid] = decode_c_string(t.comm)
            task_rows.append(
                {
                    "pid": pid,
                    "comm": comms[pid],
                    "waits": int(t.waits),
                    "total_wait_ns": int(t.total_ns),
                    "max_wait_ns": int(t.max_ns),
                    "mean_wait_ns": int(t.total_ns) / max(int(t.waits), 1),
                }
            )
        tasks = RUNQ_TASKS.frame(task_rows)
        self.tasks = tasks.sort_values("total_wait_ns", ascending=False, ignore_index=True)
        return latency_histogram(ctx.table("run_hist"), lambda k: comms.get(int(k.pid), UNKNOWN))


def run_queue_latency(
    duration: float = 1.0,
    workload: Callable[[], Any] | None = None,
    *,
    live: bool | None = None,
) -> RunQueueLatency:
    """Measure how long runnable tasks wait for a CPU, per task, for ``duration`` seconds.

    Three programs on the scheduler's tracepoints: ``sched_wakeup`` and ``sched_wakeup_new``
    note when a task becomes runnable, ``sched_switch`` notes a preempted task becoming runnable
    again and ends the wait of the task switched in. Every task on the machine is measured; pick
    yours out by pid (e.g. the ``pid`` column of :func:`ebpf_lab.workloads.busy_children`).

    Args:
        duration: seconds to stay attached (0 < duration <= 3600); the run also waits for
            ``workload``.
        workload: a callable run once attached, e.g.
            ``lambda: ebpf_lab.workloads.busy_children(4, 0.3, cpus=[0])``.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        A :class:`RunQueueLatency` ``(histogram, tasks)``:

        * ``histogram``: ``pid`` (the task: a thread id), ``comm``, ``bucket``, ``low_ns``,
          ``high_ns``, ``count``: per task, every slot from its lowest to highest (slot ``b``:
          waits of ``2**(b-1) .. 2**b - 1`` ns). Plot it with
          :func:`ebpf_lab.plot_latency_histogram`.
        * ``tasks``: ``pid``, ``comm``, ``waits``, ``total_wait_ns``, ``max_wait_ns``,
          ``mean_wait_ns``, the longest total first.

        ``attrs``: ``waits`` (all tasks), ``enqueued_map_full``, ``hist_map_full``,
        ``task_map_full`` (never silent), and the core's ``attach``, ``duration``, ``kernel``...

    Raises:
        ValueError: bad duration or workload (before anything loads). PermissionError: not root.
    """
    duration = check_duration(duration)
    check_workload(workload)
    probes = [
        Probe("tracepoint", "sched:sched_wakeup", "on_wakeup"),
        Probe("tracepoint", "sched:sched_wakeup_new", "on_wakeup_new"),
        Probe("tracepoint", "sched:sched_switch", "on_switch"),
    ]
    collector = _RunQueueReader()
    histogram = bounded_run(
        name="run_queue_latency",
        source=program_source("run_queue_latency"),
        alternatives=[Alternative("tracepoint", probes, "the sched tracepoints")],
        collector=collector,
        duration=duration,
        workload=workload,
        live=live,
    )
    tasks = collector.tasks
    tasks.attrs.update(histogram.attrs)
    return RunQueueLatency(histogram, tasks)


def waits_above(histogram: pd.DataFrame, threshold_ns: int) -> int:
    """How many waits in a log2 histogram certainly lasted at least ``threshold_ns``.

    Counts the slots whose lower bound is ``>= threshold_ns`` (a slot straddling the threshold
    is left out, so the answer is a lower bound).
    """
    if isinstance(threshold_ns, bool) or not isinstance(threshold_ns, int) or threshold_ns < 0:
        raise ValueError(f"threshold_ns must be a whole number >= 0, got {threshold_ns!r}")
    return int(histogram.loc[histogram["low_ns"] >= threshold_ns, "count"].sum())
