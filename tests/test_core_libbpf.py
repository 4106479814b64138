"""Lesson 15 on the real kernel: lesson 03's exec events from a CO-RE object that libbpf loads.

The object is built here, from this kernel's BTF, and loaded by the lab's libbpf loader through
the core's tracer path. Against a known workload (``execs`` as an unused uid) its frame equals
``exec_events``'s on every column the two runs share; the relocations libbpf reports put
``task_struct.real_parent`` where the kernel's BTF says it is; nothing stays loaded.
"""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
from conftest import needs_root
from kernel_state import global_prog_ids

import ebpf_lab
from ebpf_lab.core.errors import HelperBuildError
from ebpf_lab.kernel.btf import member_offset
from ebpf_lab.lessons.l15_core_libbpf import build, core_events
from ebpf_lab.workloads import native
from ebpf_lab.workloads.processes import execs, unused_uid

pytestmark = [
    needs_root,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("clang", "bpftool")),
        reason="clang and bpftool build the CO-RE object (sudo make setup)",
    ),
]

#: the columns both frames have; pid and time differ between two runs of the same workload
SHARED = ["ppid", "uid", "user", "command", "filename"]


def ours(df: pd.DataFrame, uid: int) -> pd.DataFrame:
    rows = df[df["uid"] == uid][SHARED].reset_index(drop=True)
    return rows.astype({"user": str, "command": str, "filename": str})


def test_the_core_object_sees_exactly_what_exec_events_sees(no_leaks):
    uid = unused_uid()
    core = ebpf_lab.core_exec_events(duration=0.5, workload=lambda: execs({uid: 7}), live=False)
    # chapter 03's program on the same hook (sys_enter_execve), through its ring buffer
    bcc = ebpf_lab.exec_events(
        duration=0.5,
        buffer="ring",
        attach="tracepoint",
        workload=lambda: execs({uid: 7}),
        live=False,
    )
    assert list(core.columns) == [c for c in bcc.columns if c != "message"]
    assert list(map(str, core.dtypes)) == list(map(str, bcc.dtypes.drop("message")))
    mine = ours(core, uid)
    assert len(mine) == 7
    assert (mine["ppid"] == os.getpid()).all()  # real_parent->tgid, read with CO-RE
    assert (mine["filename"] == "/bin/true").all()
    pd.testing.assert_frame_equal(mine, ours(bcc, uid))
    assert core[core.uid == uid]["time"].is_monotonic_increasing  # one ring for all CPUs
    assert core.attrs["attach"] == "libbpf"
    assert core.attrs["lost"] == 0


def test_relocations_put_real_parent_where_the_kernels_btf_says(no_leaks):
    df = core_events.core_exec_events(duration=0.2, live=False)
    relos = ebpf_lab.core_relocations(df).set_index(["struct", "field"])
    assert relos.loc[("task_struct", "real_parent"), "kernel_offset"] == member_offset(
        "task_struct", "real_parent"
    )
    assert relos.loc[("task_struct", "tgid"), "kernel_offset"] == member_offset(
        "task_struct", "tgid"
    )
    # built from this kernel's vmlinux.h, nothing had to move; built on another (a VM running
    # the object its host built), real_parent moved where the two task_structs differ
    moved = relos["object_offset"] != relos["kernel_offset"]
    if df.attrs["built_on"] == os.uname().release:
        assert not moved.any()
    else:
        origin = relos.loc[("task_struct", "real_parent"), "object_offset"]
        assert moved.loc[("task_struct", "real_parent")] == (
            origin != member_offset("task_struct", "real_parent")
        )
    assert set(relos["kind"]) == {"byte_off"}
    assert relos["insn"].is_unique
    # the tracepoint's context is relocated too (its first argument, the filename)
    assert ("trace_event_raw_sys_enter", "args[0]") in relos.index
    assert len(relos) == 3
    # the loader held one program while it ran, and took it with it
    assert len(df.attrs["program_ids"]) == 1
    assert not set(df.attrs["program_ids"]) & global_prog_ids()


def test_the_build_is_cached_and_does_not_depend_on_the_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    first = build.build()
    assert first.name.startswith("exec_core-")
    assert sorted(p.name for p in first.iterdir()) == [
        build.BUILT_ON,
        "exec_core.bpf.o",
        "exec_loader",
    ]
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no scratch left
    assert build.built_on(first) == {"release": os.uname().release, "btf": build.btf_identity()}
    stamp = (first / "exec_loader").stat().st_mtime_ns
    assert build.build() == first  # reused
    assert (first / "exec_loader").stat().st_mtime_ns == stamp
    # another kernel's BTF: the same object (CO-RE), not another build
    monkeypatch.setattr(build, "btf_identity", lambda: "another-kernel")
    assert build.build() == first


def test_a_missing_tool_is_named_before_anything_loads(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    monkeypatch.delenv("CC", raising=False)
    before = global_prog_ids()
    with pytest.raises(HelperBuildError, match="apt-get install clang libbpf-dev bpftool"):
        ebpf_lab.core_exec_events(duration=0.2, live=False)
    assert global_prog_ids() <= before


def test_a_failed_build_step_carries_its_log_and_leaves_no_scratch(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(native.CACHE_ENV, str(cache))
    broken = tmp_path / "exec_core.bpf.c"
    broken.write_text('#include "vmlinux.h"\nint broken(void) { return no_such_name; }\n')
    monkeypatch.setattr(build, "BPF_SOURCE", broken)
    with pytest.raises(HelperBuildError, match="compiling exec_core.bpf.c with clang") as err:
        build.build()
    assert "no_such_name" in err.value.log  # clang's own message
    assert list(cache.iterdir()) == []  # nothing half-built, no scratch directory


def test_a_recorded_run_replays_without_building_or_loading(tmp_path, monkeypatch, no_leaks):
    uid = unused_uid()
    ebpf_lab.record(tmp_path)
    try:
        live = ebpf_lab.core_exec_events(duration=0.3, workload=lambda: execs({uid: 3}))
    finally:
        ebpf_lab.recordings.off()
    ebpf_lab.replay(tmp_path)
    try:
        monkeypatch.setattr(build, "build", lambda: pytest.fail("built while replaying"))
        again = ebpf_lab.core_exec_events(duration=0.3, workload=lambda: execs({uid: 3}))
    finally:
        ebpf_lab.recordings.off()
    assert again.attrs["replay"]
    pd.testing.assert_frame_equal(ours(again, uid), ours(live, uid))
    assert len(ours(again, uid)) == 3
    pd.testing.assert_frame_equal(ebpf_lab.core_relocations(again), ebpf_lab.core_relocations(live))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"duration": 0}, "duration"),
        ({"duration": "2"}, "duration"),
        ({"workload": 5}, "workload"),
    ],
)
def test_bad_input_raises_before_anything_is_built(kwargs, words, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("reached the build with bad input")

    monkeypatch.setattr(build, "build", must_not_run)
    with pytest.raises(ValueError, match=words):
        ebpf_lab.core_exec_events(**kwargs)


def test_core_relocations_needs_a_core_exec_events_frame():
    with pytest.raises(ValueError, match="core_exec_events"):
        ebpf_lab.core_relocations(pd.DataFrame({"pid": [1]}))


def test_the_relocation_parser_reads_libbpfs_lines():
    log = [
        "libbpf: prog 'p': relo #0: <byte_off> [33] struct task_struct.real_parent "
        "(0:95 @ offset 1280)",
        "libbpf: prog 'p': relo #0: matching candidate #0 <byte_off> [114] struct "
        "task_struct.real_parent (0:95 @ offset 2456)",
        "libbpf: prog 'p': relo #0: patched insn #27 (ALU/ALU64) imm 1280 -> 2456",
        "libbpf: prog 'p': relo #1: <byte_off> [22] struct trace_event_raw_sys_enter.args[0] "
        "(0:2:0 @ offset 16)",
        "libbpf: prog 'p': relo #1: matching candidate #0 <byte_off> [9] struct "
        "trace_event_raw_sys_enter.args[0] (0:2:0 @ offset 16)",
        "libbpf: prog 'p': relo #1: patched insn #3 (LDX/ST/STX) off 16 -> 16",
    ]
    assert core_events.parse_relocations(log) == [
        {
            "program": "p",
            "relo": 0,
            "kind": "byte_off",
            "struct": "task_struct",
            "field": "real_parent",
            "access": "0:95",
            "object_offset": 1280,
            "kernel_offset": 2456,
            "insn": 27,
        },
        {
            "program": "p",
            "relo": 1,
            "kind": "byte_off",
            "struct": "trace_event_raw_sys_enter",
            "field": "args[0]",
            "access": "0:2:0",
            "object_offset": 16,
            "kernel_offset": 16,
            "insn": 3,
        },
    ]
