"""bpftrace beside the lessons: run a one-liner bounded, read its JSON output.

A lesson that shows "the same with bpftrace" declares its script next to its own program and
runs it through the core's tracer path (:class:`~ebpf_lab.core.external.ExternalTracer` in
:func:`~ebpf_lab.core.run.bounded_run`)::

    BPFTRACE = "tracepoint:syscalls:sys_enter_execve { @[uid] = count(); }"
    out = BpftraceOutput()
    bounded_run(name="...", tracer=bpftrace_tracer(BPFTRACE), collector=out.collector(build), ...)

:func:`bpftrace_tracer` runs ``bpftrace -f json -e 'BEGIN { printf("ready\\n"); } <script>'``
(positional ``args`` become ``$1``, ``$2``... in the script). The ready line means "every
probe is attached" although bpftrace runs ``BEGIN`` before it attaches the script's other
probes: ``printf`` only writes into a perf buffer, and bpftrace starts reading that buffer (and
printing) after its attach loop (``BPFtrace::run`` in bpftrace 0.17's src/bpftrace.cpp:
``BEGIN_trigger()``, then the probes are attached, then ``poll_perf_events``).
:class:`BpftraceOutput` keeps what it prints, one JSON record a line:
``printf`` lines, and at the end (SIGINT makes bpftrace print every map) each map, ``hist`` and
``lhist`` included. The helpers turn them into plain Python values; each lesson makes its own
frame from them with its schema, so the frame has the lesson's shape.

bpftrace 0.17 (Debian 12) joins a map's keys with commas (``"bash,1234"``):
:func:`split_key` splits them from the left, so only the last key may itself hold a comma.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from ebpf_lab.core.external import ExternalTracer
from ebpf_lab.core.run import Collector, RunContext

#: what to install when bpftrace is missing
INSTALL = "sudo apt-get install bpftrace"
#: the ready line bpftrace prints (as JSON) from its BEGIN probe
READY = json.dumps({"type": "printf", "data": "ready\n"})
_BEGIN = 'BEGIN { printf("ready\\n"); } '


def bpftrace_tracer(script: str, args: Sequence[int | str] = ()) -> ExternalTracer:
    """An :class:`ExternalTracer` that runs the bpftrace ``script`` with JSON output.

    Args:
        script: the program text, e.g. ``"tracepoint:syscalls:sys_enter_execve { @ = count(); }"``.
        args: positional parameters: ``$1``, ``$2``... inside the script.

    Raises:
        ValueError: an empty script, or an argument that is neither a whole number nor text.
    """
    if not isinstance(script, str) or not script.strip():
        raise ValueError(f"a bpftrace script must be non-empty text, got {script!r}")
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, (int, str)):
            raise ValueError(f"bpftrace arguments are whole numbers or text, got {arg!r}")
    return ExternalTracer(
        argv=["bpftrace", "-f", "json", "-e", _BEGIN + script, *map(str, args)],
        label="bpftrace",
        ready=READY,
        install=INSTALL,
    )


def split_key(key: str, n: int) -> tuple[str, ...]:
    """A map key as bpftrace 0.17 prints it (``"1234,bash"``) split into its ``n`` parts.

    Splits from the left, so the last part may hold commas (put a ``comm`` last).

    Raises:
        ValueError: the key has fewer than ``n`` parts.
    """
    parts = tuple(str(key).split(",", n - 1))
    if len(parts) != n:
        raise ValueError(f"bpftrace map key {key!r} does not have {n} parts")
    return parts


def log2_slots(buckets: Sequence[dict[str, int]]) -> dict[int, int]:
    """A bpftrace ``hist()`` as the lab's log2 slots ``{slot: count}`` (empty slots left out).

    bpftrace's buckets are ``[0]``, ``[1]``, ``[2, 4)``, ``[4, 8)``...; the lab's slot ``b`` holds
    ``2**(b-1) .. 2**b - 1`` with 0 and 1 together in slot 1 (``bpf_log2l``), so bpftrace's
    bucket starting at ``min`` is the lab's slot ``max(min.bit_length(), 1)``.
    """
    slots: dict[int, int] = {}
    for bucket in buckets:
        if int(bucket.get("count", 0)):
            slot = max(int(bucket.get("min", 0)).bit_length(), 1)
            slots[slot] = slots.get(slot, 0) + int(bucket["count"])
    return slots


class BpftraceOutput(Collector):
    """Collects a bpftrace run's JSON output; :meth:`finish` hands it to ``build``.

    ``build(output, ctx)`` makes the lesson's frame. The run's ``attrs`` get ``bpftrace_pid``
    and ``prog_ids`` (the programs bpftrace held while it ran).

    Attributes:
        printf: the text of every ``printf`` record after the ready line, line by line.
        maps: the last value bpftrace printed for each map, by name (``"@"``, ``"@start"``...):
            ``{key: value}`` for keyed maps, a number for a plain ``@x = count()``, a list of
            buckets for an unkeyed ``hist``/``lhist``, ``{key: buckets}`` for a keyed one.
        snapshots: every map record as it arrived: ``(monotonic s, wall-clock ns, name,
            value)``, for scripts that ``print()`` a map every interval.
        other: records of other types, and lines that are not JSON (kept, never dropped).
    """

    def __init__(self, build: Callable[[BpftraceOutput, RunContext], Any]) -> None:
        self.build = build
        self.printf: list[str] = []
        self.maps: dict[str, Any] = {}
        self.snapshots: list[tuple[float, int, str, Any]] = []
        self.other: list[Any] = []

    def add_line(self, line: str) -> None:
        """Parse one line of bpftrace's ``-f json`` output into :attr:`printf`/:attr:`maps`."""
        if not line.strip():
            return
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            self.other.append(line)
            return
        kind = record.get("type") if isinstance(record, dict) else None
        data = record.get("data") if isinstance(record, dict) else None
        if kind == "printf" and isinstance(data, str):
            self.printf.extend(data.splitlines())
        elif kind in ("map", "hist", "stats") and isinstance(data, dict):
            self.maps.update(data)
            now, wall = time.monotonic(), time.time_ns()
            self.snapshots.extend((now, wall, name, value) for name, value in data.items())
        else:
            self.other.append(record)

    def start(self, ctx: RunContext) -> None:
        # which process and programs ran the measurement (they leave the kernel with it)
        ctx.attrs["bpftrace_pid"] = ctx.bpf.pid
        ctx.attrs["prog_ids"] = sorted(ctx.bpf.program_ids())

    def poll(self, ctx: RunContext, timeout: float) -> None:
        for line in ctx.bpf.read_lines(timeout):
            self.add_line(line)

    def finish(self, ctx: RunContext) -> Any:
        ctx.attrs["bpftrace_other"] = [r for r in self.other if r is not None][:20]
        return self.build(self, ctx)

    def counts(self, name: str = "@", keys: int = 1) -> dict[tuple[str, ...], int]:
        """A ``count()`` map as ``{key parts: count}`` (an absent map: ``{}``)."""
        value = self.maps.get(name, {})
        if not isinstance(value, dict):
            return {(): int(value)}
        return {split_key(k, keys): int(v) for k, v in value.items()}

    def histograms(self, name: str = "@", keys: int = 1) -> dict[tuple[str, ...], dict[int, int]]:
        """A keyed ``hist()`` map as ``{key parts: {lab log2 slot: count}}``."""
        value = self.maps.get(name, {})
        if isinstance(value, list):
            return {(): log2_slots(value)}
        return {split_key(k, keys): log2_slots(v) for k, v in value.items()}
