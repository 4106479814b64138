"""Lesson 08: trace, perf and ring buffers on one known event stream; every event accounted for."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import interrupt_once_attached, needs_root
from test_attach_points import no_children  # noqa: F401  (a fixture: no child left behind)

from ebpf_lab.core.errors import HelperBuildError
from ebpf_lab.lessons.l08_data_transfer.transfer import (
    BUFFERS,
    EVENT_COLUMNS,
    PATHS,
    buffer_comparison,
    stream_events,
    transfer_rates,
    transfer_summary,
)
from ebpf_lab.workloads import native

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


def test_two_comparisons_compile_once(no_leaks):
    """The source's pid and the run's tag go into maps, not the C: a second run (another dd,
    another tag) reuses the first compile, and each run gets exactly its own source's reads."""
    from ebpf_lab.core import compile_cache

    compile_cache.clear()
    first = buffer_comparison(1_000, buffer_kb=1024)
    second = buffer_comparison(2_000, buffer_kb=1024)
    info = compile_cache.info()
    assert (info["misses"], info["hits"], info["entries"]) == (1, 1, 1)
    assert first.attrs["source"]["pid"] != second.attrs["source"]["pid"]
    for df, n in ((first, 1_000), (second, 2_000)):
        assert df.attrs["generated"] == n
        for b in BUFFERS:
            assert sorted(df.loc[df["buffer"] == b, "seq"]) == list(range(n)), b


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
    # the known stream: 200 000 reads, each one event, on both paths
    assert (out["generated"] == 200_000).all()
    assert (out["delivered"] + out["lost"] == out["generated"]).all()
    batched = out.set_index("path").loc["batched"]
    assert bench["stream_lost"] == batched["generated"] - batched["delivered"]
    assert bench["stream_lost"] % batched["batch"] == 0  # a refused batch is lost whole
    callback = out.set_index("path").loc["callback"]
    assert bench["naive_delivered_fraction"] == callback["delivered"] / callback["generated"]


# ---------------------------------------------------------------- the C read loop source


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_read_loop_batched_is_exact(threads, no_leaks):
    """The C read loop, on the raw tracepoint: the program sees exactly its reads, no others."""
    n = 400_003  # not a multiple of the threads or of the batch: shares and partial batches
    df = stream_events("batched", n, batch=64, ring_kb=1024, source="read_loop", threads=threads)
    a = df.attrs
    assert a["attach"] == "raw_tracepoint"
    assert a["source"]["reads"] == n and a["source"]["threads"] == threads
    assert a["source"]["returncode"] == 0
    assert a["generated"] == n, "the program counted exactly the helper's reads of fd 0"
    assert a["delivered"] + a["lost"] == a["generated"]
    assert a["lost"] % 64 == 0
    seq = df["seq"].to_numpy()
    check_stream(seq, a["generated"])
    assert a["delivered"] == len(df)
    if a["lost"] == 0:
        assert np.array_equal(np.sort(seq), np.arange(n))
    assert a["source"]["loop_seconds"] > 0 and a["source"]["cpu_seconds"] > 0
    assert a["source_kind"] == "read_loop" and a["threads"] == threads


def test_read_loop_callback_path_is_exact(no_leaks):
    """The per-event path stays on the tracepoint (pid and fd 0): the same exact count."""
    df = stream_events("callback", 100_000, ring_kb=256, source="read_loop", threads=2)
    a = df.attrs
    assert a["attach"] == "tracepoint"
    assert a["generated"] == 100_000
    assert a["delivered"] + a["lost"] == a["generated"]
    check_stream(df["seq"].to_numpy(), a["generated"])


def test_transfer_rates_on_the_read_loop(no_leaks):
    out = transfer_rates(100_000, ring_kb=512, source="read_loop", threads=2)
    assert (out["generated"] == 100_000).all()
    assert (out["delivered"] + out["lost"] == out["generated"]).all()
    assert out.attrs["source"] == "read_loop" and out.attrs["threads"] == 2


def test_helper_is_built_once_into_a_private_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(native.CACHE_ENV, str(cache))
    first = native.build("read_loop")
    assert first.parent == cache and first.name.startswith("read_loop-")
    assert (cache.stat().st_mode & 0o777) == 0o700
    assert (first.stat().st_mode & 0o777) == 0o700
    before = first.stat()
    again = native.build("read_loop")  # reused: not compiled again
    assert again == first
    after = again.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in cache.iterdir()) == [first.name]  # no temporary left
    # a cache directory others could write is made private again before its binary is run
    cache.chmod(0o777)
    assert native.build("read_loop") == first
    assert (cache.stat().st_mode & 0o777) == 0o700
    # one owned by someone else is refused
    os.chown(cache, 65534, 65534)
    with pytest.raises(PermissionError, match="owned by uid"):
        native.build("read_loop")


def test_helper_build_without_a_compiler_says_what_to_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CC"}
    env.update({"PATH": str(tmp_path / "empty"), native.CACHE_ENV: str(tmp_path / "cache")})
    code = (
        "from ebpf_lab.workloads import native\n"
        "from ebpf_lab.core.errors import HelperBuildError\n"
        "try:\n"
        "    native.build('read_loop')\n"
        "except HelperBuildError as e:\n"
        "    print(e)\n"
        "else:\n"
        "    raise SystemExit('built without a compiler?')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "no C compiler" in out.stdout and "apt-get install gcc libc6-dev" in out.stdout
    assert not any((tmp_path / "cache").glob("read_loop-*"))


def test_helper_compile_failure_carries_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "false")  # a "compiler" that fails
    with pytest.raises(HelperBuildError, match="libc6-dev"):
        native.build("read_loop")
    assert list((tmp_path / "cache").iterdir()) == []  # no half-built binary


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
    (stream_events, {"source": "cat"}),
    (stream_events, {"source": "read_loop", "threads": 0}),
    (stream_events, {"source": "read_loop", "threads": -2}),
    (stream_events, {"source": "read_loop", "threads": 10**6}),
    (stream_events, {"source": "read_loop", "threads": 2.0}),
    (stream_events, {"source": "read_loop", "threads": True}),
    (stream_events, {"source": "dd", "threads": 2}),
    (stream_events, {"source": "read_loop", "events": 0}),
    (transfer_rates, {"events": -1}),
    (transfer_rates, {"batch": 1.5}),
    (transfer_rates, {"source": "read_loop", "threads": 0}),
    (transfer_rates, {"source": None}),
]


@pytest.mark.parametrize("fn,kwargs", BAD, ids=[f"{f.__name__}-{k}" for f, k in BAD])
def test_bad_input_is_value_error_before_anything_starts(fn, kwargs, no_leaks, monkeypatch):
    import ebpf_lab.core.run as run

    def must_not(*a, **k):
        raise AssertionError("something was started with bad input")

    monkeypatch.setattr(run, "compile_program", must_not)
    monkeypatch.setattr(os, "posix_spawn", must_not)
    monkeypatch.setattr(native, "build", must_not)
    with pytest.raises(ValueError) as info:
        fn(**kwargs)
    assert str(info.value)


def test_interrupt_ends_transfer_rates(no_leaks):
    """One Ctrl-C during the first stream ends transfer_rates: the second path never runs."""
    presser = interrupt_once_attached()
    out = transfer_rates(5_000_000, source="read_loop")
    presser.join()
    assert out.attrs["interrupted"] is True
    assert out.attrs["not_run"] == ["callback", "batched"] and len(out) == 0
    assert "benchmark" not in out.attrs
