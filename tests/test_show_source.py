"""show_source(name, final=True): the C after BCC's rewrite, compiled on the real kernel's BCC.

The expected strings were read from BCC's own rewrite (``debug=DEBUG_PREPROCESSOR``): a map
method call becomes a statement expression around the map helpers, and the map is named by a
pseudo file descriptor ``bpf_pseudo_fd(1, -N)``, N its place among the program's maps (BCC puts
the real fd in when it loads).
"""

from __future__ import annotations

import pytest
from conftest import needs_root

import ebpf_lab
from ebpf_lab.core.loader import program_source

pytestmark = needs_root


def _code(text: str) -> str:
    """The text without its // comments (the lessons' comments name the methods too)."""
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def test_default_is_the_lessons_own_c():
    assert ebpf_lab.show_source("exec_count").data == program_source("exec_count")


def test_final_exec_count_calls_the_map_helpers(no_leaks):
    final = ebpf_lab.show_source("exec_count", final=True).data
    code = _code(final)
    assert "counter_table.atomic_increment(uid)" in _code(program_source("exec_count"))
    assert ".atomic_increment(" not in code
    # counter_table is the program's first (only) map: pseudo fd -1
    assert "bpf_map_lookup_elem_(bpf_pseudo_fd(1, -1), &_key)" in code
    assert "if (_leaf) lock_xadd(_leaf, 1);" in code  # the atomic add
    assert "bpf_map_update_elem_(bpf_pseudo_fd(1, -1), &_key, &_zleaf, BPF_NOEXIST)" in code
    # the functions BCC compiles are put into their own sections; the learner's lines stay
    assert '__attribute__((section(".bpf.fn.count_tracepoint")))' in code
    assert "u32 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;" in code
    # BPF_HASH(...) stays: clang's preprocessor expands it later, from BCC's helpers.h
    assert "BPF_HASH(counter_table, u32, u64);" in code


def test_final_increment_is_a_load_add_store(no_leaks):
    code = _code(ebpf_lab.show_source("counter_race", final=True).data)
    assert ".increment(" not in code and ".atomic_increment(" not in code
    # plain is the program's second map (after target): pseudo fd -2; a plain += , no lock
    assert "bpf_map_lookup_elem_(bpf_pseudo_fd(1, -2), &_key); if (_leaf) (*_leaf) += 1;" in code
    assert "bpf_map_lookup_elem_(bpf_pseudo_fd(1, -3), &_key); if (_leaf) lock_xadd(_leaf, 1);" in (
        code
    )


def test_unknown_program_is_a_value_error_before_compiling():
    with pytest.raises(ValueError, match="no BPF program called 'nope'"):
        ebpf_lab.show_source("nope", final=True)


def test_a_program_that_needs_the_lessons_flags_says_which(no_leaks):
    """exec_events takes BTF offsets from its Python: alone it does not compile, and the error
    names them; with them given, it compiles."""
    from ebpf_lab import ProgramError
    from ebpf_lab.core.loader import final_source

    with pytest.raises(
        ProgramError,
        match=r"exec_events takes TASK_REAL_PARENT_OFF, TASK_TGID_OFF from its lesson's Python",
    ) as info:
        ebpf_lab.show_source("exec_events", final=True)
    assert info.value.stage == "compile"
    assert "use of undeclared identifier 'TASK_REAL_PARENT_OFF'" in info.value.log
    final = final_source(
        program_source("exec_events"), ["-DTASK_REAL_PARENT_OFF=8", "-DTASK_TGID_OFF=16"]
    )
    assert "bpf_probe_read_kernel(&parent, sizeof(parent)" in final


def test_transfer_batch_without_its_batch_size_is_a_compile_error_not_a_crash(no_leaks):
    """clang aborts the whole process on ``rec[BATCH]`` with BATCH undefined; the program's own
    #error turns that into a ProgramError naming the flag."""
    from ebpf_lab import ProgramError

    with pytest.raises(ProgramError) as info:
        ebpf_lab.show_source("transfer_batch", final=True)
    assert "BATCH is set by the lesson's Python (transfer.py)" in info.value.log
