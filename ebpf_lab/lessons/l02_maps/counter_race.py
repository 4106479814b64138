"""Lesson 02: does a counter keep every count when several CPUs add to it at once?

A BPF program runs on every CPU at the same time. :func:`counter_race` counts one known load,
``getppid()`` calls made as one UID by loops pinned to two (or more) CPUs side by side, three
ways at once (``programs/counter_race.bpf.c``): BCC's ``increment()`` (load, add, store),
``atomic_increment()`` (one atomic add instruction) and a per-CPU map (each CPU its own copy),
and puts each count next to the truth.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ebpf_lab.core.attach import sys_enter
from ebpf_lab.core.guards import check_duration, check_required_int, check_uid
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Collector, RunContext, bounded_run

#: the three ways of counting, in the frame's order: (method, the program's map, exact?)
METHODS = (
    ("increment()", "plain", False),
    ("atomic_increment()", "atomic", True),
    ("per-CPU map", "percpu", True),
)
COLUMNS = ["method", "map", "counted", "truth", "lost", "lost_percent"]
#: getppid() calls per CPU by default (the issue's measurement: 500,000 on each of two CPUs)
DEFAULT_CALLS = 500_000


def default_cpus() -> list[int]:
    """The first two CPUs this process may run on (one on a one-CPU machine)."""
    return sorted(os.sched_getaffinity(0))[:2]


class _RaceCounts(Collector):
    """Sets the UID to count and creates the three entries at 0 before the load starts; reads
    the three counts (and the per-CPU copies) once the load is done."""

    def __init__(self, uid: int) -> None:
        self.uid = uid

    def start(self, ctx: RunContext) -> None:
        # The entries exist before the first call: BCC's increment() on a missing entry inserts
        # it, and two CPUs inserting at once lose a count another way (exercise 02.4); on a
        # per-CPU map it does not insert at all. Only the adds are compared here.
        for name in ("plain", "atomic", "percpu"):
            table = ctx.table(name)
            table[table.Key(self.uid)] = table.Leaf()
        target = ctx.table("target")
        target[target.Key(0)] = target.Leaf(self.uid)  # from now on the program counts

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        key = ctx.table("plain").Key(self.uid)
        per_cpu = [int(v) for v in ctx.table("percpu")[key]]
        counted = {
            "plain": int(ctx.table("plain")[key].value),
            "atomic": int(ctx.table("atomic")[key].value),
            "percpu": sum(per_cpu),
        }
        ctx.attrs["per_cpu"] = {cpu: n for cpu, n in enumerate(per_cpu) if n}
        return pd.DataFrame(
            {
                "method": [m for m, _, _ in METHODS],
                "map": [name for _, name, _ in METHODS],
                "counted": [counted[name] for _, name, _ in METHODS],
            }
        )


def _check_cpu_list(cpus: Any) -> list[int]:
    from ebpf_lab.workloads import check_cpus

    return check_cpus(default_cpus() if cpus is None else cpus)


def counter_race(
    calls: int = DEFAULT_CALLS,
    cpus: Sequence[int] | None = None,
    uid: int | None = None,
    duration: float = 0.5,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """Count one known load three ways at once and show which way loses counts.

    The program (``programs/counter_race.bpf.c``) runs on the ``syscalls:sys_enter_getppid``
    tracepoint. For every getppid() call made as ``uid`` it adds 1 to that UID's entry in three
    maps: with BCC's ``increment()`` (load the value, add 1, store it: two CPUs that load the
    same value at the same moment store the same sum, and one count is lost), with
    ``atomic_increment()`` (one atomic add instruction) and with ``increment()`` on a per-CPU
    map (every CPU adds to its own copy; the lab sums the copies). The lab creates the three
    entries at 0 before the load starts, so only the adds are compared.

    The load (:func:`ebpf_lab.workloads.getppid_loop`, a small C program) makes exactly
    ``calls`` getppid() calls as ``uid`` on each CPU of ``cpus``, from threads pinned to those
    CPUs and started together, so the truth is ``calls * len(cpus)``. With one CPU nothing can
    race; with several, how many counts ``increment()`` loses depends on how often two CPUs
    happen to update the entry at the same moment: it may lose thousands or, by luck, none.

    Args:
        calls: getppid() calls per CPU (1 .. 10,000,000).
        cpus: the CPUs to run the load on, e.g. ``[0, 1]`` (default: the first two CPUs this
            process may use; one on a one-CPU machine).
        uid: the UID to make the calls as (default: one nobody uses,
            :func:`ebpf_lab.workloads.unused_uid`).
        duration: at least this many seconds attached (0 < duration <= 3600); the run also
            waits for the load.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per method: ``method`` (``"increment()"``, ``"atomic_increment()"``,
        ``"per-CPU map"``), ``map`` (its name in the C), ``counted``, ``truth`` (the calls the
        load made), ``lost`` (``truth - counted``) and ``lost_percent``. ``truth`` and ``lost``
        are missing (``<NA>``) when Stop or an interrupt ended the load early. ``df.attrs``:
        ``uid``, ``calls``, ``cpus``, ``per_cpu`` (the per-CPU map's copies, ``{cpu: count}``),
        ``side_by_side_seconds`` (how long the loops really ran at the same time),
        ``loop_seconds`` (``{cpu: seconds}`` of each loop) and the run's usual keys. Plot it with
        :func:`ebpf_lab.plot_counter_race`.

    Raises:
        ValueError: bad calls, cpus, uid or duration (before anything loads).
        PermissionError: not root.
        HelperBuildError: the C load could not be built (no gcc: says what to install).
    """
    from ebpf_lab import workloads as _workload

    calls_ = check_required_int(calls, "calls", _workload.MAX_GETPPID_CALLS, DEFAULT_CALLS)
    cpu_list = _check_cpu_list(cpus)
    who = _workload.unused_uid() if uid is None else check_uid(uid)
    if who == 0:
        raise ValueError("uid must not be 0: count a UID nobody else uses (the default)")
    duration = check_duration(duration)

    box: dict[str, pd.DataFrame] = {}
    df = bounded_run(
        name="counter_race",
        source=program_source("counter_race"),
        alternatives=sys_enter("getppid", "count_getppid"),
        collector=_RaceCounts(who),
        duration=duration,
        workload=lambda: _workload.getppid_loop(who, calls_, cpu_list),
        live=live,
        attrs={"uid": who, "calls": calls_, "cpus": cpu_list},
        on_workload_result=lambda done: box.update(load=done),
    )
    load = box.get("load")
    if load is not None:
        truth: Any = int(load["calls"].sum())
        df.attrs["side_by_side_seconds"] = max(
            0.0, (int(load["end_ns"].min()) - int(load["start_ns"].max())) / 1e9
        )
        df.attrs["loop_seconds"] = dict(
            zip(load["cpu"].astype(int), load["loop_seconds"].astype(float))
        )
    else:  # Stop or an interrupt ended the load: how many calls it made is unknown
        truth = pd.NA
        df.attrs["side_by_side_seconds"] = None
        df.attrs["loop_seconds"] = {}
    df["truth"] = pd.array([truth] * len(df), dtype="Int64")
    df["lost"] = df["truth"] - df["counted"]
    df["lost_percent"] = (100.0 * df["lost"] / df["truth"]).astype("Float64")
    df["method"] = pd.Categorical(df["method"], categories=[m for m, _, _ in METHODS])
    df["map"] = df["map"].astype("category")
    return df.astype({"counted": "int64"})[COLUMNS]
