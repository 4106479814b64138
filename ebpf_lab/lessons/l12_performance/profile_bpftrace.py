"""Lesson 12 with bpftrace: the same CPU profile as :func:`~.profile.cpu_profile`, one line.

bpftrace's ``profile:hz:<freq>`` probe is the same ``cpu-clock`` perf event on every CPU;
``ustack(perf)`` and ``kstack(perf)`` are the same stack maps, and bpftrace names the
addresses itself when it prints the map at the end. The lab parses that output into the
:data:`~.profile.STACKS` frame, so the two profiles can be compared row for row.

One difference learners see: bpftrace names user addresses only when it prints, at the end,
so a process that exited before then shows ``[unknown]`` user frames; the lab's profiler reads
each process's memory map while it runs.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

import pandas as pd

from ebpf_lab.core.bpftrace import BpftraceOutput, bpftrace_tracer
from ebpf_lab.core.guards import check_duration, check_pid, check_sample_freq, check_workload
from ebpf_lab.core.run import RunContext, bounded_run
from ebpf_lab.lessons.l12_performance.profile import (
    DEFAULT_SAMPLE_FREQ,
    UNKNOWN,
    stack_row,
    stacks_frame,
)

#: the same measurement as a bpftrace one-liner (``{freq}`` is filled in, ``$1`` is the pid to
#: keep, 0 for every process; the idle task, pid 0, is left out as the lab's profiler does)
BPFTRACE = (
    "profile:hz:{freq} /pid != 0 && ($1 == 0 || pid == $1)/ "
    "{ @[pid, ustack(perf), kstack(perf), comm] = count(); }"
)

# bpftrace 0.17 joins the key's parts with commas; a stack is lines that start "\n\t", so the
# commas between the parts are the ones not inside a stack
_KEY = re.compile(r"^(\d+),((?:\n\t[^\n]*)*\n?),((?:\n\t[^\n]*)*\n?),(.*)$", re.S)
_FRAME = re.compile(r"^\s*[0-9a-fA-F]+ (\S+)(?: \((.*)\))?\s*$")


def parse_stack(text: str, kernel: bool) -> tuple[tuple[str, str], ...]:
    """A stack as ``ustack(perf)``/``kstack(perf)`` prints it, as ``(function, module)`` frames
    from the outermost caller to the leaf (bpftrace prints the leaf first).

    A function's ``+offset`` is dropped; an address bpftrace could not name is ``[unknown]``;
    kernel frames are in module ``kernel`` (or the kernel module's name).
    """
    frames = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        m = _FRAME.match(line)
        symbol, module = (m.group(1), m.group(2)) if m else (line.strip(), None)
        function = UNKNOWN if symbol.startswith("0x") else symbol.split("+", 1)[0]
        if module is None or module.strip("[]") in ("kernel.kallsyms", "kernel"):
            module = "kernel" if kernel else UNKNOWN
        elif module == UNKNOWN:
            pass
        else:
            module = module.strip("[]") if kernel else os.path.basename(module)
        frames.append((function, module))
    return tuple(reversed(frames))


def _bpftrace_stacks(out: BpftraceOutput, ctx: RunContext) -> pd.DataFrame:
    rows, odd = [], []
    value = out.maps.get("@", {})
    for key, samples in value.items() if isinstance(value, dict) else ():
        m = _KEY.match(key)
        if m is None:
            odd.append(key)
            continue
        pid, ustack, kstack, comm = m.groups()
        user, kernel = parse_stack(ustack, False), parse_stack(kstack, True)
        rows.append(stack_row(int(pid), comm, int(samples), user, kernel))
    ctx.attrs["odd_keys"] = odd
    df = stacks_frame(rows)
    ctx.attrs["kept_samples"] = int(df["samples"].sum())
    return df


def cpu_profile_bpftrace(
    duration: float = 1.0,
    workload: Callable[[], Any] | None = None,
    *,
    pid: int | None = None,
    sample_freq: int = DEFAULT_SAMPLE_FREQ,
    live: bool | None = None,
) -> pd.DataFrame:
    """:func:`~.profile.cpu_profile`, measured by the bpftrace one-liner :data:`BPFTRACE`.

    Args:
        duration: seconds to sample (0 < duration <= 3600); the run also waits for ``workload``.
        workload: a callable run once bpftrace's probes are attached, e.g. ``child.run`` of
            :func:`ebpf_lab.workloads.mixed_cpu_child`.
        pid: keep only samples of this process (the script's ``$1``); None: every process.
        sample_freq: samples per second per CPU (1 .. ``kernel.perf_event_max_sample_rate``).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        The :data:`~.profile.STACKS` frame of :func:`~.profile.cpu_profile`: ``pid``, ``comm``,
        ``samples``, ``in_kernel``, ``leaf_function``, ``leaf_module``, ``frames``, ``stack``,
        named by bpftrace. ``df.attrs``: ``sample_freq``, ``pid``, ``kept_samples``, ``script``,
        ``odd_keys`` (map keys the lab could not read: none expected), ``attach``
        (``"bpftrace"``).

    Raises:
        ValueError: bad duration, workload, pid or sample_freq (before anything starts).
        PermissionError: not root.
        UnsupportedFeature: bpftrace is not installed.
    """
    duration = check_duration(duration)
    check_workload(workload)
    pid = check_pid(pid)
    sample_freq = check_sample_freq(sample_freq)
    script = BPFTRACE.replace("{freq}", str(sample_freq))
    return bounded_run(
        name="cpu_profile_bpftrace",
        tracer=bpftrace_tracer(script, [pid or 0]),
        collector=BpftraceOutput(_bpftrace_stacks),
        duration=duration,
        workload=workload,
        live=live,
        attrs={"sample_freq": sample_freq, "pid": pid, "script": script},
    )
