"""What one run of a lesson's BPF program costs, next to bpftrace's and an empty program's.

For lessons 01 (hello), 02 (exec counter), 09 (openat latency) and 12 (CPU profile), three
subjects are attached **alone**, one after the other, over the same known workload, with
``kernel.bpf_stats_enabled`` on (:func:`ebpf_lab.kernel.bpftool.bpf_stats`, restored after):

* ``lab``: the lesson's own function (BCC), on the same hook as bpftrace (the tracepoints);
* ``bpftrace``: the lesson's ``*_bpftrace()`` one-liner;
* ``floor``: an empty program (``return 0``) on the same hook(s), through the same core.

While each is still attached, right after its workload, ``bpftool -j prog show`` gives the
kernel's ``run_cnt`` and ``run_time_ns`` of the programs this process (or its bpftrace) holds on
that hook's program type. A subject's **ns per event** is ``sum(run_time_ns) / (sum(run_cnt) /
hooks)``: for lesson 09 an event is one openat call (two programs: entry and exit). Rounds are
interleaved: every round runs every lesson's three subjects, so drift of the machine touches all
alike. Goals: every lab program cheaper than its bpftrace equivalent; the counter (lesson 02)
within 3x of the floor.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ebpf_lab
from ebpf_lab.core.attach import Probe
from ebpf_lab.core.kernelfs import held_prog_ids
from ebpf_lab.core.run import Alternative, Collector, bounded_run
from ebpf_lab.kernel import bpftool
from ebpf_lab.lessons.l01_hello.hello import hello_bpftrace
from ebpf_lab.lessons.l02_maps.exec_counts import exec_counts_bpftrace
from ebpf_lab.lessons.l09_tracing.syscall_latency import open_latency_bpftrace
from ebpf_lab.lessons.l12_performance.profile_bpftrace import cpu_profile_bpftrace
from ebpf_lab.workloads import fast_execs, mixed_cpu_child, opens_child, unused_uid

SUBJECTS = ("lab", "bpftrace", "floor")
#: the counter's goal: at most this many times the empty program's cost
FLOOR_FACTOR = 3.0
_EMPTY = "int floor_{i}(void *ctx) {{ return 0; }}\n"


@dataclass(frozen=True)
class Lesson:
    """One lesson's row: its hook(s), its workload, and how to run each subject over it."""

    name: str
    program: str
    hooks: tuple[Probe, ...]
    #: (subject runner, workload) -> None; the workload reads the statistics while attached
    run: Callable[[str, Callable[[], None]], None]
    #: what one event is
    event: str
    #: why the numbers are what they are, where it is not obvious
    why: str = ""


def _children_prog_ids() -> set[int]:
    """Programs held by this process's bpftrace children (found by their parent pid)."""
    ids: set[int] = set()
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            comm, rest = text.split("(", 1)[1].rsplit(")", 1)
            ppid = rest.split()[1]
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and comm == "bpftrace":
            ids |= held_prog_ids(stat.parent.name)
    return ids


def _stats(ids: set[int], prog_type: str) -> tuple[int, int, int]:
    """(programs, run_cnt, run_time_ns) summed over ``ids`` of type ``prog_type``."""
    answer = bpftool.run("prog", "show")
    rows = [
        r for r in bpftool.prog_records(answer.data) if r["id"] in ids and r["type"] == prog_type
    ]
    return len(rows), sum(r["run_cnt"] for r in rows), sum(r["run_time_ns"] for r in rows)


def _floor(hooks: tuple[Probe, ...], workload: Callable[[], None]) -> None:
    """An empty program on each hook, attached alone through the core while ``workload`` runs."""
    source = "".join(_EMPTY.format(i=i) for i in range(len(hooks)))
    probes = [dataclasses.replace(h, fn=f"floor_{i}") for i, h in enumerate(hooks)]
    bounded_run(
        name="bench_floor",
        source=source,
        alternatives=[Alternative(hooks[0].kind, probes, "the lesson's hooks, empty programs")],
        collector=Collector(),
        duration=0.05,
        workload=workload,
        live=False,
    )


def measure(lesson: Lesson, subject: str) -> dict[str, Any]:
    """Run ``subject`` of ``lesson`` once; its programs' statistics, read while attached."""
    before = held_prog_ids()
    got: dict[str, Any] = {}
    prog_type = "perf_event" if lesson.hooks[0].kind == "perf_event" else "tracepoint"

    def read_stats() -> None:
        ids = (held_prog_ids() - before) | _children_prog_ids()
        got["programs"], got["run_cnt"], got["run_time_ns"] = _stats(ids, prog_type)

    lesson.run(subject, read_stats)
    runs = got["run_cnt"] / max(len(lesson.hooks), 1)
    got["ns_per_event"] = got["run_time_ns"] / runs if runs else float("nan")
    return got


def lessons(quick: bool) -> list[Lesson]:
    """The four lessons with their workloads (smaller with ``quick``)."""
    n_execs = 200 if quick else 1000
    opens, missing = (2000, 500) if quick else (10000, 2000)
    cpu_s = 0.3 if quick else 1.0
    uid = unused_uid()
    execve = (Probe("tracepoint", "syscalls:sys_enter_execve", "x"),)
    openat = (
        Probe("tracepoint", "syscalls:sys_enter_openat", "x"),
        Probe("tracepoint", "syscalls:sys_exit_openat", "x"),
    )
    clock = (Probe("perf_event", "software:cpu-clock", "x", sample_freq=997),)
    target = Path(tempfile.mkdtemp(prefix="ebpf-lab-bench-")) / "target.txt"
    target.write_text("ebpf-lab\n")

    def execs_then(read: Callable[[], None]) -> Callable[[], None]:
        return lambda: (fast_execs(uid, n_execs), read())

    def run_hello(subject: str, read: Callable[[], None]) -> None:
        w = execs_then(read)
        if subject == "lab":
            ebpf_lab.hello(duration=0.05, attach="tracepoint", workload=w, live=False)
        elif subject == "bpftrace":
            hello_bpftrace(duration=0.05, workload=w, live=False)
        else:
            _floor(execve, w)

    def run_counts(subject: str, read: Callable[[], None]) -> None:
        w = execs_then(read)
        if subject == "lab":
            ebpf_lab.exec_counts(
                duration=0.05, interval=0.05, attach="tracepoint", workload=w, live=False
            )
        elif subject == "bpftrace":
            exec_counts_bpftrace(duration=0.05, interval=0.05, workload=w, live=False)
        else:
            _floor(execve, w)

    def run_opens(subject: str, read: Callable[[], None]) -> None:
        with opens_child(str(target), opens, missing) as child:

            def w() -> None:
                child.run()
                read()

            if subject == "lab":
                ebpf_lab.open_latency(
                    duration=0.05, pid=child.pid, events=False, workload=w, live=False
                )
            elif subject == "bpftrace":
                open_latency_bpftrace(duration=0.05, pid=child.pid, workload=w, live=False)
            else:
                _floor(openat, w)

    def run_profile(subject: str, read: Callable[[], None]) -> None:
        with mixed_cpu_child(cpu_s / 2, cpu_s / 2) as child:

            def w() -> None:
                child.run()
                read()

            if subject == "lab":
                ebpf_lab.cpu_profile(duration=0.05, pid=child.pid, workload=w, live=False)
            elif subject == "bpftrace":
                cpu_profile_bpftrace(duration=0.05, pid=child.pid, workload=w, live=False)
            else:
                _floor(clock, w)

    return [
        Lesson(
            "01_hello",
            "hello.bpf.c (bpf_trace_printk)",
            execve,
            run_hello,
            "execve",
            " bpf_trace_printk() formats the text in the kernel and writes it into the trace "
            "ring buffers under their lock; bpftrace's printf() copies its arguments into a "
            "perf buffer and formats in user space: the lesson's program is the seed's, not "
            "the cheapest way to send a line.",
        ),
        Lesson("02_counter", "exec_count.bpf.c (atomic add)", execve, run_counts, "execve"),
        Lesson(
            "09_open_latency",
            "syscall_latency.bpf.c (histogram only, as bpftrace)",
            openat,
            run_opens,
            "openat call",
        ),
        Lesson("12_profile", "profile.bpf.c (two stacks)", clock, run_profile, "sample"),
    ]


def bench_program_cost(rounds: int, quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Every lesson's three subjects, rounds interleaved; one figure per lesson."""
    todo = lessons(quick)
    say(
        f"program cost: {rounds} rounds x {len(todo)} lessons x (lab, bpftrace, empty program), "
        "each attached alone, kernel.bpf_stats_enabled on"
    )
    ns: dict[str, dict[str, list[float]]] = {
        lesson.name: {s: [] for s in SUBJECTS} for lesson in todo
    }
    programs: dict[str, dict[str, int]] = {lesson.name: {} for lesson in todo}
    with bpftool.bpf_stats():
        for r in range(rounds):
            for lesson in todo:
                for subject in SUBJECTS:
                    got = measure(lesson, subject)
                    ns[lesson.name][subject].append(got["ns_per_event"])
                    programs[lesson.name][subject] = got["programs"]
                say(
                    f"  round {r + 1}/{rounds} {lesson.name}: "
                    + ", ".join(f"{s} {ns[lesson.name][s][-1]:.0f} ns" for s in SUBJECTS)
                )
    out: dict[str, Any] = {}
    for lesson in todo:
        med = {s: statistics.median(v) for s, v in ns[lesson.name].items()}
        cheaper = med["lab"] < med["bpftrace"]
        target = "< bpftrace"
        met = cheaper
        if lesson.name == "02_counter":
            target += f", <= {FLOOR_FACTOR:g}x floor"
            met = cheaper and med["lab"] <= FLOOR_FACTOR * med["floor"]
        out[f"ns_per_event_{lesson.name}"] = {
            "value": med["lab"],
            "min": min(ns[lesson.name]["lab"]),
            "max": max(ns[lesson.name]["lab"]),
            "rounds": rounds,
            "unit": "ns/event",
            "target": target,
            "met": met,
            "note": (
                f"{lesson.program}: {med['lab']:.0f} ns per {lesson.event} (median), bpftrace "
                f"{med['bpftrace']:.0f} ns, an empty program on the same hook {med['floor']:.0f} "
                f"ns (lab / floor {med['lab'] / med['floor']:.1f}x, bpftrace / floor "
                f"{med['bpftrace'] / med['floor']:.1f}x); run_time_ns / run_cnt from "
                "kernel.bpf_stats_enabled (includes the kernel's own bookkeeping per run), "
                f"programs per subject {programs[lesson.name]}.{lesson.why}"
            ),
            "bpftrace": {**_summary(ns[lesson.name]["bpftrace"])},
            "floor": {**_summary(ns[lesson.name]["floor"])},
            "rounds_ns": {s: [round(x, 1) for x in v] for s, v in ns[lesson.name].items()},
        }
    return out


def _summary(samples: list[float]) -> dict[str, float]:
    return {"value": statistics.median(samples), "min": min(samples), "max": max(samples)}


def cost_table(results: dict[str, Any]) -> str:
    """The ns-per-event figures as a table: lab, bpftrace, floor, and the ratios."""
    rows = [["lesson", "lab ns", "bpftrace ns", "floor ns", "lab/floor", "lab < bpftrace"]]
    for name, f in results.items():
        if not name.startswith("ns_per_event_"):
            continue
        lab, bt, fl = f["value"], f["bpftrace"]["value"], f["floor"]["value"]
        rows.append(
            [
                name.removeprefix("ns_per_event_"),
                f"{lab:.0f}",
                f"{bt:.0f}",
                f"{fl:.0f}",
                f"{lab / fl:.1f}x",
                "yes" if lab < bt else "NO",
            ]
        )
    if len(rows) == 1:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
