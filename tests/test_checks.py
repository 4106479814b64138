"""Exercises that check themselves in the kernel: every solution passes, typical wrong answers
fail, and say why.

Solutions live in ``instructor/solutions/<id>.*``. C answers are compiled and run in the kernel
while a known workload runs, and predictions are compared with a run of the lesson's program, so
these tests need root (and leave nothing loaded). The exercises whose checks only apply the
answer to recorded frames are checked in ``tests/unit/test_exercise_checks.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_root
from exercise_answers import KERNEL_IDS, NEEDS_KERNEL, solution

import ebpf_lab
from ebpf_lab.classroom import recordings

pytestmark = needs_root  # every check here runs the answer's C in the kernel


@pytest.mark.parametrize("exercise_id", KERNEL_IDS)
def test_solution_passes(exercise_id: str, no_leaks) -> None:
    result = ebpf_lab.check(exercise_id, solution(exercise_id))
    assert result.ok, str(result)
    assert result.checked
    assert str(result).startswith(f"✓ {exercise_id}")
    assert result.message.startswith("right")


def _swap_uid_gid(c: str) -> str:
    return c.replace("= id & 0xFFFFFFFF", "= id >> 32 ").replace(
        ".gid = id >> 32", ".gid = id & 0xFFFFFFFF", 1
    )


UID_ONLY_C = """
BPF_HASH(counts, u32, u64);
int count(void *ctx)
{
    u32 uid = bpf_get_current_uid_gid();
    counts.increment(uid);
    return 0;
}
"""

PAGE = os.sysconf("SC_PAGE_SIZE")

# (exercise, wrong answer (or a function making it from the solution), words the message must say)
WRONG: list[tuple[str, Any, list[str]]] = [
    (
        "01.2",
        {"lab01-caller": 3, "lab01-script": 0, "sh": 3, "true": 0},
        ["lab01-script: you said 0", "made 3", "exec /bin/true"],
    ),
    (
        "01.2",
        {"lab01-caller": 3, "lab01-script": 3, "sh": 3, "true": 0},
        ["sh: you said 3", "#! script inside the same execve"],
    ),
    ("01.2", {"lab01-caller": 3}, ["exactly the keys"]),
    ("02.1", ebpf_lab.program_source("exec_count"), ["keyed by text", "bpf_get_current_comm"]),
    (
        "02.1",
        lambda good: good.replace("char comm[16]", "char comm[5]"),
        ["cut short", "16 bytes"],
    ),
    ("02.1", "int count(void *ctx) { return nope; }", ["did not compile", "nope"]),
    ("02.1", "   ", ["give your BPF C program as a string"]),
    (
        "02.1",
        lambda good: good + "\nint other(void *ctx) { return 0; }\n",
        ["several functions", 'fn="count"'],
    ),
    ("02.2", _swap_uid_gid, ["wrong way round", "lower 32 bits"]),
    ("02.2", UID_ONLY_C, ["keyed by the uid alone"]),
    (
        "02.4",
        lambda good: good.replace(
            "u64 *n = counts.lookup_or_try_init(&uid, &zero);\n    if (n)\n"
            "        __sync_fetch_and_add(n, 1);",
            "counts.atomic_increment(uid);",
        ),
        ["short by a count", "first calls started on both CPUs", "lookup_or_try_init"],
    ),
    (
        "02.4",
        lambda good: good.replace("BPF_HASH", "BPF_PERCPU_HASH").replace(
            "u64 *n = counts.lookup_or_try_init(&uid, &zero);\n    if (n)\n"
            "        __sync_fetch_and_add(n, 1);",
            "counts.increment(uid);",
        ),
        ["no count for the load's UIDs", "never creates one"],
    ),
    (
        "02.4",
        lambda good: good.replace("__sync_fetch_and_add(n, 1);", "__sync_fetch_and_add(n, 2);"),
        ["more calls than were made"],
    ),
    (
        "03.2",
        lambda good: good.replace(
            "counts.atomic_increment(ppid);",
            "counts.atomic_increment((u32)(bpf_get_current_pid_tgid() >> 32));",
        ),
        ["keyed by the caller's pid", "real_parent"],
    ),
    (
        "03.2",
        lambda good: (
            good.replace("BPF_HASH(counts, u32, u64)", "BPF_HASH(counts, u64, u64)")
            .replace("u32 ppid = 0;", "u64 ppid = 0;")
            .replace("counts.atomic_increment(ppid);", "counts.atomic_increment(ppid << 32);")
        ),
        ["no entry for the middle process"],
    ),
    (
        "03.3",
        lambda good: good.replace("sched, sched_process_exec", "syscalls, sys_enter_execve"),
        ["*before* exec", "sched_process_exec"],
    ),
    (
        "03.3",
        lambda good: good.replace("TRACEPOINT_PROBE(sched, sched_process_exec)", "int f(void *c)"),
        ["TRACEPOINT_PROBE"],
    ),
    (
        "04.2",
        lambda good: good.replace("sum += (unsigned char)comm[i];", "sum += 1;"),
        ["adds 16 per exec", "sum to"],
    ),
    (
        "04.2",
        lambda good: good.replace(
            "sums.atomic_increment(uid, sum);", "sums.atomic_increment(uid);"
        ),
        ["counts the execs", "instead of summing bytes"],
    ),
    (
        "04.2",
        lambda good: good.replace("i < 16; i++", "i < (bpf_get_current_pid_tgid() & 0xffff); i++"),
        ["verifier rejected"],
    ),
    (
        "05.4",
        lambda good: good.replace("args->fd", "args->count"),
        ["keyed by the number of bytes"],
    ),
    (
        "05.4",
        lambda good: good.replace("!= FILTER_UID", "== 0xFFFFFFFF"),
        ["other users' writes", "FILTER_UID"],
    ),
    ("06.1", lambda good: good.replace("% 10", "% 16"), ["did not land in a bucket", "slots 0..9"]),
    ("06.1", lambda good: good.replace("% 10", "% 5"), ["stayed empty"]),
    (
        "07.1",
        lambda good: good.replace(
            "u32 pid = bpf_get_current_pid_tgid() >> 32;", "u64 pid = bpf_get_current_pid_tgid();"
        ).replace("u32, u64", "u64, u64"),
        ["whole 64-bit", ">> 32"],
    ),
    (
        "07.1",
        lambda good: good.replace(
            "counts.atomic_increment(pid);", "u64 one = 1; counts.update(&pid, &one);"
        ),
        ["holds 1", "increment"],
    ),
    ("08.3", {n: PAGE // n for n in (16, 12, 40)}, ["you said", "header"]),
    ("08.3", {n: PAGE // (n + 8) for n in (16, 12, 40)}, ["12 bytes: you said", "aligned"]),
    ("08.3", {16: 1, 12: 1}, ["exactly the keys [16, 12, 40]"]),
    (
        "09.4",
        lambda good: good.replace(".tid = (u32)id", ".tid = id >> 32"),
        ["under the process id", "lower 32 bits"],
    ),
    (
        "09.4",
        lambda good: good.replace(
            "hist.atomic_increment(key);",
            "hist.atomic_increment(key);\n    hist.atomic_increment(key);",
        ),
        ["openat() calls; the map `hist` holds", "count each call once"],
    ),
    ("12.1", round(2 * 997 * 0.4), ["you said 798", "whose work does a timer tick count"]),
    ("12.1", "399", ["give one number"]),
    (
        "10.7",
        {
            "icmp": {"tc_egress": 3, "tc_dropped": 0, "xdp_ingress": 3, "delivered": 3},
            "udp": {"tc_egress": 0, "tc_dropped": 0, "xdp_ingress": 0, "delivered": 0},
            "sendto_raises": False,
        },
        ["udp tc_egress: you said 0, the run shows 4", "before or after it decides"],
    ),
    (
        "10.7",
        {
            "icmp": {"tc_egress": 3, "tc_dropped": 0, "xdp_ingress": 3, "delivered": 3},
            "udp": {"tc_egress": 4, "tc_dropped": 4, "xdp_ingress": 0, "delivered": 0},
            "sendto_raises": True,
        },
        ["sendto does not raise", "IP_RECVERR"],
    ),
    ("10.7", {"icmp": {}, "udp": {}, "sendto_raises": False}, ["exactly the keys"]),
    ("11.3", ["/usr/bin/python3"], ["raised no alert", "symlink", "byte for byte"]),
    ("11.3", ["python3"], ["refused your watchlist", "absolute path"]),
    ("11.3", "/usr/bin/python3", ["give a list of paths"]),
]


@pytest.mark.parametrize(
    "exercise_id, wrong, words", WRONG, ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG)]
)
def test_wrong_answer_fails_and_says_why(
    exercise_id: str, wrong: Any, words: list[str], no_leaks
) -> None:
    assert NEEDS_KERNEL[exercise_id], f"{exercise_id} is checked in tests/unit"
    if callable(wrong) and isinstance(solution(exercise_id), str):
        wrong = wrong(solution(exercise_id))
    result = ebpf_lab.check(exercise_id, wrong)
    assert not result.ok, str(result)
    assert not result
    assert str(result).startswith(f"✗ {exercise_id}"), str(result)
    for word in words:  # (str() adds the compiler's or verifier's log, when there is one)
        assert word in str(result), f"{word!r} not in: {result}"


def test_a_kernel_check_runs_live_during_a_replay(tmp_path: Path, no_leaks) -> None:
    """While a recording is replayed, a check that runs C still uses the kernel, and the
    replay's own call order is untouched."""
    (tmp_path / recordings.MANIFEST).write_text(
        json.dumps({"format": 1, "kernel": "x", "recorded_at": None, "entries": []})
    )
    ebpf_lab.replay(tmp_path)
    try:
        result = ebpf_lab.check("02.1", solution("02.1"))
        assert result.ok, str(result)
        assert recordings.current().cursor == {}
    finally:
        recordings.off()
