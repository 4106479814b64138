"""Lesson 09: system call latency, measured in the kernel from a pair of tracepoints.

The program (``programs/syscall_latency.bpf.c``) runs at the two tracepoints of the ``openat()``
system call. At ``sys_enter_openat`` it remembers the time (and the path's address) in a hash map
keyed by the thread; at ``sys_exit_openat`` it takes the difference, and

* adds 1 to a **log2 histogram** slot per process: only counters cross to user space, however
  many calls there were (BCC's ``funclatency``/``syscount -L`` way), and
* sends **one event per call** (pid, thread, comm, path, return value, latency) through a ring
  buffer (BCC's ``opensnoop`` way).

Pair it with :func:`ebpf_lab.workloads.opens_child`, a child process that makes a known number of
successful opens and of opens that fail with ``ENOENT``; give its pid as ``pid=`` and every
count is exact::

    child = ebpf_lab.workloads.opens_child("/etc/hostname", opens=500, missing=200)
    with child:
        hist, events = ebpf_lab.open_latency(pid=child.pid, workload=child.run)

:func:`tracing_cost` times the same workload untraced, traced by this program, and under
``strace``.
"""

from __future__ import annotations

import errno as _errno
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, Callable, NamedTuple

import pandas as pd

from ebpf_lab.core.attach import Probe
from ebpf_lab.core.bpftrace import BpftraceOutput, bpftrace_tracer
from ebpf_lab.core.collectors import fill_maps, open_event_rows, tgid_filter
from ebpf_lab.core.guards import (
    check_duration,
    check_pid,
    check_positive_int,
    check_required_int,
    check_whole,
    check_workload,
    require_root,
)
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Alternative, Collector, RunContext, bounded_run, ended_early
from ebpf_lab.show.frames import Schema, decode_c_string, require_columns
from ebpf_lab.show.log2 import (  # human_ns: notebook 09 reads it here
    LATENCY_HISTOGRAM,
    bucket_bounds,
    histogram_frame,
    human_ns,  # noqa: F401
    latency_histogram,
    log2_bucket,
)

#: the system call the lesson measures (its two tracepoints)
SYSCALL = "openat"
#: bytes of the path kept per event
FILENAME_LEN = 128
#: ring buffer size in 4 KiB pages (4 MiB: ~23,000 events of 176 bytes between two polls)
RING_PAGES = 1024
#: the most events one call keeps in memory
MAX_EVENTS = 5_000_000

#: one event per call
EVENTS = Schema(
    time="time",
    pid="int64",
    tid="int64",
    comm="category",
    filename="string",
    ret="int64",
    errno="category",
    latency_ns="int64",
)
HIST_COLUMNS = LATENCY_HISTOGRAM.columns
EVENT_COLUMNS = EVENTS.columns

#: the same histogram as a bpftrace script (``$1``: the process to watch, 0 for every process);
#: bpftrace's ``hist()`` is the same power-of-two histogram as the lab's ``bpf_log2l`` slots
BPFTRACE = (
    "tracepoint:syscalls:sys_enter_openat /$1 == 0 || pid == $1/ { @start[tid] = nsecs; } "
    "tracepoint:syscalls:sys_exit_openat /@start[tid]/ "
    "{ @[pid, comm] = hist(nsecs - @start[tid]); delete(@start[tid]); } "
    "END { clear(@start); }"
)

_STATS = ("lost", "start_map_full", "hist_map_full", "exits_without_entry")


class OpenLatency(NamedTuple):
    """What :func:`open_latency` returns: two frames from one run (both carry its ``attrs``).

    Attributes:
        histogram: the kernel's log2 histogram, one row per process and power-of-two slot.
        events: one row per call (empty when ``events=False``).
    """

    histogram: pd.DataFrame
    events: pd.DataFrame


def errno_name(ret: int) -> str | None:
    """``-2`` -> ``"ENOENT"``; a return value >= 0 (success) -> None."""
    if ret >= 0:
        return None
    return _errno.errorcode.get(-ret, f"E{-ret}")


class _LatencyReader(Collector):
    """Drains the ring buffer while the run goes on; reads the histogram map at the end."""

    def __init__(
        self, events: bool, max_events: int | None, fill: dict[str, dict[int, int]]
    ) -> None:
        self.fill = fill
        self.events = events
        self.max_events = max_events
        self.rows: list[tuple[Any, ...]] = []
        self.histogram = pd.DataFrame()

    def prepare(self, bpf: Any) -> None:
        fill_maps(bpf, self.fill)  # the pid to watch, if any

    def start(self, ctx: RunContext) -> None:
        if not self.events:
            return
        open_event_rows(
            self,
            ctx.table("events"),
            lambda e: (e.ts, e.pid, e.tid, bytes(e.comm), bytes(e.filename), e.ret, e.latency_ns),
            self.rows,
            maximum=self.max_events,
            ring=True,
        )

    def poll(self, ctx: RunContext, timeout: float) -> None:
        if self.events:
            ctx.bpf.ring_buffer_poll(timeout=int(timeout * 1000))
        elif timeout > 0:
            time.sleep(timeout)

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        self.histogram = latency_histogram(
            ctx.table("latency_hist"), lambda key: decode_c_string(key.comm)
        )
        stats = ctx.table("stats")
        for i, name in enumerate(_STATS):
            ctx.attrs[name] = int(stats[i].value)
        ctx.attrs["calls"] = int(self.histogram["count"].sum())
        raw = pd.DataFrame(
            self.rows, columns=["ts", "pid", "tid", "comm", "filename", "ret", "latency_ns"]
        )
        df = pd.DataFrame(
            {
                "time": ctx.to_time(raw["ts"]).to_numpy(),
                "pid": raw["pid"],
                "tid": raw["tid"],
                "comm": [decode_c_string(c) for c in raw["comm"]],
                "filename": [decode_c_string(f) for f in raw["filename"]],
                "ret": raw["ret"],
                "errno": [errno_name(int(r)) for r in raw["ret"]],
                "latency_ns": raw["latency_ns"],
            }
        )
        df = EVENTS.frame(df)
        return df.sort_values("time", kind="stable", ignore_index=True)


def open_latency(
    duration: float = 1.0,
    workload: Callable[[], Any] | None = None,
    *,
    pid: int | None = None,
    events: bool = True,
    max_events: int | None = None,
    live: bool | None = None,
) -> OpenLatency:
    """Measure how long each ``openat()`` system call takes, in the kernel, for ``duration`` s.

    Two programs share a hash map: ``openat_enter`` (at ``syscalls:sys_enter_openat``) stores
    the entry time per thread; ``openat_exit`` (at ``syscalls:sys_exit_openat``) computes the
    latency, adds it to a per-process log2 histogram and, with ``events=True``, sends one event.

    Args:
        duration: seconds to stay attached (0 < duration <= 3600); the run also waits for
            ``workload``.
        workload: a callable run once attached, e.g. ``child.run`` of
            :func:`ebpf_lab.workloads.opens_child`.
        pid: count only this process (the filter runs in the kernel); None: every process.
        events: also send one event per call (False: the histogram only, which is cheaper).
        max_events: stop the run after this many events (None: no limit).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        An :class:`OpenLatency` ``(histogram, events)``:

        * ``histogram``: ``pid``, ``comm``, ``bucket``, ``low_ns``, ``high_ns``, ``count``: per
          process, one row per power-of-two slot from its lowest to its highest (slot ``b`` holds
          latencies of ``2**(b-1) .. 2**b - 1`` ns). Plot it with
          :func:`ebpf_lab.plot_latency_histogram`.
        * ``events``: ``time`` (when the call started), ``pid``, ``tid``, ``comm``, ``filename``,
          ``ret`` (the file descriptor, or ``-errno``), ``errno`` (e.g. ``"ENOENT"``; missing on
          success), ``latency_ns``.

        Both frames carry ``attrs``: ``syscall``, ``pid``, ``events``, ``calls`` (counted in the
        histogram), ``lost`` (events the ring buffer had no room for), ``start_map_full``,
        ``hist_map_full``, ``exits_without_entry`` (calls already running when attached), and the
        core's ``attach``, ``duration``, ``kernel``, ``interrupted``...

    Raises:
        ValueError: bad duration, workload, pid, events or max_events (before anything loads).
        PermissionError: not root.
    """
    duration = check_duration(duration)
    check_workload(workload)
    pid = check_pid(pid)
    if not isinstance(events, bool):
        raise ValueError(f"events must be True or False, got {events!r}")
    check_positive_int(max_events, "max_events", MAX_EVENTS)
    cflags, fill = tgid_filter(pid)
    cflags += [
        f"-DSEND_EVENTS={int(events)}",
        f"-DFILENAME_LEN={FILENAME_LEN}",
        f"-DRINGBUF_PAGES={RING_PAGES}",
    ]
    probes = [
        Probe("tracepoint", f"syscalls:sys_enter_{SYSCALL}", "openat_enter"),
        Probe("tracepoint", f"syscalls:sys_exit_{SYSCALL}", "openat_exit"),
    ]
    collector = _LatencyReader(events, max_events, fill)
    events_frame = bounded_run(
        name="syscall_latency",
        source=program_source("syscall_latency"),
        alternatives=[
            Alternative(
                "tracepoint", probes, f"the sys_enter_{SYSCALL} + sys_exit_{SYSCALL} tracepoints"
            )
        ],
        collector=collector,
        duration=duration,
        workload=workload,
        cflags=cflags,
        live=live,
        attrs={"syscall": SYSCALL, "pid": pid, "events": events, "max_events": max_events},
    )
    histogram = collector.histogram
    histogram.attrs.update(events_frame.attrs)
    return OpenLatency(histogram, events_frame)


def _bpftrace_histogram(out: BpftraceOutput, ctx: RunContext) -> pd.DataFrame:
    counts = {(int(pid), comm): slots for (pid, comm), slots in out.histograms("@", 2).items()}
    df = histogram_frame(counts)
    ctx.attrs["calls"] = int(df["count"].sum())
    return df


def open_latency_bpftrace(
    duration: float = 1.0,
    workload: Callable[[], Any] | None = None,
    *,
    pid: int | None = None,
    live: bool | None = None,
) -> pd.DataFrame:
    """:func:`open_latency`'s histogram, measured by the bpftrace script :data:`BPFTRACE`.

    The same pairing as the lab's program: at ``sys_enter_openat`` the entry time per thread in
    a map (``@start[tid]``), at ``sys_exit_openat`` the difference into a per-process
    ``hist()``. bpftrace prints the histogram as it ends; the lab turns its buckets into the
    lab's log2 slots (bpftrace's ``[0]`` and ``[1]`` are the lab's slot 1).

    Args:
        duration: seconds to stay attached (0 < duration <= 3600); the run also waits for
            ``workload``.
        workload: a callable run once bpftrace's probes are attached, e.g. ``child.run`` of
            :func:`ebpf_lab.workloads.opens_child`.
        pid: count only this process (the script's ``$1``); None: every process.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        The histogram frame of :func:`open_latency`: ``pid``, ``comm``, ``bucket``, ``low_ns``,
        ``high_ns``, ``count``. ``df.attrs``: ``calls`` (their sum), ``pid``, ``script``,
        ``attach`` (``"bpftrace"``).

    Raises:
        ValueError: bad duration, workload or pid (before anything starts).
        PermissionError: not root.
        UnsupportedFeature: bpftrace is not installed.
    """
    duration = check_duration(duration)
    check_workload(workload)
    pid = check_pid(pid)
    return bounded_run(
        name="open_latency_bpftrace",
        tracer=bpftrace_tracer(BPFTRACE, [pid or 0]),
        collector=BpftraceOutput(_bpftrace_histogram),
        duration=duration,
        workload=workload,
        live=live,
        attrs={"syscall": SYSCALL, "pid": pid, "script": BPFTRACE},
    )


def events_histogram(events: pd.DataFrame) -> pd.DataFrame:
    """The same log2 histogram as the kernel's, computed in user space from the event frame.

    Useful to check that the two agree: each event's ``latency_ns`` falls in slot
    ``bit_length(latency_ns)`` (0 and 1 in slot 1), exactly as ``bpf_log2l`` picks it.

    Returns:
        ``pid``, ``comm``, ``bucket``, ``low_ns``, ``high_ns``, ``count``, like
        :attr:`OpenLatency.histogram` (only non-empty slots).
    """
    require_columns(
        events, {"pid", "comm", "latency_ns"}, "events_histogram", "an open_latency events"
    )
    buckets = [log2_bucket(int(n)) for n in events["latency_ns"]]
    df = (
        events.assign(bucket=buckets)
        .groupby(["pid", "comm", "bucket"], observed=True)
        .size()
        .rename("count")
        .reset_index()
    )
    bounds = [bucket_bounds(int(b)) for b in df["bucket"]]
    df["low_ns"] = [lo for lo, _ in bounds]
    df["high_ns"] = [hi for _, hi in bounds]
    return LATENCY_HISTOGRAM.frame(df)


# ------------------------------------------------------------------------------ tracing cost

#: the ways :func:`tracing_cost` runs the workload, in the order of its frame
COST_MODES = (
    "plain",
    "ebpf histogram",
    "ebpf histogram + events",
    "strace",
    "strace --seccomp-bpf",
)
#: the most repeats :func:`tracing_cost` accepts
MAX_REPEATS = 20
#: how strace traces the workload: its children too, openat() only, quietly, its lines dropped
_STRACE_OPENS = ("-f", "-qq", "-e", f"trace={SYSCALL}", "-o", os.devnull)


def _strace_status() -> tuple[str | None, str]:
    """(path of strace or None, why not)."""
    path = shutil.which("strace")
    if path is None:
        return None, "strace is not installed (Debian/Ubuntu: apt-get install strace)"
    return path, ""


def _strace_seccomp_ok(strace: str) -> tuple[bool, str]:
    """Whether this strace supports --seccomp-bpf (strace >= 5.3 and a kernel with seccomp)."""
    try:
        done = subprocess.run(
            [strace, "--seccomp-bpf", *_STRACE_OPENS, "/bin/true"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"strace --seccomp-bpf failed to run: {exc}"
    if done.returncode != 0:
        return False, f"strace --seccomp-bpf is not supported here: {done.stderr.strip()[-200:]}"
    return True, ""


def _strace_run(strace: str, seccomp: bool, path: str, opens: int, missing: int) -> float:
    """Run the open loop as a child of strace (no gate); return the loop's own seconds."""
    from ebpf_lab.workloads import opens_argv

    missing_path = os.path.join(
        tempfile.gettempdir(), f"ebpf-lab-missing-{os.getpid()}-{time.monotonic_ns():x}"
    )
    fd, report = tempfile.mkstemp(prefix="ebpf-lab-opens-", suffix=".txt")
    os.close(fd)
    try:
        argv = [
            strace,
            *(["--seccomp-bpf"] if seccomp else []),
            *_STRACE_OPENS,
            *opens_argv(path, missing_path, opens, missing, report, gate=False),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"strace run failed ({done.returncode}): {done.stderr[-300:]}")
        with open(report) as f:
            return int(f.read()) / 1e9
    finally:
        os.unlink(report)


def tracing_cost(
    opens: int = 2000,
    missing: int = 500,
    repeats: int = 3,
    *,
    path: str = "/etc/hostname",
    live: bool | None = False,
) -> pd.DataFrame:
    """Time one open() workload untraced, traced by :func:`open_latency`, and under strace.

    Every run is the same child (:func:`ebpf_lab.workloads.opens_child`: ``opens`` opens of
    ``path`` and ``missing`` opens that fail), which times its own open() loop, so Python's
    start-up and exit are left out. The modes (:data:`COST_MODES`) take turns, ``repeats``
    rounds, so a burst of load from elsewhere hits them all alike:

    * ``plain``: nothing attached;
    * ``ebpf histogram``: this lesson's two programs, histogram only (``events=False``);
    * ``ebpf histogram + events``: plus one ring-buffer event per call;
    * ``strace``: ``strace -f -e trace=openat``: ptrace stops the child at *every* system call
      (its close() calls too) and strace decodes the openat ones;
    * ``strace --seccomp-bpf``: a (classic) BPF filter in the child lets only openat stop it.

    If strace is not installed, its rows say so (``available`` False) and the others still run.

    Args:
        opens, missing: the workload (1 .. 1,000,000 and 0 .. 1,000,000).
        repeats: rounds (1 .. 20).
        path: the file to open.
        live: progress bar and Stop button for the eBPF runs (default: off, they are short).

    Returns:
        One row per mode and round: ``mode``, ``round``, ``available``, ``loop_seconds``,
        ``ns_per_call`` (loop time / calls), ``slowdown`` (this mode's median over ``plain``'s
        median, the same on every row of a mode), ``calls_seen`` (calls counted by the eBPF
        program; <NA> for the others), ``note``. ``attrs["interrupted"]``: Stop or Ctrl-C
        ended an eBPF run, and the call made no more (the rows are the runs that finished).

    Raises:
        ValueError: bad counts, repeats or path (before anything runs). PermissionError: not
            root.
    """
    from ebpf_lab.workloads import opens_child

    check_required_int(opens, "opens", 1_000_000, 2000)
    check_whole(missing, "missing", 0, 1_000_000)
    check_required_int(repeats, "repeats", MAX_REPEATS, 3)
    if not isinstance(path, str) or not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise ValueError(f"path must be an existing, readable regular file, got {path!r}")
    require_root()
    strace, why_not = _strace_status()
    seccomp_ok, seccomp_why = _strace_seccomp_ok(strace) if strace else (False, why_not)
    calls = opens + missing
    rows: list[dict[str, Any]] = []
    interrupted = False
    for rnd in range(repeats):
        for mode in COST_MODES:
            if interrupted:
                break
            row: dict[str, Any] = {
                "mode": mode,
                "round": rnd,
                "available": True,
                "loop_seconds": float("nan"),
                "calls_seen": None,
                "note": "",
            }
            if mode.startswith("strace"):
                seccomp = mode.endswith("--seccomp-bpf")
                if strace is None or (seccomp and not seccomp_ok):
                    row.update(available=False, note=why_not if strace is None else seccomp_why)
                else:
                    row["loop_seconds"] = _strace_run(strace, seccomp, path, opens, missing)
                    row["note"] = (
                        "strace"
                        + (" --seccomp-bpf" if seccomp else "")
                        + " -f -e trace=openat -o /dev/null"
                    )
            else:
                box: dict[str, pd.DataFrame] = {}
                with opens_child(path, opens, missing) as child:
                    if mode == "plain":
                        box["done"] = child.run()
                        row["note"] = "nothing attached"
                    else:
                        with_events = mode.endswith("events")
                        hist, _ev = open_latency(
                            duration=0.01,
                            workload=lambda c=child, b=box: b.update(done=c.run()),
                            pid=child.pid,
                            events=with_events,
                            live=live,
                        )
                        if ended_early(hist):  # Stop or Ctrl-C: no more runs
                            interrupted = True
                            continue
                        row["calls_seen"] = int(hist.attrs["calls"])
                        row["note"] = (
                            f"2 tracepoint programs, pid filter in the kernel"
                            f"{', one event per call' if with_events else ''}"
                        )
                row["loop_seconds"] = float(box["done"]["loop_seconds"].iloc[0])
            rows.append(row)
    df = pd.DataFrame(rows)
    df["ns_per_call"] = df["loop_seconds"] * 1e9 / calls
    medians = df.groupby("mode")["loop_seconds"].median()
    plain = medians.get("plain", float("nan"))
    df["slowdown"] = df["mode"].map(medians) / plain
    df = df[
        [
            "mode",
            "round",
            "available",
            "loop_seconds",
            "ns_per_call",
            "slowdown",
            "calls_seen",
            "note",
        ]
    ]
    df = df.astype(
        {
            "mode": pd.CategoricalDtype(COST_MODES, ordered=True),
            "round": "int64",
            "available": "bool",
            "calls_seen": "Int64",
        }
    )
    df.attrs.update(
        {
            "opens": opens,
            "missing": missing,
            "calls": calls,
            "repeats": repeats,
            "path": path,
            "strace": strace,
            "strace_note": why_not or seccomp_why,
            "interrupted": interrupted,
        }
    )
    return df
