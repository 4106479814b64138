"""Lesson 13: what a program costs, measured by the kernel (``run_cnt``, ``run_time_ns``).

With ``kernel.bpf_stats_enabled`` on, the kernel counts each program's runs and the time they
took. :func:`program_cost` turns it on for one bounded run only (and puts it back as it was),
runs a known number of execs, and reads the two programs' statistics with
``bpftool -j prog show``, next to each program's own count of its runs.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pandas as pd

from ebpf_lab.core import replay
from ebpf_lab.core.guards import check_duration, check_positive_int
from ebpf_lab.core.run import RunContext
from ebpf_lab.kernel import bpftool
from ebpf_lab.lessons.l13_bpftool.tour import (
    FUNCTIONS,
    PROGS,
    SubjectCollector,
    bcc_contents,
    quiet_call,
    run_subject,
    workload_uid,
)
from ebpf_lab.workloads import MAX_EXECS

#: one row per program: ``prog show``'s columns (the kernel's statistics among them) and the
#: program's own count of its runs
COST = PROGS.extend(own_count="int64")


class _Cost(SubjectCollector):
    """Reads both programs' statistics once the workload is done, while they are attached."""

    def __init__(self, uid: int) -> None:
        super().__init__(uid)
        self.attrs: dict[str, Any] = {}

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        ids = bpftool.prog_ids(ctx.bpf, FUNCTIONS)
        # one `prog show` for both programs: one exec of bpftool, one reading of `runs` around it
        shown = quiet_call(ctx, "prog", "show")
        by_id = {row["id"]: row for row in bpftool.prog_records(shown.answer.data)}
        rows = []
        for slot, prog_id in enumerate(ids.values()):
            row = by_id.get(prog_id)
            if row is None:
                continue
            rows.append({**row, "own_count": shown.runs_after.get(slot, 0)})
        ctx.attrs.update(
            {
                "prog_ids": ids,
                "quiet": shown.quiet,
                "tries": shown.tries,
                "uid_execs": bcc_contents(ctx, "execs_by_uid").get(self.uid, 0),
                "command": shown.answer.command_line,
                "error": shown.answer.error,
            }
        )
        return COST.frame(rows)


def program_cost(
    execs_count: int = 200,
    uid: int | None = None,
    duration: float = 0.5,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """Measure what each lab program costs per run, with the kernel's own statistics.

    Turns on ``kernel.bpf_stats_enabled`` for this run only (its old value is written back on
    every way out: an error, Stop, Ctrl-C), attaches ``count_light`` and ``count_heavy``
    (``bpftool_subject.bpf.c``) to the execve tracepoint, runs ``/bin/true`` ``execs_count``
    times as ``uid``, then reads ``bpftool -j prog show`` while both are still attached.

    The tracepoint fires for every exec on the machine, not just the workload's (bpftool's own
    exec included), so ``run_cnt`` is compared with each program's own count of its runs, read
    through BCC just after bpftool: when no other exec came in between (``attrs["quiet"]``), the
    two are equal.

    Args:
        execs_count: execs as ``uid`` while attached (1..MAX_EXECS); more runs, steadier means.
        uid: the UID they run as; default: a UID nobody uses (:func:`unused_uid`).
        duration: seconds to stay attached at least (the run also waits for the execs).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per program, with ``prog show``'s columns (``tour.PROGS``): ``id``, ``name``,
        ``type``, ``tag``, ``run_cnt`` and ``run_time_ns`` (the kernel's), ``ns_per_run`` (their
        ratio: the mean cost of one run, in nanoseconds), ``bytes_xlated``, ``bytes_jited``,
        ``map_ids``, ``btf_id``, ``loaded_at``, ``verified_insns``; then ``own_count`` (the
        program's own count of its runs). ``df.attrs``: ``uid``, ``execs``, ``uid_execs`` (the
        workload's execs as counted by ``count_light``: ``execs_count``), ``quiet``,
        ``stats_before`` (the sysctl's value before the run), ``prog_ids``, ``command``.

    Raises:
        ValueError: a bad count, uid or duration (before anything loads).
        PermissionError: not root.
        UnsupportedFeature: the kernel has no ``kernel.bpf_stats_enabled``.
    """
    execs_count = check_positive_int(execs_count, "execs_count", MAX_EXECS)
    duration = check_duration(duration)
    uid = workload_uid(uid)
    collector = _Cost(uid)
    # a replay touches no sysctl: the recorded frame answers
    stats = contextlib.nullcontext(None) if replay.replaying() else bpftool.bpf_stats()
    with stats as before:
        return run_subject(
            "program_cost",
            collector,
            uid=uid,
            execs_count=execs_count,
            duration=duration,
            live=live,
            attrs={"stats_before": before},
        )


def plot_cost(df: pd.DataFrame, ax: Any = None) -> Any:
    """Bars of ``ns_per_run`` per program, from a :func:`program_cost` frame; returns the axes.

    Each bar is labelled with the runs it averages over (``run_cnt``).

    Raises:
        ValueError: ``df`` lacks the ``name``, ``ns_per_run`` or ``run_cnt`` column, or is empty.
    """
    missing = [c for c in ("name", "ns_per_run", "run_cnt") if c not in getattr(df, "columns", [])]
    if missing or len(df) == 0:
        raise ValueError(f"plot_cost needs a program_cost() frame with rows; missing {missing}")
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3))
    names = [str(n) for n in df["name"]]
    bars = ax.bar(names, df["ns_per_run"].fillna(0), color=["#4c72b0", "#dd8452"][: len(df)])
    for bar, runs in zip(bars, df["run_cnt"]):
        ax.annotate(
            f"{int(runs)} runs",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
        )
    ax.set_ylabel("ns per run (run_time_ns / run_cnt)")
    ax.set_title("What each program costs, measured by the kernel")
    return ax
