"""Lesson 04 on the real kernel: the verifier's verdicts and log, the bytecode, the kernel's facts.

Each deliberately broken program must be rejected with the verifier's own phrase for its mistake,
and its fixed twin (-DFIXED) must load. verify() never leaves anything loaded, and the
disassembly has exactly as many rows as the kernel says the program has instructions.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import needs_root

from ebpf_lab import disassemble, program_facts, verify
from ebpf_lab.core.loader import program_source

pytestmark = needs_root


def _line_of(program: str, marker: str) -> int:
    """1-based line of the first line of a shipped program containing ``marker``."""
    for n, text in enumerate(program_source(program).splitlines(), 1):
        if marker in text:
            return n
    raise AssertionError(f"{marker!r} not in {program}")


# (program, function, phrases the verifier must say, the learner's line it must name or None)
REJECTIONS = [
    ("reject_unbounded_loop", "sum_random", ["infinite loop detected at insn"], None),
    (
        "reject_out_of_bounds",
        "count_by_pid",
        [
            "invalid access to map value, value_size=128 off=2040 size=8",
            "max value is outside of the allowed memory range",
        ],
        "h->slots[slot] += 1;",
    ),
    (
        "reject_null_check",
        "count_uid",
        ["R0 invalid mem access 'map_value_or_null'"],
        "*count += 1;                          // BUG",
    ),
]


@pytest.mark.parametrize("program,fn,phrases,marker", REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_each_mistake_is_rejected_with_its_phrase_and_its_fix_loads(
    program, fn, phrases, marker, no_leaks
):
    for level in (1, 2):
        bad = verify(program, log_level=level)
        assert not bad.ok
        assert bad.stage == "verifier"
        assert bad.failed_fn == fn
        said = "\n".join(bad.errors["text"])
        for phrase in phrases:
            assert phrase in said, (phrase, bad.log)
        assert bad.instructions is None and bad.facts.empty
        if marker is not None:
            assert bad.error_lines == [_line_of(program, marker)], bad.message
            assert f"line {bad.error_lines[0]}" in bad.message
    good = verify(program, cflags=["-DFIXED"])
    assert good.ok and good.stage == "ok", good.message
    assert good.functions == [fn]
    assert good.processed > 0 and good.instructions > 0
    assert list(good.facts["fn"]) == [fn]


def test_the_verifier_walks_every_round_of_a_bounded_loop(no_leaks):
    processed = {}
    for loops in (10, 100):
        r = verify("reject_unbounded_loop", cflags=["-DFIXED", f"-DLOOPS={loops}"], log_level=1)
        assert r.ok, r.message
        processed[loops] = r.processed
    # the loop body is the same; the verifier's work grows with the number of rounds
    assert processed[100] > 5 * processed[10]


def test_full_log_on_success_agrees_with_the_kernel(no_leaks):
    r = verify("exec_count", fn="count_tracepoint", log_level=2)
    assert r.ok and r.stage == "ok"
    kinds = set(r.log_lines["kind"])
    assert {"insn", "state", "source", "stats"} <= kinds
    assert "error" not in kinds, r.errors
    stats = r.log_lines[r.log_lines["kind"] == "stats"]["text"].iloc[0]
    # "processed N insns" in the log is the kernel's verified_insns for the program
    assert stats.startswith(f"processed {r.processed} insns")
    assert r.processed == int(r.facts["verified_insns"].iloc[0])
    # source annotations point at the learner's own lines
    src = program_source("exec_count").splitlines()
    annotated = r.log_lines["c_line"].dropna().astype(int)
    assert _line_of("exec_count", "u32 uid = bpf_get_current_uid_gid()") in set(annotated)
    assert all(0 < n <= len(src) for n in annotated)
    assert list(r.log_lines["line"]) == list(range(1, len(r.log_lines) + 1))


def test_compile_error_names_the_learners_lines(no_leaks):
    src = "BPF_HASH(c, u32, u64);\nint f(void *ctx)\n{\n    int x = y;\n    return 0\n}\n"
    r = verify(src)
    assert not r.ok and r.stage == "compile"
    assert r.error_lines == [4, 5]
    assert "undeclared identifier 'y'" in r.log
    assert set(r.errors["c_line"]) == {4, 5}
    assert "line 4, 5" in r.message


def test_auto_attach_macros_are_loaded_but_never_attached(no_leaks):
    src = (
        "BPF_ARRAY(n, u64, 1);\nTRACEPOINT_PROBE(syscalls, sys_enter_execve)\n{\n"
        "    int k = 0;\n    n.increment(k);\n    return 0;\n}\n"
    )
    before = no_leaks.perf_events
    r = verify(src, prog_type="xdp")  # the macro's own type wins over prog_type
    assert r.ok, r.message
    assert r.functions == ["tracepoint__syscalls__sys_enter_execve"]
    assert list(r.facts["prog_type"]) == ["tracepoint"]
    assert no_leaks.perf_events == before


def test_disassembly_rows_equal_the_kernels_instruction_count(no_leaks):
    facts = program_facts("exec_count").set_index("fn")
    for fn in ("count_kprobe", "count_tracepoint"):
        compiled = disassemble("exec_count", fn=fn)
        xlated = disassemble("exec_count", fn=fn, stage="xlated")
        assert len(compiled) == facts.loc[fn, "compiled_insns"]
        assert len(xlated) == facts.loc[fn, "xlated_insns"] == facts.loc[fn, "xlated_bytes"] // 8
        assert list(compiled["index"]) == list(range(len(compiled)))
        # the kernel inlined the hash lookup: a direct call plus the step to the value
        assert "call __htab_map_lookup_elem" in set(xlated["text"])
        assert "call bpf_map_lookup_elem#1" in set(compiled["text"])
    assert set(facts["prog_type"]) == {"tracepoint"}
    assert (facts["jited_bytes"] > 0).all()


def test_helper_only_program_is_not_rewritten(no_leaks):
    src = "int f(void *ctx)\n{\n    return bpf_get_current_uid_gid() & 1;\n}\n"
    compiled = disassemble(src)
    xlated = disassemble(src, stage="xlated")
    facts = program_facts(src)
    assert len(compiled) == len(xlated) == int(facts["xlated_insns"].iloc[0])
    assert list(compiled["opcode"]) == list(xlated["opcode"])
    assert compiled["text"].iloc[0] == "call bpf_get_current_uid_gid#15"
    assert xlated["text"].iloc[0] == "call bpf_get_current_uid_gid"


def test_disassembly_matches_bcc_and_bpftool(no_leaks):
    import bcc
    from bcc.disassembler import disassemble_str

    from ebpf_lab.core.loader import release

    # exec_count with a plain increment(): BCC 0.26's own disassembler cannot decode atomic
    # instructions (opcode 0xdb, what atomic_increment() compiles to): it raises on them
    source = program_source("exec_count").replace(".atomic_increment(", ".increment(")
    b = bcc.BPF(text=source.encode())
    try:
        fn = b.load_func(b"count_tracepoint", bcc.BPF.TRACEPOINT)
        bcc_lines = disassemble_str(b.dump_func(b"count_tracepoint"))
        mine = disassemble(source, fn="count_tracepoint")
        assert len(bcc_lines) == len(mine)
        for line, (_, row) in zip(bcc_lines, mine.iterrows()):
            if "64-bit upper word" not in line:
                assert f"({int(row['opcode'], 16):02x})" in line
        facts = program_facts(fn)
        shown = subprocess.run(
            ["bpftool", "-j", "prog", "show", "id", str(int(facts["prog_id"].iloc[0]))],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        kernel = json.loads(shown)
        assert kernel["bytes_xlated"] // 8 == int(facts["xlated_insns"].iloc[0])
        assert kernel["bytes_jited"] == int(facts["jited_bytes"].iloc[0])
        xlated = disassemble(source, fn="count_tracepoint", stage="xlated")
        assert len(xlated) == kernel["bytes_xlated"] // 8
    finally:
        release(b)


@pytest.mark.parametrize(
    "call",
    [
        lambda: verify(123),
        lambda: verify(b"int f(void *ctx) { return 0; }"),
        lambda: verify("   "),
        lambda: verify("no_such_program"),
        lambda: verify("exec_count", prog_type="bogus"),
        lambda: verify("exec_count", prog_type={"count_tracepoint": "bogus"}),
        lambda: verify("exec_count", fn="no_such_fn"),
        lambda: verify("exec_count", fn="not a name"),
        lambda: verify("exec_count", cflags="-DFIXED"),
        lambda: verify("exec_count", log_level=3),
        lambda: verify("BPF_HASH(only_a_map, u32, u64);\n"),
        lambda: disassemble(None),
        lambda: disassemble("exec_count", stage="bogus"),
        lambda: disassemble("exec_count", fn="no_such_fn"),
        lambda: disassemble("reject_null_check", stage="xlated"),
        lambda: program_facts("reject_null_check"),
    ],
)
def test_bad_input_is_a_value_error(call, no_leaks):
    with pytest.raises(ValueError):
        call()


def test_array_lookup_with_a_known_key_needs_no_null_check_only_since_6_14(no_leaks):
    """Linux 6.14 (commit d2102f2f5d75, can_elide_value_nullness()) lets the verifier drop the
    NULL check of a BPF_ARRAY lookup whose key it knows; older kernels (Debian's 6.1, 6.12)
    refuse the very same program. A 4-byte key stored in the middle of a stack slot is not
    known to either (measured on 6.1 and 6.18)."""
    from ebpf_lab.kernel.prose import kernel_version

    new_rule = kernel_version() >= (6, 14)
    zero = verify("array_constant_key", cflags=["-DKEY=0"])
    aligned = verify("array_constant_key", cflags=["-DKEY=1", "-DALIGNED"])
    middle = verify("array_constant_key", cflags=["-DKEY=1"])
    assert zero.ok == new_rule and aligned.ok == new_rule
    assert not middle.ok
    for refused in (r for r in (zero, aligned, middle) if not r.ok):
        assert refused.stage == "verifier"
        assert "R0 invalid mem access 'map_value_or_null'" in set(refused.errors["text"])
        assert (
            "*value += 1;"
            in program_source("array_constant_key").splitlines()[refused.error_lines[0] - 1]
        )
