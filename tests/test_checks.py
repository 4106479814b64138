"""Exercises that check themselves: every solution passes, typical wrong answers fail, and say why.

Solutions live in ``instructor/solutions/<id>.*``. C answers are compiled and run in the kernel
while a known workload runs, so those tests need root (and leave nothing loaded).
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import IS_ROOT, REPO

import ebpf_lab
from ebpf_lab.classroom import checks, recordings

SOLUTIONS = REPO / "instructor" / "solutions"
EXERCISES = checks.exercises()
IDS = list(EXERCISES["id"])
NEEDS_KERNEL = dict(zip(EXERCISES["id"], EXERCISES["needs_kernel"]))


def solution_file(exercise_id: str) -> Path:
    found = [p for p in SOLUTIONS.iterdir() if p.name.startswith(f"{exercise_id}.")]
    assert len(found) == 1, f"want one solution file for {exercise_id}, found {found}"
    return found[0]


def solution(exercise_id: str) -> Any:
    path = solution_file(exercise_id)
    if path.name.endswith(".c"):
        return path.read_text()
    return runpy.run_path(str(path))["answer"]


def kernel_marks(exercise_id: str) -> list[Any]:
    if NEEDS_KERNEL[exercise_id]:
        return [pytest.mark.skipif(not IS_ROOT, reason="runs the answer's C in the kernel: root")]
    return []


@pytest.fixture
def maybe_no_leaks(request):
    """The no_leaks check for tests that load programs (the others need not be root)."""
    if NEEDS_KERNEL[request.node.callspec.params["exercise_id"]]:
        request.getfixturevalue("no_leaks")


def test_each_exercise_has_one_solution_and_each_solution_an_exercise() -> None:
    assert IDS, "no exercises registered"
    files = {
        p.name.split(".bpf.c")[0].removesuffix(".py")
        for p in SOLUTIONS.iterdir()
        if p.name[:1].isdigit()
    }
    assert files == set(IDS)


@pytest.mark.parametrize(
    "exercise_id", [pytest.param(i, marks=kernel_marks(i)) for i in IDS], ids=IDS
)
def test_solution_passes(exercise_id: str, maybe_no_leaks) -> None:
    result = ebpf_lab.check(exercise_id, solution(exercise_id))
    assert result.ok, str(result)
    assert result.checked
    assert str(result).startswith(f"✓ {exercise_id}")
    assert result.message.startswith("right")


def _swap_uid_gid(c: str) -> str:
    return c.replace("= id & 0xFFFFFFFF", "= id >> 32 ").replace(
        ".gid = id >> 32", ".gid = id & 0xFFFFFFFF", 1
    )


UID_ONLY_C = """
BPF_HASH(counts, u32, u64);
int count(void *ctx)
{
    u32 uid = bpf_get_current_uid_gid();
    counts.increment(uid);
    return 0;
}
"""

# (exercise, wrong answer (or a function making it from the solution), words the message must say)
WRONG: list[tuple[str, Any, list[str]]] = [
    ("01.2", lambda df: df.groupby("comm")["pid"].nunique(), ["distinct processes", "size()"]),
    (
        "01.2",
        lambda df: {"python3": 7, "bash": 5, "cron": 2, "sshd": 1},
        ["right for one frame but not for another"],
    ),
    ("01.2", "df.groupby('cmd').size()", ["raised KeyError", "'cmd'", "columns time, pid, comm"]),
    ("01.2", 42, ["give a function of the frame"]),
    ("01.2", "df.groupby(", ["not a Python expression"]),
    ("02.1", ebpf_lab.program_source("exec_count"), ["keyed by text", "bpf_get_current_comm"]),
    (
        "02.1",
        lambda good: good.replace("char comm[16]", "char comm[5]"),
        ["cut short", "16 bytes"],
    ),
    ("02.1", "int count(void *ctx) { return nope; }", ["did not compile", "nope"]),
    ("02.1", "   ", ["give your BPF C program as a string"]),
    (
        "02.1",
        lambda good: good + "\nint other(void *ctx) { return 0; }\n",
        ["several functions", 'fn="count"'],
    ),
    ("02.2", _swap_uid_gid, ["wrong way round", "lower 32 bits"]),
    ("02.2", UID_ONLY_C, ["keyed by the uid alone"]),
    (
        "02.4",
        lambda good: good.replace(
            "u64 *n = counts.lookup_or_try_init(&uid, &zero);\n    if (n)\n"
            "        __sync_fetch_and_add(n, 1);",
            "counts.atomic_increment(uid);",
        ),
        ["short by a count", "first calls started on both CPUs", "lookup_or_try_init"],
    ),
    (
        "02.4",
        lambda good: good.replace("BPF_HASH", "BPF_PERCPU_HASH").replace(
            "u64 *n = counts.lookup_or_try_init(&uid, &zero);\n    if (n)\n"
            "        __sync_fetch_and_add(n, 1);",
            "counts.increment(uid);",
        ),
        ["no count for the load's UIDs", "never creates one"],
    ),
    (
        "02.4",
        lambda good: good.replace("__sync_fetch_and_add(n, 1);", "__sync_fetch_and_add(n, 2);"),
        ["more calls than were made"],
    ),
    ("03.2", lambda df: df.groupby("ppid")["command"].unique(), ["listed `command`", "filename"]),
    ("03.2", "df.groupby('pid')['filename'].unique()", ["grouped by `pid`", "ppid"]),
    ("03.2", lambda df: df.groupby("ppid")["filename"].agg(list), ["repeats", "unique()"]),
    (
        "03.3",
        lambda good: good.replace("sched, sched_process_exec", "syscalls, sys_enter_execve"),
        ["*before* exec", "sched_process_exec"],
    ),
    (
        "03.3",
        lambda good: good.replace("TRACEPOINT_PROBE(sched, sched_process_exec)", "int f(void *c)"),
        ["TRACEPOINT_PROBE"],
    ),
    (
        "04.2",
        lambda good: good.replace("sum += (unsigned char)comm[i];", "sum += 1;"),
        ["adds 16 per exec", "sum to"],
    ),
    (
        "04.2",
        lambda good: good.replace(
            "sums.atomic_increment(uid, sum);", "sums.atomic_increment(uid);"
        ),
        ["counts the execs", "instead of summing bytes"],
    ),
    (
        "04.2",
        lambda good: good.replace("i < 16; i++", "i < (bpf_get_current_pid_tgid() & 0xffff); i++"),
        ["verifier rejected"],
    ),
    (
        "05.4",
        lambda good: good.replace("args->fd", "args->count"),
        ["keyed by the number of bytes"],
    ),
    (
        "05.4",
        lambda good: good.replace("!= FILTER_UID", "== 0xFFFFFFFF"),
        ["other users' writes", "FILTER_UID"],
    ),
    ("06.1", lambda good: good.replace("% 10", "% 16"), ["did not land in a bucket", "slots 0..9"]),
    ("06.1", lambda good: good.replace("% 10", "% 5"), ["stayed empty"]),
    (
        "07.1",
        lambda good: good.replace(
            "u32 pid = bpf_get_current_pid_tgid() >> 32;", "u64 pid = bpf_get_current_pid_tgid();"
        ).replace("u32, u64", "u64, u64"),
        ["whole 64-bit", ">> 32"],
    ),
    (
        "07.1",
        lambda good: good.replace(
            "counts.atomic_increment(pid);", "u64 one = 1; counts.update(&pid, &one);"
        ),
        ["holds 1", "increment"],
    ),
    (
        "08.3",
        lambda df: df.groupby("buffer", observed=True).size() / df.attrs["generated"],
        ["counted rows", "nunique()"],
    ),
    (
        "08.3",
        "1 - df.groupby('buffer', observed=True)['seq'].nunique() / df.attrs['generated']",
        ["fraction *lost*"],
    ),
    (
        "08.3",
        lambda df: {"trace": 0.7, "perf": 0.75, "ring": 1.0},
        ["right for one recorded frame"],
    ),
    (
        "09.4",
        lambda df: (
            df.assign(slot=df["latency_ns"].map(lambda n: max(int(n).bit_length(), 1)))
            .groupby(["pid", "slot"])
            .size()
        ),
        ["grouped by `pid`", "`tid`"],
    ),
    (
        "09.4",
        lambda df: (
            df.assign(slot=df["latency_ns"].map(lambda n: max(int(n).bit_length() - 1, 0)))
            .groupby(["tid", "slot"])
            .size()
        ),
        ["one too low", "bit_length()"],
    ),
    (
        "10.5",
        lambda df: (df[df.protocol == "tcp"].packets == 18).all(),
        ["rejected an honest run", "ACK timing"],
    ),
    (
        "10.5",
        lambda df: (df[df.protocol == "tcp"].dropped == 0).all(),
        ["accepted a run with", "SYN"],
    ),
    ("10.5", 42, ["give a function"]),
    ("11.3", ["/usr/bin/python3"], ["raised no alert", "symlink", "byte for byte"]),
    ("11.3", ["python3"], ["refused your watchlist", "absolute path"]),
    ("11.3", "/usr/bin/python3", ["give a list of paths"]),
    ("12.1", lambda df: df.groupby(["pid", "comm"], observed=True).size(), ["counted rows", "Sum"]),
    (
        "12.1",
        "df.groupby('comm', observed=True)['samples'].sum().sort_values(ascending=False)",
        ["grouped by comm", "two bash"],
    ),
    (
        "12.1",
        lambda df: df.groupby(["pid", "comm"], observed=True)["samples"].sum(),
        ["not most first"],
    ),
]


@pytest.mark.parametrize(
    "exercise_id, wrong, words",
    [pytest.param(*w, marks=kernel_marks(w[0])) for w in WRONG],
    ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG)],
)
def test_wrong_answer_fails_and_says_why(
    exercise_id: str, wrong: Any, words: list[str], request
) -> None:
    if NEEDS_KERNEL[exercise_id]:
        request.getfixturevalue("no_leaks")
    if callable(wrong) and isinstance(solution(exercise_id), str):
        wrong = wrong(solution(exercise_id))
    result = ebpf_lab.check(exercise_id, wrong)
    assert not result.ok, str(result)
    assert not result
    assert str(result).startswith(f"✗ {exercise_id}"), str(result)
    for word in words:  # (str() adds the compiler's or verifier's log, when there is one)
        assert word in str(result), f"{word!r} not in: {result}"


def test_no_answer_says_what_the_exercise_asks() -> None:
    result = ebpf_lab.check("02.1")
    assert not result.ok and not result.checked
    assert str(result).startswith("? 02.1")
    assert "no answer yet" in result.message and "char comm[16]" in result.message


def test_unknown_exercise_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no exercise '99.9'.*02\.1"):
        ebpf_lab.check("99.9", "x")


def test_result_shows_a_sentence_with_a_mark() -> None:
    good = ebpf_lab.check("03.2", solution("03.2"))
    bad = ebpf_lab.check("03.2", "df.groupby('pid')['filename'].unique()")
    assert repr(good).startswith("✓ 03.2 Programs each parent ran: right")
    assert "✓ 03.2" in good._repr_markdown_() and "right" in good._repr_markdown_()
    assert repr(bad).startswith("✗ 03.2")
    assert "not yet" in bad._repr_markdown_()


def test_later_lessons_register_exercises_with_the_decorator() -> None:
    @checks.exercise("99.1", title="Test only", asks="the number 3")
    def _three(answer):
        if answer != 3:
            raise checks.Wrong(f"the answer is 3, not {answer}")
        return "right: 3"

    try:
        assert "99.1" in set(checks.exercises()["id"])
        assert ebpf_lab.check("99.1", 3).ok
        assert ebpf_lab.check("99.1", 4).message == "the answer is 3, not 4"
        with pytest.raises(ValueError, match="already registered"):

            @checks.exercise("99.1", title="again", asks="x")
            def _other(answer):
                return "right"

        with pytest.raises(ValueError, match="look like '05.1'"):
            checks.exercise("5.1", title="bad", asks="x")
    finally:
        checks._REGISTRY.pop("99.1", None)


def test_each_exercise_has_a_commented_check_cell_in_its_notebook() -> None:
    from ebpf_lab.classroom.registry import CATALOGUE, NOTEBOOKS_DIR

    notebook_of = {lesson.number: lesson.notebook for lesson in CATALOGUE}
    for exercise_id in IDS:
        path = NOTEBOOKS_DIR / notebook_of[exercise_id.split(".")[0]]
        nb = nbformat.read(path, as_version=4)
        cells = [
            c
            for c in nb.cells
            if c.cell_type == "code" and f'ebpf_lab.check("{exercise_id}"' in c.source
        ]
        assert len(cells) == 1, f"{path.name}: want one check cell for {exercise_id}"
        # commented out, so the notebook still runs top to bottom
        assert all(line.startswith("#") for line in cells[0].source.splitlines() if line.strip()), (
            cells[0].source
        )


@pytest.mark.skipif(not IS_ROOT, reason="runs the answer's C in the kernel: root")
def test_a_kernel_check_runs_live_during_a_replay(tmp_path: Path, no_leaks) -> None:
    """While a recording is replayed, a check that runs C still uses the kernel, and the
    replay's own call order is untouched."""
    (tmp_path / recordings.MANIFEST).write_text(
        json.dumps({"format": 1, "kernel": "x", "recorded_at": None, "entries": []})
    )
    ebpf_lab.replay(tmp_path)
    try:
        result = ebpf_lab.check("02.1", solution("02.1"))
        assert result.ok, str(result)
        assert recordings.current().cursor == {}
    finally:
        recordings.off()
