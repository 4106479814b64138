"""Lesson 04 (bytecode and the verifier): checkable exercises. The check runs the learner's C."""

from __future__ import annotations

import secrets
from typing import Any

import ebpf_lab.workloads as _workload
from ebpf_lab.classroom.checks import (
    Right,
    Wrong,
    exercise,
    int_key_columns,
    map_counts,
    run_answer,
    set_comm,
)

EXECVE = "syscalls:sys_enter_execve"


def _named_execs(comm: str, uid: int, n: int) -> Any:
    """A workload that runs /bin/true n times as ``uid`` from a thread named ``comm``."""

    def run() -> None:
        old = set_comm(comm)
        try:
            _workload.execs({uid: n})
        finally:
            set_comm(old)

    return run


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
    maps = run_answer(answer, tracepoint=EXECVE, fn=fn, workload=_named_execs(comm, uid, runs))
    if not maps:
        raise Wrong(
            "the verifier accepted your program, but it has no map to read: declare "
            "BPF_HASH(sums, u32, u64) and add the byte sum to the entry of the caller's UID"
        )
    messages = []
    for name, frame in maps.items():
        ints = int_key_columns(frame)
        if len(ints) != 1:
            continue
        counts = map_counts(frame, ints)
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
                messages.append(
                    f"the map `{name}` has no entry for the workload's uid {uid}: its keys are "
                    "64-bit numbers. Key it by the UID alone: "
                    "u32 uid = bpf_get_current_uid_gid(); (the lower 32 bits)"
                )
            else:
                messages.append(
                    f"the map `{name}` has no entry for the workload's uid {uid}: key it by "
                    "u32 uid = bpf_get_current_uid_gid();"
                )
        elif got == runs:
            messages.append(
                f"the map `{name}` counts the execs ({runs}) instead of summing bytes: add the "
                f"value of each of the 16 bytes of the name (for (int i = 0; i < 16; i++) "
                "sum += comm[i];), then add the sum to the entry"
            )
        elif got == runs * comm.encode()[0]:
            messages.append(
                f"the map `{name}` holds only the first byte of the name per exec "
                f"({comm.encode()[0]} = {comm[0]!r}): the loop must add all 16 bytes, comm[i] "
                "with i from 0 to 15"
            )
        elif got % runs == 0 and got // runs != per_exec:
            messages.append(
                f"the map `{name}` adds {got // runs} per exec; the bytes of the name {comm!r} "
                f"sum to {per_exec}. Sum comm[0] .. comm[15] (unsigned char: the bytes after the "
                "name are zeros)"
            )
        else:
            messages.append(
                f"the map `{name}` holds {got} for uid {uid}; the workload ran {runs} execs "
                f"named {comm!r}, whose bytes sum to {per_exec}: expected {want}"
            )
    if not messages:
        raise Wrong(
            f"no map of yours is keyed by one number (the UID): declare BPF_HASH(sums, u32, u64) "
            f"(your maps: {', '.join(maps)})",
            maps=maps,
        )
    raise Wrong(messages[0], expected={uid: want}, maps=maps)
