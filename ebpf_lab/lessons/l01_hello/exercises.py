"""Lesson 01 (hello): checkable exercises. The check runs :func:`hello` in the kernel."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ebpf_lab.classroom.checks import Right, Wrong, exercise, named_execs, prediction
from ebpf_lab.core.errors import UnsupportedFeature

#: the name of the thread that starts the script (so its execve calls carry this comm)
CALLER = "lab01-caller"
#: the script's file name: a shell script whose only line is ``exec /bin/true``
SCRIPT = "lab01-script"
#: how often the workload starts the script
RUNS = 3
#: the names a prediction gives a count for
NAMES = (CALLER, SCRIPT, "sh", "true")
#: a question to think about for each name a prediction gets wrong
_HINTS = {
    CALLER: f"how many times does the thread named {CALLER} call execve() itself?",
    SCRIPT: "after the kernel has started the script, what is the process called, and what "
    "does `exec /bin/true` ask the kernel to do?",
    "sh": "does anybody call execve() to start /bin/sh, or does the kernel start the "
    "interpreter of a #! script inside the same execve()?",
    "true": "does /bin/true start any program?",
}


def _script_workload(folder: Path) -> Any:
    """The check's workload: :data:`RUNS` execs of a ``#!/bin/sh`` script, from :data:`CALLER`."""
    script = folder / SCRIPT
    script.write_text("#!/bin/sh\nexec /bin/true\n")
    script.chmod(0o755)
    return named_execs({CALLER: RUNS}, program=str(script))


@exercise(
    "01.2",
    title="Predict the lines of a script's run",
    asks=f"a dict predicting, before you run it, how many hello() lines carry each comm while a "
    f"thread named {CALLER!r} starts the script {SCRIPT!r} (#!/bin/sh, one line: exec /bin/true) "
    f"{RUNS} times: {{{', '.join(repr(n) + ': n' for n in NAMES)}}}",
    needs_kernel=True,
)
def predict_script_lines(answer: Any) -> Right:
    answer = prediction(answer, NAMES, "how many lines hello() shows with that comm")
    from ebpf_lab.lessons.l01_hello.hello import hello

    if shutil.which("sh", path="/bin") is None:
        raise UnsupportedFeature("sh", "there is no /bin/sh to interpret the script", "")
    folder = Path(tempfile.mkdtemp(prefix="ebpf-lab-check-"))
    try:
        df = hello(duration=0.3, workload=_script_workload(folder), live=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seen = df["comm"].astype(str).value_counts()
    measured = {n: int(seen.get(n, 0)) for n in NAMES}
    # "sh" and "true" may be other processes' names on this machine: only ours are known
    expected = {CALLER: RUNS, SCRIPT: RUNS, "sh": 0, "true": 0}
    if {n: measured[n] for n in (CALLER, SCRIPT)} != {CALLER: RUNS, SCRIPT: RUNS}:
        raise Wrong(
            f"the run did not show what the workload did ({measured}; it made {RUNS} execve "
            f"calls named {CALLER} and {RUNS} named {SCRIPT}): a line was lost. Run the check "
            "again",
            measured=measured,
        )
    wrong = [n for n in NAMES if answer[n] != expected[n]]
    if wrong:
        said = "; ".join(
            f"{n}: you said {answer[n]}, the workload made {expected[n]} such execve() calls"
            for n in wrong
        )
        raise Wrong(
            f"{said}. Think again: {_HINTS[wrong[0]]}",
            measured=measured,
            expected=expected,
        )
    return Right(
        f"right: {RUNS} lines named {CALLER} (hello reads the name of the caller, before the "
        f"exec replaces it) and {RUNS} named {SCRIPT}: the kernel started /bin/sh for the #! "
        "line inside that same execve, naming the process after the script's file, and the "
        f"script's `exec /bin/true` was a second execve by that process. None is named sh, and "
        f"true starts nothing. (This run's lines: {measured}; other processes on the machine "
        "may be called sh or true too.)",
        measured=measured,
        frame=df,
    )
