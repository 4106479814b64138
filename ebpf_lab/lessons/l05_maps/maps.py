"""Lesson 05: BPF maps: hash, array, per-CPU, LRU and histogram maps, and user space writing them.

Every function here watches the same simple event, a ``write()`` (or ``read()``) system call, and
keeps its count in a different kind of map, so the maps can be compared side by side. Pair them
with :func:`ebpf_lab.workloads.writes`, which makes write() calls of sizes you choose as a UID
nobody else uses, and pass that UID as ``uid=``: every count is then exact::

    who = ebpf_lab.workloads.unused_uid()
    df = ebpf_lab.map_counts("hash", uid=who,
                             workload=lambda: ebpf_lab.workloads.writes([1, 8, 8], uid=who))

- :func:`map_counts`: one counter per write size in a hash, an array, or their per-CPU versions.
- :func:`lru_survivors`: what a full hash and a full LRU hash do with a new key.
- :func:`size_histogram`: a power-of-two histogram (``BPF_HISTOGRAM`` + ``bpf_log2l``).
- :func:`user_space_updates`: user space inserts, updates, deletes and clears entries while the
  program runs, and the program obeys at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import pandas as pd

from ebpf_lab.core.attach import sys_enter
from ebpf_lab.core.collectors import MapReader, uid_filter
from ebpf_lab.core.guards import (
    check_choice,
    check_duration,
    check_positive_int,
    check_required_int,
    check_uid,
    check_workload,
)
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import RunContext, bounded_run, stop_requested
from ebpf_lab.show.frames import Schema, table_frame
from ebpf_lab.show.log2 import bucket_bounds, log2_bucket, slot_rows  # noqa: F401 (read here)

#: the kinds of map :func:`map_counts` can count in
MAP_KINDS = ("hash", "array", "percpu_hash", "percpu_array")
_KIND_NUMBER = {"hash": 1, "array": 2, "percpu_hash": 3, "percpu_array": 4}
#: default room in the map: hashes grow up to it; arrays always have exactly this many slots
DEFAULT_MAX_ENTRIES = {"hash": 1024, "array": 64, "percpu_hash": 1024, "percpu_array": 64}
#: the largest ``max_entries`` the lessons accept
MAX_MAP_ENTRIES = 65_536
#: system calls whose sizes :func:`size_histogram` can count
SYSCALLS = ("write", "read")
#: :func:`size_histogram`'s frame: every slot from the smallest to the largest non-empty one
SIZE_HISTOGRAM = Schema(bucket="int64", low="uint64", high="uint64", count="int64")


def _watch(
    name: str,
    program: str,
    syscall: str,
    fn: str,
    read: Callable[[RunContext], pd.DataFrame],
    *,
    uid: int | None,
    duration: float,
    workload: Callable[[], Any] | None,
    live: bool | None,
    cflags: Sequence[str] = (),
    attrs: dict[str, Any],
) -> pd.DataFrame:
    """One run of the lesson: ``fn`` of ``program`` at ``sys_enter_<syscall>``, counting only
    ``uid``'s calls (None: all), its maps read by ``read`` when the run ends. The uid, duration
    and workload are checked here, before anything loads."""
    uid_flags, fill = uid_filter(uid)
    duration = check_duration(duration)
    check_workload(workload)
    return bounded_run(
        name=name,
        source=program_source(program),
        alternatives=sys_enter(syscall, fn),
        collector=MapReader(read, fill=fill),
        duration=duration,
        workload=workload,
        cflags=uid_flags + list(cflags),
        live=live,
        attrs={**attrs, "uid": uid},
    )


# ------------------------------------------------------------------------------- map_counts


def map_counts(
    kind: str = "hash",
    uid: int | None = None,
    duration: float = 1.0,
    workload: Callable[[], Any] | None = None,
    max_entries: int | None = None,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """Count ``write()`` calls by size in a BPF map of the ``kind`` you choose.

    The program (``programs/write_counts.bpf.c``) runs on the ``syscalls:sys_enter_write``
    tracepoint and adds 1 to the entry whose key is the call's byte count:

    - ``"hash"``: ``BPF_HASH``. An entry exists once the program inserts it; a full map refuses
      new keys.
    - ``"array"``: ``BPF_ARRAY``. Slots ``0 .. max_entries-1`` exist from the start, at zero; a size
      with no slot (``>= max_entries``) cannot be counted.
    - ``"percpu_hash"``, ``"percpu_array"``: the same, but every entry holds one value per CPU,
      and each CPU adds to its own without atomic instructions.

    Args:
        kind: one of :data:`MAP_KINDS`.
        uid: count only calls made by this UID (None: every write() on the machine).
        duration: seconds to stay attached (0 < duration <= 3600); the run also waits for
            ``workload``.
        workload: a callable run once attached, e.g.
            ``lambda: ebpf_lab.workloads.writes([1, 8, 8], uid=who)``.
        max_entries: room in the map (default 1024 for hashes, 64 for arrays; at most 65536).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per map entry, sorted by size: ``size`` and ``calls``; arrays list every slot,
        zeros too. Per-CPU kinds add one column per CPU, ``cpu0``, ``cpu1``, ... before
        ``calls`` (their sum). ``df.attrs``: ``kind``, ``map_type`` (BCC's class),
        ``max_entries``, ``uid``, ``no_slot`` (calls that found no slot or were refused).

    Raises:
        ValueError: bad kind, uid, duration, workload or max_entries (before anything loads).
        PermissionError: not root.
    """
    check_choice(kind, "kind", MAP_KINDS)
    entries = check_positive_int(max_entries, "max_entries", MAX_MAP_ENTRIES)
    entries = entries or DEFAULT_MAX_ENTRIES[kind]

    def read(ctx: RunContext) -> pd.DataFrame:
        df = table_frame(ctx.table("counts"))
        ctx.attrs["map_type"] = df.attrs.get("map_type", "")
        df = df.rename(columns={"key": "size", "value": "calls"})
        cpus = [c for c in df.columns if c.startswith("cpu")]
        if cpus:
            df["calls"] = df[cpus].sum(axis=1)
        df = df.astype({c: "int64" for c in df.columns})
        df.attrs = {}
        ctx.attrs["no_slot"] = int(ctx.table("no_slot")[0].value)
        return df

    return _watch(
        f"map_counts ({kind})",
        "write_counts",
        "write",
        "count_write",
        read,
        uid=uid,
        duration=duration,
        workload=workload,
        live=live,
        cflags=[f"-DMAP_KIND={_KIND_NUMBER[kind]}", f"-DMAX_ENTRIES={entries}"],
        attrs={"kind": kind, "max_entries": entries},
    )


# ---------------------------------------------------------------------------- lru_survivors

#: :func:`lru_survivors`' frame: one row per size either map still holds (<NA>: not held)
LRU = Schema(
    size="int64",
    in_lru="bool",
    lru_calls="Int64",
    lru_last_event="Int64",
    in_plain="bool",
    plain_calls="Int64",
    plain_last_event="Int64",
)


def lru_survivors(
    max_entries: int = 4,
    uid: int | None = None,
    duration: float = 1.0,
    workload: Callable[[], Any] | None = None,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """Show what a full hash and a full LRU hash do with a new key.

    The program (``programs/lru_survivors.bpf.c``) keys two maps of ``max_entries`` entries by the
    size of each ``write()`` call: a plain ``BPF_HASH``, which refuses new keys once full, and an
    LRU hash (``BPF_TABLE("lru_hash", ...)``), which makes room by evicting the key used least
    recently. Each value holds the number of calls and the number of the last event (the n-th
    call seen) that used the key.

    Write more distinct sizes than ``max_entries`` and compare: the plain hash keeps the *first*
    keys, the LRU hash the most *recently used* ones. The kernel's LRU is approximate (CPUs keep
    small local free lists); with every call on one CPU (``writes(..., cpu=0)``) recent kernels
    evict in exact least-recently-used order.

    Args:
        max_entries: room in each map (1 .. 65536; small, to see evictions).
        uid: count only calls made by this UID (None: every write() on the machine).
        duration: seconds to stay attached; the run also waits for ``workload``.
        workload: e.g. ``lambda: ebpf_lab.workloads.writes([1, 2, 3, 4, 5, 6], uid=who, cpu=0)``.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per size still held by either map, sorted by size: ``size``, ``in_lru``,
        ``lru_calls``, ``lru_last_event``, ``in_plain``, ``plain_calls``, ``plain_last_event``
        (<NA> where the map does not hold the key). ``df.attrs``: ``events`` (calls seen),
        ``refused`` (new keys the full plain hash refused), ``max_entries``, ``uid``.

    Raises:
        ValueError: bad max_entries, uid, duration or workload (before anything loads).
        PermissionError: not root.
    """
    entries = check_required_int(max_entries, "max_entries", MAX_MAP_ENTRIES, 4)

    def held(ctx: RunContext, name: str) -> pd.DataFrame:
        df = table_frame(ctx.table(name))
        return df.rename(
            columns={"key": "size", "calls": f"{name}_calls", "last_event": f"{name}_last_event"}
        ).set_index("size")

    def read(ctx: RunContext) -> pd.DataFrame:
        lru, plain = held(ctx, "lru"), held(ctx, "plain")
        df = lru.join(plain, how="outer").sort_index().reset_index()
        df["in_lru"] = df["size"].isin(lru.index)
        df["in_plain"] = df["size"].isin(plain.index)
        df = LRU.frame(df)
        stats = ctx.table("stats")
        ctx.attrs["events"] = int(stats[0].value)
        ctx.attrs["refused"] = int(stats[1].value)
        return df

    return _watch(
        "lru_survivors",
        "lru_survivors",
        "write",
        "remember_write",
        read,
        uid=uid,
        duration=duration,
        workload=workload,
        live=live,
        cflags=[f"-DMAX_ENTRIES={entries}"],
        attrs={"max_entries": entries},
    )


# --------------------------------------------------------------------------- size_histogram


def size_histogram(
    syscall: str = "write",
    uid: int | None = None,
    duration: float = 1.0,
    workload: Callable[[], Any] | None = None,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """A power-of-two histogram of the byte counts asked of ``write()`` or ``read()``.

    The program (``programs/size_histogram.bpf.c``) adds 1 to slot ``bpf_log2l(count)`` of a
    ``BPF_HISTOGRAM`` on every call: slot ``b`` counts calls of ``2**(b-1) .. 2**b - 1`` bytes.
    Only the 64 counters cross to user space, however many calls there were. This is how BCC's
    tools (biolatency, runqlat, ...) draw their histograms.

    Args:
        syscall: ``"write"`` or ``"read"``.
        uid: count only calls made by this UID (None: every call on the machine).
        duration: seconds to stay attached; the run also waits for ``workload``.
        workload: e.g. ``lambda: ebpf_lab.workloads.writes([1, 100, 4096], uid=who)``
            (:func:`ebpf_lab.workloads.reads` for ``syscall="read"``).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per slot from the smallest to the largest non-empty one (empty slots between
        them included): ``bucket``, ``low``, ``high`` (the sizes the slot holds) and ``count``.
        ``df.attrs``: ``syscall``, ``uid``, ``total`` (calls counted). Plot it with
        :func:`ebpf_lab.plot_log2_histogram`.

    Raises:
        ValueError: bad syscall, uid, duration or workload (before anything loads).
        PermissionError: not root.
    """
    check_choice(syscall, "syscall", SYSCALLS)

    def read(ctx: RunContext) -> pd.DataFrame:
        counts = {int(k.value): int(v.value) for k, v in ctx.table("dist").items()}
        ctx.attrs["total"] = sum(counts.values())
        return SIZE_HISTOGRAM.frame(slot_rows({(): counts}))

    return _watch(
        f"size_histogram ({syscall})",
        "size_histogram",
        syscall,
        f"hist_{syscall}",
        read,
        uid=uid,
        duration=duration,
        workload=workload,
        live=live,
        attrs={"syscall": syscall},
    )


# ----------------------------------------------------------------------- user_space_updates

#: :func:`user_space_updates`' frame: one row per step and UID
UPDATES = Schema(
    step="int64",
    action="category",
    uid="int64",
    weight="int64",
    writes="int64",
    expected="int64",
    kernel_added="int64",
    watched_after="string",
)
UPDATE_COLUMNS = UPDATES.columns


def user_space_updates(
    uids: Sequence[int] | None = None,
    calls: int = 3,
    duration: float = 0.5,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """User space inserts, updates, deletes and clears map entries; the running program obeys.

    The program (``programs/watch_list.bpf.c``) adds ``watched[uid]`` (a weight) to a score on
    every ``write()`` by a watched UID, and ignores everyone else. User space changes
    ``watched`` while the program stays attached, step by step::

        0  (nothing: watched is empty)      3  watched[a] = 2        (update)
        1  watched[a] = 1                   4  del watched[b]        (delete)
        2  watched[b] = 1000                5  watched.clear()

    After each change both UIDs make ``calls`` write() calls (:func:`ebpf_lab.workloads.writes`),
    and the program adds what it found in the map, per step (user space also sets
    ``step[0]``, so the kernel files each call under the right step).

    Args:
        uids: the two UIDs ``(a, b)`` (default: two UIDs nobody uses,
            :func:`ebpf_lab.workloads.unused_uid`).
        calls: write() calls per UID per step (1 .. 10000).
        duration: at least this many seconds attached; the run waits for all the steps.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per step and UID: ``step``, ``action`` (what user space did), ``uid``,
        ``weight`` (``watched[uid]`` during the step, 0 when absent), ``writes`` (calls made),
        ``expected`` (``writes * weight``), ``kernel_added`` (what the program added), and
        ``watched_after`` (the whole map as user space read it back after the change).

    Raises:
        ValueError: bad uids, calls or duration (before anything loads).
        PermissionError: not root.
    """
    from ebpf_lab.workloads import unused_uid, writes

    if uids is None:
        a = unused_uid()
        b = unused_uid()
        while b == a:  # pragma: no cover - 1 in 2 billion
            b = unused_uid()
    else:
        if isinstance(uids, (str, bytes)) or not isinstance(uids, Sequence) or len(uids) != 2:
            raise ValueError(f"uids must be two different UIDs (a, b), got {uids!r}")
        a, b = (check_uid(u) for u in uids)
        if a == b:
            raise ValueError(f"uids must be two different UIDs, got {uids!r}")
    n = check_required_int(calls, "calls", 10_000, 3)
    duration = check_duration(duration)

    def setter(key: int, weight: int) -> Callable[[Any], None]:
        return lambda w: w.__setitem__(w.Key(key), w.Leaf(weight))

    def deleter(key: int) -> Callable[[Any], None]:
        return lambda w: w.__delitem__(w.Key(key))

    steps: list[tuple[str, Callable[[Any], None]]] = [
        ("nothing: watched is empty", lambda w: None),
        (f"watched[{a}] = 1", setter(a, 1)),
        (f"watched[{b}] = 1000", setter(b, 1000)),
        (f"watched[{a}] = 2", setter(a, 2)),
        (f"del watched[{b}]", deleter(b)),
        ("watched.clear()", lambda w: w.clear()),
    ]
    rows: list[dict[str, Any]] = []
    collector = MapReader(lambda ctx: _score_frame(ctx, rows))

    def demonstrate() -> None:
        ctx = collector.ctx
        assert ctx is not None  # start() ran before the workload thread
        watched, step = ctx.table("watched"), ctx.table("step")
        for i, (action, change) in enumerate(steps):
            if stop_requested():
                return
            step[step.Key(0)] = step.Leaf(i)  # user space -> kernel: which step this is
            change(watched)  # user space -> kernel: the watch list
            now = {int(k.value): int(v.value) for k, v in watched.items()}  # read it back
            for uid in (a, b):
                done = writes([1] * n, uid=uid)
                rows.append(
                    {
                        "step": i,
                        "action": action,
                        "uid": uid,
                        "weight": now.get(uid, 0),
                        "writes": len(done),
                        "watched_after": str(dict(sorted(now.items()))),
                    }
                )

    return bounded_run(
        name="user_space_updates",
        source=program_source("watch_list"),
        alternatives=sys_enter("write", "score_write"),
        collector=collector,
        duration=duration,
        workload=demonstrate,
        live=live,
        attrs={"uids": (a, b), "calls": n},
    )


def _score_frame(ctx: RunContext, rows: list[dict[str, Any]]) -> pd.DataFrame:
    scores = {(int(k.step), int(k.uid)): int(v.value) for k, v in ctx.table("scores").items()}
    df = pd.DataFrame(
        rows, columns=[c for c in UPDATE_COLUMNS if c not in ("expected", "kernel_added")]
    )
    df["expected"] = df["writes"] * df["weight"]
    df["kernel_added"] = [scores.get((s, u), 0) for s, u in zip(df["step"], df["uid"])]
    return UPDATES.frame(df)
