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

import contextlib
import os
import secrets
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ebpf_lab.core.attach import Probe, one_probe
from ebpf_lab.core.guards import check_choice, check_duration, require_bcc, require_root
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Alternative, bounded_run, ended_early
from ebpf_lab.lessons.l08_data_transfer.readers import (
    _PAGE,
    EVENT_COLUMNS,
    EVENT_DTYPE,  # noqa: F401 (notebook 08 reads it here)
    _CompareReader,
    _StreamReader,
)
from ebpf_lab.show.frames import Schema
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

#: :func:`transfer_summary`'s frame, one row per buffer
SUMMARY = Schema(
    buffer="category",
    generated="int64",
    delivered="int64",
    lost="int64",
    balanced="bool",
    lost_counted_by="object",
    lost_reported="Int64",
    delivered_fraction="float64",
    duplicates="int64",
    out_of_order="int64",
    monotonic="bool",
    cpus="int64",
    user_cpu_s="float64",
    us_per_event="float64",
    buffer_kb="int64",
)
#: :func:`transfer_rates`' frame, one row per path
RATES = Schema(
    path="category",
    events="int64",
    generated="int64",
    delivered="int64",
    lost="int64",
    delivered_fraction="float64",
    events_per_s="float64",
    source_events_per_s="float64",
    user_cpu_s="float64",
    us_per_event="float64",
    batch="int64",
)

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
        cflags = [f"-DRING_PAGES={sizes['ring'] // _PAGE}"]
        cflags += [f"-DWITH_{b.upper()}" for b in chosen]
        collector = _CompareReader(chosen, tag, sizes, ncpus, child.pid)
        df = bounded_run(
            name="transfer",
            source=program_source("transfer"),
            alternatives=one_probe("tracepoint", _TRACE_SOURCE, "on_read"),
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
    for row in rows:
        row["monotonic"] = row["out_of_order"] == 0
    return SUMMARY.frame(rows)


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
        cflags = [f"-DRING_PAGES={ring_pages}"]
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
                cflags + ["-DWITH_RING"],
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
    keys = RATES.columns[2:]  # what each stream_events run says in its attrs
    rows = []
    for path in PATHS:
        df = stream_events(
            path, events, batch=batch, ring_kb=ring_kb, live=live, source=source, threads=threads
        )
        if ended_early(df):  # Stop or Ctrl-C: a partial stream is no rate; run no more
            break
        rows.append({"path": path, "events": events, **{k: df.attrs[k] for k in keys}})
    out = RATES.frame(rows)
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
