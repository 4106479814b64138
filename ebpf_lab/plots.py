"""Plots of the lessons' DataFrames, sized and labelled for a classroom projector."""

from __future__ import annotations

from typing import Any

import pandas as pd

#: font sizes readable from the back of a classroom
PROJECTOR_STYLE = {
    "font.size": 13,
    "axes.titlesize": 16,
    "axes.labelsize": 14,
    "legend.fontsize": 12,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
}


def _axes(ax: Any, figsize: tuple[float, float] = (10, 4.5)) -> Any:
    import matplotlib.pyplot as plt

    if ax is None:
        with plt.rc_context(PROJECTOR_STYLE):
            _fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def plot_exec_rates(df: pd.DataFrame, ax: Any = None) -> Any:
    """Plot execs per second for each UID over time, from :func:`ebpf_lab.exec_counts`' frame.

    Each line is one user, labelled ``name (uid)``; each step is one interval (the rate is
    constant within an interval, so the line is drawn as steps).

    Args:
        df: the frame returned by ``exec_counts`` (columns ``time, uid, user, rate``).
        ax: a matplotlib Axes to draw on (default: a new figure).

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    missing = {"time", "uid", "user", "rate"} - set(df.columns)
    if missing:
        raise ValueError(f"plot_exec_rates needs an exec_counts frame; missing {sorted(missing)}")
    ax = _axes(ax)
    with plt.rc_context(PROJECTOR_STYLE):
        for uid, group in df.groupby("uid", sort=True):
            group = group.sort_values("time")
            label = f"{group['user'].iloc[0]} ({uid})"
            ax.step(group["time"], group["rate"], where="pre", linewidth=2.5, label=label)
            ax.plot(group["time"], group["rate"], "o", markersize=5, color=ax.lines[-1].get_color())
        ax.set_title("execve calls per second, by user")
        ax.set_xlabel("time")
        ax.set_ylabel("execs / s")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        if not df.empty:
            ax.legend(title="user (uid)", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        attach = df.attrs.get("attach")
        if attach:
            ax.annotate(
                f"attached: {attach}, interval {df.attrs.get('interval', '?')} s",
                xy=(0, -0.22),
                xycoords="axes fraction",
                fontsize=10,
                color="0.4",
            )
    return ax


def plot_counter_race(df: pd.DataFrame, ax: Any = None) -> Any:
    """Bar plot of a :func:`ebpf_lab.counter_race` frame: what each method counted, and the truth.

    One bar per method, labelled with the counts it lost; a dashed line at the number of calls
    the load really made.

    Args:
        df: the frame returned by ``counter_race`` (columns ``method, counted, truth, lost``).
        ax: a matplotlib Axes to draw on (default: a new figure).

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    missing = {"method", "counted", "truth", "lost"} - set(df.columns)
    if missing:
        raise ValueError(f"plot_counter_race needs a counter_race frame; missing {sorted(missing)}")
    ax = _axes(ax, figsize=(9, 4.5))
    with plt.rc_context(PROJECTOR_STYLE):
        labels = [str(m) for m in df["method"]]
        colors = ["tab:red" if pd.notna(lost) and lost > 0 else "tab:green" for lost in df["lost"]]
        bars = ax.bar(labels, df["counted"], color=colors, edgecolor="black")
        ax.bar_label(
            bars,
            labels=[
                f"{int(n):,} counted\n" + (f"{int(lost):,} lost" if pd.notna(lost) else "truth ?")
                for n, lost in zip(df["counted"], df["lost"])
            ],
            padding=3,
            fontsize=11,
        )
        top = int(df["counted"].max()) if len(df) else 1
        truth = df["truth"].dropna()
        if len(truth):
            ax.axhline(int(truth.iloc[0]), color="black", linestyle="--", linewidth=1.5)
            ax.annotate(
                f"calls made: {int(truth.iloc[0]):,}",
                xy=(1.0, int(truth.iloc[0])),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 4),
                textcoords="offset points",
                ha="right",
                fontsize=11,
            )
            top = max(top, int(truth.iloc[0]))
        ax.set_ylim(0, max(top, 1) * 1.25)
        cpus = df.attrs.get("cpus")
        where = f" on CPUs {', '.join(map(str, cpus))}" if cpus else ""
        ax.set_title(f"getppid() calls counted three ways{where}")
        ax.set_ylabel("calls counted")
        ax.grid(True, axis="y", alpha=0.3)
    return ax
