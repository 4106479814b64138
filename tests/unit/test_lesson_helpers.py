"""Lesson helpers checked without the kernel: sampling bounds (lessons 07 and 12), log2
histogram buckets (lesson 05), errno names and latency text (lesson 09), the transfer summary's
input (lesson 08) and the exec workload's plans (lessons 01-03), refused before anything runs.
Pure code: no root, no BCC, no kernel programs."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ebpf_lab.lessons.l05_maps.maps import bucket_bounds, log2_bucket
from ebpf_lab.lessons.l07_attach_points.attach_points import _attach_way, sampling_bound
from ebpf_lab.lessons.l08_data_transfer.transfer import transfer_summary
from ebpf_lab.lessons.l09_tracing import syscall_latency as sl
from ebpf_lab.lessons.l12_performance import profile as prof
from ebpf_lab.workloads import execs


def test_sampling_bound_formula():
    assert sampling_bound(997, 0, ncpus=2) == 4
    assert sampling_bound(4999, 500, ncpus=2) == 4 + math.ceil(4999 * 500 * 10e-6)
    assert sampling_bound(99, 100, ncpus=8) == 11


def test_fentry_counter_goes_through_the_autoload_kind():
    """count_at's fentry run names its KFUNC_PROBE function as an autoload probe, so the core
    checks that BCC attached it and detaches it like any probe (no empty alternative)."""
    alternative, cflags, _ = _attach_way("fentry", 4242, 997)
    (probe,) = alternative.probes
    function = cflags[0].removeprefix("-DFENTRY_FUNCTION=")
    assert (alternative.label, probe.kind) == ("fentry", "autoload")
    assert (probe.target, probe.fn) == (function, f"kfunc__{function}")
    assert function.endswith("sys_getppid")
    uprobe, flags, how = _attach_way("uprobe", 4242, 997)
    assert (uprobe.probes[0].pid, uprobe.probes[0].sample_freq, flags) == (4242, 0, [])
    assert how == "uprobe opened for pid 4242 only"
    perf, _, _ = _attach_way("perf_event", 4242, 997)
    assert (perf.probes[0].pid, perf.probes[0].sample_freq) == (4242, 997)


def test_log2_bucket_matches_bpf_log2l():
    assert [log2_bucket(n) for n in (0, 1, 2, 3, 4, 7, 8, 4095, 4096)] == [
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        12,
        13,
    ]
    assert bucket_bounds(1) == (0, 1)
    assert bucket_bounds(2) == (2, 3)
    assert bucket_bounds(13) == (4096, 8191)
    for n in (1, 5, 100, 65536, 2**40):
        low, high = bucket_bounds(log2_bucket(n))
        assert low <= n <= high
    with pytest.raises(ValueError):
        log2_bucket(-1)
    with pytest.raises(ValueError):
        bucket_bounds(65)


def test_profile_sampling_bound():
    slack = prof.TIMER_SLACK
    # one slice: at most one sample off, plus the timer's slack
    assert prof.sampling_bound(100.0, 1, ncpus=2) == pytest.approx(3.0 + slack * 100)
    # 4 sd of 100 roundings: 20
    assert prof.sampling_bound(100.0, 100, ncpus=2) == pytest.approx(22.0 + slack * 100)
    assert prof.sampling_bound(5.0, 0, ncpus=1) == pytest.approx(2.0 + slack * 5)
    with pytest.raises(ValueError):
        prof.sampling_bound(math.nan, 3)


def test_errno_name_and_human_ns():
    assert sl.errno_name(3) is None and sl.errno_name(0) is None
    assert sl.errno_name(-2) == "ENOENT" and sl.errno_name(-13) == "EACCES"
    assert sl.human_ns(512) == "512 ns" and sl.human_ns(16384) == "16.4 µs"
    assert sl.human_ns(2_000_000) == "2 ms"


def test_summary_needs_a_comparison_frame():
    with pytest.raises(ValueError):
        transfer_summary(pd.DataFrame({"seq": [1]}))


def test_workload_helper_rejects_bad_plans():
    for plan in ({-1: 2}, {2**32: 1}, {"root": 1}, {1000: -1}, {}, {1000: 1.5}):
        with pytest.raises(ValueError):
            execs(plan)
    with pytest.raises(ValueError):
        execs({1000: 1}, program="true")
