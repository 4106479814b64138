"""Plots of the lessons' DataFrames, sized and labelled for a classroom projector.

Every ``plot_*`` takes the frame a lesson function returned (checks its columns first) and an
optional matplotlib ``ax``, and returns the Axes: exec rates (02), the counter race (02), log2
histograms of sizes (05) and latencies (09, 12), the cost of tracing (09), flame charts (12).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ebpf_lab.show.frames import require_columns
from ebpf_lab.show.log2 import bucket_bounds, human_bytes, human_ns

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

    require_columns(df, {"time", "uid", "user", "rate"}, "plot_exec_rates", "an exec_counts")
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

    require_columns(
        df, {"method", "counted", "truth", "lost"}, "plot_counter_race", "a counter_race"
    )
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

    require_columns(
        df,
        {"phase", "protocol", "passed", "dropped", "dropping"},
        "plot_firewall",
        "an xdp_firewall",
    )
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


def plot_log2_histogram(df: pd.DataFrame, ax: Any = None) -> Any:
    """Bar plot of a :func:`ebpf_lab.size_histogram` frame: one bar per power-of-two slot.

    Args:
        df: the frame from ``size_histogram`` (columns ``low``, ``high``, ``count``).
        ax: a matplotlib Axes to draw on (default: a new figure).

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    require_columns(df, {"low", "high", "count"}, "plot_log2_histogram", "a size_histogram")
    ax = _axes(ax)
    with plt.rc_context(PROJECTOR_STYLE):
        # bucket b holds low..high, i.e. [low, high + 1): powers of two read best that way
        labels = [
            f"[{human_bytes(int(lo))}, {human_bytes(int(hi) + 1)})"
            for lo, hi in zip(df["low"], df["high"])
        ]
        bars = ax.bar(range(len(df)), df["count"], color="tab:blue", edgecolor="black")
        ax.bar_label(bars, padding=2)
        ax.set_xticks(range(len(df)), labels, rotation=45, ha="right")
        syscall = df.attrs.get("syscall", "")
        ax.set_title(
            f"{syscall}() calls by size (power-of-two buckets)"
            if syscall
            else "calls by size (power-of-two buckets)"
        )
        ax.set_xlabel("bytes asked for: [from, to)")
        ax.set_ylabel("calls")
        ax.set_ylim(0, max(1, int(df["count"].max()) if len(df) else 1) * 1.15)
        ax.grid(True, axis="y", alpha=0.3)
    return ax


def plot_latency_histogram(
    histogram: pd.DataFrame,
    ax: Any = None,
    *,
    by: str | None = None,
    top: int = 4,
    title: str | None = None,
) -> Any:
    """Bar plot of a log2 latency histogram: one group of bars per slot, one colour per process.

    Works for :func:`ebpf_lab.open_latency`'s histogram and for
    :func:`ebpf_lab.run_queue_latency`'s (any frame with ``bucket``, ``low_ns``,
    ``count``, and ``pid`` and ``comm`` unless ``by`` is given).

    Args:
        histogram: the frame; filter it first to the processes you want to see.
        ax: a matplotlib Axes (default: a new figure).
        by: a column whose values each get a colour (e.g. a ``scenario`` column you added to
            compare runs); default: one colour per process, labelled ``comm (pid)``.
        top: show at most this many groups, the ones with the most counts (in the frame's
            order when ``by`` is given, else the largest first).
        title: the plot's title (default: from ``attrs["syscall"]``).

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    needed = {"bucket", "low_ns", "count"} | ({by} if by is not None else {"pid", "comm"})
    missing = needed - set(histogram.columns)
    if missing:
        raise ValueError(
            f"plot_latency_histogram needs a latency histogram frame; missing {sorted(missing)}"
        )
    ax = _axes(ax)
    if by is None:
        labels_of = histogram["comm"].astype(str) + " (" + histogram["pid"].astype(str) + ")"
        legend_title = "comm (pid)"
    else:
        labels_of = histogram[by].astype(str)
        legend_title = by
    with plt.rc_context(PROJECTOR_STYLE):
        totals = histogram.groupby(labels_of.to_numpy(), sort=False)["count"].sum()
        shown = list(totals.sort_values(ascending=False, kind="stable").head(top).index)
        if by is not None:  # the groups in the order the frame has them (e.g. scenario order)
            shown = [label for label in totals.index if label in shown]
        buckets = sorted(histogram["bucket"].unique())
        if buckets:
            buckets = list(range(int(min(buckets)), int(max(buckets)) + 1))
        x = np.arange(len(buckets))
        width = 0.8 / max(1, len(shown))
        for i, label in enumerate(shown):
            rows = histogram[(labels_of == label).to_numpy()]
            counts = rows.groupby("bucket")["count"].sum().reindex(buckets, fill_value=0)
            bars = ax.bar(
                x + (i - (len(shown) - 1) / 2) * width,
                counts.to_numpy(),
                width,
                label=label,
                edgecolor="black",
                linewidth=0.5,
            )
            if len(shown) <= 2:
                ax.bar_label(bars, [str(c) if c else "" for c in counts], padding=2, fontsize=9)
        labels = [human_ns(bucket_bounds(int(b))[0]) for b in buckets]
        ax.set_xticks(x, labels, rotation=45, ha="right")
        syscall = histogram.attrs.get("syscall")
        ax.set_title(
            title
            or (
                f"{syscall}() latency, power-of-two slots"
                if syscall
                else "latency, power-of-two slots"
            )
        )
        ax.set_xlabel("latency (slot's lower bound; each slot is twice as wide as the last)")
        ax.set_ylabel("count")
        ax.grid(True, axis="y", alpha=0.3)
        if len(shown):
            ax.legend(title=legend_title)
    return ax


def plot_tracing_cost(cost: pd.DataFrame, ax: Any = None) -> Any:
    """Horizontal bars: microseconds per open() call in each mode of :func:`ebpf_lab.tracing_cost`.

    Each bar is the median over the rounds; dots are the single rounds; the label says how many
    times slower than ``plain``.
    """
    import matplotlib.pyplot as plt

    require_columns(
        cost, {"mode", "ns_per_call", "available"}, "plot_tracing_cost", "a tracing_cost"
    )
    ax = _axes(ax, figsize=(10, 4))
    with plt.rc_context(PROJECTOR_STYLE):
        ran = cost[cost["available"]]
        us = ran["ns_per_call"] / 1e3
        med = us.groupby(ran["mode"], observed=True).median()
        top = us.groupby(ran["mode"], observed=True).max()
        modes = list(med.index)
        plain = med.get("plain", float("nan"))
        y = range(len(modes))
        ax.barh(list(y), med.to_numpy(), color="tab:blue", edgecolor="black", alpha=0.8)
        for i, mode in enumerate(modes):
            pts = us[ran["mode"] == mode]
            ax.plot(pts, [i] * len(pts), "o", color="black", markersize=4)
            ax.annotate(f"  {med[mode] / plain:.1f}x", (max(med[mode], top[mode]), i), va="center")
        ax.set_yticks(list(y), modes)
        ax.invert_yaxis()
        ax.set_xlabel("µs per open() call (bar: median of the rounds; dots: each round)")
        ax.set_title("what tracing costs the traced program")
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_xlim(0, float(top.max()) * 1.2 if len(top) else 1)
        absent = cost.loc[~cost["available"], "mode"].astype(str).unique()
        if len(absent):
            ax.annotate(
                "not measured: " + ", ".join(absent) + f" ({cost.attrs.get('strace_note', '')})",
                xy=(0, -0.3),
                xycoords="axes fraction",
                fontsize=10,
                color="0.4",
            )
    return ax


def _flame_tree(stacks: pd.DataFrame) -> dict[str, Any]:
    root: dict[str, Any] = {"n": 0, "kids": {}, "kernel": False}
    for comm, pid, frames, samples in zip(
        stacks["comm"], stacks["pid"], stacks["frames"], stacks["samples"]
    ):
        node = root
        node["n"] += int(samples)
        path = [(f"{comm} ({pid})", "process")] + [(f, m) for f, m in frames]
        for label, module in path:
            kid = node["kids"].setdefault(label, {"n": 0, "kids": {}, "module": module})
            kid["n"] += int(samples)
            node = kid
    return root


def plot_flame(
    stacks: pd.DataFrame,
    ax: Any = None,
    *,
    min_percent: float = 0.5,
    max_depth: int = 24,
    title: str | None = None,
) -> Any:
    """An icicle chart (a flame graph upside down) of a :func:`ebpf_lab.cpu_profile` frame.

    The top row is the process; under each box are the functions it called, as wide as the
    samples that went through them. User frames are yellow, kernel frames orange. A wide box
    at the bottom of a tower is where the CPU spent its time.

    Args:
        stacks: the frame (filter it first, e.g. to one pid).
        ax: a matplotlib Axes (default: a new, tall figure).
        min_percent: leave out boxes narrower than this share of all samples.
        max_depth: draw at most this many levels.
        title: the plot's title.

    Returns:
        The matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    require_columns(stacks, {"frames", "samples", "comm", "pid"}, "plot_flame", "a cpu_profile")
    tree = _flame_tree(stacks)
    total = tree["n"]
    ax = _axes(ax, figsize=(12, 6))
    colors = {"process": "#bbbbbb", "kernel": "#f4a259", "user": "#f6e27f"}
    deepest = 0
    with plt.rc_context(PROJECTOR_STYLE):
        fig = ax.figure
        width_px = fig.get_figwidth() * fig.dpi * 0.9

        def draw(node: dict[str, Any], x0: int, depth: int) -> None:
            nonlocal deepest
            x = x0
            for label, kid in sorted(node["kids"].items(), key=lambda kv: (-kv[1]["n"], kv[0])):
                share = kid["n"] / total
                if 100 * share >= min_percent and depth < max_depth:
                    module = kid["module"]
                    kind = (
                        module
                        if module == "process"
                        else ("kernel" if module == "kernel" else "user")
                    )
                    ax.barh(
                        depth,
                        kid["n"],
                        left=x,
                        height=0.95,
                        color=colors[kind],
                        edgecolor="white",
                        linewidth=0.5,
                    )
                    chars = int(share * width_px / 7.5)
                    text = label if len(label) <= chars else label[: max(chars - 1, 0)] + "…"
                    if chars >= 4:
                        ax.text(
                            x + kid["n"] / 2,
                            depth,
                            text,
                            ha="center",
                            va="center",
                            fontsize=9,
                            clip_on=True,
                        )
                    deepest = max(deepest, depth)
                    draw(kid, x, depth + 1)
                x += kid["n"]

        draw(tree, 0, 0)
        ax.set_xlim(0, max(total, 1))
        ax.set_ylim(deepest + 0.6, -0.6)
        ax.set_yticks([])
        ax.set_xlabel(f"samples ({total} in all; a box's width = samples through that function)")
        ax.set_title(title or "CPU profile: callers above, callees below (icicle chart)")
        from matplotlib.patches import Patch

        ax.legend(
            handles=[
                Patch(color=colors["user"], label="user space"),
                Patch(color=colors["kernel"], label="kernel"),
            ],
            loc="lower right",
        )
    return ax
