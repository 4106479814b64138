"""Lesson 03 (perf and ring buffers): checkable exercises. Both run the learner's C in the
kernel."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from ebpf_lab.classroom.checks import (
    Right,
    exercise,
    judge_maps,
    named_execs,
    one_text_key,
    run_answer,
    shown_keys,
)
from ebpf_lab.kernel.btf import task_offsets_cflags

EXECVE = "syscalls:sys_enter_execve"
#: how many programs the check's middle process starts
CHILD_RUNS = 4
#: the middle process: it runs /bin/true argv[1] times, one after the other
_MIDDLE = (
    "import subprocess, sys\n"
    "for _ in range(int(sys.argv[1])):\n"
    "    subprocess.run(['/bin/true'], check=True, stdin=subprocess.DEVNULL)\n"
)


def _family_workload(box: dict[str, int]) -> Any:
    """The 03.2 workload: this process starts a Python process (one execve, whose parent is this
    process), which starts /bin/true :data:`CHILD_RUNS` times (execs whose parent is it)."""

    def run() -> None:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _MIDDLE, str(CHILD_RUNS)], stdin=subprocess.DEVNULL
        )
        box["middle"] = proc.pid
        box["returncode"] = proc.wait()

    return run


@exercise(
    "03.2",
    title="Execs per parent, counted in the kernel",
    asks="BPF C as a string: a BPF_HASH(counts, u32, u64) keyed by the parent's pid, read like "
    "parent_tgid() in exec_events.bpf.c (the check compiles it with the same "
    "-DTASK_REAL_PARENT_OFF and -DTASK_TGID_OFF), counting execve calls; its function is "
    "attached to syscalls:sys_enter_execve",
    needs_kernel=True,
)
def execs_per_parent(answer: str, fn: str | None = None) -> Right:
    box: dict[str, int] = {}
    maps = run_answer(
        answer,
        tracepoint=EXECVE,
        fn=fn,
        workload=_family_workload(box),
        cflags=task_offsets_cflags(),
    )
    middle, me = box["middle"], os.getpid()
    if box.get("returncode") != 0:
        raise RuntimeError(f"the check's middle process failed (exit {box.get('returncode')})")

    def judge(name: str, counts: pd.Series, frame: pd.DataFrame) -> Right | str:
        got = int(counts.get(middle, 0))
        if got == CHILD_RUNS:
            return Right(
                f"right: the map `{name}` counted {CHILD_RUNS} execs whose parent is the "
                f"middle process {middle}: the {CHILD_RUNS} /bin/true it started. Its own "
                f"exec (python3) counts under its parent, this process {me} "
                f"({int(counts.get(me, 0))} here). The caller of execve is the child; the "
                "parent is the process that forked it",
                map=frame,
            )
        if got == 1 and int(counts.get(me, 0)) == 0:
            return (
                f"the map `{name}` has 1 for the middle process {middle}, its own exec: it is "
                "keyed by the caller's pid (bpf_get_current_pid_tgid() >> 32, the task's own "
                "tgid). The parent is task->real_parent: read that pointer at "
                "TASK_REAL_PARENT_OFF first, then the tgid at TASK_TGID_OFF of the parent"
            )
        if got == 0:
            return (
                f"the map `{name}` has no entry for the middle process {middle}, which started "
                f"{CHILD_RUNS} programs (it has {shown_keys(counts)}): key it by the parent's "
                "tgid, two bpf_probe_read_kernel() calls as in parent_tgid()"
            )
        return (
            f"the middle process {middle} started {CHILD_RUNS} programs; `{name}` counts {got} "
            "execs with it as the parent: add 1 once per execve"
        )

    return judge_maps(
        maps,
        judge,
        declare="BPF_HASH(counts, u32, u64) keyed by the parent's pid",
        expected={middle: CHILD_RUNS},
    )


@exercise(
    "03.3",
    title="The name after exec",
    asks="BPF C as a string that attaches itself with TRACEPOINT_PROBE(category, event) and "
    "counts execs per command name *after* the exec, in a BPF_HASH keyed by "
    "struct key_t { char comm[16]; }",
    needs_kernel=True,
)
def name_after_exec(answer: str) -> Right:
    tag = secrets.token_hex(3)
    before, after, runs = f"lab{tag}p", f"lab{tag}x", 5
    tmp = Path(tempfile.mkdtemp(prefix="ebpf-lab-check-"))
    try:
        program = tmp / after
        shutil.copy2("/bin/true", program)
        program.chmod(0o755)
        workload = named_execs({before: runs}, program=str(program))
        maps = run_answer(answer, tracepoint=None, workload=workload)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def judge(name: str, counts: pd.Series, frame: pd.DataFrame) -> Right | str:
        got_after, got_before = int(counts.get(after, 0)), int(counts.get(before, 0))
        if got_after == runs:
            return Right(
                f"right: the map `{name}` counted the workload's {runs} execs under the new "
                f"program's name {after!r}, not the caller's old name {before!r}",
                map=frame,
            )
        if got_before == runs and got_after == 0:
            return (
                f"the map `{name}` counts the name *before* exec ({before!r}): your probe runs "
                "before the new program replaces the old one. sched:sched_process_exec fires "
                "after it did: TRACEPOINT_PROBE(sched, sched_process_exec)"
            )
        return (
            f"the workload ran {after} {runs} times; `{name}` counted {got_after} under that "
            f"name ({got_before} under the caller's name {before!r})"
        )

    return judge_maps(
        maps,
        judge,
        counts=one_text_key,
        declare="BPF_HASH(counts, struct key_t, u64)",
        unfit="no map of yours is keyed by a name: use BPF_HASH(counts, struct key_t, u64) with "
        "struct key_t { char comm[16]; } and bpf_get_current_comm()",
    )
