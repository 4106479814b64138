"""Lesson 04 (bytecode and the verifier): checkable exercises. The check runs the learner's C."""

from __future__ import annotations

import secrets

import pandas as pd

import ebpf_lab.workloads as _workload
from ebpf_lab.classroom.checks import Right, exercise, judge_maps, named_execs, run_answer

EXECVE = "syscalls:sys_enter_execve"


@exercise(
    "04.2",
    title="A bounded loop over the command name",
    asks="BPF C as a string: a BPF_HASH keyed by the UID (u32) whose value is the sum of the 16 "
    "bytes of the command name (bpf_get_current_comm), added up with a for loop at every execve; "
    "its function (e.g. int count(void *ctx)) is attached to syscalls:sys_enter_execve",
    needs_kernel=True,
)
def comm_byte_sum(answer: str, fn: str | None = None) -> Right:
    comm = f"lab{secrets.token_hex(3)}"
    uid = _workload.unused_uid()
    runs = 4
    per_exec = sum(comm.encode())
    want = runs * per_exec
    maps = run_answer(answer, tracepoint=EXECVE, fn=fn, workload=named_execs({comm: runs}, uid=uid))

    def judge(name: str, counts: pd.Series, frame: pd.DataFrame) -> Right | str:
        got = int(counts.get(uid, 0))
        if got == want:
            return Right(
                f"right: the verifier accepted your loop (its bound, 16, is a constant), and the "
                f"map `{name}` holds {want} for uid {uid}: {runs} execs x {per_exec}, the sum of "
                f"the bytes of the workload's command name {comm!r}",
                map=frame,
            )
        if got == 0:
            if any(int(k) >> 32 for k in counts.index):
                return (
                    f"the map `{name}` has no entry for the workload's uid {uid}: its keys are "
                    "64-bit numbers. Key it by the UID alone: "
                    "u32 uid = bpf_get_current_uid_gid(); (the lower 32 bits)"
                )
            return (
                f"the map `{name}` has no entry for the workload's uid {uid}: key it by "
                "u32 uid = bpf_get_current_uid_gid();"
            )
        if got == runs:
            return (
                f"the map `{name}` counts the execs ({runs}) instead of summing bytes: add the "
                f"value of each of the 16 bytes of the name (for (int i = 0; i < 16; i++) "
                "sum += comm[i];), then add the sum to the entry"
            )
        if got == runs * comm.encode()[0]:
            return (
                f"the map `{name}` holds only the first byte of the name per exec "
                f"({comm.encode()[0]} = {comm[0]!r}): the loop must add all 16 bytes, comm[i] "
                "with i from 0 to 15"
            )
        if got % runs == 0 and got // runs != per_exec:
            return (
                f"the map `{name}` adds {got // runs} per exec; the bytes of the name {comm!r} "
                f"sum to {per_exec}. Sum comm[0] .. comm[15] (unsigned char: the bytes after the "
                "name are zeros)"
            )
        return (
            f"the map `{name}` holds {got} for uid {uid}; the workload ran {runs} execs "
            f"named {comm!r}, whose bytes sum to {per_exec}: expected {want}"
        )

    return judge_maps(
        maps,
        judge,
        declare="BPF_HASH(sums, u32, u64) and add the byte sum to the entry of the caller's UID",
        unfit="no map of yours is keyed by one number (the UID): declare "
        f"BPF_HASH(sums, u32, u64) (your maps: {', '.join(maps)})",
        expected={uid: want},
    )
