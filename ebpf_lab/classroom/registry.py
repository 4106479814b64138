"""Every lesson in one place: its notebook, folder, programs, exercises, solutions, kernel needs.

:data:`CATALOGUE` has one :class:`Lesson` per notebook. An entry names every file of its lesson:

* the notebook, ``notebooks/<notebook>``;
* the lesson folder, ``ebpf_lab/lessons/<folder>/`` (its Python, its C, its ``exercises.py``);
* its BPF programs, ``<folder>/<program>.bpf.c`` (names are unique across lessons, so
  :func:`ebpf_lab.program_source` finds a program by its name alone);
* its checkable exercises, the ids its ``exercises.py`` registers with
  :mod:`ebpf_lab.classroom.checks`, and their solutions, ``instructor/solutions/<id>.*``;
* what it needs from the kernel (feature names of :func:`ebpf_lab.doctor`; ``"a|b"`` needs
  either) and what it does instead when an optional feature is missing (``adapts``).

:func:`problems` compares the catalogue with the files in the tree (``tests/unit/test_registry.py``
asserts it finds none), and :func:`lesson_plan` joins the catalogue with the doctor to say, for
the kernel in front of you, which lessons run as written, which adapt (and how), and which cannot
run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ebpf_lab.show.frames import Schema

#: the repository (a source checkout: notebooks and instructor material are not installed)
REPO_DIR = Path(__file__).resolve().parents[2]
#: where the notebooks are
NOTEBOOKS_DIR = REPO_DIR / "notebooks"
#: where the lesson folders are
LESSONS_DIR = REPO_DIR / "ebpf_lab" / "lessons"
#: where the instructor's solutions to the checkable exercises are
SOLUTIONS_DIR = REPO_DIR / "instructor" / "solutions"
#: notebooks that are not lessons
NOT_LESSONS = ("index.ipynb",)

_NUMBER_RE = re.compile(r"^\d\d$")
_PROGRAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SOLUTION_SUFFIXES = (".bpf.c", ".py")


@dataclass(frozen=True)
class Lesson:
    """One lesson: its notebook, its files, what it needs from the kernel and its fallbacks.

    Attributes:
        number: two digits, e.g. ``"02"``; exercise ids of the lesson start with it.
        notebook: the notebook's file name in ``notebooks/``, starting with the number.
        title: what the lesson shows, in a line.
        needs: doctor features that must all be supported; an entry ``"a|b"`` needs either.
        adapts: ``{feature: what the lesson does instead}`` when the kernel lacks that feature.
        folder: the lesson folder in ``ebpf_lab/lessons/`` (``"l02_maps"``), or ``None``.
        no_folder: why a lesson has no folder (it must say, when ``folder`` is ``None``).
        programs: the names of its ``*.bpf.c`` files in its folder, without ``.bpf.c``.
        exercises: the ids its ``exercises.py`` registers, e.g. ``("02.1", "02.2")``.
        solutions: file names in ``instructor/solutions/``, one per exercise: ``<id>.bpf.c``
            (the answer is that C) or ``<id>.py`` (it defines ``answer``).
    """

    number: str
    notebook: str
    title: str
    needs: tuple[str, ...]
    adapts: dict[str, str] = field(default_factory=dict)
    folder: str | None = None
    no_folder: str = ""
    programs: tuple[str, ...] = ()
    exercises: tuple[str, ...] = ()
    solutions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def bad(what: str) -> ValueError:
            return ValueError(f"lesson {self.number!r} ({self.notebook}): {what}")

        if not _NUMBER_RE.match(str(self.number)):
            raise bad("the number must be two digits, e.g. '05'")
        if not (self.notebook.startswith(f"{self.number}-") and self.notebook.endswith(".ipynb")):
            raise bad(f"the notebook must be named '{self.number}-<topic>.ipynb'")
        if self.folder is None:
            if not self.no_folder:
                raise bad("a lesson without a folder says why in no_folder")
            if self.programs or self.exercises:
                raise bad("programs and exercises live in a lesson folder: name it in folder")
        elif not self.folder.startswith(f"l{self.number}_"):
            raise bad(f"the folder must be named 'l{self.number}_<topic>', got {self.folder!r}")
        for program in self.programs:
            if not _PROGRAM_RE.match(program):
                raise bad(f"a program is named as its file without .bpf.c, got {program!r}")
        for exercise_id in self.exercises:
            if not re.match(rf"^{self.number}\.\d+$", exercise_id):
                raise bad(f"exercise ids look like '{self.number}.1', got {exercise_id!r}")
        for name in self.solutions:
            if _solution_id(name) not in self.exercises:
                raise bad(
                    f"the solution {name!r} is not named '<id>.bpf.c' or '<id>.py' after "
                    f"one of its exercises {list(self.exercises)}"
                )
        for need in self.needs:
            if not need or any(not alt for alt in need.split("|")):
                raise bad(f"a need is a feature name or 'a|b', got {need!r}")

    def notebook_path(self, repo: Path = REPO_DIR) -> Path:
        """The notebook's path."""
        return repo / "notebooks" / self.notebook

    def folder_path(self, repo: Path = REPO_DIR) -> Path | None:
        """The lesson folder's path (``None`` for a lesson without a folder)."""
        return None if self.folder is None else repo / "ebpf_lab" / "lessons" / self.folder

    def program_paths(self, repo: Path = REPO_DIR) -> list[Path]:
        """The paths of the lesson's ``*.bpf.c`` files."""
        folder = self.folder_path(repo)
        return [] if folder is None else [folder / f"{p}.bpf.c" for p in self.programs]

    def solution_paths(self, repo: Path = REPO_DIR) -> list[Path]:
        """The paths of the solutions to the lesson's exercises."""
        return [repo / "instructor" / "solutions" / name for name in self.solutions]


def _solution_id(file_name: str) -> str | None:
    """``"02.1.bpf.c"`` -> ``"02.1"``; ``None`` for a name that is not a solution's."""
    for suffix in _SOLUTION_SUFFIXES:
        if file_name.endswith(suffix):
            return file_name[: -len(suffix)]
    return None


_EXEC_HOOK = {"kprobe": "hooks execve with the syscalls:sys_enter_execve tracepoint instead"}

CATALOGUE: tuple[Lesson, ...] = (
    Lesson(
        "00",
        "00-setup-check.ipynb",
        "Setup check: what this kernel can do",
        ("root", "bcc"),
        no_folder="the setup check is the doctor (ebpf_lab/kernel/doctor.py): no lesson folder, "
        "no programs of its own, no exercises",
    ),
    Lesson(
        "01",
        "01-hello.ipynb",
        "Hello, kernel: bpf_trace_printk on every execve",
        ("root", "bcc", "tracefs", "kprobe|tracepoint"),
        _EXEC_HOOK,
        folder="l01_hello",
        programs=("hello",),
        exercises=("01.2",),
        solutions=("01.2.py",),
    ),
    Lesson(
        "02",
        "02-maps-exec-per-uid.ipynb",
        "Maps: execs per user, counted in the kernel",
        ("root", "bcc", "kprobe|tracepoint", "hash_map"),
        _EXEC_HOOK,
        folder="l02_maps",
        programs=("exec_count", "counter_race"),
        exercises=("02.1", "02.2", "02.4"),
        solutions=("02.1.bpf.c", "02.2.bpf.c", "02.4.bpf.c"),
    ),
    Lesson(
        "03",
        "03-perf-buffer.ipynb",
        "Perf and ring buffers: one event per exec",
        ("root", "bcc", "kprobe|tracepoint", "btf", "perf_buffer", "ring_buffer"),
        _EXEC_HOOK,
        folder="l03_perf_buffer",
        programs=("exec_events",),
        exercises=("03.2", "03.3"),
        solutions=("03.2.bpf.c", "03.3.bpf.c"),
    ),
    Lesson(
        "04",
        "04-bytecode-and-verifier.ipynb",
        "Bytecode and the verifier",
        ("root", "bcc", "tracepoint"),
        folder="l04_verifier",
        programs=(
            "array_constant_key",
            "reject_null_check",
            "reject_out_of_bounds",
            "reject_unbounded_loop",
        ),
        exercises=("04.2",),
        solutions=("04.2.bpf.c",),
    ),
    Lesson(
        "05",
        "05-maps.ipynb",
        "Maps: hash, array, per-CPU, LRU, histograms",
        ("root", "bcc", "tracepoint", "hash_map", "array_map", "percpu_array", "lru_hash"),
        folder="l05_maps",
        programs=("write_counts", "lru_survivors", "size_histogram", "watch_list"),
        exercises=("05.4",),
        solutions=("05.4.bpf.c",),
    ),
    Lesson(
        "06",
        "06-helpers.ipynb",
        "Helpers: what a program may ask the kernel",
        ("root", "bcc", "tracepoint"),
        folder="l06_helpers",
        programs=("helper_calls", "helper_probe"),
        exercises=("06.1",),
        solutions=("06.1.bpf.c",),
    ),
    Lesson(
        "07",
        "07-attach-points.ipynb",
        "Attach points: one counter, up to seven hooks",
        ("root", "bcc", "tracepoint", "raw_tracepoint", "uprobe", "perf_event"),
        {
            "kprobe": "explains kprobes and kretprobes (the doctor's reason) and runs the other "
            "attach types live",
            "fentry": "explains why fentry is unavailable (the doctor's reason) and runs the other "
            "attach types live",
        },
        folder="l07_attach_points",
        programs=("attach_count", "user_probes", "read_latency", "syscall_prefix"),
        exercises=("07.1",),
        solutions=("07.1.bpf.c",),
    ),
    Lesson(
        "08",
        "08-data-transfer.ipynb",
        "Data transfer: trace vs perf vs ring buffer",
        ("root", "bcc", "tracefs", "tracepoint", "perf_buffer", "ring_buffer"),
        folder="l08_data_transfer",
        programs=("transfer", "transfer_batch"),
        exercises=("08.3",),
        solutions=("08.3.py",),
    ),
    Lesson(
        "09",
        "09-tracing.ipynb",
        "Tracing: openat() latency per call and as a histogram; what strace costs",
        ("root", "bcc", "tracepoint", "hash_map", "ring_buffer"),
        folder="l09_tracing",
        programs=("syscall_latency",),
        exercises=("09.4",),
        solutions=("09.4.bpf.c",),
    ),
    Lesson(
        "10",
        "10-networking.ipynb",
        "Networking: an XDP firewall on a private veth cable; tc egress beside XDP ingress",
        ("root", "bcc", "xdp", "hash_map", "array_map"),
        folder="l10_networking",
        programs=("xdp_firewall", "tc_egress"),
        exercises=("10.5", "10.7"),
        solutions=("10.5.py", "10.7.py"),
    ),
    Lesson(
        "11",
        "11-security.ipynb",
        "Security: exec watchlist (detection) and BPF LSM (enforcement)",
        ("root", "bcc", "btf", "tracepoint", "hash_map", "perf_buffer"),
        {
            "lsm": "explains why BPF LSM cannot deny here (the doctor's reason) and shows "
            "tracepoint detection instead, labelled as detection, not enforcement"
        },
        folder="l11_security",
        programs=("exec_watch", "exec_deny_lsm"),
        exercises=("11.3",),
        solutions=("11.3.py",),
    ),
    Lesson(
        "12",
        "12-performance.ipynb",
        "Performance: CPU profiling with stacks, run-queue latency",
        ("root", "bcc", "perf_event", "tracepoint", "hash_map"),
        folder="l12_performance",
        programs=("profile", "run_queue_latency"),
        exercises=("12.1",),
        solutions=("12.1.py",),
    ),
    Lesson(
        "13",
        "13-bpftool.ipynb",
        "bpftool on the lab's own program; what a program costs, measured by the kernel",
        ("root", "bcc", "tracepoint", "hash_map"),
        folder="l13_bpftool",
        programs=("bpftool_subject",),
        exercises=("13.1",),
        solutions=("13.1.py",),
    ),
    Lesson(
        "14",
        "14-control-flow.ipynb",
        "Control flow: a loop's cost to the verifier, bpf_loop, a tail call, a BPF-to-BPF call",
        ("root", "bcc", "tracepoint", "array_map"),
        folder="l14_control_flow",
        programs=("loop_cost", "tail_call", "bpf_to_bpf_call"),
    ),
    Lesson(
        "15",
        "15-core-libbpf.ipynb",
        "CO-RE: lesson 03's exec events as one clang-built object, loaded by libbpf",
        ("root", "bcc", "btf", "tracepoint", "ring_buffer", "array_map"),
        folder="l15_core_libbpf",
        programs=("exec_core",),
        exercises=("15.1",),
        solutions=("15.1.py",),
    ),
)


def lesson(number: str) -> Lesson:
    """The catalogue's entry for lesson ``number`` (e.g. ``"05"``).

    Raises:
        ValueError: no lesson has that number (the message lists the numbers there are).
    """
    for entry in CATALOGUE:
        if entry.number == number:
            return entry
    known = ", ".join(e.number for e in CATALOGUE)
    raise ValueError(f"no lesson {number!r}; the lessons are {known}")


def registered_exercises() -> dict[str, str]:
    """``{exercise id: the module that registered it}`` for every check registered so far.

    Importing :mod:`ebpf_lab` (or :mod:`ebpf_lab.lessons`) registers every lesson's checks.
    """
    from ebpf_lab.classroom import checks

    return {ex_id: ex.fn.__module__ for ex_id, ex in checks._REGISTRY.items()}


def problems(
    catalogue: Sequence[Lesson] = CATALOGUE,
    repo: Path = REPO_DIR,
    exercises: Mapping[str, str] | None = None,
) -> list[str]:
    """What in the tree disagrees with the catalogue, one sentence each (none: ``[]``).

    Checks that every registered notebook, folder, program and solution exists; that every
    notebook (but ``index.ipynb``), lesson folder and ``*.bpf.c`` file is in an entry; that no two
    programs share a name; that the exercises each lesson's ``exercises.py`` registers are those
    its entry lists; that every solution file belongs to a listed exercise.

    Args:
        catalogue: the entries (default :data:`CATALOGUE`).
        repo: the repository to compare with (default: this checkout).
        exercises: ``{exercise id: registering module}`` (default :func:`registered_exercises`).
    """
    if exercises is None:
        exercises = registered_exercises()
    found: list[str] = []
    lessons_dir = repo / "ebpf_lab" / "lessons"
    solutions_dir = repo / "instructor" / "solutions"

    for what, counts in (
        ("number", Counter(e.number for e in catalogue)),
        ("notebook", Counter(e.notebook for e in catalogue)),
        ("folder", Counter(e.folder for e in catalogue if e.folder)),
        ("program name", Counter(p for e in catalogue for p in e.programs)),
        ("exercise", Counter(x for e in catalogue for x in e.exercises)),
    ):
        for name, n in sorted(counts.items()):
            if n > 1:
                found.append(f"{n} entries list the {what} {name!r}: each belongs to one lesson")

    for entry in catalogue:
        where = f"lesson {entry.number}"
        registered = [entry.notebook_path(repo), *entry.program_paths(repo)]
        registered += entry.solution_paths(repo)
        folder = entry.folder_path(repo)
        if folder is not None and not folder.is_dir():
            found.append(f"{where}: its folder {_rel(folder, repo)} is missing")
        for path in registered:
            if not path.is_file():
                found.append(f"{where}: {_rel(path, repo)} is missing")
        unsolved = set(entry.exercises) - {_solution_id(s) for s in entry.solutions}
        for exercise_id in sorted(unsolved):
            found.append(f"{where}: exercise {exercise_id} has no solution in its entry")

    notebooks = {e.notebook for e in catalogue}
    for path in sorted((repo / "notebooks").glob("*.ipynb")):
        if path.name not in notebooks and path.name not in NOT_LESSONS:
            found.append(f"notebooks/{path.name} is in no catalogue entry")

    folders = {e.folder for e in catalogue if e.folder}
    if lessons_dir.is_dir():
        for path in sorted(lessons_dir.iterdir()):
            if path.is_dir() and path.name != "__pycache__" and path.name not in folders:
                found.append(f"the lesson folder {_rel(path, repo)} is in no catalogue entry")
        programs = {p for e in catalogue for p in e.program_paths(repo)}
        on_disk = sorted(repo.joinpath("ebpf_lab").rglob("*.bpf.c"))
        for path in on_disk:
            if path not in programs:
                found.append(f"the program {_rel(path, repo)} is in no catalogue entry")
        names = Counter(path.name for path in on_disk)
        for name, n in sorted(names.items()):
            if n > 1:
                found.append(f"{n} files are called {name}: program names must be unique")

    listed = {x: e for e in catalogue for x in e.exercises}
    for exercise_id, module in sorted(exercises.items()):
        parts = module.split(".")
        folder = parts[2] if parts[:2] == ["ebpf_lab", "lessons"] and len(parts) > 3 else None
        entry = listed.get(exercise_id)
        if entry is None:
            found.append(f"exercise {exercise_id} (registered by {module}) is in no entry")
        elif entry.folder != folder:
            found.append(
                f"exercise {exercise_id} is listed by lesson {entry.number} but registered by "
                f"{module}, not by ebpf_lab.lessons.{entry.folder}.exercises"
            )
    for exercise_id, entry in sorted(listed.items()):
        if exercise_id not in exercises:
            found.append(
                f"lesson {entry.number} lists exercise {exercise_id}, which no check registers"
            )

    if solutions_dir.is_dir():
        for path in sorted(solutions_dir.iterdir()):
            if path.name == "README.md":
                continue
            exercise_id = _solution_id(path.name)
            if exercise_id is None or exercise_id not in listed:
                found.append(f"instructor/solutions/{path.name} solves no listed exercise")
            elif path.name not in listed[exercise_id].solutions:
                found.append(f"instructor/solutions/{path.name} is not in its lesson's entry")
    return found


def _rel(path: Path, repo: Path) -> str:
    return str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path)


#: what :func:`lesson_plan` returns
PLAN = Schema(lesson="str", title="str", needs="str", status="str", on_this_kernel="str")


def _supported(need: str, features: dict[str, bool]) -> bool:
    return any(features.get(alt, False) for alt in need.split("|"))


def lesson_plan(doctor_frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Which lessons run here as written, which adapt, and which cannot run.

    Args:
        doctor_frame: a frame from :func:`ebpf_lab.doctor` (default: run/cached doctor()).

    Returns:
        One row per lesson: ``lesson``, ``title``, ``needs``, ``status`` (``"runs"``,
        ``"adapts"`` or ``"cannot run"``), ``on_this_kernel`` (what it will do here).

    Raises:
        ValueError: ``doctor_frame`` is not a frame with ``feature`` and ``supported`` columns.
    """
    if doctor_frame is None:
        from ebpf_lab.kernel.doctor import doctor

        doctor_frame = doctor()
    if not isinstance(doctor_frame, pd.DataFrame) or not {"feature", "supported"} <= set(
        doctor_frame.columns
    ):
        raise ValueError(
            "lesson_plan() takes the frame ebpf_lab.doctor() returns (columns feature and "
            f"supported), got {type(doctor_frame).__name__}"
        )
    features = dict(zip(doctor_frame["feature"], doctor_frame["supported"].astype(bool)))
    rows = []
    for entry in CATALOGUE:
        missing = [n for n in entry.needs if not _supported(n, features)]
        adapting = {f: how for f, how in entry.adapts.items() if not features.get(f, False)}
        if missing:
            status = "cannot run"
            note = "missing: " + ", ".join(missing)
        elif adapting:
            status = "adapts"
            note = "; ".join(f"no {f}: {how}" for f, how in adapting.items())
        else:
            status = "runs"
            note = "runs as written"
        rows.append(
            {
                "lesson": entry.number,
                "title": entry.title,
                "needs": ", ".join(n.replace("|", " or ") for n in entry.needs),
                "status": status,
                "on_this_kernel": note,
            }
        )
    return PLAN.frame(rows)
