"""Lesson 08 (data transfer): checkable exercises."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ebpf_lab.classroom.checks import Right, Wrong, exercise, frame_function


def recorded_comparison(generated: int, arrived: dict[str, list[int]]) -> pd.DataFrame:
    """A frame shaped like :func:`ebpf_lab.buffer_comparison`'s: the ``seq`` each buffer
    delivered, in arrival order (repeats and gaps allowed)."""
    rows = [(b, seq) for b, seqs in arrived.items() for seq in seqs]
    n = len(rows)
    df = pd.DataFrame(
        {
            "buffer": pd.Categorical([b for b, _ in rows], categories=["trace", "perf", "ring"]),
            "arrival": np.arange(n, dtype="int64"),
            "seq": np.array([s for _, s in rows], dtype="int64"),
            "time": pd.date_range("2025-03-01 10:00:00", periods=n, freq="3us"),
            "cpu": np.array([s % 2 for _, s in rows], dtype="int64"),
        }
    )
    delivered = {b: len(set(s)) for b, s in arrived.items()}
    df.attrs.update(
        {
            "generated": generated,
            "buffers": list(arrived),
            "lost": {b: generated - d for b, d in delivered.items()},
            "user_cpu_s": {b: 1e-6 * len(s) for b, s in arrived.items()},
        }
    )
    return df


# trace loses old lines (overwritten) and here repeats two; perf loses a burst; ring loses none
COMPARISON_A = recorded_comparison(
    40,
    {
        "trace": list(range(12, 40)) + [38, 39],
        "perf": list(range(0, 20)) + list(range(30, 40)),
        "ring": list(range(40)),
    },
)
COMPARISON_B = recorded_comparison(
    25,
    {"trace": list(range(5, 25)), "perf": [0, 1, 3, 2] + list(range(4, 25)), "ring": [7, 7, 8]},
)


def _as_fractions(got: Any) -> dict[str, float]:
    if isinstance(got, dict):
        got = pd.Series(got)
    if isinstance(got, pd.DataFrame):
        frame = got.set_index("buffer") if "buffer" in got.columns else got
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
        if "delivered_fraction" in numeric:
            numeric = ["delivered_fraction"]
        if len(numeric) != 1:
            raise Wrong(
                f"your answer is a table with the columns {list(got.columns)}; give one number "
                "per buffer, e.g. a Series indexed by buffer"
            )
        got = frame[numeric[0]]
    if not isinstance(got, pd.Series) or not pd.api.types.is_numeric_dtype(got):
        raise Wrong(
            f"your answer gives a {type(got).__name__}; give one number per buffer (a Series "
            "indexed by buffer, e.g. from df.groupby('buffer', observed=True)...)"
        )
    return {str(k): float(v) for k, v in got.items()}


@exercise(
    "08.3",
    title="Delivered fraction per buffer",
    asks="a function of a buffer_comparison() frame (lambda df: ...) or a pandas expression on "
    "`df` as text, giving per buffer the fraction of the generated events "
    "(df.attrs['generated']) that arrived, each event (seq) counted once",
)
def delivered_fraction(answer: Any) -> Right:
    run = frame_function(answer)
    for n, df in enumerate((COMPARISON_A, COMPARISON_B)):
        generated = df.attrs["generated"]
        seqs = df.groupby("buffer", observed=True)["seq"]
        truth = (seqs.nunique() / generated).to_dict()
        got = _as_fractions(run(df))
        missing = [b for b in truth if b not in got]
        if missing:
            raise Wrong(f"your answer has no number for the buffer(s) {', '.join(missing)}")
        if all(abs(got[b] - v) < 1e-9 for b, v in truth.items()):
            continue
        if n == 1:
            raise Wrong(
                "your answer is right for one recorded frame but not for another: compute the "
                "fractions from df rather than writing them down",
                got=got,
                expected=truth,
            )
        rows = (seqs.size() / generated).to_dict()
        if all(abs(got[b] - v) < 1e-9 for b, v in rows.items()):
            raise Wrong(
                "you counted rows, and the trace buffer delivered some events twice (the same "
                "seq in two rows): count distinct events, seq.nunique(), not size()",
                got=got,
                expected=truth,
            )
        lost = {b: 1 - v for b, v in truth.items()}
        if all(abs(got[b] - v) < 1e-9 for b, v in lost.items()):
            raise Wrong(
                "your answer is the fraction *lost*; the question is the fraction delivered "
                "(distinct seq that arrived / generated)",
                got=got,
                expected=truth,
            )
        counts = seqs.nunique().to_dict()
        if all(abs(got[b] - v) < 1e-9 for b, v in counts.items()):
            raise Wrong(
                "your answer counts the events each buffer delivered; divide by "
                "df.attrs['generated'] to get a fraction",
                got=got,
                expected=truth,
            )
        first = ", ".join(f"{b}: {truth[b]:.3f}, yours {got[b]:.3f}" for b in truth)
        raise Wrong(f"the fractions are off ({first})", got=got, expected=truth)
    truth = (COMPARISON_A.groupby("buffer", observed=True)["seq"].nunique() / 40).to_dict()
    return Right(
        "right: in the recorded frame trace delivered "
        f"{truth['trace']:.0%} (it overwrote the oldest lines, and two arrived twice), perf "
        f"{truth['perf']:.0%} (a burst found the buffer full), ring {truth['ring']:.0%}. "
        "(ebpf_lab.transfer_summary(df) computes the same, as delivered_fraction.)"
    )
