"""The doctor against the real kernel: exact answers for the lab's reference kernel, proof that each
supported program really fired, the cache, the CLI, and that nothing stays loaded afterwards.

The reference kernel (6.18, lockdown=integrity) has no kprobes and refuses fentry and LSM
programs with EPERM; everything else the doctor probes works there.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import IS_ROOT, REPO, needs_root
from kernel_state import held, settle

import ebpf_lab
from ebpf_lab import netns
from ebpf_lab.errors import BccMissing

# ``ebpf_lab.doctor`` is the function (re-exported); the module is reached through importlib.
doctor_mod = importlib.import_module("ebpf_lab.doctor")

FEATURES = [
    "root",
    "bcc",
    "btf",
    "kernel_headers",
    "tracefs",
    "kprobe",
    "tracepoint",
    "raw_tracepoint",
    "uprobe",
    "perf_event",
    "xdp",
    "fentry",
    "lsm",
    "hash_map",
    "array_map",
    "percpu_array",
    "lru_hash",
    "perf_buffer",
    "ring_buffer",
]
UNSUPPORTED_HERE = {"kprobe", "fentry", "lsm"}
PROGRAM_ROWS = [
    "tracepoint",
    "raw_tracepoint",
    "uprobe",
    "perf_event",
    "xdp",
    "perf_buffer",
    "ring_buffer",
]
MAP_ROWS = ["hash_map", "array_map", "percpu_array", "lru_hash"]
NEEDS_LOADING = [
    f for f in FEATURES if f not in ("root", "bcc", "btf", "kernel_headers", "tracefs")
]


@pytest.fixture(scope="module")
def table():
    if not IS_ROOT:
        pytest.skip("the doctor loads real BPF programs: run the tests as root")
    return ebpf_lab.doctor()


def row(frame, feature):
    return frame.loc[frame["feature"] == feature].iloc[0]


# --- shape -------------------------------------------------------------------------------------


@needs_root
def test_columns_rows_and_dtypes(table):
    assert list(table.columns) == ["feature", "supported", "detail"]
    assert list(table["feature"]) == FEATURES
    assert list(doctor_mod.FEATURES) == FEATURES
    assert table["supported"].dtype == bool
    assert all(isinstance(d, str) and d for d in table["detail"])
    assert table.attrs["kernel"] == os.uname().release
    assert table.attrs["pid"] == os.getpid()


# --- exact answers for this kernel -------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("feature", FEATURES)
def test_each_row_matches_this_kernel(table, feature):
    r = row(table, feature)
    if feature in UNSUPPORTED_HERE:
        assert not r.supported, r.detail
        assert r.detail.strip(), "an unsupported feature must say why"
    else:
        assert r.supported, f"{feature}: {r.detail}"


@needs_root
def test_kprobe_reason_names_the_kernel_config(table):
    detail = row(table, "kprobe").detail
    assert "CONFIG_KPROBES" in detail
    assert "tracepoint" in detail  # and what to use instead


@needs_root
@pytest.mark.parametrize("feature", ["fentry", "lsm"])
def test_fentry_and_lsm_say_errno_context_and_alternative(table, feature):
    detail = row(table, feature).detail
    assert "EPERM" in detail
    assert "lockdown=integrity" in detail
    assert "LSMs=" in detail and "bpf" in detail
    assert "tracepoint" in detail


@needs_root
def test_kernel_headers_detail_prefix(table):
    detail = row(table, "kernel_headers").detail
    assert re.match(r"^(matched|fallback from version \S+|missing)", detail), detail
    # the reference machine links Debian's 6.1 headers for its 6.18 kernel
    assert detail.startswith("fallback from version 6.1")


@needs_root
@pytest.mark.parametrize("feature", [f for f in PROGRAM_ROWS if f not in ("perf_event", "xdp")])
def test_program_rows_fired_exactly(table, feature):
    assert f"fired {doctor_mod.CALLS}/{doctor_mod.CALLS}" in row(table, feature).detail


@needs_root
def test_perf_event_row_sampled(table):
    m = re.search(r"fired (\d+) times", row(table, "perf_event").detail)
    assert m and int(m.group(1)) > 0


@needs_root
def test_xdp_row_saw_the_datagram_in_a_netns(table):
    detail = row(table, "xdp").detail
    assert "fired 1/1" in detail
    assert f"{doctor_mod.NETNS_PREFIX}{os.getpid()}" in detail


@needs_root
@pytest.mark.parametrize("feature", ["perf_buffer", "ring_buffer"])
def test_buffer_rows_delivered_events(table, feature):
    assert f"{doctor_mod.CALLS}/{doctor_mod.CALLS} events arrived" in row(table, feature).detail


@needs_root
@pytest.mark.parametrize("feature", MAP_ROWS)
def test_map_rows_created_and_round_tripped(table, feature):
    detail = row(table, feature).detail
    assert detail.startswith("created BPF_MAP_TYPE_")
    assert "-> 42" in detail


# --- cache and supports() ----------------------------------------------------------------------


@needs_root
def test_cache_returns_the_cached_answer_until_refresh(table):
    first = ebpf_lab.doctor()
    again = ebpf_lab.doctor()
    assert again.attrs["probed_at"] == first.attrs["probed_at"]  # not probed again
    again["scribble"] = 1  # a caller's changes do not reach the cache
    assert "scribble" not in ebpf_lab.doctor().columns
    fresh = ebpf_lab.doctor(refresh=True)
    assert fresh.attrs["probed_at"] > first.attrs["probed_at"]
    assert ebpf_lab.doctor().attrs["probed_at"] == fresh.attrs["probed_at"]
    assert list(fresh["supported"]) == list(first["supported"])


@needs_root
def test_supports_reads_the_cached_doctor(table):
    assert ebpf_lab.supports("tracepoint") is True
    assert ebpf_lab.supports("kprobe") is False
    with pytest.raises(ValueError, match="unknown feature"):
        ebpf_lab.supports("kprobes")


# --- nothing left behind -----------------------------------------------------------------------


def _bpftool_progs_of(pid: int) -> list[dict]:
    """Programs whose ``pids`` (bpftool built with skeletons) mention ``pid``."""
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    return [
        p for p in json.loads(out or "[]") if any(h.get("pid") == pid for h in p.get("pids", []))
    ]


@needs_root
def test_no_programs_maps_or_netns_left_after_a_refresh(table):
    before = held()  # the module fixture already ran the doctor once (one-time caches warm)
    frame = ebpf_lab.doctor(refresh=True)
    assert frame["supported"].sum() == len(FEATURES) - len(UNSUPPORTED_HERE)
    after = settle(before)
    # what this process holds, read from /proc/self/fdinfo (works whatever bpftool can show)
    assert not before.diff(after), f"left behind: {before.diff(after)}"
    # bpftool's own view, when it is built with pids support: nothing of this process
    deadline = time.monotonic() + 3
    mine = _bpftool_progs_of(os.getpid())
    while mine and time.monotonic() < deadline:
        time.sleep(0.2)
        mine = _bpftool_progs_of(os.getpid())
    assert not mine, f"programs of pid {os.getpid()} still loaded: {mine}"
    # no throw-away namespace of ours, and none orphaned by a dead doctor
    pattern = re.compile(re.escape(doctor_mod.NETNS_PREFIX) + r"(\d+)$")
    leftover = [
        n
        for n in netns.list_netns()
        if (m := pattern.match(n))
        and (int(m.group(1)) == os.getpid() or not os.path.exists(f"/proc/{m.group(1)}"))
    ]
    assert not leftover


# --- the command line --------------------------------------------------------------------------


@needs_root
def test_cli_doctor_prints_every_feature():
    proc = subprocess.run(
        [sys.executable, "-m", "ebpf_lab", "doctor"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["feature", "supported", "detail"]
    assert [line.split()[0] for line in lines[1:]] == FEATURES
    for line in lines[1:]:
        feature, supported = line.split()[:2]
        assert supported == ("False" if feature in UNSUPPORTED_HERE else "True"), line


def test_cli_unknown_command_prints_usage_and_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "ebpf_lab", "frobnicate"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "usage: python -m ebpf_lab" in proc.stderr


# --- without root, without bcc: no crash, and a way forward -------------------------------------


def test_not_root_marks_the_rest_with_how_to_start(monkeypatch):
    monkeypatch.setattr(doctor_mod.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(doctor_mod, "_CACHE", None)
    frame = doctor_mod.doctor()
    assert list(frame["feature"]) == FEATURES
    assert not row(frame, "root").supported
    assert "sudo make lab" in row(frame, "root").detail
    for feature in ["tracefs", *NEEDS_LOADING]:
        r = row(frame, feature)
        assert not r.supported
        assert r.detail.startswith("needs root") and "sudo make lab" in r.detail


def test_missing_bcc_marks_the_rest_with_how_to_install(monkeypatch):
    def no_bcc():
        raise BccMissing("No module named 'bcc' (simulated)")

    monkeypatch.setattr(doctor_mod, "require_bcc", no_bcc)
    monkeypatch.setattr(doctor_mod, "_CACHE", None)
    frame = doctor_mod.doctor()
    assert not row(frame, "bcc").supported
    assert "python3-bpfcc" in row(frame, "bcc").detail
    for feature in NEEDS_LOADING:
        r = row(frame, feature)
        assert not r.supported
        assert "needs bcc" in r.detail and "sudo apt-get install python3-bpfcc" in r.detail


# --- one broken probe cannot hide the others ---------------------------------------------------


@needs_root
def test_a_group_that_does_not_compile_is_probed_one_by_one():
    shared, _ = doctor_mod._checks()
    hash_check = next(c for c in shared if c.feature == "hash_map")
    broken = doctor_mod._Check(
        "broken",
        "int broken(void *ctx) { return no_such_thing; }\n",
        lambda bcc, bpf: "unreachable",
        what="a deliberately broken probe",
    )
    cflags = [f"-DDOCTOR_TGID={os.getpid()}", "-DDOCTOR_TID=0"]
    before = held()
    results = doctor_mod._run_group(ebpf_lab.guards.require_bcc(), [hash_check, broken], cflags)
    assert results["hash_map"][0] is True, results["hash_map"]
    assert results["broken"][0] is False
    assert "compile failed" in results["broken"][1] and "no_such_thing" in results["broken"][1]
    after = settle(before)
    assert not before.diff(after), f"left behind: {before.diff(after)}"


# --- the network namespace helpers -------------------------------------------------------------


@needs_root
def test_run_in_netns_switches_only_the_worker_thread():
    import socket

    name = f"ebpf-lab-test-{os.getpid()}"
    own = os.stat("/proc/thread-self/ns/net").st_ino
    with netns.temporary_netns(name) as ns:
        assert netns.exists(ns)
        inside = netns.run_in_netns(
            ns,
            lambda: (
                os.stat("/proc/thread-self/ns/net").st_ino,
                [n for _, n in socket.if_nameindex()],
            ),
        )
        assert inside[0] != own
        assert inside[1] == ["lo"]
        assert os.stat("/proc/thread-self/ns/net").st_ino == own
        with pytest.raises(ZeroDivisionError):
            netns.run_in_netns(ns, lambda: 1 / 0)
    assert not netns.exists(name)


@needs_root
def test_temporary_netns_is_deleted_on_error():
    name = f"ebpf-lab-test-{os.getpid()}"
    with pytest.raises(RuntimeError, match="boom"), netns.temporary_netns(name):
        raise RuntimeError("boom")
    assert not netns.exists(name)
