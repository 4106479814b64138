"""Reading the verifier's and clang's logs against the learner's lines (no kernel needed).

The log below is the verifier's own (Linux 6.18, log level 1) for lesson 04's
``reject_null_check``; the rewritten lines are BCC's rewrite of the same C, cut to what matters.
"""

from __future__ import annotations

from ebpf_lab.core import program_log

LEARNER = """\
BPF_HASH(counts, u32, u64);
int count_uid(void *ctx)
{
    u32 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    u64 *count = counts.lookup(&uid);
    *count += 1;                          // BUG
    return 0;
}
""".splitlines()

# BCC's rewrite: a preamble, a section line before the function, the lookup rewritten
REWRITTEN = [
    "#if defined(BPF_LICENSE)",
    "#error BPF_LICENSE cannot be specified through cflags",
    "#endif",
    "BPF_HASH(counts, u32, u64);",
    '__attribute__((section(".bpf.fn.count_uid")))',
    "int count_uid(void *ctx)",
    "{",
    "    u32 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;",
    "    u64 *count = bpf_map_lookup_elem((void *)bpf_pseudo_fd(1, -1), &uid);",
    "    *count += 1;                          // BUG",
    "    return 0;",
    "}",
    "#include <bcc/footer.h>",
]

LOG = """\
bpf: Failed to load program: Permission denied
0: R1=ctx() R10=fp0
; u32 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF; @ main.c:8
0: (85) call bpf_get_current_uid_gid#15       ; R0=scalar()
1: (63) *(u32 *)(r10 -4) = r0         ; R0=scalar() R10=fp0 fp-8=mmmm????
; u64 *count = bpf_map_lookup_elem((void *)bpf_pseudo_fd(1, -1), &uid); @ main.c:9
6: (85) call bpf_map_lookup_elem#1    ; R0=map_value_or_null(id=1,map=counts,ks=4,vs=8)
; *count += 1;                          // BUG @ main.c:10
7: (79) r1 = *(u64 *)(r0 +0)
R0 invalid mem access 'map_value_or_null'
processed 7 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
HINT: The 'map_value_or_null' error can happen if you dereference a pointer value.
""".splitlines()


def test_rewritten_lines_map_to_the_learners():
    lines_of = program_log.line_map(REWRITTEN, LEARNER)
    assert lines_of[4] == 1  # BPF_HASH
    assert lines_of[6] == 2  # the function, after BCC's section line
    assert lines_of[8] == 4  # uid
    assert lines_of[9] == 5  # the rewritten lookup is the learner's counts.lookup() line
    assert lines_of[10] == 6  # *count += 1
    assert 1 not in lines_of  # BCC's preamble is no line of the learner's


def test_each_log_line_is_labelled_and_the_refused_line_named():
    rows = program_log.verifier_rows(LOG, program_log.line_map(REWRITTEN, LEARNER))
    kinds = [r["kind"] for r in rows]
    assert kinds == [
        "bcc",
        "state",
        "source",
        "insn",
        "insn",
        "source",
        "insn",
        "source",
        "insn",
        "error",
        "stats",
        "bcc",
    ]
    assert [r["c_line"] for r in rows if r["kind"] == "source"] == [4, 5, 6]
    assert [r["insn"] for r in rows if r["kind"] == "insn"] == [0, 1, 6, 7]
    message, lines = program_log.verifier_verdict(rows, "count_uid", LEARNER, "EACCES")
    assert lines == [6]
    assert message == (
        "the verifier rejected count_uid() at line 6: *count += 1;"
        "                          // BUG\n  -> R0 invalid mem access 'map_value_or_null'"
    )


def test_older_kernels_annotate_with_the_text_only():
    """6.1 writes ``; *count += 1;`` without `` @ main.c:N``: the text finds the line."""
    log = [line.split(" @ main.c:")[0] for line in LOG]
    rows = program_log.verifier_rows(log, program_log.line_map(REWRITTEN, LEARNER))
    assert [r["c_line"] for r in rows if r["kind"] == "source"] == [4, 5, 6]


def test_no_source_line_gives_a_verdict_without_a_line():
    rows = program_log.verifier_rows(["0: (95) exit", "R0 !read_ok"], program_log.LineMap({}, {}))
    assert [r["kind"] for r in rows] == ["insn", "error"]
    assert program_log.verifier_verdict(rows, "f", LEARNER, "EACCES") == (
        "the verifier rejected f(): R0 !read_ok",
        [],
    )


def test_compile_errors_name_the_learners_lines():
    log = (
        "/virtual/main.c:4:13: error: use of undeclared identifier 'y'\n"
        "    int x = y;\n"
        "/virtual/main.c:5:13: error: expected ';' after return statement\n"
        "/virtual/main.c:5:1: note: to match this\n"
        "2 errors generated."
    )
    rows = program_log.compile_rows(log)
    assert [r["kind"] for r in rows] == ["error", "other", "error", "note", "other"]
    assert [r["c_line"] for r in rows] == [4, None, 5, 5, None]
    assert program_log.compile_error_lines(log) == [4, 5]
