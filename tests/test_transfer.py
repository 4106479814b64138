"""Lesson 08: trace, perf and ring buffers on one known event stream; every event accounted for."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import needs_root
from test_attach_points import no_children  # noqa: F401  (a fixture: no child left behind)

from ebpf_lab.transfer import (
    BUFFERS,
    EVENT_COLUMNS,
    PATHS,
    buffer_comparison,
    stream_events,
    transfer_rates,
    transfer_summary,
)

# every test here: no child process (running, stopped or zombie) may be left behind
pytestmark = [needs_root, pytest.mark.usefixtures("no_children")]


def check_stream(seq: np.ndarray, generated: int) -> None:
    """Every delivered event is one the kernel generated, and none arrived twice."""
    assert len(seq) == len(np.unique(seq)), "an event arrived twice"
    if len(seq):
        assert seq.min() >= 0 and seq.max() < generated


# ---------------------------------------------------------------- one stream, three buffers


def test_small_stream_arrives_whole_in_every_buffer(no_leaks):
    df = buffer_comparison(5_000, buffer_kb=4096)
    assert list(df.columns) == EVENT_COLUMNS
    assert df.attrs["generated"] == 5_000  # exactly dd's reads of fd 0
    assert df.attrs["source"]["reads"] == 5_000 and df.attrs["source"]["returncode"] == 0
    for b in BUFFERS:
        part = df[df["buffer"] == b]
        assert sorted(part["seq"]) == list(range(5_000)), b
        assert df.attrs["lost"][b] == 0
    summary = transfer_summary(df)
    assert summary["buffer"].tolist() == list(BUFFERS)
    assert (summary["delivered"] == 5_000).all() and (summary["lost"] == 0).all()
    assert summary["balanced"].all()
    assert str(df["time"].dtype) == "datetime64[ns]" and str(df["buffer"].dtype) == "category"


def test_overflowing_buffers_count_every_loss(no_leaks):
    """Small buffers and a fast source: events are lost, and delivered + lost == generated."""
    df = buffer_comparison(40_000, buffer_kb=32, migrate_every=0.01)
    a = df.attrs
    assert a["source"]["migrations"] > 0
    generated = a["generated"]
    assert generated == 40_000
    summary = transfer_summary(df).set_index("buffer")
    for b in BUFFERS:
        seq = df.loc[df["buffer"] == b, "seq"].to_numpy()
        check_stream(seq, generated)
        assert summary.loc[b, "delivered"] + summary.loc[b, "lost"] == generated, b
        assert summary.loc[b, "balanced"]
    assert summary["lost"].sum() > 0, "32 KiB buffers should not hold 40,000 events"
    # perf reports a loss only with the next record it can write: never more than happened
    assert 0 <= a["lost_reported"]["perf"] <= a["lost"]["perf"]
    # the trace buffer overwrote what was lost (its overrun also counts other programs' lines)
    assert a["lost_reported"]["trace"] + a["failed_writes"]["trace"] >= a["lost"]["trace"]
    # one shared ring, one single-threaded source: arrival order is the order of events
    assert summary.loc["ring", "monotonic"]
    # trace_pipe merges the per-CPU buffers by time
    assert summary.loc["trace", "monotonic"]
    assert (summary["user_cpu_s"] > 0).all()


def test_one_buffer_alone(no_leaks):
    df = buffer_comparison(2_000, buffers=["ring"], buffer_kb=1024)
    assert df["buffer"].unique().tolist() == ["ring"]
    assert df.attrs["buffers"] == ["ring"] and df.attrs["buffer"] == "ring"
    assert len(df) == 2_000 and df.attrs["lost"] == {"ring": 0}


def test_summary_needs_a_comparison_frame():
    import pandas as pd

    with pytest.raises(ValueError):
        transfer_summary(pd.DataFrame({"seq": [1]}))


# ---------------------------------------------------------------- one path at full speed


@pytest.mark.parametrize("path", PATHS)
def test_stream_accounts_for_every_event(path, no_leaks):
    df = stream_events(path, 300_000, batch=64, ring_kb=256)
    a = df.attrs
    assert a["generated"] == 300_000
    seq = df["seq"].to_numpy()
    check_stream(seq, a["generated"])
    assert a["delivered"] == len(df)
    assert a["delivered"] + a["lost"] == a["generated"]
    assert a["delivered_fraction"] == pytest.approx(a["delivered"] / a["generated"])
    if path == "batched":
        assert a["lost"] % 64 == 0  # a refused batch is lost whole
        assert a["flushed_from_staging"] < 64 * 8  # at most one partial batch per CPU
    assert a["events_per_s"] > 0 and a["source_events_per_s"] > 0
    assert a["user_cpu_s"] > 0
    assert list(df.columns) == ["arrival", "seq", "time", "cpu"]


def test_transfer_rates_gives_the_benchmark_numbers(no_leaks):
    out = transfer_rates(200_000, ring_kb=512)
    assert out["path"].tolist() == list(PATHS)
    bench = out.attrs["benchmark"]
    assert set(bench) == {
        "stream_events_per_s",
        "stream_lost",
        "naive_callback_events_per_s",
        "naive_delivered_fraction",
    }
    assert bench["stream_events_per_s"] > 0 and bench["naive_callback_events_per_s"] > 0
    assert 0 < bench["naive_delivered_fraction"] <= 1
    assert bench["stream_lost"] >= 0
    assert (out["delivered"] + out["lost"] == out["generated"]).all()


# ---------------------------------------------------------------- bad input

BAD = [
    (buffer_comparison, {"events": 0}),
    (buffer_comparison, {"events": -5}),
    (buffer_comparison, {"events": 1.5}),
    (buffer_comparison, {"events": 10**9}),
    (buffer_comparison, {"buffers": []}),
    (buffer_comparison, {"buffers": "ring"}),
    (buffer_comparison, {"buffers": ["pipe"]}),
    (buffer_comparison, {"buffers": ["ring", "ring"]}),
    (buffer_comparison, {"buffer_kb": 1}),
    (buffer_comparison, {"buffer_kb": 10**9}),
    (buffer_comparison, {"duration": math.nan}),
    (buffer_comparison, {"migrate_every": 0}),
    (buffer_comparison, {"migrate_every": "fast"}),
    (stream_events, {"path": "fast"}),
    (stream_events, {"events": 0}),
    (stream_events, {"batch": 0}),
    (stream_events, {"batch": 5000}),
    (stream_events, {"ring_kb": "1M"}),
    (stream_events, {"duration": -1}),
    (transfer_rates, {"events": -1}),
    (transfer_rates, {"batch": 1.5}),
]


@pytest.mark.parametrize("fn,kwargs", BAD, ids=[f"{f.__name__}-{k}" for f, k in BAD])
def test_bad_input_is_value_error_before_anything_starts(fn, kwargs, no_leaks, monkeypatch):
    import ebpf_lab.run as run
    import ebpf_lab.workload as workload

    def must_not(*a, **k):
        raise AssertionError("something was started with bad input")

    monkeypatch.setattr(run, "compile_program", must_not)
    monkeypatch.setattr(workload.os, "posix_spawn", must_not)
    with pytest.raises(ValueError) as info:
        fn(**kwargs)
    assert str(info.value)
