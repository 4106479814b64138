"""Lesson 08: getting events out of the kernel: trace buffer, perf buffer, ring buffer, batches.

The event source is a known, fast stream: a gated ``dd if=/dev/zero of=/dev/null bs=1
count=N`` (:func:`ebpf_lab.workloads.read_stream_child`), whose N one-byte ``read()`` calls on
fd 0 the program picks out on ``syscalls:sys_enter_read`` by its pid. The program numbers every
event with a kernel-side counter (``generated``), so for every buffer ``delivered + lost ==
generated`` is checked exactly, and nothing is lost silently. :func:`stream_events` and
:func:`transfer_rates` can use a faster source, ``source="read_loop"``: a small C program
(:func:`ebpf_lab.workloads.read_loop_child`) making its N reads in ``threads`` threads, which the
batched path counts on the ``sys_enter`` raw tracepoint.

:func:`buffer_comparison`
    ONE program, attached once, writes each event to the trace buffer (``bpf_trace_printk``), a
    perf buffer and a ring buffer (``programs/transfer.bpf.c``). The three get the same events
    at the same moments, the same memory, and one reader thread that visits each in turn and
    takes at most about a buffer-full per visit; the CPU time of each visit is charged to its
    buffer. Losses: perf and ring writes that fail are counted by the program (perf also
    reports them itself, through its lost callback); the trace buffer overwrites its oldest
    lines, so its losses are the lines missing against the counter.
:func:`stream_events`
    One path alone, as fast as it goes: ``"callback"`` (a ring buffer record and a BCC Python
    callback per event, as in the seed) or ``"batched"`` (``programs/transfer_batch.bpf.c``: a
    per-CPU batch of ``batch`` events sent as one ring buffer record, decoded with
    ``numpy.frombuffer``).
:func:`transfer_rates`
    Both paths on the same source, with the numbers benchmarks report
    (``df.attrs["benchmark"]``).
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ebpf_lab.core.attach import Probe
from ebpf_lab.core.guards import check_choice, check_duration, require_bcc, require_root
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Alternative, Collector, RunContext, bounded_run, ended_early
from ebpf_lab.core.tracefs import PrintkInstance, parse_line
from ebpf_lab.workloads import (
    GatedChild,
    check_threads,
    read_loop_child,
    read_stream_child,
)

#: the buffers :func:`buffer_comparison` compares
BUFFERS = ("trace", "perf", "ring")
#: the paths :func:`stream_events` measures
PATHS = ("callback", "batched")
#: the sources :func:`stream_events` can stream: dd, or the lab's C read loop (faster, threads)
SOURCES = ("dd", "read_loop")
#: events per ring buffer record on the batched path
DEFAULT_BATCH = 256
#: the most events one :func:`stream_events` run makes (each is kept: 16 bytes)
MAX_EVENTS = 5_000_000
#: the most events one :func:`buffer_comparison` run makes (each is kept three times)
MAX_COMPARE_EVENTS = 2_000_000
#: the largest buffer, in KiB
MAX_BUFFER_KB = 256 * 1024

#: one event as the kernel writes it (``struct event_t``)
EVENT_DTYPE = np.dtype([("ktime_ns", "<u8"), ("seq", "<u4"), ("cpu", "<u4")])

EVENT_COLUMNS = ["buffer", "arrival", "seq", "time", "cpu"]
STREAM_COLUMNS = ["arrival", "seq", "time", "cpu"]

_PAGE = 4096
_TRACE_SOURCE = "syscalls:sys_enter_read"
_RAW_SOURCE = "sys_enter"


# ---------------------------------------------------------------------------------- checks


def _check_events(events: Any, maximum: int) -> int:
    if isinstance(events, bool) or not isinstance(events, int) or not 1 <= events <= maximum:
        raise ValueError(f"events must be a whole number from 1 to {maximum:,}, got {events!r}")
    return events


def _check_kb(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 16 <= value <= MAX_BUFFER_KB:
        raise ValueError(
            f"{name} must be a whole number of KiB from 16 to {MAX_BUFFER_KB}, got {value!r}"
        )
    return value


def _check_batch(batch: Any) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 1024:
        raise ValueError(f"batch must be a whole number of events from 1 to 1024, got {batch!r}")
    return batch


def _check_buffers(buffers: Any) -> tuple[str, ...]:
    if isinstance(buffers, str) or not isinstance(buffers, Sequence) or not buffers:
        raise ValueError(f"buffers must be a non-empty list drawn from {BUFFERS}, got {buffers!r}")
    for b in buffers:
        check_choice(b, "buffer", BUFFERS)
    if len(set(buffers)) != len(buffers):
        raise ValueError(f"buffers must not repeat, got {buffers!r}")
    return tuple(b for b in BUFFERS if b in buffers)


def _check_source(source: Any, threads: Any) -> tuple[str, int]:
    check_choice(source, "source", SOURCES)
    check_threads(threads)
    if source == "dd" and threads != 1:
        raise ValueError(
            f"dd is one thread (threads=1); for threads={threads} use source='read_loop'"
        )
    return source, threads


def _floor_pow2(n: float) -> int:
    n = max(1, int(n))
    return 1 << (n.bit_length() - 1)


def _online_cpus() -> int:
    from bcc.utils import get_online_cpus

    return len(get_online_cpus())


# ---------------------------------------------------------------------------------- readers


class _Sink:
    """What one buffer delivered, in arrival order, and the user-space CPU time it cost."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seq = array.array("q")
        self.ktime = array.array("q")
        self.cpu = array.array("q")
        self.cpu_s = 0.0
        self.reported_lost = 0
        self.last_data = 0.0

    def __len__(self) -> int:
        return len(self.seq)

    def add(self, e: Any) -> None:
        self.seq.append(e.seq)
        self.ktime.append(e.ktime_ns)
        self.cpu.append(e.cpu)


def _timed(sink: _Sink, visit: Any) -> int:
    """Run one visit of a buffer, charge its CPU time to the buffer; return events it brought."""
    before = len(sink)
    t = time.thread_time()
    visit()
    sink.cpu_s += time.thread_time() - t
    got = len(sink) - before
    if got:
        sink.last_data = time.monotonic()
    return got


class _TraceVisitor:
    """Reads this run's lines from a private tracefs instance, about a buffer-full per visit."""

    def __init__(self, sink: _Sink, tag: int, kb_per_cpu: int) -> None:
        self.sink = sink
        self.marker = f"[ebpf-lab-xfer {tag:x}] ".encode()
        self.pattern = re.compile(rf"^\[ebpf-lab-xfer {tag:x}\] (\d+)$")
        self.kb_per_cpu = kb_per_cpu
        self.budget = 0
        self.instance: PrintkInstance | None = None
        self.partial = b""
        self.others = 0

    def open(self, ncpus: int) -> None:
        self.instance = PrintkInstance().open()
        (self.instance.path / "buffer_size_kb").write_text(str(self.kb_per_cpu))
        # text lines are about twice the size of the binary entries the buffer holds
        self.budget = 2 * self.kb_per_cpu * 1024 * ncpus

    def visit(self) -> None:
        assert self.instance is not None and self.instance.fd is not None
        chunks, size = [], 0
        while size < self.budget:
            try:
                chunk = os.read(self.instance.fd, 1 << 18)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if not chunks:
            return
        lines = (self.partial + b"".join(chunks)).split(b"\n")
        self.partial = lines.pop()
        for raw in lines:
            if self.marker not in raw:
                self.others += 1
                continue
            line = parse_line(raw.decode(errors="replace"))
            m = self.pattern.match(line.message) if line is not None else None
            if m is None:
                self.others += 1
                continue
            self.sink.seq.append(int(m.group(1)))
            self.sink.ktime.append(line.ktime_ns)
            self.sink.cpu.append(line.cpu)

    def overrun(self) -> int:
        """Entries the instance's buffer overwrote before they were read (every program's)."""
        total = 0
        if self.instance is None:
            return 0
        for stats in self.instance.path.glob("per_cpu/cpu*/stats"):
            with contextlib.suppress(OSError, ValueError):
                for line in stats.read_text().splitlines():
                    if line.startswith("overrun:"):
                        total += int(line.split()[1])
        return total

    def close(self) -> None:
        if self.instance is not None:
            self.instance.close()


class _RingVisitor:
    """Consumes a ring buffer with a per-event BCC callback, at most ``budget`` records a visit.

    libbpf keeps consuming as long as the producer keeps adding, so a fast producer would keep a
    reader in one buffer forever; a callback that returns a negative number ends the visit
    (the record it got is consumed and kept).
    """

    def __init__(self, sink: _Sink, budget: int) -> None:
        self.sink = sink
        self.budget = budget
        self.left = budget

    def callback(self, table: Any) -> Any:
        sink = self.sink

        def on_event(ctx: Any, data: Any, size: int) -> int:
            sink.add(table.event(data))
            self.left -= 1
            return -1 if self.left <= 0 else 0

        return on_event


class _CompareReader(Collector):
    """One thread visits the trace, perf and ring buffers in turn, charging each its CPU time."""

    def __init__(
        self, buffers: tuple[str, ...], tag: int, sizes: dict[str, int], ncpus: int
    ) -> None:
        self.buffers = buffers
        self.sizes = sizes
        self.ncpus = ncpus
        self.sinks = {b: _Sink(b) for b in buffers}
        self.trace = (
            _TraceVisitor(self.sinks["trace"], tag, sizes["trace"] // 1024 // ncpus)
            if "trace" in buffers
            else None
        )
        self.ring = (
            _RingVisitor(self.sinks["ring"], sizes["ring"] // 24) if "ring" in buffers else None
        )
        self.visits: dict[str, Any] = {}

    def start(self, ctx: RunContext) -> None:
        if self.trace is not None:
            self.trace.open(self.ncpus)
            self.visits["trace"] = self.trace.visit
        if "perf" in self.buffers:
            table = ctx.table("perf_events")
            sink = self.sinks["perf"]

            def on_perf(cpu: int, data: Any, size: int) -> None:
                sink.add(table.event(data))

            def on_lost(count: int) -> None:
                sink.reported_lost += count

            table.open_perf_buffer(
                on_perf, page_cnt=self.sizes["perf"] // _PAGE // self.ncpus, lost_cb=on_lost
            )
            self.visits["perf"] = lambda: ctx.bpf.perf_buffer_poll(timeout=0)
        if self.ring is not None:
            ring = self.ring
            ctx.table("ring_events").open_ring_buffer(ring.callback(ctx.table("ring_events")))

            def visit_ring() -> None:
                ring.left = ring.budget
                ctx.bpf.ring_buffer_consume()

            self.visits["ring"] = visit_ring

    def _round(self) -> int:
        return sum(_timed(self.sinks[b], self.visits[b]) for b in self.buffers)

    def poll(self, ctx: RunContext, timeout: float) -> None:
        end = time.monotonic() + timeout
        while True:
            got = self._round()
            now = time.monotonic()
            if now >= end:
                return
            if not got:
                time.sleep(min(0.001, end - now))

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        quiet = 0
        while quiet < 3:  # drain: three rounds in a row that bring nothing
            quiet = quiet + 1 if self._round() == 0 else 0
        counters = ctx.table("counters")
        generated = int(counters[0].value)
        failed = {
            "trace": int(counters[1].value),
            "perf": int(counters[2].value),
            "ring": int(counters[3].value),
        }
        parts = []
        lost, reported, cpu_s = {}, {}, {}
        for b in self.buffers:
            sink = self.sinks[b]
            seq = np.frombuffer(sink.seq, dtype=np.int64)
            parts.append(
                pd.DataFrame(
                    {
                        "buffer": b,
                        "arrival": np.arange(len(seq), dtype=np.int64),
                        "seq": seq,
                        "time": ctx.to_time(np.frombuffer(sink.ktime, dtype=np.int64)).to_numpy(),
                        "cpu": np.frombuffer(sink.cpu, dtype=np.int64),
                    }
                )
            )
            delivered = int(np.unique(seq).size)
            # perf and ring: the writes the program saw fail; trace: the lines that never came
            lost[b] = generated - delivered if b == "trace" else failed[b]
            cpu_s[b] = sink.cpu_s
        if "perf" in self.buffers:
            reported["perf"] = self.sinks["perf"].reported_lost
        if self.trace is not None:
            reported["trace"] = self.trace.overrun()
            ctx.attrs["other_printk_lines"] = self.trace.others
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EVENT_COLUMNS)
        df["buffer"] = pd.Categorical(df["buffer"], categories=list(self.buffers))
        df = df[EVENT_COLUMNS].astype({"arrival": "int64", "seq": "int64", "cpu": "int64"})
        ctx.attrs.update(
            {
                "generated": generated,
                "lost": lost,
                "failed_writes": failed,
                "lost_reported": reported,
                "user_cpu_s": cpu_s,
            }
        )
        return df

    def close(self, ctx: RunContext | None) -> None:
        if self.trace is not None:
            self.trace.close()


class _StreamReader(Collector):
    """One path: per-event callbacks, or whole batches decoded with numpy."""

    def __init__(self, path: str, batch: int, ring_bytes: int, child: GatedChild) -> None:
        self.path = path
        self.batch = batch
        self.child = child
        self.sink = _Sink(path)
        self.ring = _RingVisitor(self.sink, max(1, ring_bytes // 24))
        self.raw: list[bytes] = []
        self.arrays: list[np.ndarray] = []
        self.flushed = 0

    def start(self, ctx: RunContext) -> None:
        if self.path == "callback":
            table = ctx.table("ring_events")
            table.open_ring_buffer(self.ring.callback(table))
        else:
            raw = self.raw

            def on_batch(ctx_: Any, data: Any, size: int) -> int:
                raw.append(ctypes.string_at(data, size))  # one copy; decoded in bulk below
                return 0

            ctx.table("batches").open_ring_buffer(on_batch)

    def _visit(self, ctx: RunContext, ms: int) -> None:
        # Wait up to ms for the kernel's wake-up; with ms == 0 (the final drain) take what the
        # ring holds whether or not a wake-up came (a BPF_RB_NO_WAKEUP record sends none).
        def read() -> None:
            if ms == 0:
                ctx.bpf.ring_buffer_consume()
            else:
                ctx.bpf.ring_buffer_poll(timeout=ms)

        if self.path == "callback":
            self.ring.left = self.ring.budget
            read()
            return
        read()
        if self.raw:
            block = np.frombuffer(b"".join(self.raw), dtype=EVENT_DTYPE)
            self.raw.clear()
            self.arrays.append(block)

    def _poll_once(self, ctx: RunContext, ms: int) -> int:
        before = self._count()
        t = time.thread_time()
        self._visit(ctx, ms)
        self.sink.cpu_s += time.thread_time() - t
        got = self._count() - before
        if got:
            self.sink.last_data = time.monotonic()
        return got

    def _count(self) -> int:
        if self.path == "callback":
            return len(self.sink)
        return sum(len(a) for a in self.arrays)

    def poll(self, ctx: RunContext, timeout: float) -> None:
        end = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= end:
                return
            self._poll_once(ctx, max(1, int((end - now) * 1000)))

    def _flush_staging(self, ctx: RunContext) -> None:
        """Read what is left in each CPU's staging area (the source has ended: no writers)."""
        table = ctx.table("staging")
        values = table.getvalue(table.Key(0))
        batch_dtype = np.dtype([("n", "<u4"), ("pad", "<u4"), ("rec", EVENT_DTYPE, self.batch)])
        per_cpu = np.frombuffer(bytes(values), dtype=batch_dtype)
        for row in per_cpu:
            n = int(row["n"])
            if n:
                self.arrays.append(row["rec"][:n].copy())
                self.flushed += n

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        quiet = 0
        while quiet < 3:
            quiet = quiet + 1 if self._poll_once(ctx, 0) == 0 else 0
        if self.path == "batched":
            t = time.thread_time()
            self._flush_staging(ctx)
            self.sink.cpu_s += time.thread_time() - t
            events = np.concatenate(self.arrays) if self.arrays else np.empty(0, dtype=EVENT_DTYPE)
            seq = events["seq"].astype(np.int64)
            ktime = events["ktime_ns"].astype(np.int64)
            cpu = events["cpu"].astype(np.int64)
        else:
            seq = np.frombuffer(self.sink.seq, dtype=np.int64)
            ktime = np.frombuffer(self.sink.ktime, dtype=np.int64)
            cpu = np.frombuffer(self.sink.cpu, dtype=np.int64)
        counters = ctx.table("counters")
        generated = int(counters[0].value)
        lost = int(counters[1].value if self.path == "batched" else counters[3].value)
        delivered = int(np.unique(seq).size)
        child = self.child
        start = child.released_at or ctx.t0_mono_ns / 1e9
        source_end = child.exited_at or time.monotonic()
        seconds = max(source_end, self.sink.last_data) - start
        df = pd.DataFrame(
            {
                "arrival": np.arange(len(seq), dtype=np.int64),
                "seq": seq,
                "time": ctx.to_time(ktime).to_numpy(),
                "cpu": cpu,
            }
        )
        cpu_s = self.sink.cpu_s
        ctx.attrs.update(
            {
                "generated": generated,
                "delivered": delivered,
                "lost": lost,
                "delivered_fraction": delivered / generated if generated else float("nan"),
                "stream_seconds": seconds,
                "events_per_s": delivered / seconds if seconds > 0 else float("nan"),
                "source_events_per_s": (
                    generated / (source_end - start) if source_end > start else float("nan")
                ),
                "user_cpu_s": cpu_s,
                "us_per_event": cpu_s / delivered * 1e6 if delivered else float("nan"),
                "out_of_order": int(np.count_nonzero(np.diff(seq) < 0)),
                "flushed_from_staging": self.flushed,
            }
        )
        return df


# ---------------------------------------------------------------------------------- lessons


def _sizes(buffer_kb: int, ncpus: int) -> dict[str, int]:
    """Bytes each buffer gets from a budget of ``buffer_kb`` KiB (powers of two where needed)."""
    budget = buffer_kb * 1024
    perf_pages = _floor_pow2(budget / _PAGE / ncpus)
    ring_pages = _floor_pow2(budget / _PAGE)
    trace_kb = max(4, budget // 1024 // ncpus)
    return {
        "trace": trace_kb * 1024 * ncpus,
        "perf": perf_pages * _PAGE * ncpus,
        "ring": ring_pages * _PAGE,
    }


def buffer_comparison(
    events: int = 200_000,
    *,
    buffers: Sequence[str] = BUFFERS,
    buffer_kb: int = 512,
    migrate_every: float | None = None,
    duration: float = 0.1,
    live: bool | None = None,
) -> pd.DataFrame:
    """Send the same stream of ``events`` events through the trace, perf and ring buffers at once.

    A gated dd makes exactly ``events`` one-byte reads of fd 0; one program on
    ``syscalls:sys_enter_read`` numbers each (``seq``) and writes it to every buffer in
    ``buffers`` (``programs/transfer.bpf.c``). Each buffer gets about ``buffer_kb`` KiB (perf:
    split over the CPUs, in powers of two pages; trace: ``buffer_size_kb`` per CPU of a private
    tracefs instance). One thread reads them in turn, at most about a buffer-full per visit, and
    each visit's CPU time (``time.thread_time``) is charged to its buffer: the comparison is on
    the same events, the same memory and the same reader. Summarise with
    :func:`transfer_summary`.

    Note: ``bpf_trace_printk`` lines go to every tracefs reader on the machine; keep ``events``
    modest when others use the trace buffer.

    Args:
        events: reads the source makes, i.e. events (1 .. 2,000,000).
        buffers: which of ``"trace"``, ``"perf"``, ``"ring"`` to write to.
        buffer_kb: memory per buffer, in KiB (16 .. 262144).
        migrate_every: move the source to the next CPU every this many seconds (pinning it
            with ``sched_setaffinity``), so events come from every CPU in turn and the buffers'
            order across CPUs shows; None: wherever the scheduler puts it.
        duration: the least time to stay attached; the run waits for the source to finish.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per delivered event per buffer: ``buffer`` (category), ``arrival`` (its position
        in that buffer's arrival order), ``seq`` (the kernel's number for it), ``time`` (when it
        happened, by the kernel's clock), ``cpu``. ``df.attrs``: ``generated`` (the kernel-side
        count), ``lost`` (per buffer: failed writes counted by the program for perf and ring,
        missing lines for trace), ``failed_writes``, ``lost_reported`` (what the buffers report
        themselves: perf's lost callback, the trace instance's overrun count, which includes
        other programs' lines), ``user_cpu_s`` (per buffer), ``buffer_bytes``, ``source`` (what
        dd did) and the core's attach, duration, kernel...

    Raises:
        ValueError: bad events, buffers, buffer_kb or duration (before anything loads).
        PermissionError: not root.
    """
    events = _check_events(events, MAX_COMPARE_EVENTS)
    chosen = _check_buffers(buffers)
    buffer_kb = _check_kb(buffer_kb, "buffer_kb")
    if migrate_every is not None:
        migrate_every = check_duration(migrate_every, "migrate_every")
    duration = check_duration(duration)
    require_root()
    require_bcc()
    ncpus = _online_cpus()
    sizes = _sizes(buffer_kb, ncpus)
    tag = secrets.randbits(31) | 1
    box: dict[str, pd.DataFrame] = {}
    with read_stream_child(events) as child:
        cflags = [
            f"-DTARGET_TGID={child.pid}",
            f"-DRUN_TAG={tag:#x}",
            f"-DRING_PAGES={sizes['ring'] // _PAGE}",
        ]
        cflags += [f"-DWITH_{b.upper()}" for b in chosen]
        collector = _CompareReader(chosen, tag, sizes, ncpus)
        df = bounded_run(
            name="transfer",
            source=program_source("transfer"),
            alternatives=[
                Alternative("tracepoint", [Probe("tracepoint", _TRACE_SOURCE, "on_read")])
            ],
            collector=collector,
            duration=duration,
            workload=child.run if migrate_every is None else _migrating(child, migrate_every),
            cflags=cflags,
            live=live,
            on_workload_result=lambda done: box.update(done=done),
            attrs={
                "buffer": "+".join(chosen),
                "buffers": list(chosen),
                "events": events,
                "buffer_bytes": {b: sizes[b] for b in chosen},
                "migrate_every": migrate_every,
            },
        )
    df.attrs["source"] = box["done"].iloc[0].to_dict() if "done" in box else {}
    return df


def _migrating(child: GatedChild, every: float) -> Any:
    """A workload: run ``child``, moving it to the next allowed CPU every ``every`` seconds."""

    def work() -> pd.DataFrame:
        cpus = sorted(os.sched_getaffinity(0))
        moves = [0]
        stop = threading.Event()

        def mover() -> None:
            while not stop.wait(every):
                with contextlib.suppress(OSError):  # the child may have exited
                    os.sched_setaffinity(child.pid, {cpus[moves[0] % len(cpus)]})
                    moves[0] += 1

        thread = threading.Thread(target=mover, name="ebpf-lab-migrate", daemon=True)
        thread.start()
        try:
            done = child.run()
        finally:
            stop.set()
            thread.join()
        done["migrations"] = moves[0]
        return done

    return work


def transfer_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per buffer from a :func:`buffer_comparison` frame: delivered, lost, order, cost.

    Returns:
        Columns ``buffer``, ``generated``, ``delivered`` (distinct events that arrived), ``lost``,
        ``balanced`` (``delivered + lost == generated``), ``lost_counted_by``,
        ``lost_reported`` (the buffer's own report, <NA> for ring: it reports nothing),
        ``delivered_fraction``, ``duplicates``, ``out_of_order`` (arrivals with a smaller
        ``seq`` than the one before), ``monotonic`` (no such arrival), ``cpus`` (CPUs the
        delivered events came from), ``user_cpu_s``, ``us_per_event`` (user-space CPU
        microseconds per delivered event), ``buffer_kb``.
    """
    needed = {"generated", "lost", "user_cpu_s", "buffers"}
    missing = needed - set(df.attrs)
    if missing or not set(EVENT_COLUMNS) <= set(df.columns):
        raise ValueError(
            "transfer_summary needs the frame returned by buffer_comparison "
            f"(missing {sorted(missing) or 'columns'})"
        )
    generated = int(df.attrs["generated"])
    how = {
        "trace": "lines missing vs the kernel's counter (old lines are overwritten)",
        "perf": "perf_submit() failures counted by the program",
        "ring": "ringbuf_output() failures counted by the program",
    }
    rows = []
    for b in df.attrs["buffers"]:
        part = df[df["buffer"] == b].sort_values("arrival")
        seq = part["seq"].to_numpy()
        delivered = int(np.unique(seq).size)
        lost = int(df.attrs["lost"][b])
        cpu_s = float(df.attrs["user_cpu_s"][b])
        reported = df.attrs.get("lost_reported", {}).get(b)
        rows.append(
            {
                "buffer": b,
                "generated": generated,
                "delivered": delivered,
                "lost": lost,
                "balanced": delivered + lost == generated,
                "lost_counted_by": how[b],
                "lost_reported": reported,
                "delivered_fraction": delivered / generated if generated else float("nan"),
                "duplicates": int(len(seq) - delivered),
                "out_of_order": int(np.count_nonzero(np.diff(seq) < 0)),
                "cpus": int(part["cpu"].nunique()),
                "user_cpu_s": cpu_s,
                "us_per_event": cpu_s / delivered * 1e6 if delivered else float("nan"),
                "buffer_kb": df.attrs.get("buffer_bytes", {}).get(b, 0) // 1024,
            }
        )
    out = pd.DataFrame(rows)
    out["monotonic"] = out["out_of_order"] == 0
    out = out[
        [
            "buffer",
            "generated",
            "delivered",
            "lost",
            "balanced",
            "lost_counted_by",
            "lost_reported",
            "delivered_fraction",
            "duplicates",
            "out_of_order",
            "monotonic",
            "cpus",
            "user_cpu_s",
            "us_per_event",
            "buffer_kb",
        ]
    ]
    return out.astype({"buffer": "category", "lost_reported": "Int64"})


def stream_events(
    path: str = "batched",
    events: int = 1_000_000,
    *,
    batch: int = DEFAULT_BATCH,
    ring_kb: int = 1024,
    duration: float = 0.1,
    live: bool | None = None,
    source: str = "dd",
    threads: int = 1,
) -> pd.DataFrame:
    """Stream ``events`` events from the kernel through one path, as fast as the source goes.

    Args:
        path: ``"callback"``: one ring buffer record per event and one BCC Python callback per
            record (the seed's way); ``"batched"``: ``batch`` events per record, collected in a
            per-CPU staging map, one callback per record, decoded with ``numpy.frombuffer``.
        events: reads the source makes (1 .. 5,000,000).
        batch: events per record on the batched path (1 .. 1024).
        ring_kb: the ring buffer's size in KiB (rounded down to a power of two pages).
        duration: the least time to stay attached; the run waits for the source.
        live: show the progress bar and Stop button (default: in Jupyter only).
        source: ``"dd"``: a gated dd (one thread; its reads are picked out on
            ``syscalls:sys_enter_read`` by pid and fd 0); ``"read_loop"``: the lab's C read loop
            (:func:`ebpf_lab.workloads.read_loop_child`, built with gcc on first use), whose only
            reads after its gate are the ``events`` reads, so the batched path counts them on
            the cheaper ``sys_enter`` raw tracepoint by pid and syscall number (the callback path
            stays on the tracepoint).
        threads: threads the ``read_loop`` source splits its reads over (1 .. 64; dd: 1). With
            several threads, events of different threads interleave: ``seq`` is still the order
            in which the program numbered them, across all threads and CPUs.

    Returns:
        One row per delivered event, in arrival order: ``arrival``, ``seq``, ``time``, ``cpu``.
        ``df.attrs``: ``path``, ``generated``, ``delivered``, ``lost`` (counted by the program),
        ``delivered_fraction``, ``events_per_s`` (delivered events per second, from the
        source's start to the later of its end and the last record read), ``source_events_per_s``
        (events the source made per second), ``stream_seconds``, ``user_cpu_s`` (the reading
        thread's CPU time, decoding included), ``us_per_event``, ``out_of_order``,
        ``flushed_from_staging`` (batched: events read from the staging map at the end),
        ``batch``, ``ring_bytes``, ``source`` (what the source did: its ``program``, ``reads``,
        ``threads``...), ``source_kind``, ``threads``.

    Raises:
        ValueError: bad path, events, batch, ring_kb, duration, source or threads (before
            anything loads).
        PermissionError: not root.
        HelperBuildError: ``source="read_loop"`` and the C helper could not be built (no gcc).
    """
    check_choice(path, "path", PATHS)
    events = _check_events(events, MAX_EVENTS)
    batch = _check_batch(batch)
    ring_kb = _check_kb(ring_kb, "ring_kb")
    duration = check_duration(duration)
    source, threads = _check_source(source, threads)
    require_root()
    ring_pages = _floor_pow2(ring_kb * 1024 / _PAGE)
    box: dict[str, pd.DataFrame] = {}
    probe = Probe("tracepoint", _TRACE_SOURCE, "on_read")
    if source == "read_loop" and path == "batched":
        probe = Probe("raw_tracepoint", _RAW_SOURCE, "on_sys_enter")
    start = read_loop_child(events, threads) if source == "read_loop" else read_stream_child(events)
    with start as child:
        cflags = [f"-DTARGET_TGID={child.pid}", f"-DRING_PAGES={ring_pages}"]
        if path == "batched":
            name, fn_source, cflags = (
                "transfer_batch",
                "transfer_batch",
                cflags + [f"-DBATCH={batch}"],
            )
        else:
            name, fn_source, cflags = (
                "transfer",
                "transfer",
                cflags + ["-DWITH_RING", "-DRUN_TAG=0"],
            )
        collector = _StreamReader(path, batch, ring_pages * _PAGE, child)
        df = bounded_run(
            name=name,
            source=program_source(fn_source),
            alternatives=[Alternative(probe.kind, [probe])],
            collector=collector,
            duration=duration,
            workload=child.run,
            cflags=cflags,
            live=live,
            on_workload_result=lambda done: box.update(done=done),
            attrs={
                "path": path,
                "buffer": "ring",
                "events": events,
                "batch": batch if path == "batched" else 1,
                "ring_bytes": ring_pages * _PAGE,
                "source_kind": source,
                "threads": threads,
            },
        )
    df.attrs["source"] = box["done"].iloc[0].to_dict() if "done" in box else {}
    return df


def transfer_rates(
    events: int = 1_000_000,
    *,
    batch: int = DEFAULT_BATCH,
    ring_kb: int = 1024,
    live: bool | None = None,
    source: str = "dd",
    threads: int = 1,
) -> pd.DataFrame:
    """Both paths of :func:`stream_events` on the same source, one after the other.

    Args:
        events: reads the source makes in each run (1 .. 5,000,000).
        batch: events per record on the batched path (1 .. 1024).
        ring_kb: the ring buffer's size in KiB, the same for both paths.
        live: show the progress bar and Stop button (default: in Jupyter only).
        source: ``"dd"`` or ``"read_loop"`` (see :func:`stream_events`).
        threads: threads of the ``read_loop`` source (1 .. 64; dd: 1).

    Returns:
        One row per path (``callback``, ``batched``): ``path``, ``events``, ``generated``,
        ``delivered``, ``lost``, ``delivered_fraction``, ``events_per_s``,
        ``source_events_per_s``, ``user_cpu_s``, ``us_per_event``, ``batch``.
        ``df.attrs["benchmark"]`` holds the numbers benchmarks report:
        ``stream_events_per_s`` and ``stream_lost`` (the batched path, the lab's fastest),
        ``naive_callback_events_per_s`` and ``naive_delivered_fraction`` (BCC's per-event
        callback). ``attrs["interrupted"]``: Stop or Ctrl-C ended a stream, and the call made no
        more (``attrs["not_run"]`` lists the paths without a row; no ``"benchmark"`` then).

    Raises:
        ValueError: bad events, batch, ring_kb, source or threads (before anything loads).
    """
    _check_events(events, MAX_EVENTS)
    _check_batch(batch)
    _check_kb(ring_kb, "ring_kb")
    _check_source(source, threads)
    require_root()
    keys = [
        "generated",
        "delivered",
        "lost",
        "delivered_fraction",
        "events_per_s",
        "source_events_per_s",
        "user_cpu_s",
        "us_per_event",
        "batch",
    ]
    rows = []
    for path in PATHS:
        df = stream_events(
            path, events, batch=batch, ring_kb=ring_kb, live=live, source=source, threads=threads
        )
        if ended_early(df):  # Stop or Ctrl-C: a partial stream is no rate; run no more
            break
        rows.append({"path": path, "events": events, **{k: df.attrs[k] for k in keys}})
    out = pd.DataFrame(rows, columns=["path", "events", *keys]).astype({"path": "category"})
    by = out.set_index("path")
    if len(by) == len(PATHS):
        out.attrs["benchmark"] = {
            "stream_events_per_s": float(by.loc["batched", "events_per_s"]),
            "stream_lost": int(by.loc["batched", "lost"]),
            "naive_callback_events_per_s": float(by.loc["callback", "events_per_s"]),
            "naive_delivered_fraction": float(by.loc["callback", "delivered_fraction"]),
        }
    out.attrs.update(
        {
            "events": events,
            "batch": batch,
            "ring_kb": ring_kb,
            "source": source,
            "threads": threads,
            "interrupted": len(rows) < len(PATHS),
            "not_run": [p for p in PATHS if p not in set(out["path"])],
        }
    )
    return out
