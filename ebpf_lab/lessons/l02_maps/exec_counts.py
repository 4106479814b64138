"""Lesson 02: execve calls per UID, counted in a BPF hash map (the seed's hello-map.py)."""

from __future__ import annotations

import time
from typing import Any, Callable

import pandas as pd

from ebpf_lab.core.attach import exec_alternatives
from ebpf_lab.core.guards import check_duration, check_interval, check_workload
from ebpf_lab.core.live import Live, in_jupyter
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Collector, RunContext, bounded_run
from ebpf_lab.show.frames import Schema, user_name

#: :func:`exec_counts`' frame: one row per UID and interval
COUNTS = Schema(
    time="time", uid="int64", user="category", execs="int64", rate="float64", total="int64"
)
COLUMNS = COUNTS.columns


class _Snapshots(Collector):
    """Reads the cumulative map every ``interval`` seconds and turns differences into rows.

    The map is never cleared: clearing races with the kernel (an increment between read and
    delete would be lost). Differences of cumulative counts are exact.
    """

    def __init__(
        self, interval: float, on_rows: Callable[[Live, pd.DataFrame], None] | None
    ) -> None:
        self.interval = interval
        self.on_rows = on_rows
        self.rows: list[dict[str, Any]] = []
        self.last: dict[int, int] = {}
        self.last_t = 0.0
        self.next_t = 0.0

    def start(self, ctx: RunContext) -> None:
        self.last_t = time.monotonic()
        self.next_t = self.last_t + self.interval

    def _read(self, ctx: RunContext) -> dict[int, int]:
        return {k.value: v.value for k, v in ctx.table("counter_table").items()}

    def _snapshot(self, ctx: RunContext, now: float) -> None:
        counts = self._read(ctx)
        seconds = now - self.last_t
        stamp = ctx.now()
        for uid in sorted(counts):
            execs = counts[uid] - self.last.get(uid, 0)
            self.rows.append(
                {
                    "time": stamp,
                    "uid": uid,
                    "user": user_name(uid),
                    "execs": execs,
                    "rate": execs / seconds if seconds > 0 else 0.0,
                    "total": counts[uid],
                }
            )
        self.last, self.last_t = counts, now
        if self.on_rows is not None:
            self.on_rows(ctx.live, self.frame())

    def poll(self, ctx: RunContext, timeout: float) -> None:
        now = time.monotonic()
        if now < self.next_t:
            time.sleep(min(timeout, self.next_t - now))
            now = time.monotonic()
        if now >= self.next_t:
            self._snapshot(ctx, now)
            self.next_t += self.interval
            if self.next_t <= now:  # fell behind (slow plot): realign
                self.next_t = now + self.interval

    def frame(self) -> pd.DataFrame:
        return COUNTS.frame(self.rows)

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        now = time.monotonic()
        if now - self.last_t > 1e-3 or not self.rows:  # the last, partial interval
            self._snapshot(ctx, now)
        return self.frame()


def exec_counts(
    duration: float = 10.0,
    interval: float | None = None,
    attach: str = "auto",
    workload: Callable[[], Any] | None = None,
    *,
    live: bool | None = None,
    live_plot: bool = False,
) -> pd.DataFrame:
    """Count execve calls per UID for ``duration`` seconds, read every ``interval`` seconds.

    The BPF program (``programs/exec_count.bpf.c``) adds 1 to a hash map entry keyed by the
    caller's UID on every execve, with one atomic add (``atomic_increment()``), so execs on
    several CPUs at once are all counted. (A UID's entry is created by its first exec; if two
    CPUs create the same UID's entry at the same instant, one of those two execs is not counted:
    lesson 02, exercise 4.) Every ``interval`` seconds the lab reads the whole map and
    records, per UID seen so far, how many execs happened in that interval.

    Args:
        duration: seconds to stay attached (0 < duration <= 3600). The run also waits for
            ``workload`` to finish.
        interval: seconds between reads of the map (0 < interval <= duration). Default
            (None): 1 s, or ``duration`` when the run is shorter than 1 s. An interval
            given explicitly that is longer than ``duration`` is a ValueError.
        attach: ``"auto"`` (kprobe where the kernel has kprobes, else the tracepoint),
            ``"kprobe"`` or ``"tracepoint"``.
        workload: optional callable run in a thread once attached, e.g.
            ``lambda: ebpf_lab.workloads.execs({1000: 5, 65534: 3})``.
        live: show the progress bar and Stop button (default: in Jupyter only).
        live_plot: in Jupyter, redraw the rate plot after every interval.

    Returns:
        A tidy frame, one row per (interval, uid): ``time`` (end of the interval), ``uid``,
        ``user``, ``execs`` (in that interval), ``rate`` (execs per second over the interval's
        measured length), ``total`` (running sum). Summing ``execs`` per uid gives exactly the
        execve calls that uid made while attached. ``df.attrs`` holds ``attach``, ``interval``,
        ``duration``, ``kernel``, ``interrupted``.

    Raises:
        ValueError: bad duration, interval, attach or workload (before anything loads).
        PermissionError: not root.
        UnsupportedFeature: ``attach="kprobe"`` on a kernel without kprobes.
    """
    duration = check_duration(duration)
    interval = check_interval(min(1.0, duration) if interval is None else interval, duration)
    check_workload(workload)
    alternatives = exec_alternatives(attach, "count_kprobe", "count_tracepoint")
    collector = _Snapshots(interval, _redraw_rates if live_plot and in_jupyter() else None)
    df = bounded_run(
        name="exec_counts",
        source=program_source("exec_count"),
        alternatives=alternatives,
        collector=collector,
        duration=duration,
        workload=workload,
        live=live,
        attrs={"interval": interval},
    )
    return df


def _redraw_rates(view: Live, df: pd.DataFrame) -> None:
    """Redraw the exec-rate plot inside the run's widget."""
    import matplotlib.pyplot as plt

    from ebpf_lab.show.plots import plot_exec_rates

    if df.empty:
        return
    fig, ax = plt.subplots(figsize=(8, 3.5))
    plot_exec_rates(df, ax=ax)
    view.show_figure(fig)
    plt.close(fig)
