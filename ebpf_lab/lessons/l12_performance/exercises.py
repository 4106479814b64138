"""Lesson 12 (performance): checkable exercises."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ebpf_lab.classroom.checks import Right, Wrong, exercise, frame_function


def recorded_profile(rows: list[tuple[int, str, int, str]]) -> pd.DataFrame:
    """A frame shaped like :func:`ebpf_lab.cpu_profile`'s, from (pid, comm, samples, leaf)."""
    frames = [
        (("main", "app"), (leaf, "kernel" if leaf.startswith("__") else "app")) for *_, leaf in rows
    ]
    return pd.DataFrame(
        {
            "pid": pd.array([r[0] for r in rows], dtype="int64"),
            "comm": pd.Categorical([r[1] for r in rows]),
            "samples": pd.array([r[2] for r in rows], dtype="int64"),
            "in_kernel": [r[3].startswith("__") for r in rows],
            "leaf_function": pd.array([r[3] for r in rows], dtype="string"),
            "leaf_module": pd.Categorical([f[-1][1] for f in frames]),
            "frames": frames,
            "stack": [f"main;{r[3]}" for r in rows],
        }
    ).sort_values("samples", ascending=False, ignore_index=True)


# "make" has the most rows (stacks), "python3" the most samples; two "bash" processes
PROFILE_A = recorded_profile(
    [
        (900, "python3", 310, "_PyEval_EvalFrameDefault"),
        (900, "python3", 95, "__memset"),
        (400, "make", 20, "hash_find"),
        (400, "make", 18, "strcmp"),
        (400, "make", 15, "__d_lookup"),
        (400, "make", 12, "malloc"),
        (400, "make", 9, "read_file"),
        (501, "bash", 30, "execute_cmd"),
        (502, "bash", 40, "execute_cmd"),
        (502, "bash", 2, "__schedule"),
    ]
)
PROFILE_B = recorded_profile(
    [
        (10, "gzip", 120, "deflate"),
        (11, "sshd", 7, "__sys_sendmsg"),
        (11, "sshd", 6, "poll"),
        (12, "gzip", 80, "deflate"),
        (12, "gzip", 5, "__vfs_read"),
    ]
)


def _as_counts(got: Any) -> dict[Any, int]:
    if isinstance(got, pd.DataFrame):
        numeric = [
            c
            for c in got.columns
            if c not in ("pid", "comm") and pd.api.types.is_numeric_dtype(got[c])
        ]
        keys = [c for c in ("pid", "comm") if c in got.columns]
        if len(numeric) != 1 or not keys:
            raise Wrong(
                f"your answer is a table with the columns {list(got.columns)}; give the samples "
                "per process, e.g. df.groupby(['pid', 'comm'], observed=True)['samples'].sum()"
            )
        got = got.set_index(keys)[numeric[0]]
    if not isinstance(got, pd.Series) or not pd.api.types.is_numeric_dtype(got):
        raise Wrong(
            f"your answer gives a {type(got).__name__}; give one number per process, e.g. the "
            "Series df.groupby(['pid', 'comm'], observed=True)['samples'].sum()"
        )
    names = [str(n) for n in got.index.names]
    if "pid" in names:
        level = names.index("pid")
        return {(k[level] if isinstance(k, tuple) else k): int(v) for k, v in got.items() if v}
    if names == ["comm"]:
        return {("comm", str(k)): int(v) for k, v in got.items() if v}
    raise Wrong(
        "group by the process: its pid (and comm, to read it), e.g. "
        "df.groupby(['pid', 'comm'], observed=True)['samples'].sum()"
    )


@exercise(
    "12.1",
    title="Samples per process",
    asks="a function of the cpu_profile() frame (lambda df: ...) or a pandas expression on `df` "
    "as text, giving the samples each process (pid, with its comm) took, most first",
)
def samples_per_process(answer: Any) -> Right:
    run = frame_function(answer)
    for n, df in enumerate((PROFILE_A, PROFILE_B)):
        truth = {int(k): int(v) for k, v in df.groupby("pid")["samples"].sum().items()}
        result = run(df)
        got = _as_counts(result)
        if got == truth:
            values = list(_as_counts(result).values())
            if values != sorted(values, reverse=True):
                raise Wrong(
                    "the numbers are right, but not most first: add .sort_values(ascending=False)"
                )
            continue
        if n == 1:
            raise Wrong(
                "your answer is right for one recorded frame but not for another: compute it "
                "from df rather than writing it down",
                got=got,
                expected=truth,
            )
        rows = {int(k): int(v) for k, v in df.groupby("pid").size().items()}
        if got == rows:
            raise Wrong(
                "you counted rows: each row is one distinct stack, and `samples` says how often "
                "it was seen. Sum the `samples` column per process",
                got=got,
                expected=truth,
            )
        by_comm = {
            ("comm", str(k)): int(v)
            for k, v in df.groupby("comm", observed=True)["samples"].sum().items()
        }
        if got == by_comm:
            raise Wrong(
                "you grouped by comm: two processes with the same name (the two bash) are "
                "added together. Group by pid (and comm, to read it)",
                got=got,
                expected=truth,
            )
        raise Wrong(
            f"the samples per process are off (expected {truth}, your answer {got})",
            got=got,
            expected=truth,
        )
    return Right(
        "right: python3 (pid 900) took the most samples, 405, although make had more distinct "
        "stacks: the frame has one row per stack, and `samples` counts how often each was seen"
    )
