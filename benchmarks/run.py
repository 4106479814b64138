"""ebpf-lab benchmarks: what the lab costs the machine, measured on the running kernel.

Run as root from the repository (``sudo make bench``, or ``sudo .venv/bin/python
benchmarks/run.py``). Prints a table and writes ``benchmarks/results.json``: one key per figure
(``value`` = median over the rounds, ``min``, ``max``, ``rounds``, ``unit``, ``target``, ``met``,
``note``) and ``machine`` (kernel, cores, bcc, python, date, mode).

Figures:

- ``exec_overhead_counts`` / ``exec_overhead_events_perf`` / ``exec_overhead_events_ring``: the
  rate of a fixed loop of execs of /bin/true as a UID nobody uses, timed inside the workload,
  while ``exec_counts`` (or ``exec_events`` with a perf / ring buffer) is attached, divided by
  the mean rate of the same loop with nothing attached just before and just after (A-B-A); the
  ratio of each round is one sample, and the two untraced loops' ratio (A/A) is the noise floor.
- ``stream_events_per_s``, ``stream_lost``, ``naive_callback_events_per_s``,
  ``naive_delivered_fraction``: :func:`ebpf_lab.transfer_rates` (the batched path and BCC's
  per-event callback on the same known source, one after the other, in every round); the source
  is the lab's C read loop in 2 threads (``source="read_loop"``), also timed untraced each round.
- ``run_overhead_s`` / ``run_overhead_cold_s``: wall time of ``exec_counts(duration=0.5)`` minus
  0.5 s, with its phases (compile, load + attach, the run's tail, frame, detach, the rest) timed
  by wrapping the core's functions from outside; in each round once with the compile cache
  emptied (cold: BCC compiles with clang, as a program's first run in a process) and once more
  (warm: the cache's bytecode, as every later run).
- ``bytes_per_event``: ``df.memory_usage(deep=True).sum() / len(df)`` of an ``exec_events``
  frame of a few thousand execs.
- ``ns_per_event_01_hello`` / ``_02_counter`` / ``_09_open_latency`` / ``_12_profile``: what
  one run of each lesson's BPF program costs in the kernel (``run_time_ns / run_cnt`` with
  ``kernel.bpf_stats_enabled``, read with bpftool while attached), beside the lesson's bpftrace
  one-liner and an empty program on the same hook (the floor), each attached alone over the same
  workload, rounds interleaved (``benchmarks/program_cost.py``). Goals: every lab program cheaper
  than its bpftrace equivalent; the counter within 3x of the floor. Printed as a second table.
- ``rss_growth_mb``: this process's VmRSS growth during a 5-minute ``exec_counts`` (no widgets)
  with a steady, paced exec workload: last sample minus the sample after a warm-up.

``--quick`` runs fewer, shorter rounds (and a 30 s RSS run) for development; ``--only NAME``
runs some figures (exec, stream, overhead, bytes, rss, cost).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ebpf_lab  # noqa: E402
from ebpf_lab.core import compile_cache  # noqa: E402
from ebpf_lab.workloads import execs, fast_execs, unused_uid  # noqa: E402

# the modules (ebpf_lab.exec_counts, as an attribute, is the function it exports)
core = sys.modules["ebpf_lab.core.run"]
from ebpf_lab.lessons.l02_maps import exec_counts as exec_counts_module  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from program_cost import bench_program_cost, cost_table  # noqa: E402

RESULTS = REPO / "benchmarks" / "results.json"
GROUPS = ("exec", "stream", "overhead", "bytes", "rss", "cost")


def say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "value": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "rounds": len(samples),
    }


def figure(
    samples: list[float], unit: str, target: str, met: bool, note: str, **extra: Any
) -> dict[str, Any]:
    return {
        **summary(samples),
        "unit": unit,
        "target": target,
        "met": bool(met),
        "note": note,
        **extra,
    }


# ------------------------------------------------------------------------ exec overhead


def exec_loop(uid: int, n: int) -> float:
    """Exec /bin/true ``n`` times as ``uid`` (the lab's C exec loop); return its execs/s."""
    done = fast_execs(uid, n)
    return float(done["execs_per_s"].iloc[0])


TRACERS: dict[str, Callable[[Callable[[], Any]], Any]] = {
    "exec_overhead_counts": lambda w: ebpf_lab.exec_counts(
        duration=1.0, interval=1.0, workload=w, live=False
    ),
    "exec_overhead_events_perf": lambda w: ebpf_lab.exec_events(
        duration=0.1, buffer="perf", workload=w, live=False
    ),
    "exec_overhead_events_ring": lambda w: ebpf_lab.exec_events(
        duration=0.1, buffer="ring", workload=w, live=False
    ),
}
EXEC_TARGETS = {
    "exec_overhead_counts": 0.98,
    "exec_overhead_events_perf": 0.95,
    "exec_overhead_events_ring": 0.95,
}


def bench_exec(rounds: int, n: int) -> dict[str, Any]:
    """Each round and tracer: untraced loop, traced loop, untraced loop (A-B-A). The ratio is
    traced / mean(untraced); the two untraced loops' ratio (A/A) shows the noise floor."""
    uid = unused_uid()
    say(f"exec overhead: {rounds} rounds x 3 tracers, A-B-A loops of {n} execs as uid {uid}")
    exec_loop(uid, n)  # warm the page cache and the exec path
    ratios: dict[str, list[float]] = {name: [] for name in TRACERS}
    traced: dict[str, list[float]] = {name: [] for name in TRACERS}
    untraced: dict[str, list[float]] = {name: [] for name in TRACERS}
    seen: dict[str, list[int]] = {name: [] for name in TRACERS}
    noise: list[float] = []
    for r in range(rounds):
        for name, tracer in TRACERS.items():
            box: dict[str, float] = {}
            before = exec_loop(uid, n)
            df = tracer(lambda box=box: box.update(rate=exec_loop(uid, n)))
            after = exec_loop(uid, n)
            if "execs" in df.columns:
                seen[name].append(int(df.loc[df["uid"] == uid, "execs"].sum()))
            else:
                seen[name].append(int((df["uid"] == uid).sum()))
            ratios[name].append(box["rate"] / ((before + after) / 2))
            traced[name].append(box["rate"])
            untraced[name].extend([before, after])
            noise.append(after / before)
        say(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{k.split('_', 2)[2]} {v[-1]:.3f}" for k, v in ratios.items())
            + f" (A/A {', '.join(f'{x:.3f}' for x in noise[-3:])})"
        )
    spread = statistics.median(abs(x - 1) for x in noise)
    out = {}
    for name, samples in ratios.items():
        exact = all(c == n for c in seen[name])
        value = statistics.median(samples)
        out[name] = figure(
            samples,
            "ratio",
            f">= {EXEC_TARGETS[name]}",
            value >= EXEC_TARGETS[name],
            f"{n} execs of /bin/true per loop as an unused UID, A-B-A (untraced, traced, "
            f"untraced); median {statistics.median(traced[name]):.0f} exec/s traced vs "
            f"{statistics.median(untraced[name]):.0f} exec/s untraced. Noise floor: two "
            f"untraced loops back to back differ by {spread:.1%} (median; A/A ratios "
            f"{min(noise):.2f}..{max(noise):.2f}), so a {1 - EXEC_TARGETS[name]:.0%} effect is "
            f"{'below' if spread > 1 - EXEC_TARGETS[name] else 'about at'} what one round can "
            f"resolve; the median over rounds is the figure. The loop is the lab's C exec loop "
            f"(ebpf_lab/workloads/c/exec_loop.c: switch to the UID once, then vfork + execve + "
            f"wait, {n} times; timed by the loop itself). The program saw "
            f"{'exactly' if exact else 'NOT exactly'} {n} execs of the UID in every traced loop",
            execs_per_loop=n,
            traced_execs_per_s=summary(traced[name]),
            untraced_execs_per_s=summary(untraced[name]),
            untraced_a_a_ratio=summary(noise),
            untraced_spread=spread,
        )
    return out


# ------------------------------------------------------------------------ stream


#: the stream benchmark's source: the lab's C read loop (ebpf_lab/workloads/c/read_loop.c)
STREAM_SOURCE = "read_loop"
#: its threads (one tgid); 2 = the cores of the machine the targets were set on
STREAM_THREADS = 2
#: events per ring buffer record on the batched path (fewer, bigger records than the lesson's 256)
STREAM_BATCH = 1024


def untraced_read_loop_rate(events: int) -> float:
    """Reads/s of the stream source with nothing attached (the child's own loop timing)."""
    from ebpf_lab.workloads import read_loop_child

    with read_loop_child(events, STREAM_THREADS) as child:
        done = child.run()
    return events / float(done["loop_seconds"].iloc[0])


def bench_stream(rounds: int, events: int) -> dict[str, Any]:
    say(
        f"stream: {rounds} rounds of transfer_rates({events:,}, source={STREAM_SOURCE!r}, "
        f"threads={STREAM_THREADS}, batch={STREAM_BATCH}) (callback, then batched), and the "
        "source untraced"
    )
    keys = (
        "stream_events_per_s",
        "stream_lost",
        "naive_callback_events_per_s",
        "naive_delivered_fraction",
    )
    samples: dict[str, list[float]] = {k: [] for k in keys}
    source: dict[str, list[float]] = {"batched": [], "callback": []}
    untraced: list[float] = []
    us_per_event: list[float] = []
    balanced = exact = True
    for r in range(rounds):
        untraced.append(untraced_read_loop_rate(events))
        out = ebpf_lab.transfer_rates(
            events, batch=STREAM_BATCH, live=False, source=STREAM_SOURCE, threads=STREAM_THREADS
        )
        bench = out.attrs["benchmark"]
        for k in keys:
            samples[k].append(float(bench[k]))
        by = out.set_index("path")
        for path in source:
            source[path].append(float(by.loc[path, "source_events_per_s"]))
        us_per_event.append(float(by.loc["batched", "us_per_event"]))
        balanced &= bool((out["delivered"] + out["lost"] == out["generated"]).all())
        exact &= bool((out["generated"] == events).all())
        say(
            f"  round {r + 1}/{rounds}: batched {bench['stream_events_per_s'] / 1e6:.2f} M/s "
            f"(source {source['batched'][-1] / 1e6:.2f} M/s, lost {bench['stream_lost']}), "
            f"callback {bench['naive_callback_events_per_s'] / 1e6:.2f} M/s, delivered "
            f"{bench['naive_delivered_fraction']:.1%}; untraced source {untraced[-1] / 1e6:.2f} M/s"
        )
    src = statistics.median(source["batched"])
    rate = statistics.median(samples["stream_events_per_s"])
    us = statistics.median(us_per_event)
    ceiling = 1e6 / us
    kept_up = all(
        abs(s - b) / s < 0.01 for s, b in zip(source["batched"], samples["stream_events_per_s"])
    )
    source_text = (
        f"The source: the lab's C read loop (ebpf_lab/workloads/c/read_loop.c, built with gcc), "
        f"{events:,} one-byte read()s of /dev/zero split over {STREAM_THREADS} threads of one "
        f"process, counted on the sys_enter raw tracepoint (filtered on the tgid, then the "
        f"syscall number). Traced, it made {src / 1e6:.2f} M reads/s (median; "
        f"{min(source['batched']) / 1e6:.2f}-{max(source['batched']) / 1e6:.2f}); untraced, "
        f"{statistics.median(untraced) / 1e6:.2f} M/s. The program counted exactly "
        f"{events:,} events in {'every' if exact else 'NOT every'} run. The batched path "
        + ("delivered every event as fast as the source made them" if kept_up else "fell behind")
        + f"; its reading thread spent {us:.3f} us of CPU per event (decoding included), which "
        f"would allow ~{ceiling / 1e6:.0f} M events/s on one core."
    )
    if rate < 2e6:
        source_text += (
            " The target is not met: the figure is the traced source's rate, limited by the "
            "per-call cost of the program on every system call entry and by the 2 source "
            "threads and the reading thread sharing the machine's cores."
        )
    source_note = source_text
    return {
        "stream_events_per_s": figure(
            samples["stream_events_per_s"],
            "events/s",
            ">= 2000000",
            rate >= 2e6,
            f"batched path (per-CPU batches of {STREAM_BATCH} events in one ring buffer record, "
            f"decoded with numpy), {events:,} events a round. {source_note}",
            source=STREAM_SOURCE,
            threads=STREAM_THREADS,
            source_events_per_s=summary(source["batched"]),
            untraced_source_events_per_s=summary(untraced),
            reader_us_per_event=summary(us_per_event),
            reader_ceiling_events_per_s=ceiling,
        ),
        "stream_lost": figure(
            samples["stream_lost"],
            "events",
            "every loss counted: delivered + lost == generated",
            balanced,
            "events the batched path lost (ring buffer full), counted in the kernel; "
            f"delivered + lost == generated in {'every' if balanced else 'NOT every'} run",
        ),
        "naive_callback_events_per_s": figure(
            samples["naive_callback_events_per_s"],
            "events/s",
            "< stream_events_per_s (for comparison)",
            statistics.median(samples["naive_callback_events_per_s"]) < rate,
            "BCC's per-event Python callback on a ring buffer, same source, same run (its "
            "program on the syscalls:sys_enter_read tracepoint, by tgid and fd 0); source "
            f"median {statistics.median(source['callback']) / 1e6:.2f} M events/s",
            source_events_per_s=summary(source["callback"]),
        ),
        "naive_delivered_fraction": figure(
            samples["naive_delivered_fraction"],
            "fraction",
            "reported, losses counted (for comparison)",
            balanced,
            "share of the source's events the per-event callback got; the rest were refused "
            "by the full ring buffer and counted by the program",
        ),
    }


# ------------------------------------------------------------------------ run overhead


@contextlib.contextmanager
def phase_timer() -> Iterator[dict[str, list[tuple[float, float]]]]:
    """Wrap the core's steps (from outside: run.py is not changed) and record their times."""
    spans: dict[str, list[tuple[float, float]]] = {}
    patched: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:
            return

        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kw)
            finally:
                spans.setdefault(label, []).append((t0, time.perf_counter()))

        setattr(owner, attr, timed)
        patched.append((owner, attr, original))

    wrap(core, "compile_program", "compile")
    wrap(core, "_attach_first_working", "attach")
    wrap(core, "release", "detach")
    wrap(exec_counts_module._Snapshots, "finish", "frame")
    try:
        yield spans
    finally:
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


def _overhead_round(duration: float) -> tuple[float, dict[str, float], str]:
    """One timed exec_counts run: its overhead, its phases, the attach point used."""
    with phase_timer() as spans:
        t0 = time.perf_counter()
        df = ebpf_lab.exec_counts(duration=duration, interval=duration, live=False)
        wall = time.perf_counter() - t0
    overhead = wall - duration
    got = {k: v[-1][1] - v[-1][0] for k, v in spans.items()}
    if {"attach", "frame"} <= set(spans):
        # from the end of attaching to the start of building the frame: duration + tail
        got["tail"] = spans["frame"][-1][0] - spans["attach"][-1][1] - duration
    known = sum(got.get(k, 0.0) for k in ("compile", "attach", "tail", "frame", "detach"))
    got["rest"] = overhead - known
    return overhead, got, str(df.attrs["attach"])


def bench_overhead(rounds: int, duration: float = 0.5) -> dict[str, Any]:
    say(
        f"run overhead: {rounds} x (exec_counts(duration={duration}) with the compile cache "
        "emptied, then again with it), phases timed"
    )
    ebpf_lab.exec_counts(duration=0.1, interval=0.1, live=False)  # warm-up: imports, caches
    names = ("compile", "attach", "tail", "frame", "detach", "rest")
    overheads: dict[str, list[float]] = {"cold": [], "warm": []}
    phases: dict[str, dict[str, list[float]]] = {m: {k: [] for k in names} for m in overheads}
    answered = 0
    for r in range(rounds):
        for mode in ("cold", "warm"):
            if mode == "cold":
                compile_cache.clear()  # as in a fresh kernel: BCC compiles with clang
            overhead, got, attach = _overhead_round(duration)
            if mode == "warm":
                answered += compile_cache.info()["hits"]  # emptied before the cold run: 0 or 1
            overheads[mode].append(overhead)
            for k in names:
                phases[mode][k].append(got.get(k, float("nan")))
            say(
                f"  round {r + 1}/{rounds} {mode}: overhead {overhead:.3f} s ("
                + ", ".join(f"{k} {phases[mode][k][-1]:.3f}" for k in names)
                + f"); attach={attach}"
            )
    med = {m: {k: statistics.median(v) for k, v in p.items()} for m, p in phases.items()}

    def phase_text(m: dict[str, float]) -> str:
        return (
            f"compile {m['compile']:.3f} s, load+verify+attach {m['attach']:.3f} s, run tail "
            f"after the duration {m['tail']:.3f} s, frame {m['frame']:.3f} s, detach "
            f"{m['detach']:.3f} s, rest (argument checks, reading the C, root/bcc checks) "
            f"{m['rest']:.3f} s"
        )

    warm = statistics.median(overheads["warm"])
    return {
        "run_overhead_s": figure(
            overheads["warm"],
            "s",
            "<= 0.5",
            warm <= 0.5,
            f"exec_counts(duration={duration}) wall time minus {duration} s, for a program the "
            "process has run before (every run after the first in a Jupyter kernel): the "
            "compile cache (ebpf_lab/core/compile_cache.py) keeps what clang made, as bytes, and a "
            "new run creates fresh maps and loads the same instructions (the verifier checks "
            f"them again). Median phases: {phase_text(med['warm'])}. Detaching a tracepoint "
            "waits for the kernel's RCU grace period. The compile cache answered "
            f"{answered} of these {rounds} runs.",
            phases_s={k: summary(v) for k, v in phases["warm"].items()},
        ),
        "run_overhead_cold_s": figure(
            overheads["cold"],
            "s",
            "reported (first run of a program in a process)",
            True,
            f"the same run with the compile cache emptied first, as the first run of each "
            f"program in a new Jupyter kernel: BCC compiles the C with clang (it cannot load "
            f"prebuilt bytecode, iovisor/bcc#534; about a third of its time is BCC re-reading "
            f"/proc/kallsyms). Median phases: {phase_text(med['cold'])}.",
            phases_s={k: summary(v) for k, v in phases["cold"].items()},
        ),
    }


# ------------------------------------------------------------------------ bytes per event


def bench_bytes(rounds: int, n: int) -> dict[str, Any]:
    uid = 0  # as root: subprocess spawns with vfork, ~10x faster than when it switches UID
    say(f"bytes per event: {rounds} exec_events frames of {n} execs (perf and ring in turn)")
    samples: list[float] = []
    rows: list[int] = []
    columns: dict[str, float] = {}
    for r in range(rounds):
        buffer = ("ring", "perf")[r % 2]
        df = ebpf_lab.exec_events(
            duration=0.1, buffer=buffer, workload=lambda: execs({uid: n}), live=False
        )
        usage = df.memory_usage(deep=True)
        samples.append(float(usage.sum()) / len(df))
        rows.append(len(df))
        columns = {k: round(float(v) / len(df), 1) for k, v in usage.items()}
        say(f"  round {r + 1}/{rounds} ({buffer}): {len(df)} rows, {samples[-1]:.1f} bytes/row")
    value = statistics.median(samples)
    dtypes = dict(df.dtypes.astype(str))
    return {
        "bytes_per_event": figure(
            samples,
            "bytes/row",
            "<= 64",
            value <= 64,
            f"df.memory_usage(deep=True).sum() / len(df) for exec_events frames of "
            f"{min(rows)}..{max(rows)} rows; per column (bytes/row) {columns}; dtypes {dtypes}",
        )
    }


# ------------------------------------------------------------------------ RSS


def vm_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def bench_rss(seconds: float, warm_up: float, every: float, per_second: float) -> dict[str, Any]:
    uid = unused_uid()
    n = int(seconds * per_second)
    say(
        f"RSS: exec_counts(duration={seconds:g}, live=False) with {n} execs paced at "
        f"{per_second:g}/s; VmRSS every {every:g} s, growth after a {warm_up:g} s warm-up"
    )
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def sampler() -> None:
        while not stop.is_set():
            samples.append((time.monotonic() - t0, vm_rss_mb()))
            stop.wait(every)

    thread = threading.Thread(target=sampler, name="bench-rss", daemon=True)
    thread.start()
    box: dict[str, Any] = {}
    try:
        df = ebpf_lab.exec_counts(
            duration=seconds,
            interval=1.0,
            workload=lambda: box.update(done=execs({uid: n}, per_second=per_second)),
            live=False,
        )
    finally:
        stop.set()
        thread.join()
    samples.append((time.monotonic() - t0, vm_rss_mb()))
    after_warm_up = next(rss for t, rss in samples if t >= warm_up)
    growth = samples[-1][1] - after_warm_up
    seen = int(df.loc[df["uid"] == uid, "execs"].sum())
    values = [rss for _, rss in samples]
    return {
        "rss_growth_mb": {
            "value": growth,
            "min": min(values) - after_warm_up,
            "max": max(values) - after_warm_up,
            "rounds": 1,
            "unit": "MB",
            "target": "<= 5 (about 0)",
            "met": growth <= 5,
            "note": (
                f"one {seconds:g} s exec_counts run (interval 1 s, no widgets), {n} paced execs "
                f"(the map saw {seen}); VmRSS {after_warm_up:.1f} MB after {warm_up:g} s, "
                f"{samples[-1][1]:.1f} MB at the end, {len(samples)} samples every {every:g} s; "
                f"min/max are the lowest/highest sample relative to the post-warm-up one. The "
                f"frame itself grows with the run ({len(df)} rows)"
            ),
            "samples_mb": [[round(t, 1), round(rss, 2)] for t, rss in samples],
        }
    }


# ------------------------------------------------------------------------ report


def machine(quick: bool) -> dict[str, Any]:
    import bcc

    return {
        "kernel": platform.release(),
        "cores": os.cpu_count(),
        "bcc": getattr(bcc, "__version__", "?"),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def fmt(value: float, unit: str) -> str:
    if unit == "events/s" or (unit == "events" and abs(value) >= 1000):
        return f"{value:,.0f}"
    if unit == "ratio" or unit == "fraction":
        return f"{value:.3f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def table(results: dict[str, Any]) -> str:
    header = ["figure", "value", "min", "max", "rounds", "unit", "A/A spread", "target", "met"]
    rows = [header]
    for name, f in results.items():
        if name == "machine":
            continue
        rows.append(
            [
                name,
                fmt(f["value"], f["unit"]),
                fmt(f["min"], f["unit"]),
                fmt(f["max"], f["unit"]),
                str(f["rounds"]),
                f["unit"],
                f"{f['untraced_spread']:.1%}" if "untraced_spread" in f else "",
                f["target"],
                "yes" if f["met"] else "NO",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    m = results["machine"]
    lines.append("")
    lines.append(
        f"kernel {m['kernel']}, {m['cores']} cores, bcc {m['bcc']}, Python {m['python']}, "
        f"{m['date']}, {m['mode']} run, load average at start {m['load_average_at_start']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds; 30 s RSS run")
    parser.add_argument(
        "--only", action="append", choices=GROUPS, help="run only these figures (repeatable)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds (default: 9 exec, 5 stream, 7 overhead and cost; --quick 3)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file (default {RESULTS})")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: sudo make bench (the benchmarks load eBPF programs)", file=sys.stderr)
        return 1
    quick = args.quick
    rounds = args.rounds or (3 if quick else 7)
    if rounds < 3:
        parser.error("--rounds must be at least 3")
    groups = args.only or list(GROUPS)
    started = time.monotonic()
    results: dict[str, Any] = {}
    if "exec" in groups:  # the noisiest figures (a fork from a big process): more rounds
        results.update(bench_exec(args.rounds or (3 if quick else 9), 500 if quick else 2000))
    if "stream" in groups:
        results.update(
            bench_stream(args.rounds or (3 if quick else 5), 10**6 * (1 if quick else 2))
        )
    if "overhead" in groups:
        results.update(bench_overhead(rounds))
    if "bytes" in groups:
        results.update(bench_bytes(3, 1000 if quick else 3000))
    if "cost" in groups:
        results.update(bench_program_cost(rounds, quick, say))
    if "rss" in groups:
        if quick:
            results.update(bench_rss(30, warm_up=5, every=2, per_second=20))
        else:
            results.update(bench_rss(300, warm_up=30, every=5, per_second=20))
    results["machine"] = machine(quick)
    results["machine"]["seconds"] = round(time.monotonic() - started, 1)
    print(table(results))
    costs = cost_table(results)
    if costs:
        print()
        print("ns per event, each program attached alone over the same workload:")
        print(costs)
    print()
    for name, f in results.items():
        if name != "machine":
            print(f"- {name}: {f['note']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    say(f"wrote {args.out} ({results['machine']['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
