"""Lesson 01: "Hello World!" from the kernel on every execve (the seed's hello.py)."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any, Callable

import pandas as pd

from ebpf_lab.core.attach import exec_alternatives
from ebpf_lab.core.bpftrace import BpftraceOutput, bpftrace_tracer
from ebpf_lab.core.collectors import MapReader
from ebpf_lab.core.guards import check_duration, check_workload
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import RunContext, bounded_run
from ebpf_lab.core.tracefs import PrintkInstance
from ebpf_lab.show.frames import Schema

#: one line per execve
LINES = Schema(time="time", pid="int64", comm="category", cpu="int64", message="string")
COLUMNS = LINES.columns

#: the same measurement as a bpftrace one-liner: a line on every execve (the tracepoint, which
#: every kernel has; ``kprobe:__x64_sys_execve`` would be the seed's kprobe)
BPFTRACE = (
    "tracepoint:syscalls:sys_enter_execve "
    '{ printf("Hello World! %llu %d %d %s\\n", nsecs, pid, cpu, comm); }'
)
_BPFTRACE_LINE = re.compile(r"^Hello World! (\d+) (\d+) (\d+) (.*)$")


class _TraceReader(MapReader):
    """Reads the lab's private trace instance and keeps only lines carrying this run's tag.

    The tag reaches the program through its ``run_tag`` map, written before the program is
    attached (:class:`~ebpf_lab.core.collectors.MapReader`'s ``fill``): the program's text is
    the same for every run, so it is compiled once.
    """

    def __init__(self, tag: int) -> None:
        super().__init__(read=self._frame, fill={"run_tag": {0: tag}})
        self.pattern = re.compile(rf"^\[ebpf-lab {tag:x} (.*?)\] (.*)$")
        self.instance: PrintkInstance | None = None
        self.rows: list[dict[str, Any]] = []
        self.others = 0
        self.odd: list[str] = []

    def start(self, ctx: RunContext) -> None:
        self.instance = PrintkInstance().open()
        super().start(ctx)

    def poll(self, ctx: RunContext, timeout: float) -> None:
        assert self.instance is not None
        for line in self.instance.read(timeout):
            m = self.pattern.match(line.message)
            if m is None:
                self.others += 1  # another program's printk: not ours
                continue
            # a line of ours stamped outside this run cannot be right: keep it out, and say so
            if not ctx.t0_mono_ns - 1_000_000_000 <= line.ktime_ns <= time.monotonic_ns() + 10**9:
                self.odd.append(repr(line))
                continue
            self.rows.append(
                {
                    "ktime_ns": line.ktime_ns,
                    "pid": line.pid,
                    "comm": m.group(1),
                    "cpu": line.cpu,
                    "message": m.group(2),
                }
            )

    def _frame(self, ctx: RunContext) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=["ktime_ns", "pid", "comm", "cpu", "message"])
        df.insert(0, "time", ctx.to_time(df["ktime_ns"]).to_numpy())
        ctx.attrs["other_printk_lines"] = self.others
        ctx.attrs["odd_lines"] = self.odd
        return LINES.frame(df.drop(columns="ktime_ns"))

    def close(self, ctx: RunContext | None) -> None:
        if self.instance is not None:
            self.instance.close()


def hello(
    duration: float = 5.0,
    attach: str = "auto",
    workload: Callable[[], Any] | None = None,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """Print "Hello World!" from the kernel on every execve for ``duration`` s; return the lines.

    The BPF program (``programs/hello.bpf.c``) calls ``bpf_trace_printk`` on every execve. The
    lab reads the lines back from a private tracefs instance (the global ``trace_pipe`` is shared
    by the whole machine and consumed by whoever reads it) and keeps only this run's lines.

    Args:
        duration: seconds to stay attached (0 < duration <= 3600); the run also waits for
            ``workload``.
        attach: ``"auto"`` (kprobe if the kernel has kprobes, else the tracepoint),
            ``"kprobe"`` or ``"tracepoint"``.
        workload: optional callable run once attached, e.g.
            ``lambda: ebpf_lab.workloads.execs({65534: 3})``.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per execve seen anywhere on the machine: ``time``, ``pid`` (the task that called
        execve), ``comm`` (its name before the exec), ``cpu``, ``message`` ("Hello World!").
        ``df.attrs["other_printk_lines"]`` counts lines other programs printed meanwhile;
        ``df.attrs["odd_lines"]`` lists lines of this run whose timestamp fell outside the run
        (none expected: they are left out of the frame and reported here).

    Raises:
        ValueError: bad duration, attach or workload (before anything loads).
        PermissionError: not root.
        UnsupportedFeature: ``attach="kprobe"`` without kprobes, or tracefs not mounted.
    """
    duration = check_duration(duration)
    check_workload(workload)
    alternatives = exec_alternatives(attach, "hello_kprobe", "hello_tracepoint")
    tag = secrets.randbits(31) | 1
    return bounded_run(
        name="hello",
        source=program_source("hello"),
        alternatives=alternatives,
        collector=_TraceReader(tag),
        duration=duration,
        workload=workload,
        live=live,
        attrs={"buffer": "trace (bpf_trace_printk)"},
    )


def _bpftrace_lines(out: BpftraceOutput, ctx: RunContext) -> pd.DataFrame:
    rows, odd = [], []
    for line in out.printf:
        m = _BPFTRACE_LINE.match(line)
        if m is None:
            odd.append(line)
            continue
        ktime, pid, cpu, comm = m.groups()
        rows.append(
            {
                "time": int(ktime),
                "pid": int(pid),
                "comm": comm,
                "cpu": int(cpu),
                "message": "Hello World!",
            }
        )
    ctx.attrs["odd_lines"] = odd
    df = pd.DataFrame(rows, columns=LINES.columns)
    df["time"] = ctx.to_time(df["time"]).to_numpy()
    return LINES.frame(df)


def hello_bpftrace(
    duration: float = 5.0,
    workload: Callable[[], Any] | None = None,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """:func:`hello`, measured by the bpftrace one-liner :data:`BPFTRACE` instead of BCC.

    bpftrace prints one line per execve (its own ``printf``, not the shared trace buffer); the
    lab reads them and returns the frame :func:`hello` returns: ``time``, ``pid``, ``comm``,
    ``cpu``, ``message``. ``df.attrs["script"]`` is the one-liner; ``attrs["attach"]`` is
    ``"bpftrace"``.

    Args:
        duration: seconds to stay attached (0 < duration <= 3600); the run also waits for
            ``workload``.
        workload: optional callable run once bpftrace's probes are attached.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Raises:
        ValueError: bad duration or workload (before anything starts).
        PermissionError: not root.
        UnsupportedFeature: bpftrace is not installed (``sudo apt-get install bpftrace``).
    """
    duration = check_duration(duration)
    check_workload(workload)
    return bounded_run(
        name="hello_bpftrace",
        tracer=bpftrace_tracer(BPFTRACE),
        collector=BpftraceOutput(_bpftrace_lines),
        duration=duration,
        workload=workload,
        live=live,
        attrs={"script": BPFTRACE, "buffer": "bpftrace printf (perf buffer)"},
    )
