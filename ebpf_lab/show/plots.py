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

    The users' rates are drawn as **stacked areas**: each user is one band, labelled
    ``name (uid)``, whose thickness is that user's rate, laid on the bands of the users below
    it; a dashed line on top is the total (all users together). Each band steps once per
    interval: the rate is constant within an interval, so the first interval is as wide as
    the others (it starts ``interval`` seconds before its row's ``time``).

    Why stacked areas and not one line per user: two users with the same rate at the same
    moment would draw the same line, and one would hide the other (a rate plot of users taking
    turns shows exactly that). A band cannot hide another: an equal rate is an equal
    thickness, one above the other. It stays one Axes, so ``ax=`` and the live plot of
    ``exec_counts(live_plot=True)`` work as before; small panels, one per user, would need a
    figure of their own and grow tall with many users. To read one user's rate alone, read
    its band's thickness, or plot its rows of the frame.

    Args:
        df: the frame returned by ``exec_counts`` (columns ``time, uid, user, rate``).
            A user without a row at some time made no exec by then: its band is 0 thick.
        ax: a matplotlib Axes to draw on (default: a new figure).

    Returns:
        The matplotlib Axes. Each user's band is a ``StepPatch`` (``ax.patches``) labelled
        ``name (uid)``, whose ``get_data()`` gives ``values - baseline`` = that user's rates;
        the total is the one labelled ``total``. The legend lists the total, then the users
        from the top band down.
    """
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    missing = {"time", "uid", "user", "rate"} - set(df.columns)
    if missing:
        raise ValueError(f"plot_exec_rates needs an exec_counts frame; missing {sorted(missing)}")
    ax = _axes(ax)
    with plt.rc_context(PROJECTOR_STYLE):
        if not df.empty:
            _stack_rates(ax, df)
            handles, labels = ax.get_legend_handles_labels()
            ax.legend(
                handles[::-1],  # the total first, then the bands from the top one down
                labels[::-1],
                title="user (uid)",
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
            )
        ax.set_title("execve calls per second, by user (stacked)")
        ax.set_xlabel("time")
        ax.set_ylabel("execs / s")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
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


def _stack_rates(ax: Any, df: pd.DataFrame) -> None:
    """Draw one band per uid (stacked, lowest uid at the bottom) and the dashed total."""
    import matplotlib.pyplot as plt
    import numpy as np

    rates = (
        df.pivot_table(index="time", columns="uid", values="rate", aggfunc="sum", observed=True)
        .sort_index()
        .fillna(0.0)  # no row yet: that uid's first exec came later
    )
    times = rates.index.to_numpy(dtype="datetime64[ns]")
    step = df.attrs.get("interval")
    if not step:
        gaps = np.diff(times) / np.timedelta64(1, "s")
        step = float(np.median(gaps)) if len(gaps) else 1.0
    first = times[0] - np.timedelta64(int(step * 1e9), "ns")
    elapsed = df.attrs.get("elapsed")
    if elapsed:  # a run stopped within its first interval started less than a step before
        first = max(first, times[-1] - np.timedelta64(int(elapsed * 1e9), "ns"))
    edges = np.concatenate([[first], times])
    names = df.groupby("uid", observed=True)["user"].first()
    colors = plt.get_cmap("tab10" if rates.shape[1] <= 10 else "tab20").colors
    bottom = np.zeros(len(times))
    for i, uid in enumerate(rates.columns):
        top = bottom + rates[uid].to_numpy(dtype=float)
        ax.stairs(
            top,
            edges,
            baseline=bottom,
            fill=True,
            facecolor=colors[i % len(colors)],
            edgecolor="white",
            linewidth=0.8,
            alpha=0.9,
            label=f"{names[uid]} ({uid})",
        )
        bottom = top
    ax.stairs(
        bottom, edges, baseline=None, color="black", linestyle="--", linewidth=2, label="total"
    )


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


def plot_firewall(df: pd.DataFrame, axes: Any = None) -> Any:
    """Bar charts of an :func:`ebpf_lab.xdp_firewall` frame: per phase, packets passed and dropped.

    Args:
        df: the frame returned by ``xdp_firewall``.
        axes: a sequence of one matplotlib Axes per phase (default: a new figure).

    Returns:
        The Axes, one per phase.
    """
    import matplotlib.pyplot as plt

    missing = {"phase", "protocol", "passed", "dropped", "dropping"} - set(df.columns)
    if missing:
        raise ValueError(f"plot_firewall needs an xdp_firewall frame; missing {sorted(missing)}")
    phase = df["phase"]
    order = list(phase.cat.categories) if hasattr(phase, "cat") else list(dict.fromkeys(phase))
    phases = [p for p in order if (phase == p).any()]
    with plt.rc_context(PROJECTOR_STYLE):
        if axes is None:
            _fig, axes = plt.subplots(
                1, max(len(phases), 1), figsize=(12, 4.5), sharey=True, layout="constrained",
                squeeze=False,
            )  # fmt: skip
            axes = list(axes[0])
        for ax, name in zip(axes, phases):
            rows = df[phase == name].sort_values("protocol")
            names = [str(p) for p in rows["protocol"]]
            ax.bar(names, rows["passed"], color="tab:green", label="passed")
            ax.bar(names, rows["dropped"], bottom=rows["passed"], color="tab:red",
                   label="dropped")  # fmt: skip
            for x, (p, d) in enumerate(zip(rows["passed"], rows["dropped"])):
                if p + d:
                    ax.annotate(f"{p + d}", (x, p + d), ha="center", va="bottom")
            ax.set_title(f"phase {name}: dropping {rows['dropping'].iloc[0]}")
            ax.set_xlabel("protocol")
            ax.grid(True, axis="y", alpha=0.3)
        top = max(int((df["passed"] + df["dropped"]).max()), 1)
        axes[0].set_ylim(0, top * 1.2)  # room for the numbers above the bars
        axes[0].set_ylabel("packets arriving at veth-b")
        axes[0].legend(loc="upper left")
    return axes
