"""Lesson 01 (hello): checkable exercises."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ebpf_lab.classroom.checks import Right, Wrong, exercise, frame_function


def recorded_hello(rows: list[tuple[str, int]], unused: tuple[str, ...] = ()) -> pd.DataFrame:
    """A frame shaped like :func:`ebpf_lab.hello`'s, from ``(comm, pid)`` rows.

    ``unused`` adds categories to ``comm`` that no row has, as a filtered frame has.
    """
    n = len(rows)
    comms = [c for c, _ in rows]
    categories = sorted(set(comms) | set(unused))
    return pd.DataFrame(
        {
            "time": pd.date_range("2025-03-01 10:00:00", periods=n, freq="137ms"),
            "pid": pd.array([p for _, p in rows], dtype="int64"),
            "comm": pd.Categorical(comms, categories=categories),
            "cpu": pd.array([i % 2 for i in range(n)], dtype="int64"),
            "message": pd.array(["Hello World!"] * n, dtype="string"),
        }
    )


#: two recorded frames: the check runs the answer on both, so it must compute, not list, counts
HELLO_A = recorded_hello(
    [("bash", 1200)] * 3
    + [("python3", 4000)] * 4
    + [("cron", 900), ("bash", 1300)]
    + [("python3", 4000)] * 3
    + [("bash", 1300), ("sshd", 700), ("cron", 901)],
    unused=("systemd",),
)
HELLO_B = recorded_hello(
    [("make", 50)] * 4 + [("sh", 51), ("sh", 52), ("sh", 53), ("bash", 1)],
    unused=("python3", "systemd"),
)


def _as_counts(got: Any) -> dict[str, Any]:
    """The learner's result as {comm: count}."""
    if isinstance(got, dict):
        got = pd.Series(got)
    if isinstance(got, pd.DataFrame):
        frame = got.set_index("comm") if "comm" in got.columns else got
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
        if len(numeric) != 1:
            raise Wrong(
                f"your answer is a table with the columns {list(got.columns)}; give one count "
                "per comm, e.g. a Series from df.groupby('comm', observed=True).size()"
            )
        got = frame[numeric[0]]
    if not isinstance(got, pd.Series):
        raise Wrong(
            f"your answer gives a {type(got).__name__}; it should give one number per comm, "
            "e.g. the Series df.groupby('comm', observed=True).size()"
        )
    if isinstance(got.index, pd.MultiIndex):
        raise Wrong(
            f"your answer is grouped by {len(got.index.levels)} columns; group by comm alone"
        )
    if not pd.api.types.is_numeric_dtype(got):
        raise Wrong("your answer's values are not numbers: count rows per comm (size())")
    return {str(k): v for k, v in got.items()}


@exercise(
    "01.2",
    title="Execs per comm",
    asks="a function of the hello() frame (lambda df: ...) or a pandas expression on `df` as "
    "text, giving the number of execve calls per comm (a Series indexed by comm)",
)
def execs_per_comm(answer: Any) -> Right:
    run = frame_function(answer)
    zeros: list[str] = []
    for n, df in enumerate((HELLO_A, HELLO_B)):
        truth = df.groupby("comm", observed=True).size()
        got = _as_counts(run(df))
        if n == 0:
            zeros = sorted(k for k, v in got.items() if v == 0 and k not in truth.index)
        extra = sorted(k for k, v in got.items() if v != 0 and k not in truth.index)
        missing = [k for k in truth.index if k not in got]
        wrong = {k: (got[k], int(v)) for k, v in truth.items() if k in got and got[k] != v}
        if not (extra or missing or wrong):
            continue
        if n == 1:  # right for the first frame, wrong for this one
            raise Wrong(
                "your answer is right for one frame but not for another: compute the counts "
                "from df rather than writing them down",
                got=got,
                expected=truth.to_dict(),
            )
        if extra:
            raise Wrong(
                f"your answer counts {', '.join(extra)}, which never called execve in the frame"
            )
        if missing:
            raise Wrong(f"your answer has no count for {', '.join(missing)}", got=got)
        distinct = df.groupby("comm", observed=True)["pid"].nunique()
        if all(got[k] == distinct[k] for k in truth.index):
            raise Wrong(
                "you counted distinct processes (pid.nunique()); the question is how often each "
                "comm called execve: count the rows, with .size() or value_counts()",
                got=got,
                expected=truth.to_dict(),
            )
        first = ", ".join(
            f"{k!r} should be {want}, your answer says {have}"
            for k, (have, want) in list(wrong.items())[:3]
        )
        raise Wrong(
            f"some counts are off: {first}. Each row is one execve call.",
            got=got,
            expected=truth.to_dict(),
        )
    truth = HELLO_A.groupby("comm", observed=True).size().sort_values(ascending=False)
    note = ""
    if zeros:
        note = (
            f" (It also lists {', '.join(zeros)} with 0: a category column keeps every "
            "category; groupby(..., observed=True) leaves out the ones that never occur.)"
        )
    return Right(
        f"right: in the recorded frame {truth.index[0]} called execve most often "
        f"({truth.iloc[0]} times), then {truth.index[1]} ({truth.iloc[1]}).{note}",
        expected=truth.to_dict(),
    )
