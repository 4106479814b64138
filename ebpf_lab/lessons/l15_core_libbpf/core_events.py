"""Lesson 15: lesson 03's exec events built the libbpf way (CO-RE), and what libbpf relocated.

:func:`core_exec_events` runs ``exec_loader`` (:mod:`.build` makes it on first use) through the
core's tracer path (``RunSpec(tracer=...)``): the loader opens the object the skeleton embeds,
libbpf relocates its field reads for the running kernel, loads it, attaches it to
``syscalls:sys_enter_execve`` and prints one line per ring buffer record, which the collector
reads into the same columns as :func:`ebpf_lab.exec_events`. Run with ``-v``, the loader also lets
libbpf's debug messages through to stderr; :func:`core_relocations` turns the CO-RE ones into a
frame: which field each instruction reads, at which offset the object was compiled and at which
offset this kernel keeps it.
"""

from __future__ import annotations

import codecs
import re
from typing import Any, Callable

import pandas as pd

from ebpf_lab.core import replay
from ebpf_lab.core.external import ExternalTracer
from ebpf_lab.core.guards import check_duration, check_workload, require_root
from ebpf_lab.core.run import Collector, RunContext, RunSpec, bounded_run
from ebpf_lab.lessons.l15_core_libbpf import build
from ebpf_lab.show.frames import EXEC_EVENTS, Schema, process_columns

#: one row per exec: the columns of :func:`ebpf_lab.exec_events` but its "Hello World" message
EVENTS = EXEC_EVENTS
#: one row per CO-RE relocation libbpf applied when it loaded the object
RELOCATIONS = Schema(
    program="string",
    relo="int64",
    kind="string",
    struct="string",
    field="string",
    access="string",
    object_offset="int64",
    kernel_offset="int64",
    insn="int64",
)

# libbpf's debug lines (libbpf 1.x), e.g.
#   prog 'exec_core': relo #1: <byte_off> [33] struct task_struct.real_parent (0:95 @ offset 1280)
#   prog 'exec_core': relo #1: matching candidate #0 <byte_off> [114] struct task_struct.real_parent
#       (0:95 @ offset 1280)
#   prog 'exec_core': relo #1: patched insn #27 (ALU/ALU64) imm 1280 -> 1280
_SPEC = r"<(?P<kind>\w+)> \[\d+\] (?:struct|union) (?P<struct>\w+)\.(?P<field>\S+) \((?P<access>[\d:]+) @ offset (?P<offset>\d+)\)"  # noqa: E501
_RELO = re.compile(r"prog '(?P<program>\w+)': relo #(?P<relo>\d+): " + _SPEC)
_CANDIDATE = re.compile(
    r"prog '(?P<program>\w+)': relo #(?P<relo>\d+): matching candidate #\d+ " + _SPEC
)
_PATCHED = re.compile(r"prog '(?P<program>\w+)': relo #(?P<relo>\d+): patched insn #(?P<insn>\d+)")


def parse_relocations(log: list[str]) -> list[dict[str, Any]]:
    """The CO-RE relocations in libbpf's debug lines, one dict per relocation (in order).

    ``object_offset`` is where the field was in the ``vmlinux.h`` the object was compiled with,
    ``kernel_offset`` where libbpf found it in the running kernel's BTF, ``insn`` the instruction
    it patched.
    """
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for line in log:
        if m := _RELO.search(line):
            key = (m["program"], int(m["relo"]))
            rows[key] = {
                "program": m["program"],
                "relo": int(m["relo"]),
                "kind": m["kind"],
                "struct": m["struct"],
                "field": m["field"],
                "access": m["access"],
                "object_offset": int(m["offset"]),
                "kernel_offset": None,
                "insn": None,
            }
        elif (m := _CANDIDATE.search(line)) and (key := (m["program"], int(m["relo"]))) in rows:
            if rows[key]["kernel_offset"] is None:  # the first candidate that matched
                rows[key]["kernel_offset"] = int(m["offset"])
        elif (m := _PATCHED.search(line)) and (key := (m["program"], int(m["relo"]))) in rows:
            rows[key]["insn"] = int(m["insn"])
    return [row for row in rows.values() if row["kernel_offset"] is not None]


def _unescape(text: str) -> bytes:
    """The loader's escaped string (``\\\\``, ``\\t``, ``\\n``, ``\\xHH``) as the kernel's bytes."""
    return codecs.escape_decode(text.encode("ascii"))[0]


class _LoaderReader(Collector):
    """Reads ``exec_loader``'s lines: ``E`` one record, ``D`` the records dropped (at the end)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.dropped = 0

    def start(self, ctx: RunContext) -> None:
        # the loader's programs, by id (bpftool prog show id N), while it holds them
        ctx.attrs["program_ids"] = sorted(ctx.bpf.program_ids())

    def poll(self, ctx: RunContext, timeout: float) -> None:
        for line in ctx.bpf.read_lines(timeout):
            fields = line.split("\t")
            if fields[0] == "E" and len(fields) == 7:
                self.rows.append(
                    {
                        "ktime_ns": int(fields[1]),
                        "pid": int(fields[2]),
                        "ppid": int(fields[3]),
                        "uid": int(fields[4]),
                        "command": _unescape(fields[5]),
                        "filename": _unescape(fields[6]),
                    }
                )
            elif fields[0] == "D" and len(fields) == 2:
                self.dropped = int(fields[1])

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        raw = pd.DataFrame(
            self.rows, columns=["ktime_ns", "pid", "ppid", "uid", "command", "filename"]
        )
        strings = {"command": "command", "filename": "filename"}
        df = EVENTS.frame(process_columns(ctx.to_time, raw, strings))
        ctx.attrs["lost"] = self.dropped
        ctx.attrs["relocations"] = parse_relocations(ctx.bpf.stderr)
        return df


def core_exec_events(
    duration: float = 5.0,
    workload: Callable[[], Any] | None = None,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """Stream one event per execve for ``duration`` seconds, through a CO-RE object and libbpf.

    The same events as :func:`ebpf_lab.exec_events` (``buffer="ring"``), from a program built
    the libbpf way: ``exec_core.bpf.c`` compiled once by clang against ``vmlinux.h``, reading the
    parent's pid with ``BPF_CORE_READ(task, real_parent, tgid)``; ``exec_loader`` (a libbpf
    skeleton) loads it, and libbpf writes this kernel's field offsets into its instructions.
    The first call on a kernel builds both into the lab's build cache; later calls reuse them.

    Args:
        duration: seconds to stay attached (0 < duration <= 3600); the run also waits for
            ``workload``.
        workload: optional callable run once the loader says its program is attached.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per execve, in the order they happened (one ring buffer for all CPUs):
        ``time``, ``pid``, ``ppid`` (real parent), ``uid``, ``user``, ``command`` (the caller's
        comm before the exec), ``filename``. ``df.attrs["lost"]`` counts records the ring buffer
        had no room for; ``df.attrs["relocations"]`` lists the CO-RE relocations libbpf applied
        (:func:`core_relocations` makes them a frame); ``df.attrs["program_ids"]`` names the
        programs the loader held; ``df.attrs["attach"]`` is ``"libbpf"``.

    Raises:
        ValueError: bad duration or workload (before anything is built or loaded).
        PermissionError: not root.
        HelperBuildError: clang, bpftool, gcc or libbpf-dev is missing (says what to install),
            or a build step failed (with its log).
        ProgramError: the loader could not load or attach the program (with libbpf's log).
    """
    duration = check_duration(duration)
    check_workload(workload)
    require_root()  # before the build: the loader is built into root's cache
    # while replaying a recording nothing is built or loaded
    built = None if replay.replaying() else build.build()
    loader = "exec_loader" if built is None else str(built / "exec_loader")
    tracer = ExternalTracer(
        argv=[loader, "-v"],
        label="libbpf",
        ready="ready",
        install=build.INSTALL_HINT,
    )
    return bounded_run(
        RunSpec(
            name="core_exec_events",
            tracer=tracer,
            collector=_LoaderReader(),
            duration=duration,
            workload=workload,
            live=live,
            attrs={
                "object": None if built is None else str(built / "exec_core.bpf.o"),
                "built_on": None if built is None else build.built_on(built)["release"],
            },
        )
    )


def core_relocations(df: pd.DataFrame) -> pd.DataFrame:
    """The CO-RE relocations of a :func:`core_exec_events` run, one row each.

    Columns: ``program``, ``relo`` (its number), ``kind`` (``byte_off``: a field's offset),
    ``struct`` and ``field`` (``task_struct`` / ``real_parent``), ``access`` (the field's path
    as member indexes, what the object records), ``object_offset`` (the offset in the
    ``vmlinux.h`` it was compiled with), ``kernel_offset`` (where libbpf found the field in the
    running kernel's BTF), ``insn`` (the instruction it patched).

    Raises:
        ValueError: ``df`` is not a frame :func:`core_exec_events` returned.
    """
    if not isinstance(df, pd.DataFrame) or "relocations" not in df.attrs:
        raise ValueError("core_relocations needs a frame that core_exec_events returned")
    return RELOCATIONS.frame(list(df.attrs["relocations"]))
