"""The registered exercises and their solutions (``instructor/solutions/<id>.*``), for the tests
that check the checks: ``tests/unit/test_exercise_checks.py`` (answers about recorded frames) and
``tests/test_checks.py`` (C answers and predictions, run in the kernel)."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

from ebpf_lab.classroom import checks

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "instructor" / "solutions"
EXERCISES = checks.exercises()
IDS = list(EXERCISES["id"])
NEEDS_KERNEL = dict(zip(EXERCISES["id"], EXERCISES["needs_kernel"]))
#: exercises whose check runs in the kernel (root): the answer's C, or the run a prediction names
KERNEL_IDS = [i for i in IDS if NEEDS_KERNEL[i]]
#: exercises whose check applies the answer to recorded frames (no kernel)
FRAME_IDS = [i for i in IDS if not NEEDS_KERNEL[i]]


def solution_file(exercise_id: str) -> Path:
    """The one solution file of ``exercise_id``."""
    found = [p for p in SOLUTIONS.iterdir() if p.name.startswith(f"{exercise_id}.")]
    assert len(found) == 1, f"want one solution file for {exercise_id}, found {found}"
    return found[0]


def solution(exercise_id: str) -> Any:
    """The solution: C source as text, or a Python file's ``answer``."""
    path = solution_file(exercise_id)
    if path.name.endswith(".c"):
        return path.read_text()
    return runpy.run_path(str(path))["answer"]
