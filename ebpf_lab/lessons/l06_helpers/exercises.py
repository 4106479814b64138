"""Lesson 06 (helpers): checkable exercises. The check runs the learner's C in the kernel."""

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
from ebpf_lab.core.attach import Probe
from ebpf_lab.workloads import execs, unused_uid

EXECVE = "syscalls:sys_enter_execve"
#: the check counts execs at the exit (one probe per tracepoint: the core detaches by name)
EXECVE_EXIT = "syscalls:sys_exit_execve"
BUCKETS = 10
#: each bucket's share must lie within 0.1 +- this (about five standard deviations for 300 draws)
TOLERANCE = 0.085

#: the check's own counter, attached next to the learner's function: how many execs there were
_COUNTER = """
BPF_ARRAY(lab_check_execs, u64, 1);
int lab_check_count(void *ctx)
{
    lab_check_execs.atomic_increment(0);
    return 0;
}
"""


@exercise(
    "06.1",
    title="bpf_get_prandom_u32() in ten buckets",
    asks="BPF C as a string: a BPF_HISTOGRAM(dist, int, 10) to which every execve adds one at "
    "bpf_get_prandom_u32() % 10; its function is attached to syscalls:sys_enter_execve",
    needs_kernel=True,
)
def prandom_buckets(answer: str, fn: str | None = None) -> Right:
    n = 300
    maps = run_answer(
        answer,
        tracepoint=EXECVE,
        fn=fn,
        workload=lambda: execs({unused_uid(): n}),
        duration=0.2,
        also_source=_COUNTER,
        also_probes=[Probe("tracepoint", EXECVE_EXIT, "lab_check_count")],
    )
    seen = int(maps.pop("lab_check_execs")["value"].sum())
    frame = named_map(maps, "dist", "BPF_HISTOGRAM(dist, int, 10)")
    ints = int_key_columns(frame)
    if len(ints) != 1:
        raise Wrong("dist should be keyed by one number, the bucket: BPF_HISTOGRAM(dist, int, 10)")
    counts = map_counts(frame, ints)
    got = {int(k): int(v) for k, v in counts.items()}
    total = sum(got.values())
    if len(frame) != BUCKETS:
        raise Wrong(f"dist has {len(frame)} slots; make it BPF_HISTOGRAM(dist, int, 10)", map=frame)
    # (the two maps are read one after the other: an exec in between may count in one only)
    if seen - total > max(3, seen // 50):
        raise Wrong(
            f"there were {seen} execs ({n} from the workload), but dist holds {total}: some "
            "values did "
            "not land in a bucket. An array has slots 0..9 only; take the remainder modulo 10 "
            "(bpf_get_prandom_u32() % 10) and dist.atomic_increment(bucket) on every call",
            map=frame,
        )
    used = sorted(k for k, v in got.items() if v)
    if len(used) == 1:
        raise Wrong(
            f"every exec landed in bucket {used[0]}: the key must change from call to call. "
            "Call bpf_get_prandom_u32() in the program, at every exec, and use % 10 of it",
            map=frame,
        )
    empty = [k for k in range(BUCKETS) if not got.get(k)]
    if empty:
        raise Wrong(
            f"buckets {empty} stayed empty after {total} execs: with % 10 each of the ten "
            "buckets gets about a tenth",
            map=frame,
        )
    shares = {k: v / total for k, v in got.items()}
    off = {k: round(s, 3) for k, s in shares.items() if abs(s - 1 / BUCKETS) > TOLERANCE}
    if off:
        raise Wrong(
            f"the buckets are far from equal (shares {off}, expected about 0.1 each): "
            "use bpf_get_prandom_u32() % 10 as the key",
            map=frame,
        )
    lo, hi = min(got.values()), max(got.values())
    return Right(
        f"right: dist counted all {total} execs ({n} from the workload), {lo} to {hi} per "
        "bucket: "
        f"about a tenth each, as uniform random numbers modulo 10 should give (the spread is "
        f"chance: about ±{(total * 0.09) ** 0.5:.0f} per bucket)",
        map=frame,
    )
