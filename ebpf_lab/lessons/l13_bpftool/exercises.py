"""Lesson 13 (bpftool): checkable exercises."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ebpf_lab.classroom.checks import Right, Wrong, exercise, frame_function
from ebpf_lab.lessons.l13_bpftool.cost import COST


def recorded_cost(rows: list[tuple[str, int, int, int]]) -> pd.DataFrame:
    """A frame shaped like :func:`program_cost`'s, from (name, run_cnt, run_time_ns, own_count):
    a run where ``kernel.bpf_stats_enabled`` was turned on late, so the kernel counted fewer runs
    than the program did."""
    return COST.frame(
        [
            {
                "id": 100 + i,
                "name": name,
                "type": "tracepoint",
                "run_cnt": run_cnt,
                "run_time_ns": run_time_ns,
                "ns_per_run": run_time_ns / run_cnt,
                "own_count": own_count,
                "bytes_xlated": 360,
                "bytes_jited": 212,
                "map_ids": [7, 8],
                "tag": "0ac85c4bea0c314c",
            }
            for i, (name, run_cnt, run_time_ns, own_count) in enumerate(rows)
        ]
    )


# the statistics were switched on part-way: run_cnt < own_count for every program
COST_A = recorded_cost([("count_light", 400, 120_000, 1_000), ("count_heavy", 400, 520_000, 1_000)])
COST_B = recorded_cost([("count_light", 90, 45_000, 300), ("count_heavy", 120, 240_000, 300)])


def _per_program(got: Any) -> dict[str, float]:
    if isinstance(got, pd.DataFrame) and got.shape[1] == 1:
        got = got.iloc[:, 0]
    if not isinstance(got, pd.Series) or not pd.api.types.is_numeric_dtype(got):
        raise Wrong(
            f"your answer gives a {type(got).__name__}; give one number per program, e.g. a "
            "Series indexed by name: df.set_index('name')[...]"
        )
    return {str(k): float(v) for k, v in got.items()}


def _close(got: dict[str, float], want: dict[str, float]) -> bool:
    return set(got) == set(want) and all(abs(got[k] - want[k]) <= 1e-6 * want[k] for k in want)


@exercise(
    "13.1",
    title="Total time when the statistics came late",
    asks="a function of a program_cost() frame (lambda df: ...) or a pandas expression on `df` "
    "as text, giving per program name its estimated total run time in ns over all its runs",
)
def total_time(answer: Any) -> Right:
    run = frame_function(answer)
    for n, df in enumerate((COST_A, COST_B)):
        by_name = df.set_index("name")
        truth = {
            str(k): float(v) for k, v in (by_name["ns_per_run"] * by_name["own_count"]).items()
        }
        got = _per_program(run(df))
        if _close(got, truth):
            continue
        if _close(got, {str(k): float(v) for k, v in by_name["run_time_ns"].items()}):
            raise Wrong(
                "run_time_ns is the time of the runs the kernel counted, and it counted only "
                "those after the statistics were switched on (run_cnt < own_count). Scale the "
                "mean per counted run to every run the program made",
                got=got,
                expected=truth,
            )
        wrong_mean = {
            str(k): float(v) for k, v in (by_name["run_time_ns"] / by_name["own_count"]).items()
        }
        if _close(got, wrong_mean):
            raise Wrong(
                "that is run_time_ns spread over all runs: the mean is over the runs the kernel "
                "timed (run_cnt); then multiply that mean by how many runs there really were",
                got=got,
                expected=truth,
            )
        if n == 1:
            raise Wrong(
                "right for one recorded frame but not another: compute it from df's columns",
                got=got,
                expected=truth,
            )
        raise Wrong(f"expected {truth}, your answer gives {got}", got=got, expected=truth)
    return Right(
        "right: the kernel's mean per run (run_time_ns / run_cnt) times the runs the program "
        "counted itself. It assumes the runs before the statistics came on cost as much as the "
        "timed ones: a guess, which is why the lab turns them on before attaching"
    )
