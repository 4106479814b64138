"""The doctor against the real kernel, every row cross-checked against facts the test reads itself.

Nothing here names one machine's answers. Each row's expectation comes from the kernel's own files,
read by ``tests/kernel_facts.py`` without the lab's helpers: ``/proc/kallsyms``, the build config
(``/proc/config.gz`` or ``/boot/config-$(uname -r)``) where readable, the kprobe/uprobe PMUs,
``/sys/kernel/security/lsm`` and ``lockdown``, ``/sys/kernel/btf/vmlinux``, the mounts. A doctor
that is wrong fails on any kernel: one that reports kprobes where the kernel has none, or misses a
tracepoint that exists. Where the facts cannot decide (fentry or BPF LSM refused with EPERM by a
policy the files do not show), the test says what it can: a missing prerequisite means False, a
True means the program really fired, a False names the errno and the context it was refused in.

The failure paths (why kprobes, fentry, LSM are missing) are forced, so they run on kernels that
have those features too: the files the doctor reads are pointed at an empty directory, or the load
raises the error a refusing kernel gives (recorded from a real one).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import kernel_facts as facts
import pytest
from conftest import IS_ROOT, REPO, needs_root
from forced_kernel import hide_kprobes
from kernel_state import held, settle

import ebpf_lab
from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core import netns
from ebpf_lab.core.errors import BccMissing, ProgramError
from ebpf_lab.kernel import features, probes

# ``ebpf_lab.doctor`` is the function (re-exported); the module is reached through importlib.
doctor_mod = importlib.import_module("ebpf_lab.kernel.doctor")

#: the rows, from the one feature table (each has a cross-check below: see
#: test_every_feature_has_a_cross_check)
FEATURES = list(features.feature_names())
MAP_ROWS = ["hash_map", "array_map", "percpu_array", "lru_hash"]
#: the rows decided by loading a program (the others are read from files)
NEEDS_LOADING = [f.name for f in features.TABLE if isinstance(f.probe, probes.Check)]
CALLS = probes.CALLS
FIRED = f"fired {CALLS}/{CALLS}"

# What bcc.BPF() raised on a kernel that refused a KFUNC_PROBE and an LSM_PROBE with EPERM
# (6.18, lockdown=integrity): BCC says "Need super-user privileges" for every EPERM.
RECORDED_EPERM = ProgramError(
    "verifier",
    "doctor: Need super-user privileges to run",
    "bpf: Failed to load program: Operation not permitted",
)


@pytest.fixture(scope="module")
def table():
    if not IS_ROOT:
        pytest.skip("the doctor loads real BPF programs: run the tests as root")
    return ebpf_lab.doctor()


def row(frame, feature):
    return frame.loc[frame["feature"] == feature].iloc[0]


def confidential() -> bool:
    """lockdown=confidentiality also refuses kprobes and tracefs (kernel/security lockdown)."""
    return facts.lockdown() == "confidentiality"


def context_of_this_kernel() -> list[str]:
    """The context the doctor must add to a refused fentry/LSM load, read independently."""
    lsms = facts.active_lsms()
    return [
        f"lockdown={facts.lockdown() or 'unknown'}",
        f"LSMs={','.join(lsms) if lsms else 'unknown'}",
    ]


def assert_refusal_explained(detail: str) -> None:
    """A load the facts cannot decide was refused: the detail names the errno and the context."""
    assert re.search(r"\bE[A-Z]+ \(", detail), f"no errno named: {detail}"
    for part in context_of_this_kernel():
        assert part in detail, f"{part!r} missing from: {detail}"
    assert "tracepoint" in detail, f"no alternative named: {detail}"


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


@needs_root
def test_every_row_is_decided_and_its_outcome_agrees(table):
    """As root with a working BCC every probe decides: nothing is inconclusive (a probe that
    cannot tell on a kernel is a doctor bug), and each outcome matches its row."""
    outcomes = table.attrs["outcomes"]
    assert list(outcomes) == FEATURES
    assert table.attrs["inconclusive"] == [], [row(table, f).detail for f in outcomes]
    for r in table.itertuples():
        assert outcomes[r.feature] == ("supported" if r.supported else "unsupported"), r
        assert not r.detail.startswith("inconclusive")
        # the doctor's rows are the features' own (cached) outcomes
        assert features.probe(r.feature)[r.feature].state == outcomes[r.feature], r


# --- each row against the kernel's own files ---------------------------------------------------


def _check_root(r):
    assert r.supported == (os.geteuid() == 0), r.detail


def _bcc_llvm_from_dpkg() -> str | None:
    """The LLVM major version Debian/Ubuntu's libbpfcc package depends on (libllvmNN)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Depends}", "libbpfcc"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except OSError:
        return None
    m = re.search(r"\blibllvm(\d+)\b", out.stdout)
    return m.group(1) if out.returncode == 0 and m else None


def _bcc_llvm_from_ldd() -> str | None:
    """The LLVM major version the loaded libbcc.so links, from ``ldd`` on it."""
    maps = Path("/proc/self/maps").read_text().splitlines()
    libbcc = next((line.split()[-1] for line in maps if "/libbcc.so" in line), None)
    if libbcc is None:
        return None
    out = subprocess.run(["ldd", libbcc], capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"libLLVM(?:-|\.so\.)(\d+)", out)
    return m.group(1) if m else None


def _check_bcc(r):
    import bcc  # the doctor imported it already: this only reads it

    assert r.supported, r.detail
    assert r.detail.startswith(f"bcc {bcc.__version__} with LLVM "), r.detail
    assert bcc.__file__ in r.detail
    answers = {
        k: v for k, v in {"dpkg": _bcc_llvm_from_dpkg(), "ldd": _bcc_llvm_from_ldd()}.items() if v
    }
    assert len(set(answers.values())) <= 1, f"the package and the library disagree: {answers}"
    if answers:
        llvm = next(iter(answers.values()))
        assert f"with LLVM {llvm} (" in r.detail, (answers, r.detail)


def _check_btf(r):
    present = facts.btf_present()
    if facts.config_enabled("DEBUG_INFO_BTF") is not None:
        assert facts.config_enabled("DEBUG_INFO_BTF") == present
    assert r.supported == present, r.detail
    if present:
        assert "parsed by libbpf" in r.detail


def _check_kernel_headers(r):
    build = Path(f"/lib/modules/{facts.RELEASE}/build")
    if not build.exists():
        assert not r.supported and r.detail.startswith("missing"), r.detail
        return
    assert r.supported, r.detail
    made_for = facts.headers_release()
    if made_for == facts.RELEASE:
        assert r.detail.startswith("matched"), r.detail
    else:
        assert r.detail.startswith(f"fallback from version {made_for} "), r.detail


def _check_tracefs(r):
    mount = facts.tracefs_mount()
    assert r.supported == (mount is not None), r.detail
    if mount is not None:
        assert f"mounted at {mount}" in r.detail


def _check_kprobe(r):
    built_in = facts.kprobes_built_in()
    if built_in is False:
        assert not r.supported, f"the kernel has no kprobes, the doctor says: {r.detail}"
        assert "CONFIG_KPROBES" in r.detail and "tracepoint" in r.detail, r.detail
    elif not facts.kprobe_interface():
        assert not r.supported, f"no kprobe PMU and no kprobe_events: {r.detail}"
        if built_in and facts.tracefs_mount() is not None:
            assert "CONFIG_KPROBE_EVENTS" in r.detail, r.detail
    elif confidential():
        assert not r.supported, r.detail
        assert "lockdown=confidentiality" in r.detail, r.detail
    else:
        assert r.supported, f"the kernel has kprobes, the doctor says: {r.detail}"
        assert FIRED in r.detail, r.detail


def _program_row(r, expected: bool, why: str) -> None:
    """A program row where the facts decide: expected True must have fired, unless lockdown
    confidentiality (which also closes tracefs) makes it undecidable."""
    if confidential():
        if r.supported:
            assert "fired" in r.detail, r.detail
        return
    assert r.supported == expected, f"{why}; the doctor says: {r.detail}"


def _check_tracepoint(r):
    mount = facts.tracefs_mount()
    exists = bool(mount and (mount / "events/syscalls/sys_enter_getppid").is_dir())
    _program_row(r, exists, f"syscalls:sys_enter_getppid exists: {exists}")
    if r.supported:
        assert FIRED in r.detail


def _check_raw_tracepoint(r):
    expected = facts.release_at_least(4, 17) and facts.config_enabled("BPF_EVENTS") is not False
    _program_row(r, expected, "raw tracepoints: Linux 4.17+ with CONFIG_BPF_EVENTS")
    if r.supported:
        assert FIRED in r.detail


def _check_uprobe(r):
    expected = facts.pmu("uprobe") or facts.config_enabled("UPROBE_EVENTS") is True
    _program_row(r, expected, "the uprobe PMU / CONFIG_UPROBE_EVENTS")
    if r.supported:
        assert FIRED in r.detail


def _check_perf_event(r):
    _program_row(r, facts.pmu("software"), "the software PMU (cpu-clock)")
    if r.supported:
        m = re.search(r"fired (\d+) times", r.detail)
        assert m and int(m.group(1)) > 0, r.detail


def _check_xdp(r):
    expected = facts.release_at_least(4, 12) and Path("/proc/self/ns/net").exists()
    _program_row(r, expected, "generic XDP (4.12+) in a network namespace")
    if r.supported:
        assert "fired 1/1" in r.detail
        # through the core's xdp kind, on the doctor's own cable
        assert f"veth-b in the throw-away network namespace {probes.DOCTOR_CABLE.names()[1]}" in (
            r.detail
        )


def _fentry_missing() -> list[str]:
    """Prerequisites of fentry that the kernel's files show missing."""
    missing = []
    if not facts.btf_present():
        missing.append("BTF (/sys/kernel/btf/vmlinux)")
    if facts.config_enabled("FUNCTION_TRACER") is False:
        missing.append("CONFIG_FUNCTION_TRACER")
    if facts.config_enabled("BPF_JIT") is False:
        missing.append("CONFIG_BPF_JIT")
    if facts.MACHINE == "x86_64":
        # x86 attaches trampolines to ftrace-managed functions through ftrace direct calls
        direct = facts.config_enabled("DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
        if direct is None:
            direct = facts.has_symbol("register_ftrace_direct")
        if direct is False:
            missing.append("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
    return missing


def _check_fentry(r):
    missing = _fentry_missing()
    if missing:
        assert not r.supported, f"the kernel lacks {missing}, the doctor says: {r.detail}"
    elif r.supported:
        assert FIRED in r.detail, r.detail
    else:  # every prerequisite is there and the kernel still refused: say errno and context
        assert_refusal_explained(r.detail)


def _lsm_missing() -> list[str]:
    missing = []
    if not facts.btf_present():
        missing.append("BTF (/sys/kernel/btf/vmlinux)")
    built = facts.config_enabled("BPF_LSM")
    if built is None:
        built = facts.has_symbol("bpf_lsm_file_open")
    if built is False:
        missing.append("CONFIG_BPF_LSM")
    lsms = facts.active_lsms()
    if lsms is not None and "bpf" not in lsms:
        missing.append(f"'bpf' among the active LSMs ({','.join(lsms)})")
    return missing


def _check_lsm(r):
    missing = _lsm_missing()
    if missing:
        assert not r.supported, f"the kernel lacks {missing}, the doctor says: {r.detail}"
        lsms = facts.active_lsms()
        if facts.btf_present() and lsms is not None and "bpf" not in lsms:
            assert "lsm=" in r.detail and "bpf" in r.detail, r.detail
    elif r.supported:
        assert FIRED in r.detail, r.detail
    else:
        assert_refusal_explained(r.detail)


def _check_map(r):
    _program_row(r, True, "maps of this type exist since Linux 4.10")
    if r.supported:
        assert r.detail.startswith("created BPF_MAP_TYPE_"), r.detail
        assert "-> 42" in r.detail


def _check_perf_buffer(r):
    _program_row(r, True, "BPF_PERF_OUTPUT exists since Linux 4.4")
    if r.supported:
        assert f"{CALLS}/{CALLS} events arrived" in r.detail and FIRED in r.detail


def _check_ring_buffer(r):
    _program_row(r, facts.release_at_least(5, 8), "ring buffers: Linux 5.8+")
    if r.supported:
        assert f"{CALLS}/{CALLS} events arrived" in r.detail and FIRED in r.detail


CROSS_CHECKS = {
    "root": _check_root,
    "bcc": _check_bcc,
    "btf": _check_btf,
    "kernel_headers": _check_kernel_headers,
    "tracefs": _check_tracefs,
    "kprobe": _check_kprobe,
    "tracepoint": _check_tracepoint,
    "raw_tracepoint": _check_raw_tracepoint,
    "uprobe": _check_uprobe,
    "perf_event": _check_perf_event,
    "xdp": _check_xdp,
    "fentry": _check_fentry,
    "lsm": _check_lsm,
    **dict.fromkeys(MAP_ROWS, _check_map),
    "perf_buffer": _check_perf_buffer,
    "ring_buffer": _check_ring_buffer,
}


def test_every_feature_has_a_cross_check():
    assert sorted(CROSS_CHECKS) == sorted(FEATURES)


@needs_root
@pytest.mark.parametrize("feature", FEATURES)
def test_each_row_matches_the_kernels_own_facts(table, feature):
    r = row(table, feature)
    assert r.detail.strip()
    CROSS_CHECKS[feature](r)


# --- why not: forced, so these run on kernels that have the features too ------------------------


def _cflags() -> list[str]:
    return [f"-DDOCTOR_TGID={os.getpid()}", f"-DDOCTOR_TID={threading.get_native_id()}"]


def _check_named(feature):
    return features.feature(feature).probe


@pytest.fixture
def fresh(monkeypatch):
    """No cached answer, neither the doctor's table nor any feature's outcome; the process's
    cached answers are put back afterwards."""
    monkeypatch.setattr(doctor_mod, "_CACHE", None)
    monkeypatch.setattr(features, "_CACHE", {})
    monkeypatch.setattr(features, "_STATE", dict(features._STATE))  # what the bcc row found


@pytest.fixture
def no_kprobe_files(tmp_path, monkeypatch):
    """The doctor's view of a kernel without kprobes: no PMU, a tracefs without kprobe_events."""
    hide_kprobes(monkeypatch, tmp_path)
    return tmp_path


@needs_root
def test_kprobe_reason_names_the_kernel_config(no_kprobe_files, no_leaks):
    results = probes.run_group(
        ebpf_lab.core.guards.require_bcc(), [_check_named("kprobe")], _cflags()
    )
    state, detail = results["kprobe"]
    assert state == "unsupported"
    assert "CONFIG_KPROBES" in detail
    assert "tracepoint" in detail  # and what to use instead


@needs_root
def test_kprobes_without_kprobe_events_name_that_option(no_kprobe_files, monkeypatch, no_leaks):
    (no_kprobe_files / "debugfs-kprobes").mkdir()
    monkeypatch.setattr(kernel, "DEBUGFS_KPROBES", no_kprobe_files / "debugfs-kprobes")
    results = probes.run_group(
        ebpf_lab.core.guards.require_bcc(), [_check_named("kprobe")], _cflags()
    )
    state, detail = results["kprobe"]
    assert state == "unsupported"
    assert "CONFIG_KPROBE_EVENTS" in detail and "tracepoint" in detail


@needs_root
@pytest.mark.parametrize("feature", ["fentry", "lsm"])
def test_fentry_and_lsm_say_errno_context_and_alternative(feature, monkeypatch, no_leaks):
    def refuse(*args, **kwargs):
        raise RECORDED_EPERM

    monkeypatch.setattr(probes, "compile_program", refuse)
    check = dataclasses.replace(_check_named(feature), precheck=None)
    state, detail = probes.run_group(ebpf_lab.core.guards.require_bcc(), [check], _cflags())[
        feature
    ]
    assert state == "unsupported"  # the kernel said no: EPERM from bpf(BPF_PROG_LOAD)
    assert "EPERM" in detail and "although running as root" in detail
    assert_refusal_explained(detail)


@pytest.mark.parametrize("feature", ["fentry", "lsm"])
def test_fentry_and_lsm_without_btf_say_so_before_loading(feature, tmp_path, monkeypatch):
    def must_not_compile(*args, **kwargs):
        raise AssertionError("nothing may be compiled or loaded without BTF")

    monkeypatch.setattr(probes, "compile_program", must_not_compile)
    monkeypatch.setattr(kernel, "BTF_VMLINUX", tmp_path / "no-btf")
    state, detail = probes.run_group(None, [_check_named(feature)], _cflags())[feature]
    assert state == "unsupported"
    assert "CONFIG_DEBUG_INFO_BTF" in detail and "tracepoint" in detail


@pytest.mark.parametrize("feature", ["fentry", "lsm"])
def test_without_btf_what_depends_on_it_is_unsupported(feature, tmp_path, monkeypatch, fresh):
    """The table says fentry and LSM depend on btf: without it they are not probed at all."""

    def must_not_compile(*args, **kwargs):
        raise AssertionError("nothing may be compiled or loaded without BTF")

    monkeypatch.setattr(probes, "compile_program", must_not_compile)
    monkeypatch.setattr(kernel, "BTF_VMLINUX", tmp_path / "no-btf")
    found = features.probe(feature)
    assert list(found) == ["root", "bcc", "btf", feature]
    assert found["btf"].state == "unsupported" and "CONFIG_DEBUG_INFO_BTF" in found["btf"].reason
    assert found[feature].state == "unsupported"
    assert found[feature].reason.endswith(f"needs the kernel's BTF: {found['btf'].reason}")
    assert features._CACHE[feature] == found[feature]  # a conclusive answer is kept


def test_lsm_without_the_bpf_lsm_names_the_boot_parameter(monkeypatch):
    def must_not_compile(*args, **kwargs):
        raise AssertionError("an LSM program would never be called: nothing may load")

    monkeypatch.setattr(probes, "compile_program", must_not_compile)
    monkeypatch.setattr(kernel, "BTF_VMLINUX", Path(__file__))  # any file: BTF "present"
    monkeypatch.setattr(kernel, "active_lsms", lambda: ["lockdown", "capability", "apparmor"])
    state, detail = probes.run_group(None, [_check_named("lsm")], _cflags())["lsm"]
    assert state == "unsupported"
    assert "lsm=lockdown,capability,apparmor,bpf" in detail


@needs_root
def test_kernel_headers_detail_prefix(table):
    detail = row(table, "kernel_headers").detail
    assert re.match(r"^(matched|fallback from version \S+|missing)", detail), detail


# --- BCC, its LLVM and the platform (the real path; the rules are in test_platforms.py) ---------


@needs_root
def test_table_shows_bcc_and_llvm_versions(table):
    import bcc

    assert table.attrs["bcc_version"] == bcc.__version__
    llvm = _bcc_llvm_from_dpkg() or _bcc_llvm_from_ldd()
    if llvm is not None:
        assert table.attrs["llvm_version"] == llvm
    os_release = Path("/etc/os-release").read_text()
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]*)"?$', os_release, re.M)
    if pretty:
        assert table.attrs["system"] == pretty.group(1)
        assert pretty.group(1) in row(table, "bcc").detail


UBUNTU_2204 = 'PRETTY_NAME="Ubuntu 22.04.2 LTS"\nID=ubuntu\nVERSION_ID="22.04"\n'


def _recorded_platform(os_release: str, bcc: str, llvm: str):
    """A PlatformReport as check() would make it on another distribution (recorded versions)."""
    from ebpf_lab.kernel import platforms

    return platforms.PlatformReport(
        system=platforms.system_name(os_release),
        bcc_version=bcc,
        llvm_version=llvm,
        llvm_source=f"libbcc.so.0 links libLLVM-{llvm}.so.1 (recorded)",
        problems=platforms.platform_problems(os_release, bcc, llvm),
    )


def test_a_platform_that_cannot_compile_blocks_the_program_rows_with_the_fix(monkeypatch, fresh):
    def must_not_compile(*args, **kwargs):
        raise AssertionError("BCC 0.18 on Ubuntu 22.04 fails in clang: nothing may be compiled")

    monkeypatch.setattr(probes, "compile_program", must_not_compile)
    monkeypatch.setattr(
        features.platforms,
        "check",
        lambda bcc=None: _recorded_platform(UBUNTU_2204, "0.18.0+ds-2", "14"),
    )
    frame = doctor_mod.doctor()
    bcc_row = row(frame, "bcc")
    assert not bcc_row.supported
    assert "bcc 0.18.0+ds-2 with LLVM 14" in bcc_row.detail
    assert "ERROR" in bcc_row.detail and "Ubuntu 24.04" in bcc_row.detail
    assert "iovisor/bcc#3993" in bcc_row.detail
    assert frame.attrs["bcc_version"] == "0.18.0+ds-2" and frame.attrs["llvm_version"] == "14"
    for feature in NEEDS_LOADING:
        r = row(frame, feature)
        assert not r.supported
        assert frame.attrs["outcomes"][feature] == "inconclusive"  # the kernel was not asked
        if IS_ROOT:
            assert r.detail.startswith("inconclusive: needs a BCC that compiles programs here")
            assert "BCC 0.25 or newer" in r.detail


def test_a_known_risky_bcc_llvm_pair_is_a_warning_in_the_bcc_row():
    import types

    fake_bcc = types.SimpleNamespace(__file__="/usr/lib/python3/dist-packages/bcc/__init__.py")
    platform = _recorded_platform(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
        "0.26.0",
        "16",
    )
    assert not platform.errors  # it may work: say what is known to fail, do not block
    detail = features.bcc_detail(fake_bcc, platform)
    assert detail.startswith("bcc 0.26.0 with LLVM 16 (")
    assert "WARNING" in detail and "BCC 0.27 or newer" in detail


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
    cached = ebpf_lab.doctor()
    for feature in FEATURES:
        assert ebpf_lab.supports(feature) is bool(row(cached, feature).supported), feature
    assert ebpf_lab.doctor().attrs["probed_at"] == cached.attrs["probed_at"]  # no new probe
    with pytest.raises(ValueError, match="unknown feature"):
        ebpf_lab.supports("kprobes")


@needs_root
def test_supports_probes_that_feature_only(table, fresh, monkeypatch):
    compiled = []
    real_compile = probes.compile_program

    def counting_compile(text, *args, **kwargs):
        compiled.append(text)
        return real_compile(text, *args, **kwargs)

    monkeypatch.setattr(probes, "compile_program", counting_compile)
    assert ebpf_lab.supports("uprobe") is bool(row(table, "uprobe").supported)
    # uprobe and what it depends on, nothing else: one program, with the uprobe's C only
    assert sorted(features._CACHE) == ["bcc", "root", "uprobe"]
    assert len(compiled) == 1 and "doctor_uprobe" in compiled[0]
    assert "doctor_kprobe" not in compiled[0] and "doctor_hash" not in compiled[0]
    # asked again: answered from the cache, nothing compiled
    assert ebpf_lab.supports("uprobe") is bool(row(table, "uprobe").supported)
    assert len(compiled) == 1
    with pytest.raises(ValueError, match="unknown feature"):
        features.probe("uprobes")
    assert len(compiled) == 1


@needs_root
def test_an_inconclusive_probe_is_marked_and_probed_again(table, fresh, monkeypatch):
    """A program that loads and attaches but fires a wrong number of times decides nothing: the
    row says so, and the next question probes again. Forced by a uprobe check that makes no
    getppid() calls (0 of the expected 3)."""

    def silent(bcc, bpf):
        probe = ebpf_lab.core.attach.Probe("uprobe", "c:getppid", "doctor_uprobe", pid=os.getpid())
        probes._attach(bcc, bpf, probe)
        return probes._expect(bpf, "uprobe", "a uprobe on libc's getppid()", "getppid() calls")

    uprobe = features.feature("uprobe")
    forced = dataclasses.replace(uprobe, probe=dataclasses.replace(uprobe.probe, run=silent))
    monkeypatch.setitem(features._BY_NAME, "uprobe", forced)
    if not row(table, "uprobe").supported:
        pytest.skip(f"uprobes do not attach on this kernel: {row(table, 'uprobe').detail}")
    outcome = features.probe("uprobe")["uprobe"]
    assert outcome.state == "inconclusive" and not outcome.supported
    assert "fired 0/3 times for 3 getppid() calls" in outcome.reason
    assert "uprobe" not in features._CACHE  # not cached: asked again, probed again
    assert ebpf_lab.supports("uprobe") is False
    frame = ebpf_lab.doctor()
    assert frame.attrs["inconclusive"] == ["uprobe"]
    assert frame.attrs["outcomes"]["uprobe"] == "inconclusive"
    assert row(frame, "uprobe").detail.startswith("inconclusive: uprobe on libc getppid(): ")
    assert not row(frame, "uprobe").supported
    others = [f for f in FEATURES if f != "uprobe"]
    assert list(frame.set_index("feature").loc[others, "supported"]) == list(
        table.set_index("feature").loc[others, "supported"]
    )


# --- the one feature table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "state, verdict",
    [
        ("supported", "**`kprobe`: supported on this kernel"),
        ("unsupported", "**`kprobe`: not available on this kernel"),
        ("inconclusive", "**`kprobe`: could not be decided on this kernel"),
    ],
)
def test_prose_states_the_features_outcome(state, verdict, monkeypatch):
    from ebpf_lab.kernel import prose

    outcome = features.Outcome("kprobe", state, "the reason `here`")
    monkeypatch.setattr(features, "probe", lambda name: {name: outcome})
    text = prose.feature("kprobe", yes="YES", no="NO")
    assert text.startswith(f"{verdict} ({os.uname().release})")
    assert "The doctor: the reason \\`here\\`." in text
    assert text.endswith("YES" if state == "supported" else "NO")


def test_every_lesson_need_names_a_feature():
    from ebpf_lab.classroom.registry import CATALOGUE

    names = set(features.feature_names())
    unknown = [
        (lesson.number, name)
        for lesson in CATALOGUE
        for need in (*lesson.needs, *lesson.adapts)
        for name in need.split("|")
        if name not in names
    ]
    assert unknown == []
    assert [lesson.number for lesson in CATALOGUE] == [f"{n:02d}" for n in range(16)]  # all checked


def test_the_table_gives_the_doctor_its_rows_meanings_and_dependencies():
    assert doctor_mod.FEATURES == features.feature_names()
    assert list(doctor_mod.MEANINGS) == FEATURES
    assert all(meaning.endswith(".") for meaning in doctor_mod.MEANINGS.values())
    for f in features.TABLE:
        assert all(FEATURES.index(d) < FEATURES.index(f.name) for d in f.depends), f.name
        if isinstance(f.probe, probes.Check):
            assert f.probe.feature == f.name
            assert {"root", "bcc"} <= set(f.depends), f.name
    assert features.feature("fentry").depends == ("root", "bcc", "btf")
    with pytest.raises(ValueError, match="unknown feature"):
        features.feature("kprobes")


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
    assert list(frame["supported"]) == list(table["supported"])  # the same answers again
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
    pattern = re.compile(re.escape(probes.NETNS_PREFIX[:-1]) + r"[ab]?-(\d+)$")
    leftover = [
        n
        for n in netns.list_netns()
        if (m := pattern.match(n))
        and (int(m.group(1)) == os.getpid() or not os.path.exists(f"/proc/{m.group(1)}"))
    ]
    assert not leftover


# --- the command line --------------------------------------------------------------------------


@needs_root
def test_cli_doctor_prints_every_feature(table):
    proc = subprocess.run(
        [sys.executable, "-m", "ebpf_lab", "doctor"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["feature", "supported", "detail"]
    assert [line.split()[0] for line in lines[1:]] == FEATURES
    for line in lines[1:]:
        feature, supported = line.split()[:2]
        assert supported == str(bool(row(table, feature).supported)), line


def test_cli_unknown_command_prints_usage_and_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "ebpf_lab", "frobnicate"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert "usage: python -m ebpf_lab" in proc.stderr


# --- without root, without bcc: no crash, and a way forward -------------------------------------


def test_not_root_marks_the_rest_with_how_to_start(monkeypatch, fresh):
    monkeypatch.setattr(doctor_mod.os, "geteuid", lambda: 1000)
    frame = doctor_mod.doctor()
    assert list(frame["feature"]) == FEATURES
    assert not row(frame, "root").supported
    assert "sudo make lab" in row(frame, "root").detail
    for feature in ["tracefs", *NEEDS_LOADING]:
        r = row(frame, feature)
        assert not r.supported
        assert r.detail.startswith("inconclusive: needs root") and "sudo make lab" in r.detail
    assert frame.attrs["inconclusive"] == ["tracefs", *NEEDS_LOADING]


def test_missing_bcc_marks_the_rest_with_how_to_install(monkeypatch, fresh):
    def no_bcc():
        raise BccMissing("No module named 'bcc' (simulated)")

    monkeypatch.setattr(features, "require_bcc", no_bcc)
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
    hash_check = _check_named("hash_map")
    broken = probes.Check(
        "broken",
        "int broken(void *ctx) { return no_such_thing; }\n",
        lambda bcc, bpf: "unreachable",
        what="a deliberately broken probe",
    )
    cflags = [f"-DDOCTOR_TGID={os.getpid()}", "-DDOCTOR_TID=0"]
    before = held()
    results = probes.run_group(ebpf_lab.core.guards.require_bcc(), [hash_check, broken], cflags)
    assert results["hash_map"][0] == "supported", results["hash_map"]
    assert results["broken"][0] == "inconclusive"  # our C did not build: the kernel was not asked
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
