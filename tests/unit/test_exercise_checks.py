"""Exercises whose checks apply the answer to recorded frames (no root, no BCC, no kernel
programs): every solution passes, typical wrong answers fail and say why; what every exercise
shares: one solution each, a commented check cell in its notebook, the result's look; and the
pure helpers the checks share.

The exercises whose checks run in the kernel (C answers, predictions compared with a run) are
checked in ``tests/test_checks.py``.
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
    good = ebpf_lab.check("10.5", solution("10.5"))
    bad = ebpf_lab.check("10.5", 42)
    assert repr(good).startswith("✓ 10.5 Which TCP numbers a test can compare exactly: right")
    assert "✓ 10.5" in good._repr_markdown_() and "right" in good._repr_markdown_()
    assert repr(bad).startswith("✗ 10.5")
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


# ------------------------------------------------- the helpers the lessons' checks share


def _map(**columns: list[Any]) -> Any:
    import pandas as pd

    return pd.DataFrame(columns)


def test_judge_maps_takes_the_first_right_map_and_else_says_what_was_wrong_first() -> None:
    said: list[str] = []

    def judge(name: str, counts: Any, frame: Any) -> Any:
        said.append(name)
        if counts.get(7) == 3:
            return checks.Right(f"right: {name}")
        return f"{name} holds {counts.get(7)} for 7"

    maps = {
        "names": _map(comm=["a"], value=[1]),  # keyed by text: not read by one_int_key
        "first": _map(key=[7, 8], value=[2, 5]),
        "second": _map(key=[7], value=[3]),
    }
    assert checks.judge_maps(maps, judge, declare="X").message == "right: second"
    assert said == ["first", "second"]
    with pytest.raises(checks.Wrong) as wrong:
        checks.judge_maps({"first": maps["first"]}, judge, declare="X", expected={7: 3})
    assert wrong.value.message == "first holds 2 for 7"
    assert wrong.value.details["expected"] == {7: 3}


def test_judge_maps_names_the_declaration_when_no_map_fits() -> None:
    def judge(name: str, counts: Any, frame: Any) -> Any:
        raise AssertionError("no map should be judged")

    with pytest.raises(checks.Wrong, match=r"no map to read: declare BPF_HASH\(c, u32, u64\)"):
        checks.judge_maps({}, judge, declare="BPF_HASH(c, u32, u64)")
    texty = {"names": _map(comm=["a"], value=[1])}
    with pytest.raises(checks.Wrong, match=r"no map of yours \(names\) has the key"):
        checks.judge_maps(texty, judge, declare="BPF_HASH(c, u32, u64)")
    with pytest.raises(checks.Wrong, match="^keyed by text$"):
        checks.judge_maps(texty, judge, declare="x", unfit="keyed by text")


def test_two_int_keys_counts_per_pair_and_one_text_key_per_name() -> None:
    pairs = checks.two_int_keys(_map(tid=[5, 5, 6], slot=[3, 4, 3], value=[1, 2, 4]))
    assert pairs.to_dict() == {(5, 3): 1, (5, 4): 2, (6, 3): 4}
    names = checks.one_text_key(_map(comm=["a", "b"], value=[3, 4]))
    assert names.to_dict() == {"a": 3, "b": 4}
    assert checks.two_int_keys(_map(key=[1], value=[1])) is None


def test_a_prediction_has_exactly_the_keys_and_whole_numbers() -> None:
    assert checks.prediction({"a": 1, "b": 0}, ["a", "b"], "x") == {"a": 1, "b": 0}
    with pytest.raises(checks.Wrong, match=r"exactly the keys \['a', 'b'\].*: calls of a"):
        checks.prediction({"a": 1}, ["a", "b"], "calls of a")
    with pytest.raises(checks.Wrong, match=r"for \['a'\] are not whole numbers"):
        checks.prediction({"a": True, "b": 2}, ["a", "b"], "x")
    with pytest.raises(checks.Wrong, match=r"for \['b'\] are not whole numbers"):
        checks.prediction({"a": 1, "b": "2"}, ["a", "b"], "x")


def test_named_map_names_the_maps_there_are() -> None:
    frame = _map(key=[0], value=[1])
    assert checks.named_map({"dist": frame}, "dist", "D") is frame
    with pytest.raises(checks.Wrong, match=r"no map called dist \(it has: other\): declare D"):
        checks.named_map({"other": frame}, "dist", "D")


def test_ring_buffer_records_take_a_header_and_8_byte_alignment() -> None:
    from ebpf_lab.lessons.l08_data_transfer import exercises as l08

    assert [l08.record_size(n) for n in (1, 8, 12, 16, 17, 40)] == [16, 16, 24, 24, 32, 48]
    source = l08._ring_fill_source()
    for i, size in enumerate(l08.SIZES):
        assert f"BPF_RINGBUF_OUTPUT(ring{size}, 1);" in source
        assert f"kept.atomic_increment({i});" in source
