"""Collectors that read a program's maps once, when the run is over.

Most lessons that count need no polling: the program adds to its maps while the workload runs,
and user space reads them once at the end. :class:`MapReader` is that collector, for all of
them:

* ``MapReader(read)``: ``read(ctx)`` builds the frame from the maps the lesson knows
  (``ctx.table("counts")`` ...);
* ``MapReader(each=table_frame)``: every key/value map of the program, each turned into a frame
  by ``each`` (e.g. :func:`ebpf_lab.show.frames.table_frame`), kept in ``.frames``; perf and ring
  buffers are event streams, not tables, and are named in ``.skipped`` with the reason.

Per-run values go *into* the program through maps, not ``-D`` flags, so the C text stays the
same from run to run and compiles once (the compile cache, :mod:`ebpf_lab.core.compile_cache`):
``MapReader(..., fill={"run_tag": {0: tag}})`` writes those entries after the program is
compiled and before it is attached: the program never runs without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import pandas as pd

from ebpf_lab.core.guards import check_uid
from ebpf_lab.core.loader import table_names
from ebpf_lab.core.run import Collector, RunContext

#: map types that are event streams, not key/value tables (BPF_MAP_TYPE_* numbers)
STREAM_MAP_TYPES = {4: "perf buffer", 27: "ring buffer"}


def fill_maps(bpf: Any, fill: Mapping[str, Mapping[int, int]]) -> None:
    """Write ``{map name: {key: value}}`` into a compiled program's maps (a collector's
    ``prepare``: after compiling, before attaching)."""
    for name, entries in fill.items():
        table = bpf[name.encode()]
        for key, value in entries.items():
            table[table.Key(key)] = table.Leaf(value)


def open_event_rows(
    collector: Collector,
    table: Any,
    row: Callable[[Any], Any],
    rows: list[Any],
    *,
    maximum: int | None = None,
    ring: bool = False,
    pages: int = 64,
    lost: Callable[[int], None] | None = None,
) -> None:
    """Open a perf buffer (``ring=True``: a ring buffer) so that every event becomes
    ``row(event)`` in ``rows`` (``event``: the record decoded by BCC's ctypes struct); at
    ``maximum`` rows the collector is full and the run ends. ``pages``: the perf buffer's pages
    per CPU; ``lost(count)`` hears of the records a perf buffer had no room for."""

    def on_event(_cpu_or_ctx: Any, data: Any, _size: int) -> None:
        if collector.full:
            return
        rows.append(row(table.event(data)))
        if maximum is not None and len(rows) >= maximum:
            collector.full = True

    if ring:
        table.open_ring_buffer(collector.guard(on_event))
    else:
        table.open_perf_buffer(collector.guard(on_event), page_cnt=pages, lost_cb=lost)


def tgid_filter(pid: int | None) -> tuple[list[str], dict[str, dict[int, int]]]:
    """The cflags and map entries of a program that watches one process, or every one.

    For a program written with ``#ifdef FILTER_TGID`` and a ``BPF_ARRAY(target_tgid, u32, 1)``:
    ``pid`` goes into the map, not the text, so one compile serves every pid.
    """
    if pid is None:
        return [], {}
    return ["-DFILTER_TGID"], {"target_tgid": {0: int(pid)}}


def uid_filter(uid: int | None) -> tuple[list[str], dict[str, dict[int, int]]]:
    """The cflags and map entries of a program that counts one UID's calls, or everyone's.

    For a program written with ``#ifdef FILTER_UID`` and a ``BPF_ARRAY(filter_uid, u32, 1)``:
    the UID goes into the map, not the text, so one compile serves every UID.

    Raises:
        ValueError: ``uid`` is not a UID (before anything loads).
    """
    if uid is None:
        return [], {}
    return ["-DFILTER_UID"], {"filter_uid": {0: check_uid(uid)}}


class MapReader(Collector):
    """Reads the program's maps once, at the end of the run (and fills some before attaching).

    Args:
        read: builds the run's frame from the maps (``read(ctx)``); default: a frame listing
            the maps read by ``each`` (columns ``map`` and ``rows``).
        each: turns one key/value map (a BCC table) into a frame; every map of the program is
            read this way into :attr:`frames` (a map ``each`` refuses with ValueError or
            KeyError goes to :attr:`skipped`).
        fill: ``{map name: {key: value}}`` written into the maps after compiling, before
            attaching: the run's own values (a tag, a pid to watch...).

    Attributes:
        ctx: the run's context once attached (a workload may read or write maps through it);
            None before, and in a replayed run.
        frames: ``{map name: frame}`` read by ``each``.
        skipped: ``{map name: why it was not read}``.
    """

    def __init__(
        self,
        read: Callable[[RunContext], pd.DataFrame] | None = None,
        *,
        each: Callable[[Any], pd.DataFrame] | None = None,
        fill: Mapping[str, Mapping[int, int]] | None = None,
    ) -> None:
        if read is None and each is None:
            raise ValueError("MapReader needs read= (one frame) or each= (every map as a frame)")
        self.read = read
        self.each = each
        self.fill = {name: dict(entries) for name, entries in (fill or {}).items()}
        self.ctx: RunContext | None = None
        self.frames: dict[str, pd.DataFrame] = {}
        self.skipped: dict[str, str] = {}

    def prepare(self, bpf: Any) -> None:
        fill_maps(bpf, self.fill)

    def start(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        if self.each is not None:
            self._read_every_map(ctx)
        if self.read is not None:
            return self.read(ctx)
        return pd.DataFrame(
            {"map": list(self.frames), "rows": [len(f) for f in self.frames.values()]}
        )

    def _read_every_map(self, ctx: RunContext) -> None:
        assert self.each is not None
        for raw in table_names(ctx.bpf):
            name = raw.decode()
            try:
                table = ctx.bpf[raw]
            except KeyError as exc:
                self.skipped[name] = f"BCC cannot open it: {exc}"
                continue
            ttype = int(getattr(table, "ttype", -1))
            if ttype in STREAM_MAP_TYPES:
                self.skipped[name] = STREAM_MAP_TYPES[ttype]
                continue
            try:
                frame = self.each(table)
            except (ValueError, KeyError) as exc:
                self.skipped[name] = str(exc)
                continue
            frame.attrs["map"] = name
            self.frames[name] = frame
