"""Exercises whose checks apply the answer to recorded frames (pure pandas: no root, no BCC, no
kernel programs): every solution passes, typical wrong answers fail and say why; and what every
exercise shares: one solution each, a commented check cell in its notebook, the result's look.

The exercises whose checks run C in the kernel are checked in ``tests/test_checks.py``.
"""

from __future__ import annotations

from typing import Any

import nbformat
import pytest
from exercise_answers import FRAME_IDS, IDS, NEEDS_KERNEL, SOLUTIONS, solution

import ebpf_lab
from ebpf_lab.classroom import checks


def test_each_exercise_has_one_solution_and_each_solution_an_exercise() -> None:
    assert IDS, "no exercises registered"
    files = {
        p.name.split(".bpf.c")[0].removesuffix(".py")
        for p in SOLUTIONS.iterdir()
        if p.name[:1].isdigit()
    }
    assert files == set(IDS)


@pytest.mark.parametrize("exercise_id", FRAME_IDS)
def test_solution_passes(exercise_id: str) -> None:
    result = ebpf_lab.check(exercise_id, solution(exercise_id))
    assert result.ok, str(result)
    assert result.checked
    assert str(result).startswith(f"✓ {exercise_id}")
    assert result.message.startswith("right")


# (exercise, wrong answer, words the message must say)
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
    ("03.2", lambda df: df.groupby("ppid")["command"].unique(), ["listed `command`", "filename"]),
    ("03.2", "df.groupby('pid')['filename'].unique()", ["grouped by `pid`", "ppid"]),
    ("03.2", lambda df: df.groupby("ppid")["filename"].agg(list), ["repeats", "unique()"]),
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
    (
        "15.1",
        lambda r, o: dict(zip(r.insn, r.object_offset)),
        ["compiled with", "struct and field name"],
    ),
    ("15.1", lambda r, o: dict(zip(r.insn, r.kernel_offset)), ["this kernel's offsets"]),
    (
        "15.1",
        lambda r, o: {x.relo: o.get(f"{x.struct}.{x.field}") for x in r.itertuples()},
        ["insn column"],
    ),
    (
        "15.1",
        lambda r, o: {
            x.insn: o.get(f"{x.struct}.{x.field}", x.object_offset) for x in r.itertuples()
        },
        ["no state field", "say None"],
    ),
    ("15.1", lambda r, o: o["task_struct.parent"], ["raised KeyError", "insn"]),
    ("15.1", 42, ["give a function of two arguments"]),
]


@pytest.mark.parametrize(
    "exercise_id, wrong, words", WRONG, ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG)]
)
def test_wrong_answer_fails_and_says_why(exercise_id: str, wrong: Any, words: list[str]) -> None:
    assert not NEEDS_KERNEL[exercise_id], f"{exercise_id} runs in the kernel: tests/test_checks.py"
    result = ebpf_lab.check(exercise_id, wrong)
    assert not result.ok, str(result)
    assert not result
    assert str(result).startswith(f"✗ {exercise_id}"), str(result)
    for word in words:
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
