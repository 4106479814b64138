"""Lesson 07: the same counter at each attach point, against gated children doing known work."""

from __future__ import annotations

import math
import os
import signal
import threading

import kernel_facts as facts
import pandas as pd
import pytest
from conftest import interrupt_once_attached, needs_root
from forced_kernel import hide_kprobes
from kernel_state import held

import ebpf_lab
from ebpf_lab import UnsupportedFeature
from ebpf_lab.core.kernelfs import cpu_emulated
from ebpf_lab.lessons.l07_attach_points.attach_points import (
    KINDS,
    TARGETS,
    attach_points,
    count_at,
    sampling_bound,
    uprobe_breakpoint,
)
from ebpf_lab.workloads import getppid_child, spin_child

pytestmark = needs_root


def our_children(cpu: bool = False) -> list[tuple]:
    """Processes whose parent is this process, with their state (R, S, T stopped, Z zombie)
    and, with ``cpu``, the CPU seconds they have used."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            found.append((int(entry), fields[0], used) if cpu else (int(entry), fields[0]))
    return found


@pytest.fixture
def no_children():
    """Fail the test if it leaves a child process behind (running, stopped or a zombie)."""
    before = set(our_children())
    yield
    left = set(our_children()) - before
    assert not left, f"child processes left behind: {left}"


# ---------------------------------------------------------------- exact counts


@pytest.mark.parametrize("kind", ["tracepoint", "raw_tracepoint", "uprobe"])
def test_exact_count_for_the_childs_calls(kind, no_leaks, no_children):
    df = count_at(kind, calls=1234)
    assert list(df.columns) == ["tgid", "command", "events", "workload"]
    child = df[df["workload"]]
    assert len(child) == 1
    assert child["events"].iloc[0] == 1234
    a = df.attrs
    assert a["measured"] == 1234 and a["expected"] == 1234
    assert a["bound"] == 0 and a["within_bound"] is True
    assert a["workload"]["calls"] == 1234 and a["workload"]["returncode"] == 0
    assert child["tgid"].iloc[0] == a["workload"]["pid"]
    assert a["attach"] == kind and a["target"] == TARGETS[kind]
    assert a["missed"] == 0
    assert str(df["tgid"].dtype) == "int64" and str(df["command"].dtype) == "category"
    assert df["tgid"].is_unique


def test_uprobe_for_one_pid_sees_only_that_process(no_leaks, no_children):
    """A uprobe opened for a pid fires for no one else, though every process shares libc."""
    df = count_at("uprobe", calls=300)
    assert df["tgid"].tolist() == [df.attrs["workload"]["pid"]]
    assert df["events"].tolist() == [300]
    assert "only" in df.attrs["filter"]


def test_uprobe_breakpoint_is_in_the_processs_memory_not_in_the_file(no_leaks):
    bp = uprobe_breakpoint(calls=7)
    assert bp["moment"].tolist() == ["before", "attached", "after"]
    m = bp.set_index("moment")
    assert m.loc["attached", "memory"].startswith("cc ")  # int3
    assert m.loc["attached", "memory"][2:] == m.loc["before", "memory"][2:]
    assert m.loc["before", "memory"] == m.loc["after", "memory"] == m.loc["before", "file"]
    assert bp["file"].nunique() == 1 and bp["file_sha256"].nunique() == 1
    assert bp.attrs["events"] == 7 and bp.attrs["attach"] == "uprobe"


def test_tracepoints_agree_on_a_second_run(no_leaks, no_children):
    """Two different children, two different counts, each exact."""
    a = count_at("tracepoint", calls=7)
    b = count_at("raw_tracepoint", calls=70_000)
    assert a.attrs["measured"] == 7
    assert b.attrs["measured"] == 70_000
    assert a.attrs["workload"]["pid"] != b.attrs["workload"]["pid"]


# ---------------------------------------------------------------- perf event sampling


#: an emulated CPU (the kernel matrix's VMs where KVM does not work): late timer interrupts
EMULATED = cpu_emulated()


# up to ~1000 Hz: at 4999 Hz (a 200 us period) this VM's timer interrupts are now and then late
# enough to merge two ticks, and the count comes out short (see sampling_bound)
@pytest.mark.parametrize("freq", [99, 997])
def test_perf_event_samples_follow_cpu_time(freq, no_leaks, no_children):
    df = count_at("perf_event", cpu_seconds=0.3, sample_freq=freq)
    a = df.attrs
    w = a["workload"]
    assert w["cpu_seconds"] >= 0.3  # it spun at least that long, by its own clock
    expected = freq * w["cpu_seconds"]
    assert a["expected"] == pytest.approx(expected)
    bound = sampling_bound(freq, w["context_switches"])
    assert a["bound"] == bound
    if EMULATED:
        # Under emulation (the kernel matrix's VMs without KVM) the guest's timer interrupts
        # arrive late, and perf counts one sample for a late tick however many periods it spans
        # (sampling_bound's docstring): only the upper side of the bound is a fact there (seen:
        # 359 samples for 499 expected with the host busy). That only the child was sampled is
        # checked below either way.
        assert a["measured"] <= expected + bound, (a["measured"], expected, bound)
    else:
        assert abs(a["measured"] - expected) <= bound, (a["measured"], expected, bound)
        assert a["within_bound"] is True
    # opened for the child's pid: nobody else was sampled
    assert df["tgid"].tolist() == [w["pid"]]
    # the child stopped after its work; its exit was sampled (a little) after the reading
    assert w["exit_cpu_seconds"] > 0
    assert a["events_after_work"] >= 0
    assert df["events"].iloc[0] == a["measured"] + a["events_after_work"]


# ---------------------------------------------------------------- kprobes and the table


def hook_expected(kind: str) -> bool:
    """Whether a kernel-function hook should work here. kprobes: the kernel's own files
    (tests/kernel_facts.py, not the lab's helper); fentry: the doctor, which loads one and whose
    answer test_doctor.py cross-checks against the kernel's config and kallsyms."""
    return facts.kprobes_attachable() if kind != "fentry" else ebpf_lab.supports("fentry")


@pytest.mark.parametrize("kind", ["kprobe", "kretprobe"])
def test_kprobe_explains_itself_before_anything_loads(
    kind, no_leaks, no_children, monkeypatch, tmp_path
):
    """Forced (the lab is shown a kernel without kprobes), so it runs on kernels with them too."""
    hide_kprobes(monkeypatch, tmp_path)
    import ebpf_lab.core.run as run

    monkeypatch.setattr(run, "compile_program", lambda *a, **k: pytest.fail("compiled"))
    with pytest.raises(UnsupportedFeature) as info:
        count_at(kind)
    assert info.value.feature == kind
    assert "CONFIG_KPROBES" in str(info.value)
    assert "tracepoint" in info.value.alternative


@pytest.mark.parametrize("kind", ["kprobe", "kretprobe", "fentry"])
def test_kernel_function_hooks_count_exactly_where_supported(kind, no_leaks, no_children):
    """Where the kernel has the hook, it counts the child's calls exactly; elsewhere it says why
    (kprobes: the kernel's files; fentry: the doctor, which loads one) before anything loads."""
    supported = hook_expected(kind)
    if not supported:
        with pytest.raises(UnsupportedFeature) as info:
            count_at(kind, calls=321)
        assert info.value.feature == kind and "tracepoint" in info.value.alternative
        return
    df = count_at(kind, calls=321)
    assert df.attrs["measured"] == 321 and df.attrs["within_bound"] is True
    assert df.attrs["attach"] == kind and df.attrs["missed"] == 0
    assert df.loc[df["workload"], "tgid"].tolist() == [df.attrs["workload"]["pid"]]


def test_attach_point_table(no_leaks, no_children):
    table = attach_points(calls=500, cpu_seconds=0.2)
    assert table["kind"].tolist() == list(KINDS)
    assert list(table.columns) == [
        "kind",
        "supported",
        "target",
        "sees",
        "events",
        "expected",
        "bound",
        "ok",
        "detail",
    ]
    rows = table.set_index("kind")
    for kind in ("tracepoint", "raw_tracepoint", "uprobe"):
        assert rows.loc[kind, "supported"]
        assert rows.loc[kind, "events"] == 500
        assert rows.loc[kind, "ok"]
    perf = rows.loc["perf_event"]
    assert perf["supported"]
    if EMULATED:  # late timer ticks under emulation: see test_perf_event_samples_follow_cpu_time
        assert perf["events"] <= perf["expected"] + perf["bound"]
    else:
        assert perf["ok"]
    for kind in ("kprobe", "kretprobe", "fentry"):
        row = rows.loc[kind]
        if hook_expected(kind):
            assert row["supported"] and row["events"] == 500 and row["ok"], kind
        else:
            assert not row["supported"], kind
            assert pd.isna(row["events"])
            assert "tracepoint" in row["detail"]
            if kind != "fentry" and facts.kprobes_built_in() is False:
                assert "CONFIG_KPROBES" in row["detail"]
    assert all(isinstance(d, str) and d for d in table["detail"])


# ---------------------------------------------------------------- gated children


def test_gated_child_stops_after_its_work_and_reports_it(no_children):
    seen = []
    with spin_child(0.05, stop_after=True) as child:
        done = child.run(at_end=lambda: seen.append(child.cpu_ns()))
    assert len(seen) == 1
    row = done.iloc[0]
    assert row["returncode"] == 0 and row["cpu_seconds"] >= 0.05
    assert row["exit_cpu_seconds"] > 0


def test_a_child_that_never_runs_is_killed(no_children):
    child = getppid_child(5)
    assert (child.pid, "T") in our_children()  # stopped at its gate
    child.kill()
    child.kill()  # idempotent


def test_failed_compile_kills_the_child(no_leaks, no_children, monkeypatch):
    from ebpf_lab.lessons.l07_attach_points import attach_points as ap

    monkeypatch.setattr(ap, "program_source", lambda name: "int broken(void *ctx) { return }")
    with pytest.raises(ebpf_lab.ProgramError):
        count_at("tracepoint")


def test_interrupt_ends_a_long_spin(no_leaks, no_children):
    from ebpf_lab.core import run as core

    def interrupt_once_spinning():
        import time

        # Wait for events, not for amounts of time: the child starts and stops at its gate
        # before the run begins; during the run the program is compiled (a fraction of a second
        # here, half a minute under emulation) and attached, then the child is let go. Interrupt
        # once, with a run going on and its program loaded, a child runs (state R), as a
        # learner's Ctrl-C in the middle of the spin.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if (
                any(v.attached.is_set() for v in core.active_views())
                and held().prog_ids
                and any(st == "R" for _pid, st in our_children())
            ):
                time.sleep(0.2)
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    presser = threading.Thread(target=interrupt_once_spinning)
    presser.start()
    df = count_at("perf_event", cpu_seconds=30, sample_freq=99)
    presser.join()
    assert df.attrs["interrupted"] is True
    assert df.attrs["workload"]["returncode"] == -signal.SIGKILL


# ---------------------------------------------------------------- bad input

BAD = [
    (count_at, {"kind": "kfunc"}),
    (count_at, {"kind": None}),
    (count_at, {"calls": 0}),
    (count_at, {"calls": -1}),
    (count_at, {"calls": 1.5}),
    (count_at, {"calls": True}),
    (count_at, {"calls": 10**9}),
    (count_at, {"calls": None}),
    (count_at, {"cpu_seconds": 0}),
    (count_at, {"cpu_seconds": math.nan}),
    (count_at, {"cpu_seconds": 1000}),
    (count_at, {"cpu_seconds": "1"}),
    (count_at, {"sample_freq": 0}),
    (count_at, {"sample_freq": 10**7}),
    (count_at, {"sample_freq": 99.5}),
    (count_at, {"duration": -1}),
    (count_at, {"duration": math.inf}),
    (attach_points, {"calls": 0}),
    (uprobe_breakpoint, {"calls": 0}),
    (uprobe_breakpoint, {"calls": 5000}),
    (attach_points, {"sample_freq": -5}),
    (attach_points, {"cpu_seconds": -1}),
    (attach_points, {"duration": 0}),
]


@pytest.mark.parametrize("fn,kwargs", BAD, ids=[f"{f.__name__}-{k}" for f, k in BAD])
def test_bad_input_is_value_error_before_anything_starts(
    fn, kwargs, refused_before_loading, no_children, monkeypatch
):

    def must_not_spawn(*a, **k):
        raise AssertionError("a child was started with bad input")

    monkeypatch.setattr(os, "posix_spawn", must_not_spawn)
    refused_before_loading(fn, kwargs)


def test_interrupt_ends_the_whole_table(no_leaks, no_children):
    """One Ctrl-C during a kind's run ends attach_points: no later kind runs."""
    presser = interrupt_once_attached()
    table = attach_points(duration=3)
    presser.join()
    assert table.attrs["interrupted"] is True
    stopped = table.attrs["not_run"]
    assert stopped and stopped == list(KINDS[KINDS.index(stopped[0]) :])
    assert list(table["kind"]) == [k for k in KINDS if k not in stopped]


# ---------------------------------------------------------------- every attach kind, live (#14)


def test_uprobe_uretprobe_usdt_read_the_loops_values_exactly(no_leaks, no_children):
    """lab_tick(i) returns 3*i + 7 for i < 1234; the USDT probe gets (i, value) after each."""
    from ebpf_lab.lessons.l07_attach_points.user_probes import user_probes

    calls = 1234
    df = user_probes(calls)
    triangle = calls * (calls - 1) // 2
    assert df["kind"].tolist() == ["uprobe", "uretprobe", "usdt"]
    assert df["events"].tolist() == [calls] * 3
    assert df["sum_first"].tolist() == [triangle, 3 * triangle + 7 * calls, triangle]
    assert df["sum_second"].tolist()[2] == 3 * triangle + 7 * calls
    assert df["sum_second"].isna().tolist() == [True, True, False]
    assert df["ok"].tolist() == [True, True, True]
    assert df.attrs["attach"] == "uprobe+uretprobe+usdt"
    assert "_bpf_readarg_on_usdt_tick_1" in df.attrs["usdt_c"]
    assert "_bpf_readarg_on_usdt_tick_2" in df.attrs["usdt_c"]


def test_usdt_probe_the_process_lacks_is_unsupported_before_loading(no_leaks, no_children):
    from ebpf_lab.core.attach import Probe, usdt_source
    from ebpf_lab.workloads.c_helpers import probe_loop_child

    with probe_loop_child(1) as child:
        with pytest.raises(UnsupportedFeature, match="no USDT probe ebpf_lab:nothing"):
            usdt_source([Probe("usdt", "ebpf_lab:nothing", "fn", pid=child.pid)])
        child.run()


@pytest.mark.parametrize("target,pid", [("tick", 1), ("ebpf_lab:tick", -1), ("a:b:c", 1)])
def test_usdt_probe_needs_provider_name_and_pid(target, pid):
    from ebpf_lab.core.attach import Probe

    with pytest.raises(ValueError, match="usdt"):
        Probe("usdt", target, "fn", pid=pid)


@pytest.mark.parametrize("calls", [0, -1, 1_000_001, 2.0, True, None])
def test_user_probes_bad_calls_before_anything_starts(calls, no_children):
    from ebpf_lab.lessons.l07_attach_points.user_probes import user_probes

    with pytest.raises(ValueError, match="calls"):
        user_probes(calls)


@pytest.mark.parametrize("hook", ["kprobe", "fentry"])
def test_vfs_read_latency_counts_every_read_exactly(hook, no_leaks, no_children):
    """kprobe+kretprobe or fentry+fexit on vfs_read for the C loop's 4321 one-byte reads."""
    from ebpf_lab.lessons.l07_attach_points.kernel_probes import read_latency

    reads = 4321
    if not hook_expected(hook):
        with pytest.raises(UnsupportedFeature) as info:
            read_latency(reads, hook=hook)
        assert info.value.feature == hook
        pytest.skip(f"this kernel has no {hook}: {info.value}")
    df = read_latency(reads, hook=hook)
    assert int(df["calls"].sum()) == reads
    assert (df["low_ns"] <= df["high_ns"]).all() and df["low_ns"].is_monotonic_increasing
    a = df.attrs
    assert (a["entries"], a["returns"]) == (reads, reads)
    assert (a["bytes_asked"], a["bytes_returned"]) == (reads, reads)  # count = 1, returned 1
    assert a["attach"] == hook and a["workload"]["reads"] == reads


def test_syscall_prefix_reads_the_execd_filename(no_leaks, no_children):
    from ebpf_lab.lessons.l07_attach_points.kernel_probes import syscall_prefix

    if not hook_expected("kprobe"):
        with pytest.raises(UnsupportedFeature) as info:
            syscall_prefix(7)
        assert info.value.feature == "kprobe"
        assert "sys_enter_execve" in info.value.alternative
        pytest.skip(f"this kernel has no kprobes: {info.value}")
    df = syscall_prefix(7)
    # one event per exec; the filename parameter read, or "" where bpf_probe_read_user_str()
    # could not read the string (its page not yet in memory: measured once on Debian's 6.1)
    assert int(df["execs"].sum()) == 7
    assert set(df["filename"]) <= {"/bin/true", ""}
    assert df.attrs["expected"] == {"/bin/true": 7}


def test_kernel_hooks_explain_themselves_before_anything_loads(
    no_leaks, no_children, monkeypatch, tmp_path
):
    """Forced (the lab is shown a kernel without kprobes), so it runs on kernels with them too."""
    from ebpf_lab.lessons.l07_attach_points.kernel_probes import read_latency, syscall_prefix

    hide_kprobes(monkeypatch, tmp_path)
    import ebpf_lab.core.run as run

    monkeypatch.setattr(run, "compile_program", lambda *a, **k: pytest.fail("compiled"))
    with pytest.raises(UnsupportedFeature, match="CONFIG_KPROBES") as info:
        read_latency(10, hook="kprobe")
    assert "fentry" in info.value.alternative
    with pytest.raises(UnsupportedFeature, match="CONFIG_KPROBES"):
        syscall_prefix(3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reads": 0},
        {"reads": True},
        {"reads": 1.5},
        {"reads": 50_000_001},
        {"hook": "kretprobe"},
        {"hook": None},
        {"duration": -1},
    ],
)
def test_read_latency_bad_input_before_anything_starts(kwargs, no_children):
    from ebpf_lab.lessons.l07_attach_points.kernel_probes import read_latency

    with pytest.raises(ValueError):
        read_latency(**kwargs)


@pytest.mark.parametrize("execs", [0, -3, 100_001, "5", None])
def test_syscall_prefix_bad_input_before_anything_starts(execs, no_children):
    from ebpf_lab.lessons.l07_attach_points.kernel_probes import syscall_prefix

    with pytest.raises(ValueError, match="execs"):
        syscall_prefix(execs)
