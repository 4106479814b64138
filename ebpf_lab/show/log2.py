"""Power-of-two histograms (``BPF_HISTOGRAM`` + ``bpf_log2l``) as user space reads them.

A BPF program adds 1 to slot ``bpf_log2l(value)``: slot ``b`` counts values of
``2**(b-1) .. 2**b - 1`` (0 and 1 share slot 1). Lessons 05 (write sizes), 09 (system call
latency) and 12 (run-queue latency) all read such histograms; the helpers here turn their slots
into frames and labels the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import pandas as pd

from ebpf_lab.core.guards import check_whole
from ebpf_lab.show.frames import Schema

#: a latency histogram, per process: every slot from its lowest to highest non-empty one
LATENCY_HISTOGRAM = Schema(
    pid="int64", comm="category", bucket="int64", low_ns="int64", high_ns="int64", count="int64"
)


def log2_bucket(size: int) -> int:
    """The ``BPF_HISTOGRAM`` slot ``bpf_log2l(size)`` picks: the bit length of ``size`` (0 -> 1).

    ``1 -> 1``, ``2..3 -> 2``, ``4..7 -> 3``, ..., ``4096..8191 -> 13``. Zero shares slot 1
    with one.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be a whole number >= 0, got {size!r}")
    return max(size.bit_length(), 1)


def bucket_bounds(bucket: int) -> tuple[int, int]:
    """The smallest and largest size counted in histogram slot ``bucket`` (1 holds 0 and 1)."""
    check_whole(bucket, "bucket", 0, 64)
    if bucket <= 1:
        return 0, bucket
    return 1 << (bucket - 1), (1 << bucket) - 1


def slot_rows(
    counts: Mapping[Hashable, Mapping[int, int]], low: str = "low", high: str = "high"
) -> list[dict[str, Any]]:
    """Rows of every slot from the lowest to the highest non-empty one, per group.

    ``counts`` maps a group (a dict of its columns, given as a tuple of ``(column, value)``
    pairs, e.g. ``(("pid", 7), ("comm", "cat"))``, or ``()`` for one group) to ``{slot: count}``.
    Each row is the group's columns, then ``bucket``, ``low``, ``high`` (the slot's bounds, in
    columns named as given) and ``count``; empty slots between used ones are rows with count 0.
    Groups come in sorted order.
    """
    rows: list[dict[str, Any]] = []
    for group in sorted(counts):
        slots = {b: n for b, n in counts[group].items() if n}
        if not slots:
            continue
        for b in range(min(slots), max(slots) + 1):
            lo, hi = bucket_bounds(b)
            rows.append(
                {**dict(group), "bucket": b, low: lo, high: hi, "count": slots.get(b, 0)}  # type: ignore[arg-type]
            )
    return rows


def latency_histogram(table: Any, comm_of: Callable[[Any], str]) -> pd.DataFrame:
    """A :data:`LATENCY_HISTOGRAM` frame from a per-process histogram map (lessons 09, 12).

    ``table`` is a BPF hash (a BCC table) whose keys have ``pid`` and ``slot`` fields and whose
    values are counts; ``comm_of(key)`` names the key's process.
    """
    counts: dict[tuple[int, str], dict[int, int]] = {}
    for key, value in table.items():
        counts.setdefault((int(key.pid), comm_of(key)), {})[int(key.slot)] = int(value.value)
    return histogram_frame(counts)


def histogram_frame(counts: Mapping[tuple[int, str], Mapping[int, int]]) -> pd.DataFrame:
    """A :data:`LATENCY_HISTOGRAM` frame from ``{(pid, comm): {slot: count}}`` (a BPF map read
    by :func:`latency_histogram`, or a bpftrace ``hist()`` read by
    :mod:`ebpf_lab.core.bpftrace`)."""
    grouped: dict[Hashable, dict[int, int]] = {
        (("pid", pid), ("comm", comm)): dict(slots) for (pid, comm), slots in counts.items()
    }
    return LATENCY_HISTOGRAM.frame(slot_rows(grouped, "low_ns", "high_ns"))


def human_ns(ns: float) -> str:
    """A duration in nanoseconds as short text: ``512 ns``, ``16.4 µs``, ``1.05 ms``, ``2.1 s``."""
    ns = float(ns)
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.0f} ns"


def human_bytes(n: int) -> str:
    """A byte count as short text, in G, M or K when it is a whole number of them: ``4K``."""
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)
