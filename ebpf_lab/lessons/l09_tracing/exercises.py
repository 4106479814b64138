"""Lesson 09 (tracing): checkable exercises. The check runs the learner's C in the kernel."""

from __future__ import annotations

import os
import threading
from typing import Any

import pandas as pd

from ebpf_lab.classroom.checks import Right, exercise, judge_maps, run_answer, two_int_keys

#: how many openat() calls each of the check's threads makes, one thread per entry
THREAD_OPENS = (7, 3)
#: a file every thread may open
PATH = "/dev/null"


def _threads_workload(truth: dict[int, int]) -> Any:
    """Threads of this process, alive at the same time (so their ids differ), each opening
    :data:`PATH` its number of times (one ``openat()`` per ``os.open``); ``truth`` gets
    ``{thread id: calls}``."""

    def opens(n: int) -> None:
        truth[threading.get_native_id()] = n
        for _ in range(n):
            os.close(os.open(PATH, os.O_RDONLY))

    def run() -> None:
        threads = [
            threading.Thread(target=opens, args=(n,), name="lab09-opens") for n in THREAD_OPENS
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return run


def _per_level(counts: pd.Series, level: int) -> dict[int, int]:
    return {int(k): int(v) for k, v in counts.groupby(level=level).sum().items()}


@exercise(
    "09.4",
    title="A latency histogram per thread",
    asks="BPF C as a string, with TRACEPOINT_PROBE(syscalls, sys_enter_openat) and "
    "TRACEPOINT_PROBE(syscalls, sys_exit_openat): openat() latency as a log2 histogram keyed "
    "by thread, a BPF_HASH(hist, struct key_t, u64) with struct key_t { u32 tid; u32 slot; } "
    "(tid: the lower half of bpf_get_current_pid_tgid(), slot: bpf_log2l(latency_ns))",
    needs_kernel=True,
)
def histogram_per_thread(answer: str) -> Right:
    truth: dict[int, int] = {}
    maps = run_answer(answer, tracepoint=None, workload=_threads_workload(truth))
    tids = list(truth)
    pid = os.getpid()

    def judge(name: str, counts: pd.Series, frame: pd.DataFrame) -> Right | str:
        for level in (0, 1):
            per_thread = _per_level(counts, level)
            got = {tid: per_thread.get(tid, 0) for tid in truth}
            slots = {int(k) for k in counts.index.get_level_values(1 - level)}
            if got == truth and slots <= set(range(1, 65)):
                mine = counts[counts.index.get_level_values(level).isin(list(truth))]
                used = sorted({int(k) for k in mine.index.get_level_values(1 - level)})
                return Right(
                    f"right: the map `{name}` holds {truth[tids[0]]} calls for thread "
                    f"{tids[0]} and {truth[tids[1]]} for thread {tids[1]}, two threads of one "
                    f"process ({pid}), in the slots {used}. A per-process key adds them up; a "
                    "per-thread key shows which thread is slow (e.g. a worker blocked on I/O)",
                    map=frame,
                )
            if got == truth:
                return (
                    f"the map `{name}` counts the right calls per thread, but its slots "
                    f"{sorted(slots)[:5]}... are not log2 slots: use bpf_log2l(latency_ns), "
                    "where latency_ns = exit time - entry time, bpf_ktime_get_ns()"
                )
            if per_thread.get(pid, 0) >= sum(THREAD_OPENS) and not any(got.values()):
                return (
                    f"the map `{name}` has the calls of both threads under the process id "
                    f"{pid}: that is the per-process histogram. Key it by the thread, the lower "
                    "32 bits of bpf_get_current_pid_tgid(): u32 tid = id;"
                )
        found = {t: _per_level(counts, 0).get(t, 0) for t in truth}
        return (
            f"the threads {tids} made {list(truth.values())} openat() calls; the map `{name}` "
            f"holds {list(found.values())} for them: count each call once, at its exit, under "
            "(tid, slot), with the entry time kept per thread in another map"
        )

    return judge_maps(
        maps,
        judge,
        counts=two_int_keys,
        declare="BPF_HASH(hist, struct key_t, u64) with struct key_t { u32 tid; u32 slot; }",
        expected=truth,
    )
