"""Lesson 06 (helpers) on the real kernel: helper values against the truth, and the
helper x program-type table."""

from __future__ import annotations

import os
import time

import kernel_facts as facts
import pandas as pd
import pytest
from conftest import needs_root

import ebpf_lab
import ebpf_lab.core.run
from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.lessons.l06_helpers.helper_calls import (
    DEFAULT_PROGRAM_TYPES,
    HELPERS_CALLED,
    PROBED_HELPERS,
    helper_support,
)
from ebpf_lab.workloads import execs, on_cpu, thread_comm

pytestmark = needs_root

# the module (ebpf_lab.helper_calls, as an attribute, is the function it exports)
from ebpf_lab.lessons.l06_helpers import helper_calls as hc  # noqa: E402

TRACING = ["tracepoint", "raw_tracepoint", "kprobe", "perf_event"]


def test_helper_values_equal_the_truth(fresh_uids, no_leaks):
    (who,) = fresh_uids(1)
    cpu = sorted(os.sched_getaffinity(0))[-1]
    box = {}

    def workload() -> None:
        # pinned, so the children (and the program running in their execve) use this CPU
        box["comm"] = thread_comm()
        box["done"] = on_cpu(cpu, lambda: execs({who: 4}))

    t0 = time.time_ns()
    df = ebpf_lab.helper_calls(duration=0.3, uid=who, workload=workload, wide=True)
    t1 = time.time_ns()
    done = box["done"]
    assert list(df.columns) == hc.WIDE_COLUMNS
    assert len(df) == len(done) == 4
    assert list(df["event"]) == [0, 1, 2, 3]
    # bpf_get_current_pid_tgid: the process the workload started, single-threaded (tid == pid)
    assert list(df["pid"]) == list(done["pid"])
    assert (df["tid"] == df["pid"]).all()
    # bpf_get_current_uid_gid: the UID and GID execs() switched to
    assert (df["uid"] == who).all() and (df["gid"] == who).all()
    # bpf_get_current_comm: the child still has its parent thread's name before the exec
    assert (df["comm_ret"] == 0).all()
    assert set(df["comm"].astype(str)) == {box["comm"]}
    # bpf_probe_read_user_str: the path execve was asked to run, and its length with the NUL
    assert (df["filename"] == "/bin/true").all()
    assert (df["filename_ret"] == len("/bin/true") + 1).all()
    # bpf_get_smp_processor_id: the pinned CPU
    assert (df["cpu"] == cpu).all()
    # bpf_ktime_get_ns: increasing, and (as wall clock) inside the run
    assert df["ktime_ns"].is_monotonic_increasing and df["ktime_ns"].is_unique
    assert (df["time"] >= pd.Timestamp(t0, unit="ns")).all()
    assert (df["time"] <= pd.Timestamp(t1, unit="ns")).all()
    # bpf_trace_printk: returned the bytes of the line that we read back from the trace buffer
    assert df.attrs["printk_lines_missing"] == 0
    for row in df.itertuples():
        assert row.printk_line.endswith(f"] helper event {row.event}")
        assert row.printk_ret == len(row.printk_line)
    assert df.attrs["lost"] == 0
    assert str(df["time"].dtype) == "datetime64[ns]"
    assert str(df["comm"].dtype) == "category"


def test_long_frame_one_row_per_helper_call(fresh_uids, no_leaks):
    (who,) = fresh_uids(1)
    box = {}
    df = ebpf_lab.helper_calls(
        duration=0.2, uid=who, workload=lambda: box.update(done=execs({who: 2}))
    )
    assert list(df.columns) == hc.LONG_COLUMNS
    assert len(df) == 2 * len(HELPERS_CALLED)
    assert list(df["helper"].astype(str)) == list(HELPERS_CALLED) * 2
    for event, pid in enumerate(box["done"]["pid"]):
        ev = df[df["event"] == event]
        rows = ev.set_index(ev["helper"].astype(str))
        assert (rows["pid"] == pid).all()
        returned = rows["returned"]
        assert returned["bpf_get_current_pid_tgid"] == (pid << 32) | pid
        assert returned["bpf_get_current_uid_gid"] == (who << 32) | who
        assert returned["bpf_get_current_comm"] == 0
        assert returned["bpf_probe_read_user_str"] == len("/bin/true") + 1
        assert rows.loc["bpf_probe_read_user_str", "value"] == "/bin/true"
        assert rows.loc["bpf_get_current_uid_gid", "value"] == f"uid {who}, gid {who}"
        assert returned["bpf_trace_printk"] == len(rows.loc["bpf_trace_printk", "value"])
    assert df["returned"].map(type).eq(int).all()


def test_a_run_without_events_keeps_the_schemas(fresh_uids, no_leaks):
    """A UID nobody uses execs nothing: both frames are empty, with their declared columns and
    dtypes."""
    (who,) = fresh_uids(1)
    wide = ebpf_lab.helper_calls(duration=0.1, uid=who, wide=True)
    assert len(wide) == 0 and list(wide.columns) == hc.WIDE_COLUMNS
    assert {c: str(t) for c, t in wide.dtypes.items()} == {
        c: ("datetime64[ns]" if t == "time" else t) for c, t in hc.WIDE.dtypes.items()
    }
    long = ebpf_lab.helper_calls(duration=0.1, uid=who)
    assert len(long) == 0 and list(long.columns) == hc.LONG_COLUMNS
    assert list(long["helper"].cat.categories) == list(HELPERS_CALLED)
    assert str(long["value"].dtype) == "string" and str(long["event"].dtype) == "int64"


def test_max_events_ends_the_run_early(fresh_uids, no_leaks):
    (who,) = fresh_uids(1)
    df = ebpf_lab.helper_calls(
        duration=5, uid=who, max_events=2, wide=True, workload=lambda: execs({who: 6})
    )
    assert len(df) == 2
    assert df.attrs["stopped_by"] == "limit"


#: how the verifier says a program type may not call a helper, by kernel version
REFUSALS = ("cannot use helper", "not supported for program type", "unknown func")


def test_helper_support_has_the_expected_refusals(no_leaks):
    table = helper_support()
    assert list(table.index) == list(PROBED_HELPERS)
    assert list(table.columns) == list(DEFAULT_PROGRAM_TYPES)
    assert all(str(d) == "bool" for d in table.dtypes)
    # available to every program type
    for helper in (
        "bpf_ktime_get_ns",
        "bpf_get_smp_processor_id",
        "bpf_get_prandom_u32",
        "bpf_trace_printk",
    ):
        assert table.loc[helper].all(), helper
    # the seed's helpers work in every tracing program type
    for helper in HELPERS_CALLED:
        assert table.loc[helper, TRACING].all(), helper
    # tracing-only, probe-only, perf-only and network-only helpers
    assert table.loc["bpf_get_stack", TRACING].all() and not table.loc["bpf_get_stack", "xdp"]
    assert table.loc["bpf_probe_read", TRACING].all() and not table.loc["bpf_probe_read", "xdp"]
    assert table.loc["bpf_get_func_ip"].to_dict() == {
        "tracepoint": False,
        "raw_tracepoint": False,
        "kprobe": True,
        "perf_event": False,
        "xdp": False,
    }
    assert table.loc["bpf_perf_prog_read_value"][lambda s: s].index.tolist() == ["perf_event"]
    assert table.loc["bpf_redirect"][lambda s: s].index.tolist() == ["xdp"]
    assert table.loc["bpf_xdp_adjust_head"][lambda s: s].index.tolist() == ["xdp"]
    assert not table.loc["bpf_get_socket_uid"].any()
    if facts.lockdown() in ("integrity", "confidentiality"):  # read from securityfs here
        assert not table.loc["bpf_probe_write_user"].any()  # lockdown removes it everywhere
    # every refusal carries the verifier's own words, naming the helper
    reasons = table.attrs["reasons"]
    for helper in table.index:
        for ptype in table.columns:
            if table.loc[helper, ptype]:
                assert ptype not in reasons.get(helper, {})
            else:
                reason = reasons[helper][ptype]
                assert helper in reason, reason
                assert any(words in reason for words in REFUSALS), reason
    # the verifier's words for a helper this program type may not call differ by version
    # (measured: Debian's 6.1 says "unknown func", 6.18 "program of this type cannot use helper")
    assert reasons["bpf_redirect"]["kprobe"] in (
        "program of this type cannot use helper bpf_redirect#23",
        "unknown func bpf_redirect#23",
    )
    assert table.attrs["kernel"] == kernel.release()


def test_helper_support_detail_for_chosen_types(no_leaks):
    df = helper_support(
        ["bpf_get_socket_uid", "bpf_ktime_get_ns"],
        ["socket_filter", "sched_cls", "xdp"],
        detail=True,
    )
    assert list(df.columns) == ["helper", "program_type", "allowed", "reason"]
    assert str(df["allowed"].dtype) == "bool" and str(df["reason"].dtype) == "string"
    got = {(str(r.helper), str(r.program_type)): (r.allowed, r.reason) for r in df.itertuples()}
    assert got[("bpf_get_socket_uid", "socket_filter")] == (True, "")
    assert got[("bpf_get_socket_uid", "sched_cls")] == (True, "")
    allowed, reason = got[("bpf_get_socket_uid", "xdp")]
    assert not allowed and "bpf_get_socket_uid" in reason
    assert all(got[("bpf_ktime_get_ns", t)][0] for t in ("socket_filter", "sched_cls", "xdp"))


BAD_CALLS = {
    "negative duration": lambda: ebpf_lab.helper_calls(duration=-1),
    "uid as text": lambda: ebpf_lab.helper_calls(uid="x"),
    "zero max_events": lambda: ebpf_lab.helper_calls(max_events=0),
    "unknown attach": lambda: ebpf_lab.helper_calls(attach="fentry"),
    "wide not bool": lambda: ebpf_lab.helper_calls(wide=1),
    "workload not callable": lambda: ebpf_lab.helper_calls(workload="ls"),
    "unknown helper": lambda: helper_support(["bpf_nope"]),
    "no helpers": lambda: helper_support([]),
    "helper twice": lambda: helper_support(["bpf_ktime_get_ns", "bpf_ktime_get_ns"]),
    "helpers as text": lambda: helper_support("bpf_ktime_get_ns"),
    "unknown program type": lambda: helper_support(program_types=["lsm"]),
    "detail not bool": lambda: helper_support(detail="yes"),
}


@pytest.mark.parametrize("call", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_input_is_refused_before_anything_loads(call, monkeypatch, no_leaks):
    def must_not_compile(*args, **kwargs):
        raise AssertionError("compiled a program despite bad input")

    monkeypatch.setattr(ebpf_lab.core.run, "compile_program", must_not_compile)
    monkeypatch.setattr(hc, "compile_program", must_not_compile)
    with pytest.raises(ValueError):
        call()


def test_two_runs_with_other_users_compile_once(fresh_uids, no_leaks):
    """The run's tag and the uid filter go into maps, not the C: a second run for another user
    reuses the first compile, and each counts exactly its own user's execs."""
    from ebpf_lab.core import compile_cache

    a, b = fresh_uids(2)
    compile_cache.clear()
    first = ebpf_lab.helper_calls(duration=0.3, uid=a, wide=True, workload=lambda: execs({a: 2}))
    second = ebpf_lab.helper_calls(
        duration=0.3, uid=b, wide=True, workload=lambda: execs({a: 1, b: 3})
    )
    info = compile_cache.info()
    assert (info["misses"], info["hits"], info["entries"]) == (1, 1, 1)
    assert first["uid"].tolist() == [a, a]
    assert second["uid"].tolist() == [b, b, b]  # a's exec in the second run is filtered out
    assert second.attrs["printk_lines_missing"] == 0


def test_refusal_loads_and_unloads_without_attaching(no_leaks):
    """The core's load-without-attach step helper_support goes through: a refused function
    comes back as the ProgramError with the verifier's log, an accepted one is unloaded at
    once and loads again as another type; nothing stays loaded (no_leaks)."""
    from ebpf_lab.core.errors import ProgramError
    from ebpf_lab.core.loader import compile_program, program_source, release
    from ebpf_lab.core.verdict import refusal

    bpf = compile_program(program_source("helper_probe"), name="helper_probe")
    try:
        assert refusal(bpf, "probe_redirect", "xdp") is None
        assert b"probe_redirect" not in bpf.funcs
        error = refusal(bpf, "probe_redirect", "tracepoint")
        assert isinstance(error, ProgramError) and error.stage == "verifier"
        assert "bpf_redirect#23" in hc.verifier_reason(error)
        assert refusal(bpf, "probe_ktime_get_ns", "tracepoint") is None
        assert refusal(bpf, "probe_ktime_get_ns", "perf_event") is None
        assert not bpf.funcs
    finally:
        release(bpf)
