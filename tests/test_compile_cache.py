"""The compile cache: a second compile of the same C skips clang and behaves like the first.

Everything here runs on the real kernel: the cached object's maps are created, its instructions
loaded and verified, its probes fire on a known workload, and the counts are compared exactly.
"""

from __future__ import annotations

import os
import struct

import pytest
from conftest import needs_root

import ebpf_lab
from ebpf_lab import ProgramError
from ebpf_lab.core import compile_cache
from ebpf_lab.core.loader import compile_program, load_function, release, table_names
from ebpf_lab.workloads import execs, writes

pytestmark = needs_root

# Two maps of different kinds, both written by one function: if a map fd were written into the
# wrong instruction, the counts below would land in the wrong map (or the verifier would refuse).
TWO_MAPS = r"""
BPF_HASH(per_uid, u32, u64);
BPF_ARRAY(totals, u64, 2);
int on_write(struct tracepoint__syscalls__sys_enter_write *args)
{
    u32 uid = bpf_get_current_uid_gid();
    if (uid != TARGET_UID)
        return 0;
    per_uid.atomic_increment(uid);
    int slot = args->count > 100;        // totals[0]: small writes, totals[1]: large ones
    u64 *t = totals.lookup(&slot);
    if (t)
        __sync_fetch_and_add(t, 1);
    return 0;
}
"""


@pytest.fixture
def empty_cache():
    compile_cache.clear()
    yield
    compile_cache.clear()


def _count_writes(uid: int, sizes: list[int], *, cache: bool = True) -> tuple[object, dict]:
    bpf = compile_program(TWO_MAPS, [f"-DTARGET_UID={uid}"], name="two_maps", cache=cache)
    try:
        kind = type(bpf).__name__
        bpf.attach_tracepoint(tp=b"syscalls:sys_enter_write", fn_name=b"on_write")
        writes(sizes, uid=uid)
        per_uid = {k.value: v.value for k, v in bpf[b"per_uid"].items()}
        totals = [bpf[b"totals"][i].value for i in range(2)]
        return kind, {"per_uid": per_uid, "totals": totals, "maps": table_names(bpf)}
    finally:
        release(bpf)


def test_second_compile_is_cached_and_counts_exactly(fresh_uids, empty_cache, no_leaks):
    uid = fresh_uids()[0]
    sizes = [1, 5, 200, 300, 7, 4096]
    want = {"per_uid": {uid: 6}, "totals": [3, 3], "maps": [b"per_uid", b"totals"]}
    first_kind, first = _count_writes(uid, sizes)
    second_kind, second = _count_writes(uid, sizes)
    assert first_kind == "LabBPF"  # BCC compiled it
    assert second_kind == "CachedBPF"  # made from the kept bytes: no clang
    assert first == second == want
    info = compile_cache.info()
    assert (info["entries"], info["hits"], info["misses"]) == (1, 1, 1)


def test_other_cflags_are_another_entry(fresh_uids, empty_cache, no_leaks):
    a, b = fresh_uids(2)
    assert _count_writes(a, [1, 2])[1]["per_uid"] == {a: 2}
    kind, got = _count_writes(b, [1, 2, 3])
    assert kind == "LabBPF" and got["per_uid"] == {b: 3}
    assert compile_cache.info()["entries"] == 2


def test_cache_false_always_compiles(fresh_uids, empty_cache, no_leaks):
    uid = fresh_uids()[0]
    for _ in range(2):
        kind, got = _count_writes(uid, [1], cache=False)
        assert kind == "LabBPF" and got["per_uid"] == {uid: 1}
    assert compile_cache.info()["entries"] == 0


def test_cached_instructions_are_the_compiled_ones(empty_cache, no_leaks):
    """Byte for byte what BCC made, except the map fds written into ld_imm64 instructions."""
    compiled = compile_program(TWO_MAPS, ["-DTARGET_UID=1"])
    cached = compile_program(TWO_MAPS, ["-DTARGET_UID=1"])
    try:
        assert type(cached).__name__ == "CachedBPF"
        a, b = compiled.dump_func(b"on_write"), cached.dump_func(b"on_write")
        assert len(a) == len(b) and len(a) % 8 == 0
        fds = set()
        for off in range(0, len(a), 8):
            if a[off : off + 8] != b[off : off + 8]:
                assert a[off] == 0x18 and (a[off + 1] >> 4) == 1  # ld_imm64 of a map fd
                assert a[off : off + 4] == b[off : off + 4]
                fds.add(struct.unpack_from("<i", b, off + 4)[0])
        assert fds == set(cached._map_fds)  # the fds in the copy are the new maps'
        for fd in fds:
            assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:bpf-map"
    finally:
        release(compiled)
        release(cached)


@pytest.mark.parametrize("buffer", ["perf", "ring"])
def test_event_buffers_decode_after_a_cache_hit(buffer, fresh_uids, empty_cache, no_leaks):
    """exec_events twice: the second run's events come through a cached program, exactly."""
    for run in range(2):
        a = fresh_uids()[0]
        box = {}
        df = ebpf_lab.exec_events(
            duration=0.5,
            buffer=buffer,
            workload=lambda a=a, box=box: box.update(done=execs({a: 3})),
        )
        ours = df[df.pid.isin(box["done"].pid)]
        assert len(ours) == 3, run
        assert (ours["uid"] == a).all() and (ours["filename"] == "/bin/true").all()
        assert (ours["message"] == "Hello World").all()
    assert compile_cache.info()["hits"] >= 1


def test_programs_bcc_attaches_while_compiling_are_not_kept(empty_cache, no_leaks):
    text = "TRACEPOINT_PROBE(syscalls, sys_enter_getppid) { return 0; }"
    for _ in range(2):
        bpf = compile_program(text, name="autoload")
        assert type(bpf).__name__ == "LabBPF"
        release(bpf)
    info = compile_cache.info()
    assert info["entries"] == 0 and info["not_cacheable"] == 2
    assert "attached by BCC while it compiles" in info["not_cacheable_reasons"]["autoload"]


def test_verifier_still_checks_a_cached_load(empty_cache, no_leaks):
    """A tracepoint program loaded as XDP is refused by the verifier, compiled or cached."""
    for expected in ("LabBPF", "CachedBPF"):
        bpf = compile_program(TWO_MAPS, ["-DTARGET_UID=1"], name="two_maps")
        try:
            assert type(bpf).__name__ == expected
            with pytest.raises(ProgramError) as err:
                load_function(bpf, "on_write", 6, name="two_maps")  # BPF_PROG_TYPE_XDP
            assert err.value.stage == "verifier"
            assert "on_write" in str(err.value)
        finally:
            release(bpf)
    # a refused program is dropped from the cache: its next compile is BCC's again
    assert compile_cache.info()["entries"] == 0


def test_a_refused_cached_program_shows_the_c_in_the_log(empty_cache, no_leaks):
    """The kept bytecode has no line info; the error still carries the log with the C lines."""
    text = ebpf_lab.core.loader.program_source("reject_null_check")
    logs = {}
    for expected in ("LabBPF", "CachedBPF"):
        bpf = compile_program(text, name="reject_null_check")
        try:
            assert type(bpf).__name__ == expected
            with pytest.raises(ProgramError) as err:
                load_function(bpf, "count_uid", 5, name="reject_null_check")  # TRACEPOINT
            logs[expected] = err.value.log
        finally:
            release(bpf)
    c_lines = [{ln for ln in log.splitlines() if ln.startswith("; ")} for log in logs.values()]
    assert c_lines[0] and c_lines[0] == c_lines[1]
    for log in logs.values():
        assert "R0 invalid mem access 'map_value_or_null'" in log


def test_least_recently_used_entries_are_dropped(monkeypatch, empty_cache, no_leaks):
    monkeypatch.setattr(compile_cache, "MAX_ENTRIES", 2)
    for uid in (1, 2, 3):
        release(compile_program(TWO_MAPS, [f"-DTARGET_UID={uid}"]))
    assert compile_cache.info()["entries"] == 2
    first = compile_program(TWO_MAPS, ["-DTARGET_UID=1"])  # dropped: compiled again
    third = compile_program(TWO_MAPS, ["-DTARGET_UID=3"])  # kept
    try:
        assert type(first).__name__ == "LabBPF" and type(third).__name__ == "CachedBPF"
    finally:
        release(first)
        release(third)


def test_a_compile_error_is_not_kept(empty_cache, no_leaks):
    for _ in range(2):
        with pytest.raises(ProgramError) as err:
            compile_program("int f(void *ctx) { return undefined_name; }", name="broken")
        assert err.value.stage == "compile"
    assert compile_cache.info()["entries"] == 0
