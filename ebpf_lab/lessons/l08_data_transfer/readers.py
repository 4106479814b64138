"""Lesson 08's reading side: how user space empties the trace, perf and ring buffers.

:class:`_CompareReader` (for :func:`ebpf_lab.buffer_comparison`) visits the three buffers in
turn from one thread, at most about a buffer-full per visit, and charges each visit's CPU time
to its buffer. :class:`_StreamReader` (for :func:`ebpf_lab.stream_events`) empties one ring
buffer as fast as it can: a BCC callback per event, or whole batches decoded with numpy.
Both count what was delivered against the kernel's own counter, so no loss goes unseen.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import os
import re
import time
from typing import Any

import numpy as np
import pandas as pd

from ebpf_lab.core.collectors import fill_maps
from ebpf_lab.core.run import Collector, RunContext
from ebpf_lab.core.tracefs import PrintkInstance, parse_line
from ebpf_lab.show.frames import Schema
from ebpf_lab.workloads import GatedChild

#: one event as the kernel writes it (``struct event_t``)
EVENT_DTYPE = np.dtype([("ktime_ns", "<u8"), ("seq", "<u4"), ("cpu", "<u4")])
#: one delivered event on one path (:func:`ebpf_lab.stream_events`)
STREAM = Schema(arrival="int64", seq="int64", time="time", cpu="int64")
#: one delivered event per buffer (:func:`ebpf_lab.buffer_comparison`); ``buffer`` is a category
#: whose categories are the buffers compared, in :data:`BUFFERS` order
EVENTS = Schema(buffer=None).extend(**STREAM.dtypes)
EVENT_COLUMNS = EVENTS.columns

_PAGE = 4096


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
        self, buffers: tuple[str, ...], tag: int, sizes: dict[str, int], ncpus: int, pid: int
    ) -> None:
        self.fill = {"target_tgid": {0: pid}}
        if "trace" in buffers:
            self.fill["run_tag"] = {0: tag}
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

    def prepare(self, bpf: Any) -> None:
        fill_maps(bpf, self.fill)  # the source's pid (and the trace lines' tag)

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
        df = EVENTS.frame(pd.concat(parts, ignore_index=True) if parts else ())
        df["buffer"] = pd.Categorical(df["buffer"], categories=list(self.buffers))
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
        self.fill = {"target_tgid": {0: child.pid}}
        self.path = path
        self.batch = batch
        self.child = child
        self.sink = _Sink(path)
        self.ring = _RingVisitor(self.sink, max(1, ring_bytes // 24))
        self.raw: list[bytes] = []
        self.arrays: list[np.ndarray] = []
        self.flushed = 0

    def prepare(self, bpf: Any) -> None:
        fill_maps(bpf, self.fill)  # the source's pid (and the trace lines' tag)

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
        df = STREAM.frame(
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
