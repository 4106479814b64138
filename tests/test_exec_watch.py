"""Lesson 11 (exec policy) on the real kernel: watchlist alerts exact; LSM deny where supported."""

from __future__ import annotations

import importlib
import os
import subprocess

import pandas as pd
import pytest
from conftest import Started, after_start, needs_root, send_sigint

import ebpf_lab
from ebpf_lab import UnsupportedFeature
from ebpf_lab.lessons.l11_security.exec_watch import (
    PATH_LEN,
    WATCH_MAX,
    exec_deny,
    exec_watch,
    lsm_reason,
    lsm_status,
    temporary_programs,
)
from ebpf_lab.workloads import execs, thread_comm

pytestmark = needs_root


def test_watchlist_alerts_exact_with_uid_parent_and_filename(fresh_uids, no_leaks):
    a, b = fresh_uids(2)
    box = {}
    with temporary_programs(["payroll-export", "backup-tool", "harmless"]) as prog:
        watch = [prog["payroll-export"], prog["backup-tool"], "/nonexistent/never-run"]

        def work():
            box["comm"] = thread_comm()  # the parent's comm, as the kernel sees it
            box["runs"] = pd.concat(
                [
                    execs({a: 3}, program=prog["payroll-export"]),
                    execs({b: 2}, program=prog["backup-tool"]),
                    execs({a: 4, b: 1}, program=prog["harmless"]),
                ],
                ignore_index=True,
            )

        df = exec_watch(watch, duration=0.3, workload=work)
    assert list(df.columns) == [
        "time",
        "pid",
        "ppid",
        "uid",
        "user",
        "filename",
        "command",
        "parent_command",
        "watch_index",
    ]
    runs = box["runs"]
    assert len(runs) == 10 and (runs.returncode == 0).all()
    watched = runs[runs.program.isin(watch)]
    # exactly one alert per watched exec, none for the unwatched program
    assert sorted(df.pid) == sorted(watched.pid)
    assert not df.pid.isin(runs[~runs.program.isin(watch)].pid).any()
    merged = df.merge(runs, on="pid", suffixes=("", "_truth"))
    assert (merged.uid == merged.uid_truth).all()
    assert (merged.filename.astype(str) == merged.program).all()
    assert (merged.ppid == os.getpid()).all()  # the real parent: this process
    assert (merged.parent_command.astype(str) == box["comm"]).all()
    assert (merged.command.astype(str) == merged.program.map(os.path.basename)).all()
    assert (merged.watch_index == merged.program.map(watch.index)).all()
    assert merged.groupby("uid").size().to_dict() == {a: 3, b: 2}
    assert df.attrs["watched_execs"] == 5  # nothing else on the machine runs our copies
    assert df.attrs["execs_seen"] >= 10
    assert df.attrs["lost"] == 0
    assert df.attrs["watchlist"] == watch
    assert df.attrs["kind"] == "detection" and df.attrs["attach"] == "tracepoint"
    assert str(df["time"].dtype) == "datetime64[ns]"
    assert str(df["user"].dtype) == "category"


def test_parent_of_a_grandchild_is_the_shell(no_leaks):
    box = {}
    with temporary_programs(["alarm"]) as prog:

        def work():
            # the shell forks twice; `exit 0` keeps it from exec'ing the last command itself
            sh = subprocess.Popen(["/bin/sh", "-c", f"{prog['alarm']}; {prog['alarm']}; exit 0"])
            sh.wait()
            box["sh"] = sh.pid

        df = exec_watch([prog["alarm"]], duration=0.3, workload=work)
    assert len(df) == 2
    assert (df.ppid == box["sh"]).all()
    assert (df.parent_command.astype(str) == "sh").all()
    assert (df.uid == 0).all() and (df.user.astype(str) == "root").all()


def test_max_alerts_ends_the_run(fresh_uids, no_leaks):
    (a,) = fresh_uids(1)
    with temporary_programs(["alarm"]) as prog:
        df = exec_watch(
            [prog["alarm"]],
            duration=10,
            max_alerts=3,
            workload=lambda: execs({a: 50}, program=prog["alarm"]),
        )
    assert len(df) == 3 and df.attrs["stopped_by"] == "limit"


def test_interrupt_returns_partial_alerts(fresh_uids, no_leaks):
    (a,) = fresh_uids(1)
    box = {}
    with temporary_programs(["alarm"]) as prog:
        work = Started(lambda: box.update(done=execs({a: 100_000}, program=prog["alarm"])))
        timer = after_start(work, send_sigint)
        df = exec_watch([prog["alarm"]], duration=60, workload=work)
        timer.join()
    assert df.attrs["interrupted"] is True and df.attrs["stopped_by"] == "interrupt"
    done = box["done"]
    assert 0 < len(done) < 100_000
    assert df.pid.isin(done.pid).sum() == len(done)


# ---------------------------------------------------------------- enforcement (BPF LSM)


def test_lsm_deny_then_detach(no_leaks):
    reason = lsm_reason()
    if reason:
        pytest.skip(f"BPF LSM programs do not run on this kernel (doctor): {reason}")
    with temporary_programs(["forbidden"]) as prog:
        df = exec_deny(prog["forbidden"], attempts=3, duration=0.2)
    attached = df[df.phase == "attached"]
    detached = df[df.phase == "detached"]
    assert len(attached) == len(detached) == 3
    assert not attached.ran.any() and (attached.errno == 1).all()  # EPERM, every time
    assert detached.ran.all() and (detached.returncode == 0).all()  # works again once detached
    assert df.attrs["denied_in_kernel"] == {prog["forbidden"]: 3}
    assert df.attrs["kind"] == "enforcement"
    assert df.attrs["attach"] == "lsm bprm_check_security"  # the core's lsm probe kind
    assert list(df.columns) == ["phase", "attempt", "ran", "returncode", "error", "errno"]
    assert str(df["returncode"].dtype) == "Int64" and str(df["errno"].dtype) == "int64"


# What the doctor said on a kernel that refused LSM programs (6.18, lockdown=integrity).
RECORDED_LSM_REFUSAL = (
    "LSM_PROBE(file_open): load failed: EPERM (Operation not permitted) from bpf(BPF_PROG_LOAD), "
    "although running as root [bpf: Failed to load program: Operation not permitted]; context: "
    "lockdown=integrity, LSMs=lockdown,capability,landlock,bpf; BPF LSM programs can deny; to "
    "observe the same events without denying, use tracepoints (e.g. syscalls:sys_enter_openat)"
)


def test_lsm_unsupported_here_says_why_before_loading(no_leaks, monkeypatch):
    """Where the doctor says BPF LSM does not work, exec_deny refuses in the doctor's words and
    loads nothing. Forced on kernels where it works: the doctor's cached answer is replaced by
    the one a refusing kernel gave."""
    import ebpf_lab.core.run as run

    doctor_mod = importlib.import_module("ebpf_lab.kernel.doctor")
    if ebpf_lab.supports("lsm"):
        forced = ebpf_lab.doctor()
        forced.loc[forced["feature"] == "lsm", ["supported", "detail"]] = [
            False,
            RECORDED_LSM_REFUSAL,
        ]
        monkeypatch.setattr(doctor_mod, "_CACHE", forced)
    assert lsm_reason()

    def must_not_load(*a, **k):
        raise AssertionError("nothing may load when LSM is unsupported")

    monkeypatch.setattr(run, "compile_program", must_not_load)
    with temporary_programs(["forbidden"]) as prog:
        with pytest.raises(UnsupportedFeature) as info:
            exec_deny(prog["forbidden"])
    assert info.value.feature == "lsm"
    assert info.value.reason == lsm_reason()  # the doctor's own words
    assert "exec_watch" in str(info.value)  # the alternative: detection


def test_lsm_program_compiles_here():
    """The enforcement C compiles on this kernel (it is never loaded here: autoload is off)."""
    import bcc

    from ebpf_lab.core.loader import program_source
    from ebpf_lab.kernel.btf import member_offset

    class CompileOnly(bcc.BPF):
        def _trace_autoload(self):  # LSM_PROBE would load and attach right away
            pass

    cflags = [f"-DBPRM_FILENAME_OFF={member_offset('linux_binprm', 'filename')}", "-DDENY_MAX=4"]
    b = CompileOnly(text=program_source("exec_deny_lsm").encode(), cflags=cflags)
    try:
        insns = b.dump_func(b"lsm__bprm_check_security")
        assert len(insns) // 8 > 10
    finally:
        b.cleanup()


def test_lsm_status_reports_the_doctors_facts():
    status = lsm_status().set_index("fact")["value"]
    assert status["doctor: lsm supported"] == str(ebpf_lab.supports("lsm"))
    assert status["lockdown"] in ("none", "integrity", "confidentiality", "unknown")
    assert "active LSMs" in status.index and "CONFIG_BPF_LSM" in status.index


# ---------------------------------------------------------------- bad input

BAD_WATCH = [
    {"watch": "/usr/bin/id"},  # a string, not a list
    {"watch": []},
    {"watch": ["usr/bin/id"]},
    {"watch": ["/a" * PATH_LEN]},
    {"watch": ["/usr/bin/id", "/usr/bin/id"]},
    {"watch": [f"/p{i}" for i in range(WATCH_MAX + 1)]},
    {"watch": ["/usr/bin/\0id"]},
    {"watch": [42]},
    {"watch": ["/usr/bin/id"], "duration": -1},
    {"watch": ["/usr/bin/id"], "workload": "id"},
    {"watch": ["/usr/bin/id"], "max_alerts": 0},
]


@pytest.mark.parametrize("kwargs", BAD_WATCH, ids=[str(k)[:60] for k in BAD_WATCH])
def test_exec_watch_bad_input_is_value_error_before_loading(kwargs, no_leaks, monkeypatch):
    import ebpf_lab.core.run as run

    def must_not_load(*a, **k):
        raise AssertionError("bounded_run was reached with bad input")

    monkeypatch.setattr(run, "compile_program", must_not_load)
    with pytest.raises(ValueError) as info:
        exec_watch(**kwargs)
    assert str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path": "relative/true"},
        {"path": "/nonexistent/program"},
        {"path": "/bin/true", "attempts": 0},
        {"path": "/bin/true", "duration": 61},
        {"path": ["/bin/true"]},
    ],
)
def test_exec_deny_bad_input_is_value_error_before_loading(kwargs, no_leaks, monkeypatch):
    import ebpf_lab.core.run as run

    def must_not_load(*a, **k):
        raise AssertionError("bounded_run was reached with bad input")

    monkeypatch.setattr(run, "compile_program", must_not_load)
    with pytest.raises(ValueError):
        exec_deny(**kwargs)


def test_temporary_programs_are_removed():
    with temporary_programs(["one", "two"]) as prog:
        assert subprocess.run([prog["one"]]).returncode == 0
        root = os.path.dirname(prog["one"])
    assert not os.path.exists(root)
    for bad in ([], "one", ["a/b"], [".."]):
        with pytest.raises(ValueError):
            with temporary_programs(bad):
                pass


def test_exported():
    assert ebpf_lab.exec_watch is exec_watch
    assert ebpf_lab.exec_deny is exec_deny
