"""The lesson registry: every file of every lesson is in one entry, and the tree agrees with it.

No root, no kernel: the catalogue is compared with the files of this checkout and with the exercise
checks that importing :mod:`ebpf_lab` registers; :func:`problems` is also run on small trees made
here, one fault each, to show that it names each fault.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

import ebpf_lab  # noqa: F401  (registers every lesson's exercise checks)
from ebpf_lab.classroom import registry
from ebpf_lab.classroom.registry import CATALOGUE, NOTEBOOKS_DIR, Lesson, lesson, problems
from ebpf_lab.core.loader import program_path


def test_this_tree_agrees_with_the_catalogue() -> None:
    assert problems() == []


def test_every_registered_exercise_is_in_the_entry_of_the_lesson_that_registers_it() -> None:
    registered = registry.registered_exercises()
    listed = {x: e.folder for e in CATALOGUE for x in e.exercises}
    assert set(registered) == set(listed)
    for exercise_id, module in registered.items():
        assert module == f"ebpf_lab.lessons.{listed[exercise_id]}.exercises"


def test_each_program_is_found_by_its_name_in_its_lesson_folder() -> None:
    for entry in CATALOGUE:
        for name, path in zip(entry.programs, entry.program_paths()):
            assert program_path(name) == path


def test_lesson_00_is_the_doctor_and_says_it_has_no_folder() -> None:
    setup = lesson("00")
    assert setup.folder is None and setup.folder_path() is None
    assert "doctor" in setup.no_folder
    assert setup.notebook_path() == NOTEBOOKS_DIR / "00-setup-check.ipynb"


def test_every_other_lesson_has_a_folder_named_after_its_number() -> None:
    for entry in CATALOGUE[1:]:
        assert entry.folder is not None and entry.folder.startswith(f"l{entry.number}_")
        assert entry.folder_path().is_dir()


def test_lesson_by_number() -> None:
    assert lesson("05").notebook == "05-maps.ipynb"
    with pytest.raises(ValueError, match=r"no lesson '99'; the lessons are 00, 01, .*, 12"):
        lesson("99")


# --- a small tree: two lessons, one fault at a time -------------------------------------------

MINI = (
    Lesson("00", "00-setup.ipynb", "setup", ("root",), no_folder="the doctor"),
    Lesson(
        "01",
        "01-a.ipynb",
        "a",
        ("root", "kprobe|tracepoint"),
        folder="l01_a",
        programs=("alpha",),
        exercises=("01.1",),
        solutions=("01.1.py",),
    ),
    Lesson(
        "02",
        "02-b.ipynb",
        "b",
        ("root",),
        folder="l02_b",
        programs=("beta", "gamma"),
        exercises=("02.1", "02.2"),
        solutions=("02.1.bpf.c", "02.2.py"),
    ),
)
MINI_EXERCISES = {
    "01.1": "ebpf_lab.lessons.l01_a.exercises",
    "02.1": "ebpf_lab.lessons.l02_b.exercises",
    "02.2": "ebpf_lab.lessons.l02_b.exercises",
}


def make_tree(root: Path) -> Path:
    """A repository with exactly MINI's files (and the notebook index, which is no lesson)."""
    files = [
        "notebooks/index.ipynb",
        "instructor/solutions/README.md",
        "ebpf_lab/lessons/__init__.py",
    ]
    for entry in MINI:
        files += [str(p.relative_to(root)) for p in entry.program_paths(root)]
        files += [str(p.relative_to(root)) for p in entry.solution_paths(root)]
        files.append(str(entry.notebook_path(root).relative_to(root)))
        if entry.folder:
            files.append(f"ebpf_lab/lessons/{entry.folder}/exercises.py")
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    (root / "ebpf_lab/lessons/__pycache__").mkdir()
    return root


def test_a_tree_that_matches_has_no_problems(tmp_path: Path) -> None:
    assert problems(MINI, make_tree(tmp_path), MINI_EXERCISES) == []


@pytest.mark.parametrize(
    "remove, expected",
    [
        ("notebooks/01-a.ipynb", "lesson 01: {} is missing"),
        ("ebpf_lab/lessons/l02_b/gamma.bpf.c", "lesson 02: {} is missing"),
        ("instructor/solutions/02.2.py", "lesson 02: {} is missing"),
    ],
)
def test_a_missing_file_is_named(tmp_path: Path, remove: str, expected: str) -> None:
    repo = make_tree(tmp_path)
    (repo / remove).unlink()
    assert problems(MINI, repo, MINI_EXERCISES) == [expected.format(remove)]


def test_a_missing_folder_is_named_with_its_files(tmp_path: Path) -> None:
    repo = make_tree(tmp_path)
    for path in sorted((repo / "ebpf_lab/lessons/l01_a").iterdir()):
        path.unlink()
    (repo / "ebpf_lab/lessons/l01_a").rmdir()
    assert problems(MINI, repo, MINI_EXERCISES) == [
        "lesson 01: its folder ebpf_lab/lessons/l01_a is missing",
        "lesson 01: ebpf_lab/lessons/l01_a/alpha.bpf.c is missing",
    ]


@pytest.mark.parametrize(
    "add, expected",
    [
        ("notebooks/03-c.ipynb", "{} is in no catalogue entry"),
        ("ebpf_lab/lessons/l03_c/__init__.py", "the lesson folder {} is in no catalogue entry"),
        ("ebpf_lab/lessons/l02_b/delta.bpf.c", "the program {} is in no catalogue entry"),
        ("instructor/solutions/02.3.py", "{} solves no listed exercise"),
        ("instructor/solutions/02.1.py", "{} is not in its lesson's entry"),
    ],
)
def test_an_unregistered_file_is_named(tmp_path: Path, add: str, expected: str) -> None:
    repo = make_tree(tmp_path)
    (repo / add).parent.mkdir(parents=True, exist_ok=True)
    (repo / add).write_text("")
    assert problems(MINI, repo, MINI_EXERCISES) == [
        expected.format(add.rpartition("/__init__.py")[0] or add)
    ]


def test_two_programs_with_one_name_are_named(tmp_path: Path) -> None:
    repo = make_tree(tmp_path)
    (repo / "ebpf_lab/lessons/l02_b/alpha.bpf.c").write_text("")
    twice = (
        MINI[0],
        MINI[1],
        Lesson(**{**MINI[2].__dict__, "programs": ("beta", "gamma", "alpha")}),
    )
    assert problems(twice, repo, MINI_EXERCISES) == [
        "2 entries list the program name 'alpha': each belongs to one lesson",
        "2 files are called alpha.bpf.c: program names must be unique",
    ]


def test_a_program_file_with_a_name_taken_elsewhere_is_named(tmp_path: Path) -> None:
    repo = make_tree(tmp_path)
    (repo / "ebpf_lab/lessons/l02_b/alpha.bpf.c").write_text("")
    assert problems(MINI, repo, MINI_EXERCISES) == [
        "the program ebpf_lab/lessons/l02_b/alpha.bpf.c is in no catalogue entry",
        "2 files are called alpha.bpf.c: program names must be unique",
    ]


@pytest.mark.parametrize(
    "exercises, expected",
    [
        (
            {**MINI_EXERCISES, "02.3": "ebpf_lab.lessons.l02_b.exercises"},
            "exercise 02.3 (registered by ebpf_lab.lessons.l02_b.exercises) is in no entry",
        ),
        (
            {k: v for k, v in MINI_EXERCISES.items() if k != "02.2"},
            "lesson 02 lists exercise 02.2, which no check registers",
        ),
        (
            {**MINI_EXERCISES, "02.1": "ebpf_lab.lessons.l01_a.exercises"},
            "exercise 02.1 is listed by lesson 02 but registered by "
            "ebpf_lab.lessons.l01_a.exercises, not by ebpf_lab.lessons.l02_b.exercises",
        ),
    ],
    ids=["registered-not-listed", "listed-not-registered", "registered-by-another-lesson"],
)
def test_exercises_must_match_their_entry(
    tmp_path: Path, exercises: dict[str, str], expected: str
) -> None:
    assert problems(MINI, make_tree(tmp_path), exercises) == [expected]


def test_an_exercise_without_a_solution_in_its_entry_is_named(tmp_path: Path) -> None:
    repo = make_tree(tmp_path)
    (repo / "instructor/solutions/02.2.py").unlink()
    unsolved = (MINI[0], MINI[1], Lesson(**{**MINI[2].__dict__, "solutions": ("02.1.bpf.c",)}))
    assert problems(unsolved, repo, MINI_EXERCISES) == [
        "lesson 02: exercise 02.2 has no solution in its entry"
    ]


# --- an entry that cannot be right is refused when it is written --------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"number": "1"}, "the number must be two digits"),
        ({"notebook": "02-a.ipynb"}, "the notebook must be named '01-<topic>.ipynb'"),
        ({"folder": "l02_a"}, "the folder must be named 'l01_<topic>'"),
        ({"folder": None}, "a lesson without a folder says why in no_folder"),
        ({"folder": None, "no_folder": "none"}, "programs and exercises live in a lesson folder"),
        ({"programs": ("alpha.bpf.c",)}, "a program is named as its file without .bpf.c"),
        ({"exercises": ("02.1",), "solutions": ()}, "exercise ids look like '01.1'"),
        ({"solutions": ("01.2.py",)}, "the solution '01.2.py' is not named"),
        ({"needs": ("root", "kprobe|")}, "a need is a feature name or 'a|b'"),
    ],
)
def test_a_bad_entry_raises(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=r"^lesson '\d+' \(\d+-a?.ipynb\): " + re.escape(message)):
        Lesson(**{**MINI[1].__dict__, **changes})


# --- lesson_plan: the catalogue joined with a doctor frame ---------------------------------------

#: every feature a lesson needs, supported; kprobe, fentry and lsm not
DOCTOR = pd.DataFrame(
    {
        "feature": sorted({a for e in CATALOGUE for n in e.needs for a in n.split("|")})
        + ["kprobe", "fentry", "lsm"],
    }
)


def doctor_frame(without: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = DOCTOR.copy()
    frame["supported"] = [f not in {"kprobe", "fentry", "lsm", *without} for f in frame["feature"]]
    return frame


def test_lesson_plan_says_which_lessons_adapt_and_how() -> None:
    plan = registry.lesson_plan(doctor_frame())
    assert list(plan.columns) == ["lesson", "title", "needs", "status", "on_this_kernel"]
    assert list(plan["lesson"]) == [e.number for e in CATALOGUE]
    adapts = plan[plan["status"] == "adapts"].set_index("lesson")["on_this_kernel"]
    assert list(adapts.index) == ["01", "02", "03", "07", "11"]
    assert adapts["01"] == (
        "no kprobe: hooks execve with the syscalls:sys_enter_execve tracepoint instead"
    )
    assert (
        adapts["07"].startswith("no kprobe: explains kprobes") and "; no fentry: " in adapts["07"]
    )
    assert adapts["11"].startswith("no lsm: explains why BPF LSM cannot deny here")
    runs = plan[plan["status"] == "runs"]
    assert set(runs["on_this_kernel"]) == {"runs as written"}
    assert plan.set_index("lesson").loc["01", "needs"] == "root, bcc, tracefs, kprobe or tracepoint"


def test_lesson_plan_says_what_is_missing_when_a_lesson_cannot_run() -> None:
    plan = registry.lesson_plan(doctor_frame(without=("tracepoint", "hash_map"))).set_index(
        "lesson"
    )
    cannot = plan[plan["status"] == "cannot run"]["on_this_kernel"]
    assert cannot.to_dict() == {
        "01": "missing: kprobe|tracepoint",
        "02": "missing: kprobe|tracepoint, hash_map",
        "03": "missing: kprobe|tracepoint",
        "04": "missing: tracepoint",
        "05": "missing: tracepoint, hash_map",
        "06": "missing: tracepoint",
        "07": "missing: tracepoint",
        "08": "missing: tracepoint",
        "09": "missing: tracepoint, hash_map",
        "10": "missing: hash_map",
        "11": "missing: tracepoint, hash_map",
        "12": "missing: tracepoint, hash_map",
        "13": "missing: tracepoint, hash_map",
        "14": "missing: tracepoint",
        "15": "missing: tracepoint",
    }
    assert plan.loc["00", "status"] == "runs"


@pytest.mark.parametrize("bad", [pd.DataFrame({"feature": ["root"]}), "doctor", [("root", True)]])
def test_lesson_plan_refuses_what_is_not_a_doctor_frame(bad: object) -> None:
    with pytest.raises(ValueError, match="takes the frame ebpf_lab.doctor.. returns"):
        registry.lesson_plan(bad)  # type: ignore[arg-type]
