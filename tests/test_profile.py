"""Lesson 12: the sampling CPU profiler and run-queue latency, against known workloads."""

from __future__ import annotations

import math
import os

import pandas as pd
import pytest
from conftest import needs_root

import ebpf_lab
from ebpf_lab.lessons.l12_performance import profile as prof
from ebpf_lab.workloads import busy_children, mixed_cpu_child, spin_child

pytestmark = needs_root

USER_S, KERNEL_S = 0.3, 0.3


def profiled(pid_filter=True, **kw):
    """Profile a mixed child (user phase, then kernel phase); return (stacks, child's row)."""
    box = {}
    with mixed_cpu_child(USER_S, KERNEL_S) as child:
        stacks = ebpf_lab.cpu_profile(
            duration=0.05,
            workload=lambda: box.update(done=child.run()),
            pid=child.pid if pid_filter else None,
            **kw,
        )
    return stacks, box["done"].iloc[0]


def check_sample_count(stacks, done):
    freq = stacks.attrs["sample_freq"]
    mine = int(stacks.loc[stacks["pid"] == done.pid, "samples"].sum())
    expected = freq * done.cpu_seconds
    bound = prof.sampling_bound(expected, int(done.context_switches) + 1)
    assert abs(mine - expected) <= bound, (mine, expected, bound)
    return mine


def test_samples_match_cpu_time_and_stacks_have_names(no_leaks):
    stacks, done = profiled()
    assert list(stacks.columns) == prof.STACK_COLUMNS
    assert set(stacks["pid"]) == {done.pid}  # the filter runs in the kernel
    total = check_sample_count(stacks, done)
    assert stacks.attrs["kept_samples"] == total
    assert stacks.attrs["all_samples"] >= total
    assert stacks.attrs["count_map_full"] == 0
    # both phases were seen: the kernel's /dev/zero read path, and the interpreter in user space
    kernel = int(stacks.loc[stacks["in_kernel"], "samples"].sum())
    assert 0.2 * total < kernel < 0.8 * total, (kernel, total)
    top = prof.top_functions(stacks, n=30)
    kernel_top = top[top["where"] == "kernel"]
    assert kernel_top["function"].str.contains("zero").any(), kernel_top
    user_top = top[top["where"] == "user"]
    assert user_top["module"].astype(str).str.startswith("python3").any(), user_top
    if stacks.attrs["kernel_symbols_visible"]:
        # kernel frames are named (kallsyms shows addresses to root here)
        kframes = [f for fr in stacks.loc[stacks["in_kernel"], "frames"] for f in fr]
        named = [f for f, m in kframes if m == "kernel" and f != prof.UNKNOWN]
        assert len(named) >= 0.9 * len([1 for _f, m in kframes if m == "kernel"])
    # a kernel stack reads from the system call entry down to the zeroing function
    path = max(
        (fr for fr, k in zip(stacks["frames"], stacks["in_kernel"]) if k),
        key=lambda fr: sum(s for f2, s in zip(stacks["frames"], stacks["samples"]) if f2 == fr),
    )
    names = [f for f, m in path if m == "kernel"]
    assert "read_iter_zero" in names or "iov_iter_zero" in names, names
    # folded stacks: comm first, kernel frames marked
    assert stacks["stack"].str.startswith("python").all()
    assert stacks.loc[stacks["in_kernel"], "stack"].str.contains(r"_\[k\]").all()
    assert str(stacks["comm"].dtype) == "category"
    assert stacks.attrs["attach"] == "perf_event"


def test_whole_machine_profile_keeps_the_child(no_leaks):
    stacks, done = profiled(pid_filter=False)
    check_sample_count(stacks, done)
    assert stacks.attrs["pid"] is None
    assert (
        stacks.attrs["idle_samples"] + stacks.attrs["kept_samples"] == stacks.attrs["all_samples"]
    )
    # the child was symbolized while it was alive: its user leaf frames have names
    mine = stacks[(stacks["pid"] == done.pid) & ~stacks["in_kernel"]]
    assert (mine["leaf_module"].astype(str).str.startswith("python3")).any()


def test_top_functions_and_flame(no_leaks):
    import matplotlib

    matplotlib.use("Agg")
    stacks, _done = profiled(sample_freq=499)
    assert stacks.attrs["sample_freq"] == 499
    self_ = prof.top_functions(stacks, n=1000)
    assert list(self_.columns) == prof.FUNCTION_COLUMNS
    # by "self" every sample has exactly one leaf: the percentages add up to 100
    assert self_["samples"].sum() == stacks["samples"].sum()
    assert math.isclose(self_["percent"].sum(), 100.0)
    total = prof.top_functions(stacks, n=1000, by="total")
    # "total" counts a function once per sample it is on: never fewer than "self"
    merged = self_.merge(total, on=["function", "module", "where"], suffixes=("_self", "_total"))
    assert (merged["samples_total"] >= merged["samples_self"]).all()
    assert total["percent"].max() <= 100.0
    assert self_["samples"].is_monotonic_decreasing
    ax = ebpf_lab.plot_flame(stacks)
    assert len(ax.patches) > 3
    assert ax.get_xlim()[1] == stacks["samples"].sum()
    with pytest.raises(ValueError):
        prof.top_functions(stacks, by="inclusive")
    with pytest.raises(ValueError):
        prof.top_functions(stacks, n=0)
    with pytest.raises(ValueError):
        ebpf_lab.plot_flame(pd.DataFrame({"x": [1]}))


def test_kernel_symbols_visible_says_why():
    visible, why = prof.kernel_symbols_visible()
    assert isinstance(visible, bool) and "kallsyms" in why
    assert "lockdown=" in why


# ---------------------------------------------------------------- run-queue latency


def contention(n, cpu_seconds, cpus):
    box = {}
    hist, tasks = ebpf_lab.run_queue_latency(
        duration=0.05, workload=lambda: box.update(done=busy_children(n, cpu_seconds, cpus))
    )
    done = box["done"]
    return hist[hist["pid"].isin(done["pid"])], tasks[tasks["pid"].isin(done["pid"])], done


def test_run_queue_waits_grow_under_contention(no_leaks):
    cpu = sorted(os.sched_getaffinity(0))[0]
    c = 0.2
    alone_hist, alone_tasks, alone = contention(1, c, [cpu])
    busy_hist, busy_tasks, busy = contention(4, c, [cpu])
    assert list(busy_hist.columns) == prof.RUNQ_HIST_COLUMNS
    assert list(busy_tasks.columns) == prof.RUNQ_TASK_COLUMNS
    # every child was measured, and the histogram holds exactly the waits the totals count
    assert set(busy_tasks["pid"]) == set(busy["pid"]) and set(alone_tasks["pid"]) == set(
        alone["pid"]
    )
    for hist, tasks in ((alone_hist, alone_tasks), (busy_hist, busy_tasks)):
        per_task = hist.groupby("pid")["count"].sum()
        assert per_task.to_dict() == tasks.set_index("pid")["waits"].to_dict()
        assert (tasks["waits"] >= 1).all() and (tasks["total_wait_ns"] > 0).all()
        assert (tasks["max_wait_ns"] <= tasks["total_wait_ns"]).all()
    # four children on one CPU wait, together, at least 0+1+2+3 = 6 times c (whatever else runs);
    # one child waits only for the rest of the machine: robustly less than the four
    busy_total = busy_tasks["total_wait_ns"].sum() / 1e9
    alone_total = alone_tasks["total_wait_ns"].sum() / 1e9
    assert busy_total >= 0.9 * 6 * c, busy_total
    assert busy_total > 2 * alone_total, (busy_total, alone_total)
    assert prof.waits_above(busy_hist, 1 << 20) > prof.waits_above(alone_hist, 1 << 20)
    # the kernel's own scheduler statistics (/proc/<pid>/schedstat) count the same waiting
    kernel_total = busy["run_delay_seconds"].sum()
    assert abs(busy_total - kernel_total) <= 0.2 * kernel_total + 0.05 * len(busy), (
        busy_total,
        kernel_total,
    )
    assert busy_tasks.attrs["enqueued_map_full"] == 0 and busy_tasks.attrs["task_map_full"] == 0
    assert str(busy_tasks["comm"].dtype) == "category"


def test_busy_children_rows():
    done = busy_children(2, 0.05, cpus=[sorted(os.sched_getaffinity(0))[0]])
    assert len(done) == 2 and (done["returncode"] == 0).all()
    assert (done["cpu_seconds"] >= 0.05).all()
    assert (done["cpus"] == str(sorted(os.sched_getaffinity(0))[0])).all()
    assert (done["wall_seconds"] >= done["cpu_seconds"] * 0.9).all()


BAD = [
    (ebpf_lab.cpu_profile, {"duration": 0}),
    (ebpf_lab.cpu_profile, {"duration": "1"}),
    (ebpf_lab.cpu_profile, {"workload": "x"}),
    (ebpf_lab.cpu_profile, {"pid": -1}),
    (ebpf_lab.cpu_profile, {"pid": 1.5}),
    (ebpf_lab.cpu_profile, {"sample_freq": 0}),
    (ebpf_lab.cpu_profile, {"sample_freq": 10**9}),
    (ebpf_lab.cpu_profile, {"sample_freq": 99.5}),
    (ebpf_lab.run_queue_latency, {"duration": math.nan}),
    (ebpf_lab.run_queue_latency, {"duration": -2}),
    (ebpf_lab.run_queue_latency, {"workload": 7}),
]


@pytest.mark.parametrize("fn,kwargs", BAD, ids=[f"{f.__name__}-{k}" for f, k in BAD])
def test_bad_input_is_value_error_before_loading(fn, kwargs, refused_before_loading):
    refused_before_loading(fn, kwargs)


@pytest.mark.parametrize(
    "make",
    [
        lambda: busy_children(0, 1.0),
        lambda: busy_children(17, 1.0),
        lambda: busy_children(2, 0),
        lambda: busy_children(2, 1.0, cpus=[9999]),
        lambda: busy_children(2, 1.0, cpus=[]),
        lambda: mixed_cpu_child(-1, 0.1),
        lambda: mixed_cpu_child(0, 0),
        lambda: mixed_cpu_child(0.1, 1000),
        lambda: spin_child(0),
    ],
)
def test_workloads_reject_bad_input(make):
    with pytest.raises(ValueError):
        make()
