"""Lesson 07's attach points: where the counter goes, what the kernel must have, what it counts.

:data:`KINDS` and :data:`TARGETS` name the seven attach points; :func:`fentry_function` finds the
kernel function an fentry program can hook (by BTF); :func:`_precheck` says, before anything
loads, that the kernel plainly lacks a kind; :func:`sampling_bound` is how far a perf event's
sample count may honestly be from its expectation. :class:`_Counts` reads the counter map.
The runs themselves are in :mod:`ebpf_lab.lessons.l07_attach_points.attach_points`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.errors import UnsupportedFeature
from ebpf_lab.core.run import Collector, RunContext
from ebpf_lab.kernel import btf
from ebpf_lab.show.frames import Schema, decode_c_string

#: the kinds of attach point this lesson compares, in the order of the table
KINDS = ("kprobe", "kretprobe", "fentry", "tracepoint", "raw_tracepoint", "uprobe", "perf_event")

#: where each kind attaches (the :class:`~ebpf_lab.core.attach.Probe` target)
TARGETS = {
    "kprobe": "syscall:getppid",
    "kretprobe": "syscall:getppid",
    "fentry": "syscall:getppid",
    "tracepoint": "syscalls:sys_enter_getppid",
    "raw_tracepoint": "sys_enter",
    "uprobe": "c:getppid",
    "perf_event": "software:cpu-clock",
}

#: what each kind sees, in words
WHAT = {
    "kprobe": "entry of the kernel function behind getppid() (__x64_sys_getppid)",
    "kretprobe": "return from the kernel function behind getppid() (__x64_sys_getppid)",
    "fentry": "entry of the getppid() body (__do_sys_getppid) through a BPF trampoline (BTF)",
    "tracepoint": "the syscalls:sys_enter_getppid tracepoint (getppid system calls)",
    "raw_tracepoint": "the raw sys_enter tracepoint (every system call; the program keeps getppid)",
    "uprobe": "a uprobe on libc's getppid() (user-space function calls)",
    "perf_event": "a software cpu-clock perf event sampling one process",
}

#: :func:`ebpf_lab.count_at`'s frame: one row per process the program ran for
COUNTS = Schema(tgid="int64", command="category", events="int64", workload="bool")
COLUMNS = COUNTS.columns


#: the most time, per context switch, between the kernel charging a process CPU time and its
#: sampling timer running (or the other way round), in seconds; measured here at up to ~7 us
#: under heavy load (other programs on the scheduler's tracepoints lengthen every switch)
SWITCH_GAP_S = 10e-6


def sampling_bound(sample_freq: int, context_switches: int, ncpus: int | None = None) -> int:
    """How far a per-process cpu-clock sample count may be from ``sample_freq`` x CPU-seconds.

    The timer of a perf event opened for one process runs only while that process is on a CPU,
    and keeps its remaining period when the process is switched out, so the samples follow the
    process's own CPU time: not the wall clock, and not a coin toss (no square-root-of-n
    Poisson error). What remains:

    * BCC opens one such event per CPU and each keeps its own phase, so each can end with a
      partial period that never fired: up to ``ncpus`` samples short;
    * the first and last moments: up to 2 more, either way;
    * at every context switch a few microseconds pass between the kernel starting (or stopping)
      charging the process CPU time and the timer starting (or stopping): up to
      ``sample_freq * context_switches *`` :data:`SWITCH_GAP_S` more.

    So ``|samples - sample_freq * cpu_seconds| <= ncpus + 2 +
    ceil(sample_freq * context_switches * SWITCH_GAP_S)``.

    The bound assumes every timer interrupt arrives less than one period after it was due: perf
    counts one sample for a tick however many periods late it fires. At 1000 Hz (1 ms) that
    holds; at 5000 Hz (200 us), in a virtual machine whose host is busy, a tick is now and then
    late enough to swallow the next, and the count comes out a few samples short.

    Sampling the whole machine instead (every process, ``pid=-1``) is statistical: a process's
    share of the ticks depends on where each of its time slices starts in the timer's period,
    up to one tick per time slice either way.

    Args:
        sample_freq: samples per second of CPU time.
        context_switches: times the process was switched out (``ru_nvcsw + ru_nivcsw``).
        ncpus: CPUs the process may run on (default: those this process may use).
    """
    if ncpus is None:
        ncpus = len(os.sched_getaffinity(0))
    return int(ncpus) + 2 + math.ceil(sample_freq * context_switches * SWITCH_GAP_S)


def fentry_function(name: str) -> str:
    """The kernel function an fentry program hooks for system call ``name``.

    fentry finds its function by BTF, which names only some of a system call's functions: on
    x86-64 kernels 6.1 to 6.18 the BTF has ``__do_sys_getppid`` (the syscall's body, which
    ``__x64_sys_getppid`` calls or is an alias of) but not ``__x64_sys_getppid``. The first of
    ``__x64_sys_<name>``, ``__do_sys_<name>``, ``__se_sys_<name>``, ``sys_<name>`` that the BTF
    describes is used.
    """
    try:
        known = btf.function_names()
    except UnsupportedFeature:  # no BTF: fentry cannot work, and _precheck says so
        known = frozenset()
    for candidate in (f"__x64_sys_{name}", f"__do_sys_{name}", f"__se_sys_{name}", f"sys_{name}"):
        if candidate in known:
            return candidate
    return f"__do_sys_{name}"


_SAME_CALLS = (
    "the syscalls:sys_enter_getppid tracepoint (kind='tracepoint') or the raw "
    "sys_enter tracepoint (kind='raw_tracepoint'), which see the same calls,"
)


def require_fentry(alternative: str) -> None:
    """Raise UnsupportedFeature (naming ``alternative``) unless the doctor's ``fentry`` row says
    this kernel runs fentry programs: only loading one tells, and the doctor has."""
    from ebpf_lab.kernel.doctor import doctor

    frame = doctor()
    row = frame[frame["feature"] == "fentry"].iloc[0]
    if not bool(row["supported"]):
        raise UnsupportedFeature("fentry", f"the doctor: {row['detail']}", alternative)


def _precheck(kind: str) -> None:
    """Raise UnsupportedFeature, before anything loads, when the kernel plainly lacks ``kind``.

    These are the cheap file checks of :mod:`ebpf_lab.core.kernelfs` (the same ones the doctor uses
    before it probes), and for fentry the doctor's own verdict (only loading an fentry program
    tells); the run itself is the real test.
    """
    if kind in ("kprobe", "kretprobe"):
        ok, why = kernel.kprobes_available()
        if not ok:
            raise UnsupportedFeature(kind, why, _SAME_CALLS)
    elif kind == "fentry":
        require_fentry(_SAME_CALLS)
    elif kind == "tracepoint":
        kernel.require_tracefs()
        if not kernel.syscall_tracepoint_exists("getppid"):
            raise UnsupportedFeature(
                "tracepoint",
                "no syscalls:sys_enter_getppid in tracefs (CONFIG_FTRACE_SYSCALLS unset)",
                "kind='raw_tracepoint' (sys_enter)",
            )
    elif kind == "uprobe":
        if not Path("/sys/bus/event_source/devices/uprobe").exists():
            raise UnsupportedFeature(
                "uprobe",
                "no uprobe PMU (/sys/bus/event_source/devices/uprobe): the kernel "
                "was built without CONFIG_UPROBE_EVENTS",
                "kind='tracepoint'",
            )


class _Counts(Collector):
    """Reads the per-process counter map at the end (counting needs no polling), and the
    child's count alone when its work is done (:meth:`at_work_end`)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.ctx: RunContext | None = None
        self.work_events: int | None = None

    def start(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def at_work_end(self) -> None:
        """Called by the workload while the child is stopped after its work."""
        if self.ctx is None:  # nothing attached (e.g. a replayed run): nothing to read
            return
        table = self.ctx.table("counts")
        try:
            self.work_events = int(table[table.Key(self.pid)].events)
        except KeyError:
            self.work_events = 0

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        rows = []
        for key, value in ctx.table("counts").items():
            rows.append(
                {
                    "tgid": key.value,
                    "command": decode_c_string(value.comm),
                    "events": value.events,
                    "workload": key.value == self.pid,
                }
            )
        df = COUNTS.frame(rows)
        df = df.sort_values(["workload", "events"], ascending=False, ignore_index=True)
        ctx.attrs["missed"] = int(ctx.table("missed")[0].value)
        return df
