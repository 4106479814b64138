"""The seed's three programs as lessons, checked against known workloads on the real kernel."""

from __future__ import annotations

import math
import os

import kernel_facts as facts
import numpy as np
import pandas as pd
import pytest
from conftest import Started, after_start, needs_root, send_sigint
from forced_kernel import hide_kprobes

import ebpf_lab
from ebpf_lab import UnsupportedFeature
from ebpf_lab.core.kernelfs import cpu_emulated
from ebpf_lab.core.run import active_views
from ebpf_lab.workloads import execs

pytestmark = needs_root


def recording(plan, box, **kw):
    """A workload that runs ``plan`` and keeps the frame of what it started in ``box``."""
    return lambda: box.update(done=execs(plan, **kw))


# ---------------------------------------------------------------- exec_counts


def test_exec_counts_exact_per_uid(fresh_uids, no_leaks):
    a, b, c = fresh_uids(3)
    plan = {a: 7, b: 3, c: 11}
    box = {}
    df = ebpf_lab.exec_counts(duration=1.5, interval=0.5, workload=recording(plan, box))
    assert list(df.columns) == ["time", "uid", "user", "execs", "rate", "total"]
    ours = df[df.uid.isin(plan)]
    assert ours.groupby("uid")["execs"].sum().to_dict() == plan
    assert len(box["done"]) == sum(plan.values())
    # running totals never go down and end at the exact counts
    for uid, group in ours.groupby("uid"):
        assert group["total"].is_monotonic_increasing
        assert group["total"].iloc[-1] == plan[uid]
        assert (group["execs"].cumsum() == group["total"]).all()
    # rate = execs / the interval's measured length; intervals are about `interval` long
    times = df["time"].drop_duplicates().sort_values()
    gaps = times.diff().dt.total_seconds().dropna()
    # (the last snapshot, at the end of the run, may close a partial interval: a busy machine
    # can end the run a few ms after the last full interval's snapshot)
    # (under emulation, a VM without KVM beside other runs, a snapshot can come seconds late:
    # only the order and the rates' own consistency below are facts there)
    late = 10.0 if cpu_emulated() else 1.0
    assert ((gaps.iloc[:-1] > 0.3) & (gaps.iloc[:-1] < late)).all(), gaps
    assert 0 < gaps.iloc[-1] < late, gaps
    # each row's execs / rate is the length of its own interval: the gap to the previous
    # snapshot (timestamps and the rate's clock are read a moment apart), or about `interval`
    # for the first one, whose start is not a row
    length = pd.Series(times.diff().dt.total_seconds().to_numpy(), index=times.to_numpy())
    nonzero = ours[ours.execs > 0]
    measured = (nonzero["execs"] / nonzero["rate"]).to_numpy()
    expected = length.loc[nonzero["time"].to_numpy()].to_numpy()
    first = np.isnan(expected)
    assert np.allclose(measured[~first], expected[~first], atol=0.05), (nonzero, expected)
    assert np.allclose(measured[first], 0.5, atol=0.2 if late == 1.0 else late), nonzero
    # dtypes and metadata follow the lab's conventions
    assert str(df["time"].dtype) == "datetime64[ns]"
    assert str(df["user"].dtype) == "category"
    # attach="auto": the seed's kprobe exactly where the kernel's own files say it can attach
    assert df.attrs["attach"] == ("kprobe" if facts.kprobes_attachable() else "tracepoint")
    assert df.attrs["interval"] == 0.5
    # a uid without a passwd entry is shown as the number
    assert set(ours["user"].astype(str)) == {str(a), str(b), str(c)}


def test_exec_counts_default_interval_fits_a_short_run(fresh_uids, no_leaks):
    """The default interval is 1 s, or the whole run when it is shorter; an explicit interval
    longer than the run is still refused before anything loads."""
    (uid,) = fresh_uids(1)
    box = {}
    df = ebpf_lab.exec_counts(duration=0.5, workload=recording({uid: 4}, box))
    assert df.attrs["interval"] == 0.5
    assert df.loc[df.uid == uid, "execs"].sum() == len(box["done"]) == 4
    with pytest.raises(ValueError, match="interval=1.0 s is longer than duration=0.5 s"):
        ebpf_lab.exec_counts(duration=0.5, interval=1.0)


def test_fast_execs_are_counted_exactly(fresh_uids, no_leaks):
    """The C exec loop (the benchmarks' loop) makes exactly `count` execs as the UID."""
    from ebpf_lab.workloads import fast_execs

    uid = fresh_uids()[0]
    box = {}
    df = ebpf_lab.exec_counts(
        duration=0.2, interval=0.2, workload=lambda: box.update(done=fast_execs(uid, 300))
    )
    assert df.loc[df.uid == uid, "execs"].sum() == 300
    done = box["done"].iloc[0]
    assert done["execs"] == 300 and done["uid"] == uid
    assert done["loop_seconds"] > 0 and done["execs_per_s"] == 300 / done["loop_seconds"]


@pytest.mark.parametrize("uid, count", [(-1, 5), (2**32, 5), (1000, -1), (1000, 10**9), (1, 2.5)])
def test_fast_execs_bad_input(uid, count):
    from ebpf_lab.workloads import fast_execs

    with pytest.raises(ValueError):
        fast_execs(uid, count)


def test_exec_counts_names_known_users(no_leaks):
    df = ebpf_lab.exec_counts(duration=0.3, interval=0.3, workload=lambda: execs({65534: 2}))
    row = df[df.uid == 65534]
    assert row["execs"].sum() >= 2  # uid 65534 is shared with the machine: at least ours
    assert row["user"].iloc[0] == "nobody"


def test_exec_counts_auto_records_the_choice(fresh_uids, no_leaks):
    """auto takes the seed's kprobe where the kernel's own files say it can, else the tracepoint;
    the reason names what the files show, and either path counts the workload's execs exactly."""
    (uid,) = fresh_uids(1)
    df = ebpf_lab.exec_counts(duration=0.3, interval=0.3, workload=lambda: execs({uid: 3}))
    assert df.loc[df.uid == uid, "execs"].sum() == 3
    reason = df.attrs["attach_reason"]
    tracefs = facts.tracefs_mount()
    if facts.kprobes_attachable():
        assert df.attrs["attach"] == "kprobe", reason
        found = (
            "kprobe PMU present (/sys/bus/event_source/devices/kprobe)"
            if facts.pmu("kprobe")
            else f"{tracefs}/kprobe_events present"
        )
        assert reason == f"auto: kprobes available ({found})"
    elif facts.kprobe_interface():  # an interface, but lockdown=confidentiality refuses kprobes
        assert (df.attrs["attach"], reason) == ("tracepoint", "auto: the kprobe failed to attach")
    else:
        assert df.attrs["attach"] == "tracepoint", reason
        assert reason.startswith(
            f"auto: fell back to the tracepoint because no kprobe PMU "
            f"(/sys/bus/event_source/devices/kprobe) and no {tracefs}/kprobe_events"
        ), reason
        if facts.kprobes_built_in() is False:
            assert reason.endswith("the kernel was built without CONFIG_KPROBES"), reason
        elif facts.kprobes_built_in() and facts.debugfs_mounted():
            assert "without CONFIG_KPROBE_EVENTS" in reason, reason


# ---------------------------------------------------------------- exec_events


@pytest.mark.parametrize("buffer", ["perf", "ring"])
def test_exec_events_every_workload_exec_once(buffer, fresh_uids, no_leaks):
    a, b = fresh_uids(2)
    box = {}
    df = ebpf_lab.exec_events(duration=1.0, buffer=buffer, workload=recording({a: 6, b: 4}, box))
    assert list(df.columns) == [
        "time",
        "pid",
        "ppid",
        "uid",
        "user",
        "command",
        "filename",
        "message",
    ]
    done = box["done"]
    ours = df[df.pid.isin(done.pid)]
    assert len(ours) == len(done) == 10
    assert ours.pid.is_unique
    merged = ours.merge(done, on="pid", suffixes=("", "_truth"))
    assert (merged["uid"] == merged["uid_truth"]).all()
    assert (merged["ppid"] == os.getpid()).all()  # the real parent: this process
    assert (merged["filename"] == "/bin/true").all()
    assert (merged["message"] == "Hello World").all()
    assert df.attrs["lost"] == 0
    assert df.attrs["buffer"] == buffer
    if buffer == "ring":  # one ring for all CPUs: arrival order is the order they happened
        assert ours["time"].is_monotonic_increasing
    else:  # one ring per CPU, each read in turn: in order within a CPU's ring only
        assert ours.sort_values("time")["pid"].tolist() == done["pid"].tolist()


def test_exec_events_ppid_of_a_grandchild(no_leaks):
    """A shell started by us execs /bin/true: its parent is the shell, not us."""
    import subprocess

    box = {}

    def work():
        p = subprocess.Popen(
            ["/bin/sh", "-c", "/bin/true; echo $$"], stdout=subprocess.PIPE, text=True
        )
        out, _ = p.communicate()
        box["shell"] = p.pid

    df = ebpf_lab.exec_events(duration=0.5, workload=work)
    shell = box["shell"]
    assert df[df.pid == shell].ppid.tolist() == [os.getpid()]
    child = df[(df.ppid == shell) & (df.filename == "/bin/true")]
    assert len(child) == 1


def test_exec_events_max_events(fresh_uids, no_leaks):
    (a,) = fresh_uids(1)
    df = ebpf_lab.exec_events(duration=10, max_events=3, workload=lambda: execs({a: 20}))
    assert len(df) == 3
    assert df.attrs["stopped_by"] == "limit"
    assert df.attrs["interrupted"] is False


# ---------------------------------------------------------------- hello


def test_hello_one_line_per_exec(fresh_uids, no_leaks):
    a, b = fresh_uids(2)
    box = {}
    df = ebpf_lab.hello(duration=1.0, workload=recording({a: 5, b: 2}, box))
    assert list(df.columns) == ["time", "pid", "comm", "cpu", "message"]
    ours = df[df.pid.isin(box["done"].pid)]
    assert len(ours) == 7 and ours.pid.is_unique
    assert (ours["message"] == "Hello World!").all()
    assert df.attrs["buffer"].startswith("trace")
    assert df.attrs["odd_lines"] == []
    assert df["time"].between(df["time"].min(), df["time"].min() + pd.Timedelta(seconds=5)).all()


def test_hello_ignores_other_programs_lines(no_leaks):
    """Another BPF program printing "Hello World!" at the same time does not leak into ours."""
    from bcc import BPF

    other = BPF(text=b'int other(void *ctx) { bpf_trace_printk("Hello World!"); return 0; }')
    try:
        other.attach_tracepoint(tp=b"syscalls:sys_enter_execve", fn_name=b"other")
        box = {}
        df = ebpf_lab.hello(duration=0.5, workload=recording({65534: 3}, box))
    finally:
        other.cleanup()
    ours = df[df.pid.isin(box["done"].pid)]
    assert len(ours) == 3
    assert df.attrs["other_printk_lines"] >= 3


def test_hello_compiles_once_and_each_run_keeps_its_own_lines(fresh_uids, no_leaks):
    """The run's tag reaches the program through a map, so the C text is the same for every run:
    two runs compile it once (the compile cache's counters). Run at the same time (the second
    inside the first's workload), each keeps only the lines of its own tag: every exec once."""
    from ebpf_lab.core import compile_cache

    a, b = fresh_uids(2)
    outer_box, inner_box = {}, {}

    def outer_work():
        outer_box["done"] = execs({a: 3})
        outer_box["inner"] = ebpf_lab.hello(duration=0.3, workload=recording({b: 2}, inner_box))

    compile_cache.clear()
    outer = ebpf_lab.hello(duration=0.3, workload=outer_work)
    info = compile_cache.info()
    assert (info["misses"], info["hits"], info["entries"]) == (1, 1, 1)
    inner = outer_box["inner"]
    outer_pids, inner_pids = set(outer_box["done"].pid), set(inner_box["done"].pid)
    # the inner run saw its own two execs once each, and nothing of the outer run's lines
    assert sorted(inner.loc[inner.pid.isin(inner_pids | outer_pids), "pid"]) == sorted(inner_pids)
    # the outer run saw all five execs (its own and the inner run's) once each
    seen = outer.loc[outer.pid.isin(inner_pids | outer_pids), "pid"]
    assert sorted(seen) == sorted(inner_pids | outer_pids)
    assert (outer["message"] == "Hello World!").all() and (inner["message"] == "Hello World!").all()


# ---------------------------------------------------------------- attach choices


@pytest.mark.parametrize("fn", [ebpf_lab.hello, ebpf_lab.exec_counts, ebpf_lab.exec_events])
def test_kprobe_without_kprobes_names_the_tracepoint(fn, tmp_path, monkeypatch, no_leaks):
    """Forced (the lab is shown a kernel without kprobes), so it runs on kernels with them too."""
    hide_kprobes(monkeypatch, tmp_path)
    with pytest.raises(UnsupportedFeature, match="tracepoint") as info:
        fn(duration=1, attach="kprobe")
    assert info.value.feature == "kprobe"
    assert "CONFIG_KPROBES" in str(info.value)


@pytest.mark.parametrize("fn", [ebpf_lab.hello, ebpf_lab.exec_counts, ebpf_lab.exec_events])
def test_forced_tracepoint(fn, no_leaks):
    extra = {"interval": 0.2} if fn is ebpf_lab.exec_counts else {}
    df = fn(duration=0.2, attach="tracepoint", **extra)
    assert df.attrs["attach"] == "tracepoint"


# ---------------------------------------------------------------- bad input

BAD = [
    (ebpf_lab.hello, {"duration": -1}),
    (ebpf_lab.hello, {"duration": 0}),
    (ebpf_lab.hello, {"duration": math.nan}),
    (ebpf_lab.hello, {"duration": math.inf}),
    (ebpf_lab.hello, {"duration": 10**9}),
    (ebpf_lab.hello, {"duration": "5"}),
    (ebpf_lab.hello, {"attach": "fentry"}),
    (ebpf_lab.hello, {"workload": 42}),
    (ebpf_lab.exec_counts, {"duration": -3}),
    (ebpf_lab.exec_counts, {"interval": 0}),
    (ebpf_lab.exec_counts, {"interval": -1}),
    (ebpf_lab.exec_counts, {"duration": 2, "interval": 5}),
    (ebpf_lab.exec_counts, {"attach": "Tracepoint"}),
    (ebpf_lab.exec_counts, {"workload": "ls"}),
    (ebpf_lab.exec_events, {"duration": math.nan}),
    (ebpf_lab.exec_events, {"buffer": "pipe"}),
    (ebpf_lab.exec_events, {"attach": None}),
    (ebpf_lab.exec_events, {"max_events": 0}),
    (ebpf_lab.exec_events, {"max_events": -5}),
    (ebpf_lab.exec_events, {"max_events": 10**12}),
    (ebpf_lab.exec_events, {"workload": [1, 2]}),
]


@pytest.mark.parametrize("fn,kwargs", BAD, ids=[f"{f.__name__}-{k}" for f, k in BAD])
def test_bad_input_is_value_error_before_loading(fn, kwargs, refused_before_loading):
    refused_before_loading(fn, kwargs)


# ---------------------------------------------------------------- interrupt and Stop


@pytest.mark.parametrize("fn", [ebpf_lab.hello, ebpf_lab.exec_counts, ebpf_lab.exec_events])
def test_interrupt_returns_partial_frame(fn, fresh_uids, no_leaks):
    (a,) = fresh_uids(1)
    box = {}
    work = Started(recording({a: 100_000}, box))
    timer = after_start(work, send_sigint)
    df = fn(duration=60, workload=work)
    timer.join()
    assert df.attrs["interrupted"] is True and df.attrs["stopped_by"] == "interrupt"
    done = box["done"]
    assert 0 < len(done) < 100_000
    if fn is ebpf_lab.exec_counts:
        assert df[df.uid == a]["execs"].sum() == len(done)
    else:
        assert df.pid.isin(done.pid).sum() == len(done)


@pytest.mark.parametrize("fn", [ebpf_lab.hello, ebpf_lab.exec_counts, ebpf_lab.exec_events])
def test_stop_button_returns_partial_frame(fn, fresh_uids, no_leaks):
    (a,) = fresh_uids(1)
    box = {}

    def press():
        for view in active_views():
            view.request_stop()  # what the Stop button's click handler does

    work = Started(recording({a: 100_000}, box))
    presser = after_start(work, press)
    df = fn(duration=60, workload=work)
    presser.join()
    assert df.attrs["stopped_by"] == "stop button"
    assert isinstance(df, pd.DataFrame) and len(box["done"]) > 0


@pytest.fixture
def fonts_loaded():
    """matplotlib keeps the font files it drew with open for good: draw once before a leak
    check (list this fixture before ``no_leaks``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_title("warm-up")
    fig.canvas.draw()
    plt.close(fig)


def test_plot_exec_rates_shows_every_user_at_equal_rates(fonts_loaded, fresh_uids, no_leaks):
    """Two users at exactly the same rate: each has its own band, one above the other, and
    both can be seen in the rendered image (lines of equal rates hid one another)."""
    import matplotlib.colors as mcolors
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    a, b = fresh_uids(2)
    # one interval: the six execs take milliseconds, so both users make 3 in it
    df = ebpf_lab.exec_counts(duration=1.0, interval=1.0, workload=lambda: execs({a: 3, b: 3}))
    ours = df[df.uid.isin([a, b])]
    rates = ours.pivot(index="time", columns="uid", values="rate").sort_index().fillna(0.0)
    equal = (rates[a] == rates[b]) & (rates[a] > 0)
    if not equal.any():  # a slow (emulated) machine: the six execs took longer than 1 s
        pytest.skip(f"the workload was split across intervals, no equal rates to draw:\n{ours}")

    ax = ebpf_lab.plot_exec_rates(ours)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["total", f"{b} ({b})", f"{a} ({a})"]  # as stacked: the top band first
    assert ax.get_ylabel() == "execs / s"
    band = {p.get_label(): p.get_data() for p in ax.patches}
    low, high, total = band[f"{a} ({a})"], band[f"{b} ({b})"], band["total"]
    # each band's thickness is that user's rate, interval by interval: the same data
    assert np.allclose(low.values - low.baseline, rates[a])
    assert np.allclose(high.values - high.baseline, rates[b])
    assert np.allclose(total.values, rates[a] + rates[b])
    # stacked: b lies on a, so at equal rates the two bands do not coincide
    assert np.allclose(low.baseline, 0) and np.allclose(high.baseline, low.values)
    assert (high.values[equal.to_numpy()] > low.values[equal.to_numpy()]).all()
    # the first interval is as wide as the run's interval (a line showed it as a dot)
    first = (low.edges[1] - low.edges[0]) * 86400  # date numbers are days
    assert first == pytest.approx(df.attrs["interval"], abs=0.05)
    end = mdates.date2num(rates.index[0].to_datetime64())
    assert low.edges[1] == pytest.approx(end, abs=1e-3 / 86400)  # ends at its row's time

    # both bands are visible: each one's colour covers a good part of the rendered figure
    fig = ax.figure
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0
    for patch in ax.patches[:2]:
        rgba = mcolors.to_rgba(patch.get_facecolor())
        seen = np.array(rgba[:3]) * rgba[3] + (1 - rgba[3])  # over the white axes
        share = (np.abs(image - seen).max(axis=-1) < 0.03).mean()
        assert share > 0.02, (patch.get_label(), share)
    plt.close(fig)

    with pytest.raises(ValueError):
        ebpf_lab.plot_exec_rates(pd.DataFrame({"x": [1]}))
