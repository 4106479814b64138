"""Lesson 09: openat() latency from paired tracepoints, checked against a known open() workload."""

from __future__ import annotations

import math
import os

import pandas as pd
import pytest
from conftest import interrupt_once_attached, needs_root

import ebpf_lab
from ebpf_lab.lessons.l09_tracing import syscall_latency as sl
from ebpf_lab.show.log2 import log2_bucket
from ebpf_lab.workloads import opens_child

pytestmark = needs_root

OPENS, MISSING = 300, 120


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "target.txt"
    path.write_text("ebpf-lab\n")
    return str(path)


def run_child(target, opens=OPENS, missing=MISSING, **kw):
    """Run the lesson with a gated open() child; return (histogram, events, what the child did)."""
    box = {}
    with opens_child(target, opens, missing) as child:
        hist, events = ebpf_lab.open_latency(
            duration=0.05, workload=lambda: box.update(done=child.run()), pid=child.pid, **kw
        )
    return hist, events, box["done"].iloc[0]


def test_exact_opens_and_enoent(target, no_leaks):
    hist, events, done = run_child(target)
    assert list(events.columns) == sl.EVENT_COLUMNS
    assert list(hist.columns) == sl.HIST_COLUMNS
    # every call of the child, and nothing else (the filter runs in the kernel)
    assert len(events) == OPENS + MISSING
    assert (events["pid"] == done.pid).all() and (events["tid"] == done.pid).all()
    ok = events[events["ret"] >= 0]
    failed = events[events["ret"] < 0]
    assert len(ok) == OPENS and (ok["filename"] == target).all() and ok["errno"].isna().all()
    assert len(failed) == MISSING
    assert (failed["errno"] == "ENOENT").all() and (failed["ret"] == -2).all()
    assert (failed["filename"] == done.missing_path).all()
    # successful opens come first, as the child made them; times run forward
    assert (events["ret"].iloc[:OPENS] >= 0).all()
    assert events["time"].is_monotonic_increasing
    # the histogram holds exactly the same calls, and agrees slot by slot with the events
    assert set(hist["pid"]) == {done.pid}
    assert hist["count"].sum() == OPENS + MISSING == hist.attrs["calls"]
    from_events = sl.events_histogram(events)
    from_kernel = hist[hist["count"] > 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        from_events[["pid", "bucket", "count"]], from_kernel[["pid", "bucket", "count"]]
    )
    assert all(
        lo <= n <= hi
        for n, lo, hi in zip(
            events["latency_ns"],
            [sl.bucket_bounds(log2_bucket(int(n)))[0] for n in events["latency_ns"]],
            [sl.bucket_bounds(log2_bucket(int(n)))[1] for n in events["latency_ns"]],
        )
    )
    # plausible latencies: positive, and together no longer than the child's timed loop (the
    # calls run one after the other inside it)
    assert (events["latency_ns"] > 0).all()
    assert events["latency_ns"].sum() <= done.loop_seconds * 1e9
    # nothing lost, nothing unmatched; dtypes and metadata
    for key in ("lost", "start_map_full", "hist_map_full", "exits_without_entry"):
        assert hist.attrs[key] == 0 == events.attrs[key], key
    assert str(events["time"].dtype) == "datetime64[ns]"
    assert str(events["comm"].dtype) == "category" and str(hist["comm"].dtype) == "category"
    assert events.attrs["attach"] == "tracepoint" and events.attrs["syscall"] == "openat"
    assert events.attrs["pid"] == done.pid


def test_two_children_compile_once(target, no_leaks):
    """The pid goes into the target_tgid map, not the C: the second child's run reuses the first
    compile, and each run sees only its own child's calls."""
    from ebpf_lab.core import compile_cache

    compile_cache.clear()
    _, first, done1 = run_child(target, opens=3, missing=1)
    _, second, done2 = run_child(target, opens=2, missing=2)
    info = compile_cache.info()
    assert (info["misses"], info["hits"], info["entries"]) == (1, 1, 1)
    assert done1.pid != done2.pid
    assert (first["pid"] == done1.pid).all() and len(first) == 4
    assert (second["pid"] == done2.pid).all() and len(second) == 4
    # the child's successful opens come first, then the missing ones
    assert list(first["ret"] < 0) == [False, False, False, True]
    assert list(second["ret"] < 0) == [False, False, True, True]


def test_histogram_only(target, no_leaks):
    hist, events, done = run_child(target, opens=50, missing=7, events=False)
    assert events.empty and list(events.columns) == sl.EVENT_COLUMNS
    assert hist.loc[hist["pid"] == done.pid, "count"].sum() == 57
    assert hist.attrs["events"] is False


def test_every_process_includes_the_child(target, no_leaks):
    box = {}
    with opens_child(target, 40, 10) as child:
        hist, events = ebpf_lab.open_latency(
            duration=0.05, workload=lambda: box.update(done=child.run())
        )
        pid = child.pid
    assert events.attrs["lost"] == 0
    mine = events[events["pid"] == pid]
    assert len(mine) == 50 and (mine["errno"] == "ENOENT").sum() == 10
    assert hist.loc[hist["pid"] == pid, "count"].sum() == 50
    # the histogram has at least as many calls as arrived as events, machine-wide
    assert hist["count"].sum() >= len(events)


def test_max_events_stops_the_run(target, no_leaks):
    hist, events, _done = run_child(target, opens=2000, missing=0, max_events=10)
    assert len(events) == 10
    assert events.attrs["stopped_by"] == "limit"


def test_tracing_cost_rows(no_leaks, monkeypatch):
    import shutil

    cost = ebpf_lab.tracing_cost(opens=100, missing=20, repeats=1)
    assert list(cost["mode"].astype(str)) == list(sl.COST_MODES)
    ebpf_rows = cost[cost["mode"].astype(str).str.startswith("ebpf")]
    assert (ebpf_rows["calls_seen"] == 120).all()  # the traced runs saw every call
    ran = cost[cost["available"]]
    assert (ran["loop_seconds"] > 0).all() and (ran["ns_per_call"] > 0).all()
    assert math.isclose(float(cost.loc[cost["mode"] == "plain", "slowdown"].iloc[0]), 1.0)
    strace_rows = cost[cost["mode"].astype(str).str.startswith("strace")]
    if shutil.which("strace") is None:
        assert not strace_rows["available"].any()
    else:
        assert strace_rows["available"].iloc[0]
    # without strace the comparison says so and still measures the rest
    monkeypatch.setattr(sl.shutil, "which", lambda name: None)
    cost = ebpf_lab.tracing_cost(opens=20, missing=0, repeats=1)
    missing = cost[cost["mode"].astype(str).str.startswith("strace")]
    assert not missing["available"].any()
    assert missing["note"].str.contains("not installed").all()
    assert cost.loc[cost["mode"] == "plain", "available"].all()
    import matplotlib

    matplotlib.use("Agg")
    ax = ebpf_lab.plot_tracing_cost(cost)
    assert "not measured" in " ".join(t.get_text() for t in ax.texts)


def test_plot_latency_histogram(target, no_leaks):
    import matplotlib

    matplotlib.use("Agg")
    hist, _events, done = run_child(target, opens=20, missing=5, events=False)
    ax = ebpf_lab.plot_latency_histogram(hist)
    assert ax.get_legend().get_texts()[0].get_text() == f"python ({done.pid})"
    assert "openat" in ax.get_title()
    labelled = hist.assign(scenario="one")
    ax = ebpf_lab.plot_latency_histogram(labelled, by="scenario")
    assert ax.get_legend().get_texts()[0].get_text() == "one"
    with pytest.raises(ValueError):
        ebpf_lab.plot_latency_histogram(pd.DataFrame({"x": [1]}))


BAD = [
    (ebpf_lab.open_latency, {"duration": -1}),
    (ebpf_lab.open_latency, {"duration": math.nan}),
    (ebpf_lab.open_latency, {"workload": 3}),
    (ebpf_lab.open_latency, {"pid": 0}),
    (ebpf_lab.open_latency, {"pid": -5}),
    (ebpf_lab.open_latency, {"pid": "1"}),
    (ebpf_lab.open_latency, {"pid": True}),
    (ebpf_lab.open_latency, {"events": "yes"}),
    (ebpf_lab.open_latency, {"max_events": 0}),
    (ebpf_lab.tracing_cost, {"opens": 0}),
    (ebpf_lab.tracing_cost, {"missing": -1}),
    (ebpf_lab.tracing_cost, {"repeats": 0}),
    (ebpf_lab.tracing_cost, {"repeats": 1000}),
    (ebpf_lab.tracing_cost, {"path": "/nonexistent/file"}),
]


@pytest.mark.parametrize("fn,kwargs", BAD, ids=[f"{f.__name__}-{k}" for f, k in BAD])
def test_bad_input_is_value_error_before_loading(fn, kwargs, refused_before_loading):
    refused_before_loading(fn, kwargs)


def test_opens_child_rejects_bad_input(target, tmp_path):
    before = set(os.listdir("/proc"))
    for args, kw in [
        (("/nonexistent", 1), {}),
        ((str(tmp_path), 1), {}),  # a directory
        ((target, -1), {}),
        ((target, 1, 10**9), {}),
        ((target, 1.5), {}),
        ((target, 1, 1), {"missing_path": target}),  # exists
    ]:
        with pytest.raises(ValueError):
            opens_child(*args, **kw)
    # no child was started
    assert not [p for p in set(os.listdir("/proc")) - before if p.isdigit() and _is_ours(p)]


def _is_ours(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False


def test_interrupt_ends_tracing_cost(no_leaks):
    """One Ctrl-C during the first traced run ends tracing_cost: no later mode or round runs."""
    presser = interrupt_once_attached()
    df = sl.tracing_cost(opens=1_000_000, missing=0, repeats=3)
    presser.join()
    assert df.attrs["interrupted"] is True
    assert list(df["mode"].astype(str)) == ["plain"]
