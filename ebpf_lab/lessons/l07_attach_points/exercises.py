"""Lesson 07 (attach points): checkable exercises. The check runs the learner's C in the kernel."""

from __future__ import annotations

import pandas as pd

from ebpf_lab.classroom.checks import Right, exercise, judge_maps, run_answer, shown_keys
from ebpf_lab.workloads import getppid_child

GETPPID = "syscalls:sys_enter_getppid"


@exercise(
    "07.1",
    title="getppid() calls per process",
    asks="BPF C as a string: a BPF_HASH keyed by the process id (u32: the upper half of "
    "bpf_get_current_pid_tgid()) counting getppid() calls; its function (e.g. int count(void "
    "*ctx)) is attached to syscalls:sys_enter_getppid",
    needs_kernel=True,
)
def getppid_per_process(answer: str, fn: str | None = None) -> Right:
    calls = 1234
    with getppid_child(calls) as child:
        maps = run_answer(answer, tracepoint=GETPPID, fn=fn, workload=child.run, duration=0.2)
        pid = child.pid

    def judge(name: str, counts: pd.Series, frame: pd.DataFrame) -> Right | str:
        got = int(counts.get(pid, 0))
        if got == calls:
            others = {int(k): int(v) for k, v in counts.items() if int(k) != pid}
            note = f" Other processes called it too: {others}." if others else ""
            return Right(
                f"right: the map `{name}` counted exactly {calls} getppid() calls for the "
                f"workload's process {pid}, as many as it made.{note}",
                map=frame,
            )
        if int(counts.get((pid << 32) | pid, 0)) == calls:
            return (
                f"the map `{name}` is keyed by the whole 64-bit bpf_get_current_pid_tgid() "
                "(process id << 32 | thread id): key it by the process id, the upper half: "
                "u32 pid = bpf_get_current_pid_tgid() >> 32;"
            )
        if got == 1:
            return (
                f"the map `{name}` holds 1 for the workload's process, which made {calls} calls: "
                "add 1 at every call (counts.atomic_increment(pid)), do not just store 1"
            )
        if got == 0:
            return (
                f"the map `{name}` has no entry for the workload's process {pid} (it has "
                f"{shown_keys(counts)}): key it by u32 pid = bpf_get_current_pid_tgid() >> 32"
            )
        return f"the workload's process {pid} made {calls} getppid() calls; `{name}` says {got}"

    return judge_maps(
        maps,
        judge,
        declare="BPF_HASH(counts, u32, u64)",
        unfit="no map of yours is keyed by one number (the process id): BPF_HASH(counts, u32, u64)",
        expected={pid: calls},
    )
