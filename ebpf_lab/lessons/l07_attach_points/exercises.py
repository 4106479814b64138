"""Lesson 07 (attach points): checkable exercises. The check runs the learner's C in the kernel."""

from __future__ import annotations

from ebpf_lab.classroom.checks import (
    Right,
    Wrong,
    exercise,
    int_key_columns,
    map_counts,
    run_answer,
)
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
    if not maps:
        raise Wrong("your program has no map to read: declare BPF_HASH(counts, u32, u64)")
    messages = []
    for name, frame in maps.items():
        ints = int_key_columns(frame)
        if len(ints) != 1:
            continue
        counts = map_counts(frame, ints)
        got = int(counts.get(pid, 0))
        if got == calls:
            others = {int(k): int(v) for k, v in counts.items() if int(k) != pid}
            note = f" Other processes called it too: {others}." if others else ""
            return Right(
                f"right: the map `{name}` counted exactly {calls} getppid() calls for the "
                f"workload's process {pid}, as many as it made.{note}",
                map=frame,
            )
        whole = int(counts.get((pid << 32) | pid, 0))
        if whole == calls:
            messages.append(
                f"the map `{name}` is keyed by the whole 64-bit bpf_get_current_pid_tgid() "
                "(process id << 32 | thread id): key it by the process id, the upper half: "
                "u32 pid = bpf_get_current_pid_tgid() >> 32;"
            )
        elif got == 1:
            messages.append(
                f"the map `{name}` holds 1 for the workload's process, which made {calls} calls: "
                "add 1 at every call (counts.atomic_increment(pid)), do not just store 1"
            )
        elif got == 0:
            shown = ", ".join(str(int(k)) for k in list(counts.index[:5]))
            messages.append(
                f"the map `{name}` has no entry for the workload's process {pid} (it has "
                f"{shown or 'nothing'}): key it by u32 pid = bpf_get_current_pid_tgid() >> 32"
            )
        else:
            messages.append(
                f"the workload's process {pid} made {calls} getppid() calls; `{name}` says {got}"
            )
    if not messages:
        raise Wrong(
            "no map of yours is keyed by one number (the process id): BPF_HASH(counts, u32, u64)",
            maps=maps,
        )
    raise Wrong(messages[0], expected={pid: calls}, maps=maps)
