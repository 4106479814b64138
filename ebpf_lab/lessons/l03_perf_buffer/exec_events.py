"""Lesson 03: one structured event per execve through a perf or ring buffer (hello-buffer.py)."""

from __future__ import annotations

import time
from typing import Any, Callable

import pandas as pd

from ebpf_lab.core.attach import exec_alternatives
from ebpf_lab.core.collectors import open_event_rows
from ebpf_lab.core.guards import check_choice, check_duration, check_positive_int, check_workload
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Collector, RunContext, bounded_run
from ebpf_lab.kernel.btf import task_offsets_cflags
from ebpf_lab.show.frames import EXEC_EVENTS, process_columns

#: :func:`exec_events`' frame: one row per execve
EVENTS = EXEC_EVENTS.extend(message="category")
COLUMNS = EVENTS.columns
BUFFERS = ("perf", "ring")
#: perf buffer pages per CPU, ring buffer pages in all (powers of two)
PERF_PAGES = 64
RING_PAGES = 64
#: the most events one call will keep in memory
MAX_EVENTS = 10_000_000


class _EventReader(Collector):
    """Opens the program's perf or ring buffer and decodes each event with BCC's ctypes struct."""

    def __init__(self, buffer: str, max_events: int | None) -> None:
        self.buffer = buffer
        self.max_events = max_events
        self.rows: list[tuple[Any, ...]] = []
        self.perf_lost = 0

    def start(self, ctx: RunContext) -> None:
        open_event_rows(
            self,
            ctx.table("events"),
            lambda e: (
                e.ktime_ns,
                e.pid,
                e.ppid,
                e.uid,
                bytes(e.command),
                bytes(e.filename),
                bytes(e.message),
            ),
            self.rows,
            maximum=self.max_events,
            ring=self.buffer == "ring",
            pages=PERF_PAGES,
            lost=self._lost,
        )

    def _lost(self, count: int) -> None:
        self.perf_lost += count

    def poll(self, ctx: RunContext, timeout: float) -> None:
        # Read in batches: sleep through the poll slice (0.1 s), then take everything the rings
        # hold. Waiting in epoll instead would wake this thread for every event; at a thousand
        # execs a second those wake-ups (context switches on the CPUs the execs run on) cost the
        # traced workload ~10% (see benchmarks: exec_overhead_events_*), the reading itself <1%.
        time.sleep(timeout)
        self._drain(ctx)

    def _drain(self, ctx: RunContext) -> None:
        if self.buffer == "perf":
            ctx.bpf.perf_buffer_consume()
        else:
            ctx.bpf.ring_buffer_consume()

    def lost(self, ctx: RunContext) -> int:
        if self.buffer == "perf":
            return self.perf_lost
        return int(sum(v.value for v in ctx.table("dropped").values()))

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        raw = pd.DataFrame(
            self.rows, columns=["ktime_ns", "pid", "ppid", "uid", "command", "filename", "message"]
        )
        strings = {"command": "command", "filename": "filename", "message": "message"}
        df = pd.DataFrame(process_columns(ctx.to_time, raw, strings))
        df = EVENTS.frame(df)
        ctx.attrs["lost"] = self.lost(ctx)
        return df


def exec_events(
    duration: float = 5.0,
    buffer: str = "perf",
    attach: str = "auto",
    workload: Callable[[], Any] | None = None,
    max_events: int | None = None,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """Stream one event per execve from the kernel for ``duration`` seconds.

    The BPF program (``programs/exec_events.bpf.c``) fills a ``data_t`` struct on every execve
    (pid, parent pid, uid, command, filename, message) and sends it to user space through a perf
    buffer (one ring per CPU, as in the seed) or a BPF ring buffer (one ring shared by all CPUs).

    Args:
        duration: seconds to stay attached (0 < duration <= 3600); the run also waits for
            ``workload``.
        buffer: ``"perf"`` (BPF_PERF_OUTPUT) or ``"ring"`` (BPF_RINGBUF_OUTPUT).
        attach: ``"auto"``, ``"kprobe"`` or ``"tracepoint"``.
        workload: optional callable run once attached.
        max_events: stop after this many events (None: no limit).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per execve, in the order the events arrived (a ring buffer's order is the
        order they happened; a perf buffer's is per CPU, read a CPU's ring at a time, so sort by
        ``time`` for the order they happened): ``time``, ``pid``, ``ppid`` (real parent, read via
        the kernel's BTF),
        ``uid``, ``user``, ``command`` (the caller's comm before the exec), ``filename`` (the
        path executed), ``message`` ("Hello World"). ``df.attrs["lost"]`` counts events the
        kernel could not deliver (perf: lost-event reports; ring: reserve failures counted in a
        map); ``df.attrs["buffer"]`` says which buffer ran.

    Raises:
        ValueError: bad duration, buffer, attach, workload or max_events (before anything loads).
        PermissionError: not root.
        UnsupportedFeature: ``attach="kprobe"`` without kprobes; no BTF for the parent pid.
    """
    duration = check_duration(duration)
    check_choice(buffer, "buffer", BUFFERS)
    check_workload(workload)
    check_positive_int(max_events, "max_events", MAX_EVENTS)
    alternatives = exec_alternatives(attach, "syscall__execve", "events_tracepoint")
    cflags = task_offsets_cflags()
    if buffer == "ring":
        cflags += ["-DUSE_RINGBUF", f"-DRINGBUF_PAGES={RING_PAGES}"]
    return bounded_run(
        name="exec_events",
        source=program_source("exec_events"),
        alternatives=alternatives,
        collector=_EventReader(buffer, max_events),
        duration=duration,
        workload=workload,
        cflags=cflags,
        live=live,
        attrs={"buffer": buffer, "max_events": max_events},
    )
