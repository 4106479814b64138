"""Lesson 02 (maps): checkable exercises. Each compiles the learner's C and run it in the kernel."""

from __future__ import annotations

import os
import secrets
import subprocess
from typing import Any

import pandas as pd

from ebpf_lab import workloads as _workload
from ebpf_lab.classroom.checks import (
    Right,
    exercise,
    int_key_columns,
    judge_maps,
    map_counts,
    named_execs,
    one_text_key,
    run_answer,
)
from ebpf_lab.core.run import stop_requested

EXECVE = "syscalls:sys_enter_execve"


@exercise(
    "02.1",
    title="Execs per command",
    asks="BPF C as a string: a BPF_HASH keyed by struct key_t { char comm[16]; } that counts "
    "execve calls; its function (e.g. int count(void *ctx)) is attached to "
    "syscalls:sys_enter_execve",
    needs_kernel=True,
)
def execs_per_comm(answer: str, fn: str | None = None) -> Right:
    tag = secrets.token_hex(3)
    plan = {f"lab{tag}a": 6, f"lab{tag}b": 3}
    maps = run_answer(answer, tracepoint=EXECVE, fn=fn, workload=named_execs(plan))

    def judge(name: str, counts: pd.Series, frame: pd.DataFrame) -> Right | str:
        got = {comm: int(counts.get(comm, 0)) for comm in plan}
        if got == plan:
            return Right(
                f"right: your map `{name}` counted exactly {plan[f'lab{tag}a']} execve calls for "
                f"the command lab{tag}a and {plan[f'lab{tag}b']} for lab{tag}b, as the known "
                f"workload ran them (it also saw {len(counts) - 2} other command name(s) "
                "meanwhile)",
                map=frame,
            )
        cut = sorted(
            {k for k in counts.index for comm in plan if k != comm and comm.startswith(str(k))}
        )
        if cut:
            return (
                f"the names in the map `{name}` are cut short ({', '.join(map(repr, cut))} for "
                f"{', '.join(map(repr, plan))}): make the key's char array 16 bytes "
                "(TASK_COMM_LEN) and pass sizeof(key.comm) to bpf_get_current_comm()"
            )
        if all(v == 0 for v in got.values()):
            shown = ", ".join(map(repr, list(counts.index[:5])))
            return (
                f"the map `{name}` has no entry for the workload's commands lab{tag}a and "
                f"lab{tag}b (it has {shown}...): fill the key with bpf_get_current_comm() on "
                "every call"
            )
        if all(got[c] == 2 * n for c, n in plan.items()):
            return (
                f"the map `{name}` counts every exec twice: add 1 once per call "
                "(counts.atomic_increment(key))"
            )
        detail = "; ".join(
            f"{c}: the workload ran {n}, `{name}` says {got[c]}" for c, n in plan.items()
        )
        return f"the counts are off ({detail})"

    return judge_maps(
        maps,
        judge,
        counts=one_text_key,
        declare="BPF_HASH(counts, struct key_t, u64) and add 1 to the entry of the current "
        "comm on every call",
        unfit=f"no map of yours ({', '.join(maps)}) is keyed by text. Key it by the command "
        "name: struct key_t { char comm[16]; }, filled with "
        "bpf_get_current_comm(&key.comm, sizeof(key.comm))",
        expected=plan,
    )


def _uid_gid_workload(plan: dict[tuple[int, int], int]) -> Any:
    def run() -> None:
        for (uid, gid), n in plan.items():
            for _ in range(n):
                if stop_requested():
                    return
                subprocess.run(
                    ["/bin/true"],
                    user=uid,
                    group=gid,
                    extra_groups=[],
                    stdin=subprocess.DEVNULL,
                    check=True,
                )

    return run


def _uid_gid_counts(frame: pd.DataFrame) -> tuple[pd.Series, str] | None:
    """(counts indexed by (first, second) key number, how the key was read), or None."""
    ints = int_key_columns(frame)
    if len(ints) >= 2:
        uid = next((c for c in ints if "uid" in str(c).lower()), None)
        gid = next((c for c in ints if "gid" in str(c).lower()), None)
        if uid is None or gid is None or uid == gid:
            uid, gid = ints[0], ints[1]
        return map_counts(frame, [uid, gid]), "struct"
    if len(ints) == 1:
        key = [int(k) for k in frame[ints[0]]]
        if any(k >> 32 for k in key):
            split = frame.assign(_uid=[k & 0xFFFFFFFF for k in key], _gid=[k >> 32 for k in key])
            return map_counts(split, ["_uid", "_gid"]), "u64"
        return map_counts(frame, ints), "one number"
    return None


@exercise(
    "02.2",
    title="Execs per UID and GID",
    asks="BPF C as a string: a BPF_HASH keyed by a struct of two u32 (uid and gid), split from "
    "bpf_get_current_uid_gid(), counting execve calls; its function is attached to "
    "syscalls:sys_enter_execve",
    needs_kernel=True,
)
def execs_per_uid_gid(answer: str, fn: str | None = None) -> Right:
    u1 = _workload.unused_uid()
    u2 = _workload.unused_uid()
    g = _workload.unused_uid()
    while len({u1, u2, g}) < 3:  # pragma: no cover - three random draws from 2 billion
        u2, g = _workload.unused_uid(), _workload.unused_uid()
    plan = {(u1, g): 4, (u2, g): 2}
    maps = run_answer(answer, tracepoint=EXECVE, fn=fn, workload=_uid_gid_workload(plan))

    def judge(name: str, counts: pd.Series, frame: pd.DataFrame) -> Right | str:
        how = _uid_gid_counts(frame)[1]  # type: ignore[index]
        if how == "one number":
            if all(
                counts.get(u, 0) == sum(n for (uu, _), n in plan.items() if uu == u)
                for u in (u1, u2)
            ):
                return (
                    f"the map `{name}` is keyed by the uid alone: put the gid in the key too, e.g. "
                    "struct key_t { u32 uid; u32 gid; }"
                )
            return f"the map `{name}` is keyed by one 32-bit number: key it by uid and gid"

        def got(a: int, b: int) -> int:
            return int(counts.get((a, b), 0))

        if all(got(u, gg) == n for (u, gg), n in plan.items()):
            note = ""
            if how == "u64":
                note = (
                    " You kept the helper's 64-bit value whole as the key: that works "
                    "(uid = key & 0xFFFFFFFF, gid = key >> 32); a struct key names both."
                )
            return Right(
                f"right: the map `{name}` counted {plan[(u1, g)]} execs for uid {u1} / gid {g} and "
                f"{plan[(u2, g)]} for uid {u2} / gid {g}, as the workload ran them.{note}",
                map=frame,
            )
        if all(got(gg, u) == n for (u, gg), n in plan.items()):
            return (
                f"uid and gid are the wrong way round in the map `{name}`: "
                "bpf_get_current_uid_gid() returns gid << 32 | uid, so the uid is the lower "
                "32 bits (id & 0xFFFFFFFF) and the gid the upper 32 bits (id >> 32)"
            )
        if all(got(u, 0) == n for (u, _), n in plan.items()):
            return (
                f"the gid in the map `{name}` is always 0: shift the 64-bit value before "
                "narrowing it, (u32)(id >> 32), not (u32)id >> 32"
            )
        detail = "; ".join(
            f"uid {u} gid {gg}: ran {n}, `{name}` says {got(u, gg)}" for (u, gg), n in plan.items()
        )
        return f"the counts are off ({detail})"

    return judge_maps(
        maps,
        judge,
        counts=lambda frame: (_uid_gid_counts(frame) or (None, ""))[0],
        declare="BPF_HASH(counts, struct key_t, u64)",
        unfit="no map of yours is keyed by numbers: key it by struct key_t { u32 uid; u32 gid; }",
        expected={f"{u}/{gg}": n for (u, gg), n in plan.items()},
    )


GETPPID = "syscalls:sys_enter_getppid"
#: the first round: getppid() calls per CPU as one UID (catches adds that race)
RACE_CALLS = 500_000
#: then this many rounds, each as a new UID whose first calls start on the CPUs at once
FIRST_CALL_ROUNDS = 12
FIRST_CALL_CALLS = 1_000


def _race_rounds(cpus: list[int], box: dict[int, int]) -> Any:
    """The check's load: one long round, then short rounds, each as a fresh UID on ``cpus``."""

    def run() -> None:
        rounds = [RACE_CALLS] + [FIRST_CALL_CALLS] * FIRST_CALL_ROUNDS
        for calls in rounds:
            if stop_requested():
                return
            uid = _workload.unused_uid()
            while uid in box:  # pragma: no cover - two equal draws from 2 billion
                uid = _workload.unused_uid()
            done = _workload.getppid_loop(uid, calls, cpus)
            box[uid] = int(done["calls"].sum())

    return run


def _uid_counts(frame: pd.DataFrame) -> pd.Series | None:
    """Counts per UID from a map keyed by one number (a whole uid_gid value: its low 32 bits)."""
    if frame.empty:
        return pd.Series(dtype="int64")
    ints = int_key_columns(frame)
    if len(ints) != 1:
        return None
    keyed = frame.assign(_uid=[int(k) & 0xFFFFFFFF for k in frame[ints[0]]])
    return map_counts(keyed, ["_uid"])


@exercise(
    "02.4",
    title="Exact from the first call",
    asks="BPF C as a string: a BPF_HASH (or BPF_PERCPU_HASH) keyed by the UID (u32) that counts "
    "getppid() calls exactly, even when two CPUs make a UID's calls at the same moment, its very "
    "first ones included; its function is attached to syscalls:sys_enter_getppid",
    needs_kernel=True,
)
def exact_counter(answer: str, fn: str | None = None) -> Any:
    from ebpf_lab.classroom.checks import CheckResult

    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        return CheckResult(
            "02.4",
            False,
            "this machine (or this process) has one CPU: no two calls can ever update your map "
            "at the same moment here, so the check cannot tell an exact counter from one that "
            "races. Run it on a machine with two CPUs or more.",
            {"cpus": cpus},
            "Exact from the first call",
            False,
        )
    truth: dict[int, int] = {}
    maps = run_answer(answer, tracepoint=GETPPID, fn=fn, workload=_race_rounds(cpus, truth))
    big, *first = list(truth)

    def judge(name: str, counts: pd.Series, frame: pd.DataFrame) -> Right | str:
        got = {uid: int(counts.get(uid, 0)) for uid in truth}
        if got == truth:
            summed = any(str(c).startswith("cpu") for c in frame)
            return Right(
                f"right: your map `{name}`{' (its per-CPU copies summed)' if summed else ''} "
                "counted exactly "
                f"{truth[big]:,} calls made by two CPUs at once as one UID, and exactly "
                f"{FIRST_CALL_CALLS * len(cpus):,} for each of {len(first)} UIDs whose first "
                "calls started on both CPUs together",
                map=frame,
            )
        if all(got[uid] == 0 for uid in truth):
            return (
                f"your map `{name}` has no count for the load's UIDs. (On a per-CPU map, BCC's "
                "increment() only adds to an entry that exists: it never creates one. Create "
                "it with lookup_or_try_init(&uid, &zero), then add to what it returns.)"
            )
        if any(got[uid] > truth[uid] for uid in truth):
            return (
                f"your map `{name}` counted more calls than were made (e.g. {got[big]:,} for "
                f"{truth[big]:,}): add 1 once per call"
            )
        if got[big] < truth[big] - (len(cpus) - 1):
            return (
                f"your map `{name}` lost {truth[big] - got[big]:,} of {truth[big]:,} counts "
                "while two CPUs added to one UID's entry: `*n += 1` (and increment()) loads the "
                "value, adds 1 and stores it, and two CPUs that load the same value store the "
                "same sum. Add with one atomic instruction (atomic_increment(), "
                "__sync_fetch_and_add(n, 1)) or give each CPU its own copy (BPF_PERCPU_HASH)"
            )
        short = [uid for uid in first if got[uid] < truth[uid]]
        return (
            f"close: every add is exact, but your map `{name}` is short by a count or so for "
            f"{len(short)} of the {len(first)} UIDs whose first calls started on both CPUs "
            "together. Both CPUs found no entry and both inserted one; the second insert "
            "failed (the key exists) and its 1 was dropped, as increment() and "
            "atomic_increment() do. Insert without counting, then look up again: "
            "n = counts.lookup_or_try_init(&uid, &zero); if (n) add to *n"
        )

    return judge_maps(
        maps,
        judge,
        counts=_uid_counts,
        declare="BPF_HASH(counts, u32, u64)",
        unfit="no map of yours is keyed by one number: key it by the UID, "
        "BPF_HASH(counts, u32, u64)",
        expected=truth,
    )
