"""Lesson 03 (perf and ring buffers): checkable exercises."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ebpf_lab import workloads as _workload
from ebpf_lab.classroom.checks import (
    Right,
    Wrong,
    exercise,
    frame_function,
    map_counts,
    run_answer,
    set_comm,
    text_key_columns,
)


def recorded_events(rows: list[tuple[int, int, str, str]]) -> pd.DataFrame:
    """A frame shaped like :func:`ebpf_lab.exec_events`'s, from (pid, ppid, command, filename)."""
    n = len(rows)
    return pd.DataFrame(
        {
            "time": pd.date_range("2025-03-01 10:00:00", periods=n, freq="211ms"),
            "pid": pd.array([r[0] for r in rows], dtype="int64"),
            "ppid": pd.array([r[1] for r in rows], dtype="int64"),
            "uid": pd.array([1000] * n, dtype="int64"),
            "user": pd.Categorical(["alice"] * n),
            "command": pd.Categorical([r[2] for r in rows]),
            "filename": pd.array([r[3] for r in rows], dtype="string"),
            "message": pd.Categorical(["Hello World"] * n),
        }
    )


EVENTS_A = recorded_events(
    [
        (1001, 100, "bash", "/usr/bin/ls"),
        (3001, 300, "python3", "/bin/true"),
        (1002, 100, "bash", "/usr/bin/ls"),
        (2001, 200, "cron", "/bin/sh"),
        (3002, 300, "python3", "/bin/true"),
        (1003, 100, "bash", "/usr/bin/grep"),
        (3003, 300, "python3", "/bin/true"),
        (3004, 300, "python3", "/usr/bin/ls"),
        (3005, 300, "python3", "/bin/true"),
    ]
)
EVENTS_B = recorded_events(
    [
        (51, 50, "make", "/usr/bin/cc"),
        (52, 50, "make", "/usr/bin/ld"),
        (61, 60, "sh", "/usr/bin/sed"),
        (53, 50, "make", "/usr/bin/cc"),
    ]
)


def _as_set(value: Any) -> tuple[frozenset[str], bool]:
    """A cell of the answer as (set of programs, whether it repeated some)."""
    if isinstance(value, str):
        return frozenset([value]), False
    if isinstance(
        value, (list, tuple, np.ndarray, pd.Series, pd.Index, pd.api.extensions.ExtensionArray)
    ):
        items = [str(v) for v in value]
        return frozenset(items), len(items) != len(set(items))
    if isinstance(value, (set, frozenset)):
        return frozenset(str(v) for v in value), False
    raise Wrong(
        f"each parent's entry should list programs (an array, list or set), got a "
        f"{type(value).__name__}: e.g. df.groupby('ppid')['filename'].unique()"
    )


def _pairs(items: Iterable[tuple[Any, Any]]) -> dict[int, tuple[frozenset[str], bool]]:
    out: dict[int, list[str]] = {}
    for key, value in items:
        out.setdefault(int(key), []).extend(sorted(_as_set(value)[0]))
    return {k: (frozenset(v), len(v) != len(set(v))) for k, v in out.items()}


def _as_programs(got: Any) -> dict[int, tuple[frozenset[str], bool]]:
    """The learner's result as {parent: (programs, repeated?)}."""
    if isinstance(got, dict):
        return {int(k): _as_set(v) for k, v in got.items()}
    if isinstance(got, pd.DataFrame):
        frame = got.reset_index() if "ppid" not in got.columns and got.index.name else got
        others = [c for c in frame.columns if c not in ("ppid", "pid", "index")]
        key = "ppid" if "ppid" in frame.columns else ("pid" if "pid" in frame.columns else None)
        if key is None or len(others) != 1:
            raise Wrong(
                f"your answer is a table with the columns {list(got.columns)}; give one entry "
                "per parent pid, e.g. df.groupby('ppid')['filename'].unique()"
            )
        return _pairs(zip(frame[key], frame[others[0]]))
    if isinstance(got, pd.Series):
        if isinstance(got.index, pd.MultiIndex):
            if got.index.nlevels != 2:
                raise Wrong("group by the parent pid (ppid) only")
            return _pairs(got.index)
        return {int(k): _as_set(v) for k, v in got.items()}
    raise Wrong(
        f"your answer gives a {type(got).__name__}; give one entry per parent pid, e.g. a "
        "Series from df.groupby('ppid')['filename'].unique()"
    )


def _truth(df: pd.DataFrame, by: str, column: str) -> dict[int, frozenset[str]]:
    return {
        int(k): frozenset(map(str, v))
        for k, v in df.groupby(by, observed=True)[column].unique().items()
    }


@exercise(
    "03.2",
    title="Programs each parent ran",
    asks="a function of the exec_events() frame (lambda df: ...) or a pandas expression on `df` "
    "as text, giving for each parent pid (ppid) the distinct programs its children ran",
)
def programs_per_parent(answer: Any) -> Right:
    run = frame_function(answer)
    for n, df in enumerate((EVENTS_A, EVENTS_B)):
        got = _as_programs(run(df))
        sets = {k: v for k, (v, _) in got.items()}
        truth = _truth(df, "ppid", "filename")
        basenames = {k: frozenset(os.path.basename(p) for p in v) for k, v in truth.items()}
        if sets == truth or sets == basenames:
            repeated = [k for k, (_, rep) in got.items() if rep]
            if repeated:
                raise Wrong(
                    f"the programs are right, but the list for parent {repeated[0]} repeats "
                    "some: list each program once, with .unique() (or a set)"
                )
            continue
        if sets == _truth(df, "ppid", "command"):
            raise Wrong(
                "you listed `command`: that is the name of the process that called execve, "
                "taken *before* the new program replaced it (here: the parent's own name). The "
                "program each child ran is in `filename`."
            )
        if set(sets) == set(df["pid"]):
            raise Wrong(
                "you grouped by `pid`, the process that called execve; its parent is `ppid`, "
                "and the question asks per parent"
            )
        if n == 1:
            raise Wrong(
                "your answer is right for one frame but not for another: compute it from df"
            )
        missing = sorted(set(truth) - set(sets))
        if missing:
            raise Wrong(f"parent {missing[0]} is missing from your answer", got=sets)
        for k, want in truth.items():
            if sets.get(k) not in (want, basenames[k]):
                raise Wrong(
                    f"for parent {k} the programs should be {sorted(want)}, your answer says "
                    f"{sorted(sets.get(k, ()))}",
                    got=sets,
                )
        raise Wrong(f"your answer lists parents that ran nothing: {sorted(set(sets) - set(truth))}")
    truth = _truth(EVENTS_A, "ppid", "filename")
    busiest = max(truth, key=lambda k: len(truth[k]))
    return Right(
        f"right: e.g. parent {busiest} ran {', '.join(sorted(truth[busiest]))}. "
        "(`filename` is what a child executed; `command` is the name it had before.)"
    )


@exercise(
    "03.3",
    title="The name after exec",
    asks="BPF C as a string that attaches itself with TRACEPOINT_PROBE(category, event) and "
    "counts execs per command name *after* the exec, in a BPF_HASH keyed by "
    "struct key_t { char comm[16]; }",
    needs_kernel=True,
)
def name_after_exec(answer: str) -> Right:
    tag = secrets.token_hex(3)
    before, after, runs = f"lab{tag}p", f"lab{tag}x", 5
    tmp = Path(tempfile.mkdtemp(prefix="ebpf-lab-check-"))
    try:
        program = tmp / after
        shutil.copy2("/bin/true", program)
        program.chmod(0o755)

        def run() -> None:
            old = set_comm(before)
            try:
                _workload.execs({os.geteuid(): runs}, program=str(program))
            finally:
                set_comm(old)

        maps = run_answer(answer, tracepoint=None, workload=run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    texty = {name: f for name, f in maps.items() if text_key_columns(f)}
    if not texty:
        raise Wrong(
            "no map of yours is keyed by a name: use BPF_HASH(counts, struct key_t, u64) with "
            "struct key_t { char comm[16]; } and bpf_get_current_comm()",
            maps=maps,
        )
    messages = []
    for name, frame in texty.items():
        counts = map_counts(frame, text_key_columns(frame)[:1])
        got_after, got_before = int(counts.get(after, 0)), int(counts.get(before, 0))
        if got_after == runs:
            return Right(
                f"right: the map `{name}` counted the workload's {runs} execs under the new "
                f"program's name {after!r}, not the caller's old name {before!r}",
                map=frame,
            )
        if got_before == runs and got_after == 0:
            messages.append(
                f"the map `{name}` counts the name *before* exec ({before!r}): your probe runs "
                "before the new program replaces the old one. sched:sched_process_exec fires "
                "after it did: TRACEPOINT_PROBE(sched, sched_process_exec)"
            )
        else:
            messages.append(
                f"the workload ran {after} {runs} times; `{name}` counted {got_after} under that "
                f"name ({got_before} under the caller's name {before!r})"
            )
    raise Wrong(messages[0], maps=maps)
