"""Lesson 09 (tracing): checkable exercises."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ebpf_lab.classroom.checks import Right, Wrong, exercise, frame_function


def recorded_events(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    """A frame shaped like :func:`ebpf_lab.open_latency`'s events, from (pid, tid, latency_ns)."""
    n = len(rows)
    ret = [3 if i % 4 else -2 for i in range(n)]
    return pd.DataFrame(
        {
            "time": pd.date_range("2025-03-01 10:00:00", periods=n, freq="17us"),
            "pid": pd.array([r[0] for r in rows], dtype="int64"),
            "tid": pd.array([r[1] for r in rows], dtype="int64"),
            "comm": pd.Categorical(["python3"] * n),
            "filename": pd.array(["/tmp/notes.txt"] * n, dtype="string"),
            "ret": pd.array(ret, dtype="int64"),
            "errno": pd.Categorical([None if r >= 0 else "ENOENT" for r in ret]),
            "latency_ns": pd.array([r[2] for r in rows], dtype="int64"),
        }
    )


# one process with two threads (so per process and per thread differ), one single-threaded
EVENTS_A = recorded_events(
    [
        (700, 700, 900),
        (700, 701, 1500),
        (700, 700, 1024),
        (700, 701, 1023),
        (700, 700, 2047),
        (700, 701, 5000),
        (800, 800, 1),
        (700, 700, 1100),
        (800, 800, 3000),
        (700, 701, 1800),
        (800, 800, 3100),
        (700, 700, 700),
    ]
)
EVENTS_B = recorded_events(
    [(50, 51, 600), (50, 52, 600), (50, 51, 70000), (50, 52, 513), (50, 50, 512), (60, 60, 4)]
)


def slot(ns: int) -> int:
    """The log2 slot ``bpf_log2l`` picks: the number of bits (0 and 1 in slot 1)."""
    return max(int(ns).bit_length(), 1)


def _truth(df: pd.DataFrame) -> dict[tuple[int, int], int]:
    buckets = [slot(n) for n in df["latency_ns"]]
    counts = df.assign(slot=buckets).groupby(["tid", "slot"]).size()
    return {(int(t), int(s)): int(c) for (t, s), c in counts.items()}


def _as_counts(got: Any) -> dict[tuple[int, int], int]:
    """The learner's result as {(tid, slot): count}."""
    if isinstance(got, pd.DataFrame):
        frame = got.reset_index() if got.index.name or got.index.nlevels > 1 else got
        frame = frame.drop(columns=[c for c in ("index",) if c in frame.columns])
        tid = next((c for c in frame.columns if str(c) in ("tid", "thread")), None)
        numeric = [c for c in frame.columns if c != tid and pd.api.types.is_numeric_dtype(frame[c])]
        if tid is None or len(numeric) != 2:
            raise Wrong(
                f"your answer is a table with the columns {list(frame.columns)}; give one count "
                "per thread and slot, e.g. a Series from df.groupby(['tid', 'slot']).size()"
            )
        sl, cnt = (
            numeric
            if any(str(numeric[1]) == n for n in ("count", "calls", "size", "0"))
            else numeric[::-1]
        )
        return {(int(t), int(s)): int(c) for t, s, c in zip(frame[tid], frame[sl], frame[cnt])}
    if isinstance(got, pd.Series):
        if not isinstance(got.index, pd.MultiIndex) or got.index.nlevels != 2:
            raise Wrong(
                "give one count per (thread, slot): a Series indexed by two levels, e.g. "
                "df.assign(slot=...).groupby(['tid', 'slot']).size()"
            )
        names = [str(n) for n in got.index.names]
        if "pid" in names and "tid" not in names:
            raise Wrong(
                "you grouped by `pid`: that is the process's histogram, which the kernel "
                "already keeps. Group by the thread, `tid`"
            )
        pairs = list(got.index)
        if names[1] == "tid":
            pairs = [(b, a) for a, b in pairs]
        return {(int(t), int(s)): int(c) for (t, s), c in zip(pairs, got.to_numpy())}
    raise Wrong(
        f"your answer gives a {type(got).__name__}; give one count per (tid, slot), e.g. a "
        "Series from df.groupby(['tid', 'slot']).size()"
    )


@exercise(
    "09.4",
    title="A latency histogram per thread",
    asks="a function of the open_latency() events frame (lambda df: ...) or a pandas expression "
    "on `df` as text, giving the number of calls per thread (`tid`) and log2 slot (the slot of a "
    "latency n is n.bit_length(), 0 and 1 in slot 1, as bpf_log2l picks it): a Series indexed "
    "by (tid, slot)",
)
def histogram_per_thread(answer: Any) -> Right:
    run = frame_function(answer)
    for n, df in enumerate((EVENTS_A, EVENTS_B)):
        truth = _truth(df)
        got = {k: v for k, v in _as_counts(run(df)).items() if v}
        if got == truth:
            continue
        if n == 1:
            raise Wrong(
                "your answer is right for one recorded frame but not for another: compute the "
                "counts from df rather than writing them down",
                got=got,
                expected=truth,
            )
        tids = {t for t, _ in got}
        if tids == set(df["pid"]) and tids != set(df["tid"]):
            raise Wrong(
                "your counts are per process (pid); the question is per thread: group by `tid`",
                got=got,
            )
        shifted = {(t, s + 1): c for (t, s), c in got.items()}
        if shifted == truth or {k: v for k, v in shifted.items() if k[1] > 1} == {
            k: v for k, v in truth.items() if k[1] > 1
        }:
            raise Wrong(
                "your slots are one too low: floor(log2(n)) puts 1024 in slot 10, bpf_log2l "
                "in slot 11 (the number of bits, n.bit_length()): slot s holds 2**(s-1) .. "
                "2**s - 1 ns",
                got=got,
                expected=truth,
            )
        if sum(got.values()) != len(df):
            raise Wrong(
                f"your counts add up to {sum(got.values())}; the frame has {len(df)} calls, "
                "and each belongs to exactly one thread and slot",
                got=got,
                expected=truth,
            )
        wrong = sorted(set(got) ^ set(truth))[:3]
        raise Wrong(
            f"some (tid, slot) counts are off, e.g. at {wrong}: slot = latency_ns.bit_length() "
            "(at least 1)",
            got=got,
            expected=truth,
        )
    truth = _truth(EVENTS_A)
    return Right(
        f"right: {len(truth)} (thread, slot) cells in the recorded frame. Process 700's threads "
        "700 and 701 have different distributions, which its per-process histogram mixes: a "
        "per-thread key shows which thread is slow (e.g. a worker thread blocked on I/O)."
    )
