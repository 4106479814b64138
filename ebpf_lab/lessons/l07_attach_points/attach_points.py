"""Lesson 07: one tiny counter at seven kinds of attach point, each checked against known work.

The BPF program (``programs/attach_count.bpf.c``) adds 1 to a per-process counter. The lab attaches
it in turn as a **kprobe**, a **kretprobe** and an **fentry** program (the entry, the return,
and the entry through BTF of the kernel function behind ``getppid()``), a **tracepoint**
(``syscalls:sys_enter_getppid``), a **raw tracepoint** (``sys_enter``, every syscall, filtered in
the program), a **uprobe** (libc's ``getppid()``, in user space) and a **perf event** (a
``cpu-clock`` timer sampling one process ``sample_freq`` times per CPU-second).

Every run has a known workload, a *gated* child process (:class:`ebpf_lab.workloads.GatedChild`):
it starts, stops itself, the probe is attached (to its pid where the attach point takes one), and
only then does it do its work. So the truth is exact:

* kprobe, kretprobe, fentry, tracepoint, raw tracepoint, uprobe: the child calls
  ``os.getppid()`` exactly ``calls`` times, which is ``calls`` libc calls and ``calls`` system
  calls;
* perf event: the child spins for a while; it is sampled by a timer that runs only while it is
  on a CPU and keeps its phase across context switches, so the sample count is
  ``sample_freq`` x (its CPU-seconds), give or take one partial period per CPU, two at the
  edges, and a few microseconds per context switch (:func:`sampling_bound`). The child stops
  again after its work, and its CPU time and its samples are read right then, so its exit (part
  of which the timer never sees: the kernel removes the process's perf events before its
  exit is over) is not part of the comparison.

Where the kernel cannot do something (no kprobes, or fentry refused), :func:`count_at` raises
:class:`~ebpf_lab.core.errors.UnsupportedFeature` before anything loads, and :func:`attach_points`
turns that into a row that explains it.

Beyond counting, the lesson reads what each hook offers: :mod:`.user_probes` (a uprobe's
argument, a uretprobe's return value, a USDT probe's arguments, on the lab's own C loop) and
:mod:`.kernel_probes` (``vfs_read()``'s argument, return value and latency by kprobe + kretprobe
or fentry + fexit; BCC's ``syscall__`` prefix).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.attach import Probe, one_probe
from ebpf_lab.core.errors import UnsupportedFeature
from ebpf_lab.core.guards import (
    check_choice,
    check_duration,
    check_required_int,
    check_sample_freq,
    require_root,
)
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Alternative, bounded_run, ended_early
from ebpf_lab.lessons.l07_attach_points.probes import (
    KINDS,
    TARGETS,
    WHAT,
    _Counts,
    _precheck,
    fentry_function,
    sampling_bound,
)
from ebpf_lab.show.frames import Schema
from ebpf_lab.workloads import MAX_GETPPID_CALLS, MAX_SPIN_SECONDS, getppid_child, spin_child

#: the default sampling frequency: a prime, so it is a multiple of no CONFIG_HZ (100, 250, 300,
#: 1000) and the timer does not tick in step with the scheduler's tick and time slices
DEFAULT_SAMPLE_FREQ = 997

#: :func:`attach_points`' frame: one row per kind
TABLE = Schema(
    kind=None,
    supported="bool",
    target=None,
    sees=None,
    events="Int64",
    expected="float64",
    bound="Int64",
    ok="boolean",
    detail=None,
)


def _check_cpu_seconds(cpu_seconds: Any) -> float:
    if (
        isinstance(cpu_seconds, bool)
        or not isinstance(cpu_seconds, (int, float))
        or not (0 < cpu_seconds <= MAX_SPIN_SECONDS)
    ):
        raise ValueError(
            f"cpu_seconds must be a number of seconds in (0, {MAX_SPIN_SECONDS:g}], "
            f"got {cpu_seconds!r}"
        )
    return float(cpu_seconds)


def _check_run(
    calls: Any, cpu_seconds: Any, sample_freq: Any, duration: Any
) -> tuple[float, int, float]:
    """:func:`count_at`'s checks, before anything loads: ``(cpu_seconds, sample_freq,
    duration)`` as the run uses them; ValueError for a bad one, PermissionError if not root."""
    check_required_int(calls, "calls", MAX_GETPPID_CALLS, 1000)
    cpu_seconds = _check_cpu_seconds(cpu_seconds)
    checked = cpu_seconds, check_sample_freq(sample_freq), check_duration(duration)
    require_root()
    return checked


def _attach_way(kind: str, pid: int, sample_freq: int) -> tuple[Alternative, list[str], str]:
    """How :func:`count_at` attaches the counter as ``kind`` for the child ``pid``: the core's
    alternative, the cflags, and how the count is limited to the child."""
    everyone = "fires for every process; counted per tgid, the child's row picked out"
    if kind == "fentry":
        # KFUNC_PROBE loads and attaches itself while the C is compiled (the child is still
        # stopped then); the core's autoload kind checks it did and detaches it on every path
        function = fentry_function("getppid")
        probe = Probe("autoload", function, f"kfunc__{function}")
        alternative = Alternative("fentry", [probe], f"asked for fentry on {function}")
        return alternative, [f"-DFENTRY_FUNCTION={function}"], everyone
    if kind in ("uprobe", "perf_event"):
        freq = sample_freq if kind == "perf_event" else 0
        probe = Probe(kind, TARGETS[kind], f"count_{kind}", pid=pid, sample_freq=freq)
        how = f"{kind} opened for pid {pid} only"
    else:
        probe = Probe(kind, TARGETS[kind], f"count_{kind}")
        how = everyone
    return Alternative(kind, [probe], f"asked for {kind}"), [], how


def count_at(
    kind: str = "tracepoint",
    calls: int = 1000,
    *,
    cpu_seconds: float = 0.3,
    sample_freq: int = DEFAULT_SAMPLE_FREQ,
    duration: float = 0.1,
    live: bool | None = None,
) -> pd.DataFrame:
    """Attach the counter as ``kind``, run the known workload, and count events per process.

    Args:
        kind: one of :data:`KINDS`: ``"kprobe"``, ``"kretprobe"``, ``"fentry"``,
            ``"tracepoint"``, ``"raw_tracepoint"``, ``"uprobe"`` or ``"perf_event"``.
        calls: for every kind but ``perf_event``: the child's ``os.getppid()`` calls
            (1 .. 10,000,000).
        cpu_seconds: for ``perf_event``: CPU-seconds the child spins (0 < s <= 60).
        sample_freq: for ``perf_event``: samples per second of the child's CPU time
            (1 .. ``kernel.perf_event_max_sample_rate``).
        duration: the least time to stay attached, in seconds; the run also waits for the child.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per process the program ran for: ``tgid``, ``command`` (its name at its last
        event), ``events``, ``workload`` (True for the child). The child's row comes first.
        ``df.attrs``: ``kind``, ``target``, ``expected`` (the child's known calls, or
        ``sample_freq * cpu_seconds``), ``measured`` (the child's events), ``bound`` (0 for the
        exact kinds, :func:`sampling_bound` for perf_event), ``within_bound``, ``filter`` (how
        the count was limited to the child), ``workload`` (what the child did, as a dict),
        ``missed`` (events not counted because the map was full), for perf_event
        ``sample_freq`` and ``events_after_work`` (samples during the child's exit, which
        ``measured`` leaves out: the child stops after its spin and is counted then), and the
        core's attach, duration, kernel...

    Raises:
        ValueError: bad kind, calls, cpu_seconds, sample_freq or duration (before anything loads).
        PermissionError: not root.
        UnsupportedFeature: the kernel lacks ``kind`` (no kprobes, fentry refused...); the
            message names the attach point to use instead.
    """
    check_choice(kind, "kind", KINDS)
    cpu_seconds, sample_freq, duration = _check_run(calls, cpu_seconds, sample_freq, duration)
    _precheck(kind)

    if kind == "perf_event":
        # the child stops again after spinning: its CPU time and its samples are read then, so
        # its exit (during which the kernel takes the perf event down) is not measured
        child = spin_child(cpu_seconds, stop_after=True)
    else:
        child = getppid_child(calls)
    collector = _Counts(child.pid)
    with child:
        alternative, cflags, how = _attach_way(kind, child.pid, sample_freq)
        box: dict[str, pd.DataFrame] = {}
        df = bounded_run(
            name="attach_count",
            source=program_source("attach_count"),
            alternatives=[alternative],
            cflags=cflags,
            collector=collector,
            duration=duration,
            live=live,
            workload=lambda: child.run(at_end=collector.at_work_end),
            on_workload_result=lambda done: box.update(done=done),
            attrs={"kind": kind, "target": TARGETS[kind], "filter": how},
        )
    done = box.get("done")
    final = int(df.loc[df["workload"], "events"].sum())
    measured = final if collector.work_events is None else collector.work_events
    if kind == "perf_event":
        cpu = float(done["cpu_seconds"].iloc[0]) if done is not None else float("nan")
        expected = sample_freq * cpu
        switches = int(done["context_switches"].iloc[0]) if done is not None else 0
        bound = sampling_bound(sample_freq, switches)
        df.attrs["sample_freq"] = sample_freq
    else:
        expected = float(calls)
        bound = 0
    df.attrs.update(
        {
            "expected": expected,
            "measured": measured,
            "bound": bound,
            "within_bound": bool(abs(measured - expected) <= bound),
            "events_after_work": final - measured,
            "workload": done.iloc[0].to_dict() if done is not None else {},
        }
    )
    return df


def _mapped_file(address: int) -> tuple[str, int]:
    """The file mapped at ``address`` in this process, and the offset in it of that address."""
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if start <= address < end and len(parts) >= 6:
                return parts[5], address - start + int(parts[2], 16)
    raise RuntimeError(f"no file is mapped at {address:#x}")


def uprobe_breakpoint(calls: int = 10, *, duration: float = 0.1) -> pd.DataFrame:
    """Where a uprobe's breakpoint really goes: into this process's memory, not into the file.

    Attaches the counter as a uprobe on libc's ``getppid()`` for this process only, and reads the
    first bytes of ``getppid`` three times: before attaching, while attached (and after calling
    ``os.getppid()`` ``calls`` times, which the program counts) and after detaching. Each time
    it reads them both from this process's memory and from libc's file at the same offset, and
    hashes the whole file.

    Args:
        calls: ``os.getppid()`` calls made while attached (1 .. 1000).
        duration: the least time to stay attached, in seconds.

    Returns:
        One row per moment (``before``, ``attached``, ``after``): ``memory`` and ``file`` (the
        first 8 bytes of ``getppid``, hex), ``file_sha256``. ``df.attrs``: ``library``,
        ``offset`` (of getppid in the file), ``events`` (the program's count for this process
        while attached: ``calls``), and the core's attach, duration, kernel...
    """
    import ctypes
    import hashlib

    check_required_int(calls, "calls", 1000, 10)
    duration = check_duration(duration)
    require_root()
    libc = ctypes.CDLL("libc.so.6")
    address = ctypes.cast(libc.getppid, ctypes.c_void_p).value
    assert address is not None
    library, offset = _mapped_file(address)

    def look(moment: str) -> dict[str, Any]:
        data = Path(library).read_bytes()
        return {
            "moment": moment,
            "memory": ctypes.string_at(address, 8).hex(" "),
            "file": data[offset : offset + 8].hex(" "),
            "file_sha256": hashlib.sha256(data).hexdigest(),
        }

    rows = [look("before")]
    me = os.getpid()
    collector = _Counts(me)

    def workload() -> None:
        for _ in range(calls):
            os.getppid()
        collector.at_work_end()
        rows.append(look("attached"))

    df = bounded_run(
        name="attach_count",
        source=program_source("attach_count"),
        alternatives=one_probe(
            "uprobe",
            f"{library}:getppid",
            "count_uprobe",
            "a uprobe on libc's getppid() for this process only",
            pid=me,
        ),
        collector=collector,
        duration=duration,
        workload=workload,
        live=False,
        attrs={"kind": "uprobe", "target": f"{library}:getppid"},
    )
    rows.append(look("after"))
    frame = pd.DataFrame(rows, columns=["moment", "memory", "file", "file_sha256"])
    frame.attrs.update(df.attrs)
    frame.attrs.update(
        {"library": library, "offset": offset, "events": collector.work_events, "calls": calls}
    )
    return frame


def attach_points(
    calls: int = 1000,
    *,
    cpu_seconds: float = 0.3,
    sample_freq: int = DEFAULT_SAMPLE_FREQ,
    duration: float = 0.1,
    live: bool | None = None,
) -> pd.DataFrame:
    """The attach-point table of this kernel: each kind run live on a short known workload.

    Runs :func:`count_at` for every kind in :data:`KINDS`. A kind the kernel lacks is not an
    error: its row says why and what to use instead.

    Args:
        calls, cpu_seconds, sample_freq, duration, live: as for :func:`count_at`.

    Returns:
        One row per kind: ``kind``, ``supported`` (bool), ``target`` (an example attach point),
        ``sees`` (what the program sees there), ``events`` (counted for the workload's child,
        <NA> where unsupported), ``expected``, ``bound`` (how far ``events`` may be from
        ``expected``), ``ok`` (within the bound), ``detail`` (what ran and what it saw, or why
        it could not run). ``attrs["interrupted"]``: Stop or Ctrl-C ended the call; the kinds
        it did not finish are in ``attrs["not_run"]`` and have no row.

    Raises:
        ValueError: bad arguments (before anything loads). PermissionError: not root.
    """
    _check_run(calls, cpu_seconds, sample_freq, duration)
    rows = []
    not_run: list[str] = []
    for kind in KINDS:
        if not_run:
            not_run.append(kind)
            continue
        row: dict[str, Any] = {"kind": kind, "target": TARGETS[kind], "sees": WHAT[kind]}
        try:
            df = count_at(
                kind,
                calls,
                cpu_seconds=cpu_seconds,
                sample_freq=sample_freq,
                duration=duration,
                live=live,
            )
        except UnsupportedFeature as exc:
            row.update(
                {
                    "supported": False,
                    "events": None,
                    "expected": None,
                    "bound": None,
                    "ok": None,
                    "detail": str(exc),
                }
            )
        else:
            if ended_early(df):  # Stop or Ctrl-C: this kind's numbers are partial, run no more
                not_run.append(kind)
                continue
            a = df.attrs
            w = a["workload"]
            if kind == "perf_event":
                detail = (
                    f"{a['measured']} samples of pid {w.get('pid')} at {a['sample_freq']} Hz "
                    f"over {w.get('cpu_seconds', float('nan')):.4f} CPU-seconds: expected "
                    f"{a['expected']:.1f} +/- {a['bound']}"
                )
            else:
                others = int((~df["workload"]).sum())
                detail = (
                    f"{a['measured']} events for the child's {calls} getppid() calls; "
                    f"{a['filter']}; {others} other processes seen"
                )
            row.update(
                {
                    "supported": True,
                    "events": a["measured"],
                    "expected": a["expected"],
                    "bound": a["bound"],
                    "ok": a["within_bound"],
                    "detail": detail,
                }
            )
        rows.append(row)
    table = TABLE.frame(rows)
    table.attrs.update(
        {
            "kernel": kernel.release(),
            "calls": calls,
            "cpu_seconds": cpu_seconds,
            "sample_freq": sample_freq,
            "interrupted": bool(not_run),
            "not_run": not_run,
        }
    )
    return table
