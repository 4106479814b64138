"""Lesson 12 (performance): checkable exercises. The check runs :func:`cpu_profile` in the
kernel."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from ebpf_lab.classroom.checks import Right, Wrong, exercise

#: the profiler's rate in the exercise (samples per second per CPU)
FREQ = 997
#: the children that share one CPU, and the CPU time each spins
CHILDREN = 2
CPU_SECONDS = 0.4


def measure() -> pd.DataFrame:
    """Profile :data:`CHILDREN` children spinning :data:`CPU_SECONDS` of CPU each on one CPU at
    :data:`FREQ` Hz: one row per child with its ``samples``, ``cpu_seconds`` and
    ``wall_seconds`` (as the kernel counted them), the ``expected`` samples (FREQ x its CPU
    time) and the ``bound`` a sample count may be off by (:func:`sampling_bound`)."""
    from ebpf_lab.lessons.l12_performance.profile import cpu_profile, sampling_bound
    from ebpf_lab.workloads import busy_children

    cpu = sorted(os.sched_getaffinity(0))[0]
    box: dict[str, pd.DataFrame] = {}
    stacks = cpu_profile(
        duration=0.05,
        workload=lambda: box.update(done=busy_children(CHILDREN, CPU_SECONDS, cpus=[cpu])),
        sample_freq=FREQ,
        live=False,
    )
    done = box["done"]
    per_pid = stacks.groupby("pid")["samples"].sum()
    return pd.DataFrame(
        {
            "pid": done["pid"].astype("int64"),
            "samples": [int(per_pid.get(p, 0)) for p in done["pid"]],
            "cpu_seconds": done["cpu_seconds"],
            "wall_seconds": done["wall_seconds"],
            "expected": FREQ * done["cpu_seconds"],
            "bound": [
                sampling_bound(FREQ * c, int(s) + 1)
                for c, s in zip(done["cpu_seconds"], done["context_switches"])
            ],
        }
    )


@exercise(
    "12.1",
    title="Samples of two children sharing one CPU",
    asks=f"a number predicting, before the check runs it, how many samples cpu_profile("
    f"sample_freq={FREQ}) gives each of {CHILDREN} children that each spin {CPU_SECONDS} s of "
    "their own CPU time, both pinned to the same one CPU",
    needs_kernel=True,
)
def samples_per_child(answer: Any) -> Right:
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        raise Wrong("give one number: the samples you expect for each child")
    runs = measure()
    off = runs[(runs["samples"] - runs["expected"]).abs() > runs["bound"]]
    if len(off):
        raise Wrong(
            "the run was disturbed (a child's samples are further from its CPU time x "
            f"{FREQ} than sampling allows: {off.to_dict('records')}): run the check again",
            runs=runs,
        )
    expected = FREQ * CPU_SECONDS
    bound = float(runs["bound"].max())
    wall = float(runs["wall_seconds"].max())
    measured = ", ".join(str(s) for s in runs["samples"])
    if abs(answer - expected) <= bound:
        return Right(
            f"right: the children got {measured} samples, each about {FREQ} x {CPU_SECONDS} = "
            f"{expected:.0f}. The timer fires {FREQ} times a second on the CPU and each tick "
            f"is charged to whoever runs at that moment: samples measure CPU time, not wall "
            f"time. A child's run took up to {wall:.2f} s of wall time, at least twice its CPU "
            "time: it waited its turns behind the other child (and whatever else that CPU "
            "ran). Those waits are what run_queue_latency() measures",
            runs=runs,
        )
    if abs(answer - CHILDREN * expected) <= CHILDREN * bound:
        hint = (
            f"a child's run lasted up to {wall:.2f} s of wall time, but it was on the CPU for only "
            "part of it: whose work does a timer tick count while the other child runs?"
        )
    elif abs(answer - expected / CHILDREN) <= bound:
        hint = (
            f"each child spins {CPU_SECONDS} s of its own CPU time: sharing the CPU makes its "
            "run longer, does it make its CPU time shorter?"
        )
    else:
        hint = "a sample is one timer tick on a CPU, charged to the task running there"
    raise Wrong(
        f"you said {answer}; the children got {measured} samples. Think again: {hint}",
        runs=runs,
    )
