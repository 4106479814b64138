"""Lesson 05 (maps): checkable exercises. The check runs the learner's C in the kernel."""

from __future__ import annotations

from ebpf_lab.classroom.checks import (
    Right,
    Wrong,
    exercise,
    int_key_columns,
    map_counts,
    named_map,
    run_answer,
)
from ebpf_lab.workloads import unused_uid, writes

WRITE = "syscalls:sys_enter_write"
#: writes() opens /dev/null after stdin, stdout and stderr: the lowest free descriptor
WORKLOAD_FD = 3


@exercise(
    "05.4",
    title="write() calls per file descriptor",
    asks="BPF C as a string: a BPF_ARRAY(by_fd, u64, 64) that counts write() calls per file "
    "descriptor (args->fd), only for the UID FILTER_UID (the check compiles it with "
    "-DFILTER_UID=<the workload's uid>); its function (e.g. int count_fd(struct "
    "tracepoint__syscalls__sys_enter_write *args)) is attached to syscalls:sys_enter_write",
    needs_kernel=True,
)
def writes_per_fd(answer: str, fn: str | None = None) -> Right:
    uid = unused_uid()
    sizes = [1, 10, 100, 1000, 64, 7, 4096]
    n = len(sizes)
    maps = run_answer(
        answer,
        tracepoint=WRITE,
        fn=fn,
        workload=lambda: writes(sizes, uid=uid),
        cflags=[f"-DFILTER_UID={uid}"],
    )
    frame = named_map(maps, "by_fd", "BPF_ARRAY(by_fd, u64, 64)")
    ints = int_key_columns(frame)
    if len(ints) != 1 or len(frame) != 64:
        raise Wrong(
            f"by_fd should be an array of 64 counters (BPF_ARRAY(by_fd, u64, 64)); yours has "
            f"{len(frame)} entries",
            map=frame,
        )
    counts = map_counts(frame, ints)
    got = {int(k): int(v) for k, v in counts.items() if v}
    if got == {WORKLOAD_FD: n}:
        return Right(
            f"right: by_fd counted the workload's {n} write() calls, all on descriptor "
            f"{WORKLOAD_FD}: writes() opens /dev/null after 0, 1 and 2 (stdin, stdout, stderr) "
            "are taken, and open() returns the lowest free number",
            map=frame,
        )
    if not got:
        raise Wrong(
            f"by_fd stayed empty while uid {uid} made {n} write() calls: compare the lower 32 "
            "bits of bpf_get_current_uid_gid() with FILTER_UID and use args->fd as the slot",
            map=frame,
        )
    if WORKLOAD_FD not in got and set(got) <= set(sizes):
        raise Wrong(
            "by_fd is keyed by the number of bytes (args->count); key it by the file "
            "descriptor, args->fd",
            map=frame,
        )
    if got.get(WORKLOAD_FD, 0) >= n:  # and more: other processes' writes
        raise Wrong(
            f"by_fd also counted other users' writes ({dict(sorted(got.items()))}): count only "
            "when (u32)bpf_get_current_uid_gid() == FILTER_UID",
            map=frame,
        )
    raise Wrong(
        f"the workload made {n} write() calls on descriptor {WORKLOAD_FD} as uid {uid}; by_fd "
        f"says {dict(sorted(got.items()))}",
        map=frame,
    )
