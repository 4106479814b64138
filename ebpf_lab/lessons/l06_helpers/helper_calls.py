"""Lesson 06: helpers, the kernel functions BPF programs may call, and which program may call which.

- :func:`helper_calls`: one run that calls the common helpers on every execve and returns what
  each one returned, to compare with what the workload knows (pid, UID, comm, filename, CPU).
- :func:`helper_support`: which helpers this kernel allows for which program type, found by
  loading tiny programs (never attaching them) and keeping the verifier's reason for a no.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.attach import exec_alternatives
from ebpf_lab.core.collectors import fill_maps, open_event_rows, uid_filter
from ebpf_lab.core.errors import ProgramError
from ebpf_lab.core.guards import (
    check_choice,
    check_duration,
    check_positive_int,
    check_workload,
    require_root,
)
from ebpf_lab.core.loader import compile_program, program_source, release
from ebpf_lab.core.run import Collector, RunContext, bounded_run
from ebpf_lab.core.tracefs import PrintkInstance
from ebpf_lab.core.verdict import refusal
from ebpf_lab.show.frames import Schema, decode_c_string

#: the helpers :func:`helper_calls` calls, in the order it calls them
HELPERS_CALLED = (
    "bpf_ktime_get_ns",
    "bpf_get_current_pid_tgid",
    "bpf_get_current_uid_gid",
    "bpf_get_current_comm",
    "bpf_probe_read_user_str",
    "bpf_get_smp_processor_id",
    "bpf_trace_printk",
)
#: the frame of ``helper_calls(wide=True)``: one row per event
WIDE = Schema(
    event="int64",
    time="time",
    ktime_ns="int64",
    pid="int64",
    tid="int64",
    uid="int64",
    gid="int64",
    comm="category",
    comm_ret="int64",
    filename="string",
    filename_ret="int64",
    cpu="int64",
    printk_ret="int64",
    printk_line="string",
)
#: columns of ``helper_calls(wide=True)``
WIDE_COLUMNS = WIDE.columns
#: the frame of ``helper_calls()``: one row per event and helper (``returned``: Python ints, as
#: a helper may return a u64; ``helper`` becomes a categorical in :data:`HELPERS_CALLED` order)
LONG = Schema(event="int64", pid="int64", helper=None, returned="object", value="string")
#: columns of ``helper_calls()`` (one row per event and helper)
LONG_COLUMNS = LONG.columns
#: what the perf buffer's events carry, as read in the callback
_RAW = Schema(
    event=None,
    ktime_ns=None,
    pid_tgid=None,
    uid_gid=None,
    comm_ret=None,
    comm=None,
    filename_ret=None,
    filename=None,
    cpu=None,
    printk_ret=None,
)
#: the frame of ``helper_support(detail=True)``
SUPPORT_DETAIL = Schema(helper=None, program_type=None, allowed="bool", reason="string")
#: the most events one call keeps
MAX_EVENTS = 100_000
#: perf buffer pages per CPU
PERF_PAGES = 64


class _HelperReader(Collector):
    """Decodes the perf buffer's events and reads this run's bpf_trace_printk lines back."""

    def __init__(self, tag: int, max_events: int | None, fill: dict[str, dict[int, int]]) -> None:
        self.fill = fill  # the run's tag (and uid filter), written before the program runs
        self.pattern = re.compile(rf"^\[ebpf-lab {tag:x}\] helper event (\d+)$")
        self.max_events = max_events
        self.instance: PrintkInstance | None = None
        self.rows: list[dict[str, Any]] = []
        self.lines: dict[int, str] = {}
        self.lost = 0

    def prepare(self, bpf: Any) -> None:
        fill_maps(bpf, self.fill)

    def start(self, ctx: RunContext) -> None:
        self.instance = PrintkInstance().open()
        open_event_rows(
            self,
            ctx.table("events"),
            lambda e: {
                "event": e.seq,
                "ktime_ns": e.ktime_ns,
                "pid_tgid": e.pid_tgid,
                "uid_gid": e.uid_gid,
                "comm_ret": e.comm_ret,
                "comm": decode_c_string(e.comm),
                "filename_ret": e.filename_ret,
                "filename": decode_c_string(e.filename),
                "cpu": e.cpu,
                "printk_ret": e.printk_ret,
            },
            self.rows,
            maximum=self.max_events,
            pages=PERF_PAGES,
            lost=self._lost,
        )

    def _lost(self, count: int) -> None:
        self.lost += count

    def poll(self, ctx: RunContext, timeout: float) -> None:
        ctx.bpf.perf_buffer_poll(timeout=int(timeout * 1000))
        assert self.instance is not None
        for line in self.instance.read(0):
            m = self.pattern.match(line.message)
            if m is not None:
                self.lines[int(m.group(1))] = line.message

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        if self.instance is not None:  # the last printk lines may come just after the event
            for line in self.instance.read(0.05):
                m = self.pattern.match(line.message)
                if m is not None:
                    self.lines[int(m.group(1))] = line.message
        raw = _RAW.frame(self.rows)
        raw = raw.sort_values("event", kind="stable").reset_index(drop=True)
        pid_tgid = np.asarray(raw["pid_tgid"], dtype=np.uint64)
        uid_gid = np.asarray(raw["uid_gid"], dtype=np.uint64)
        low32, shift = np.uint64(0xFFFFFFFF), np.uint64(32)
        columns = {
            "event": raw["event"],
            "time": ctx.to_time(raw["ktime_ns"]).to_numpy(),
            "ktime_ns": raw["ktime_ns"],
            "pid": (pid_tgid >> shift).astype("int64"),
            "tid": (pid_tgid & low32).astype("int64"),
            "uid": (uid_gid & low32).astype("int64"),
            "gid": (uid_gid >> shift).astype("int64"),
            "comm": raw["comm"],
            "comm_ret": raw["comm_ret"],
            "filename": raw["filename"],
            "filename_ret": raw["filename_ret"],
            "cpu": raw["cpu"],
            "printk_ret": raw["printk_ret"],
            "printk_line": [self.lines.get(int(s), "") for s in raw["event"]],
        }
        ctx.attrs["lost"] = self.lost
        ctx.attrs["printk_lines_missing"] = int(
            sum(1 for s in raw["event"] if int(s) not in self.lines)
        )
        return WIDE.frame(columns)

    def close(self, ctx: RunContext | None) -> None:
        if self.instance is not None:
            self.instance.close()


def _long(wide: pd.DataFrame) -> pd.DataFrame:
    """One row per (event, helper): what the helper returned and what that means."""
    rows = []
    for r in wide.itertuples(index=False):
        values = [
            (r.ktime_ns, f"{r.time} (wall clock; nanoseconds since boot)"),
            ((r.pid << 32) | r.tid, f"pid {r.pid} (tgid), tid {r.tid}"),
            ((r.gid << 32) | r.uid, f"uid {r.uid}, gid {r.gid}"),
            (r.comm_ret, str(r.comm)),
            (r.filename_ret, str(r.filename)),
            (r.cpu, f"cpu {r.cpu}"),
            (r.printk_ret, str(r.printk_line) or "(line not read back)"),
        ]
        for helper, (returned, value) in zip(HELPERS_CALLED, values):
            rows.append(
                {
                    "event": r.event,
                    "pid": r.pid,
                    "helper": helper,
                    "returned": int(returned),
                    "value": value,
                }
            )
    df = LONG.frame(rows)
    df["helper"] = pd.Categorical(df["helper"], categories=list(HELPERS_CALLED))
    return df


def helper_calls(
    duration: float = 2.0,
    uid: int | None = None,
    workload: Callable[[], Any] | None = None,
    max_events: int | None = None,
    attach: str = "auto",
    *,
    wide: bool = False,
    live: bool | None = None,
) -> pd.DataFrame:
    """Call the common helpers on every execve and return what each one returned.

    The program (``helper_calls.bpf.c``, beside this module) calls, once per execve and in this
    order, ``bpf_ktime_get_ns``, ``bpf_get_current_pid_tgid``, ``bpf_get_current_uid_gid``,
    ``bpf_get_current_comm``, ``bpf_probe_read_user_str`` (the path being executed),
    ``bpf_get_smp_processor_id`` and ``bpf_trace_printk``, and sends the results through a perf
    buffer. The printk line is read back from a private trace instance.

    Args:
        duration: seconds to stay attached (0 < duration <= 3600); the run also waits for
            ``workload``.
        uid: keep only execs by this UID (None: every exec on the machine).
        workload: e.g. ``lambda: ebpf_lab.workloads.execs({who: 3})``.
        max_events: stop after this many events (None: up to 100,000).
        attach: ``"auto"``, ``"kprobe"`` or ``"tracepoint"`` (as in the other execve lessons).
        wide: one row per event with decoded columns, instead of one row per helper call.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        By default one row per event and helper: ``event`` (0, 1, ...), ``pid``, ``helper``,
        ``returned`` (the helper's return value, a Python int) and ``value`` (what it means, or
        what the helper filled in, as text). With ``wide=True`` one row per event: ``event``,
        ``time``, ``ktime_ns``, ``pid``, ``tid``, ``uid``, ``gid``, ``comm``, ``comm_ret``,
        ``filename``, ``filename_ret``, ``cpu``, ``printk_ret``, ``printk_line``.
        ``df.attrs``: ``lost`` (events the perf buffer dropped), ``printk_lines_missing``.

    Raises:
        ValueError: bad duration, uid, workload, max_events or attach (before anything loads).
        PermissionError: not root.
    """
    duration = check_duration(duration)
    cflags, fill = uid_filter(uid)
    check_workload(workload)
    check_positive_int(max_events, "max_events", MAX_EVENTS)
    if not isinstance(wide, bool):
        raise ValueError(f"wide must be True or False, got {wide!r}")
    alternatives = exec_alternatives(attach, "syscall__execve", "helpers_tracepoint")
    tag = secrets.randbits(31) | 1
    df = bounded_run(
        name="helper_calls",
        source=program_source("helper_calls"),
        alternatives=alternatives,
        collector=_HelperReader(tag, max_events or MAX_EVENTS, {**fill, "run_tag": {0: tag}}),
        duration=duration,
        workload=workload,
        cflags=cflags,
        live=live,
        attrs={"uid": uid, "buffer": "perf"},
    )
    if wide:
        return df
    out = _long(df)
    out.attrs = dict(df.attrs)
    return out


# ---------------------------------------------------------------------------- helper_support

#: the program types :func:`helper_support` can try (``kprobe`` is also what uprobes are)
PROGRAM_TYPES = (
    "tracepoint",
    "raw_tracepoint",
    "kprobe",
    "perf_event",
    "xdp",
    "socket_filter",
    "sched_cls",
)
#: the program types tried by default
DEFAULT_PROGRAM_TYPES = ("tracepoint", "raw_tracepoint", "kprobe", "perf_event", "xdp")
#: the helpers ``helper_probe.bpf.c`` has a function for, in table order
PROBED_HELPERS = (
    *HELPERS_CALLED,
    "bpf_get_prandom_u32",
    "bpf_probe_read",
    "bpf_get_stack",
    "bpf_get_func_ip",
    "bpf_perf_prog_read_value",
    "bpf_redirect",
    "bpf_xdp_adjust_head",
    "bpf_get_socket_uid",
    "bpf_probe_write_user",
)

_INSN_RE = re.compile(r"^\d+: \(")
_NOISE = (
    "processed ",
    "verification time",
    "stack depth",
    "Validating ",
    "func#",
    "bpf: Failed to load program",
    "Failed to load BPF program",
)


def _names(value: Any, name: str, known: Sequence[str]) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{name} must be a non-empty list, e.g. {list(known[:2])!r}")
    for item in value:
        check_choice(item, name.rstrip("s"), known)
    if len(set(value)) != len(value):
        raise ValueError(f"{name} lists something twice: {list(value)!r}")
    return list(value)


def verifier_reason(error: ProgramError) -> str:
    """The line of a verifier log that says why a program was refused."""
    lines = [x.strip() for x in error.log.splitlines() if x.strip()]
    reasons = [
        x
        for x in lines
        if not _INSN_RE.match(x) and not x.startswith(_NOISE) and not x.startswith(";")
    ]
    if reasons:
        return reasons[-1]
    first = str(error).splitlines()[0]
    return first.split("(): ", 1)[-1]


def helper_support(
    helpers: Sequence[str] | None = None,
    program_types: Sequence[str] | None = None,
    *,
    detail: bool = False,
) -> pd.DataFrame:
    """Which helpers this kernel lets which program types call, found by loading tiny programs.

    For each helper, ``helper_probe.bpf.c`` has a function that calls only that helper.
    Each function is loaded as each program type (the verifier runs) and closed again at once;
    nothing is ever attached. A refusal keeps the verifier's reason, e.g. ``program of this type
    cannot use helper bpf_redirect#23``.

    The answer depends on the kernel version (helpers move into the set every program may
    use), on lockdown (``bpf_probe_write_user`` is refused everywhere under lockdown) and on
    privileges: it is what *this* kernel says to *this* process.

    Args:
        helpers: names from :data:`PROBED_HELPERS` (default: all of them).
        program_types: names from :data:`PROGRAM_TYPES` (default: tracepoint, raw_tracepoint,
            kprobe, perf_event, xdp). ``kprobe`` is the type uprobes use too: loading one works
            even on a kernel without kprobes; only attaching needs them.
        detail: return one row per (helper, program type) with the reason, instead of the table.

    Returns:
        By default a table of booleans: one row per helper, one column per program type,
        True where the kernel accepted the program. ``df.attrs["reasons"]`` maps
        ``helper -> {program_type: reason}`` for every refusal; ``df.attrs`` also has ``kernel``
        and ``lockdown``. With ``detail=True``: columns ``helper``, ``program_type``,
        ``allowed``, ``reason`` ("" when allowed).

    Raises:
        ValueError: unknown helper or program type (before anything loads).
        PermissionError: not root.
    """
    helpers = _names(PROBED_HELPERS if helpers is None else helpers, "helpers", PROBED_HELPERS)
    types = _names(
        DEFAULT_PROGRAM_TYPES if program_types is None else program_types,
        "program_types",
        PROGRAM_TYPES,
    )
    if not isinstance(detail, bool):
        raise ValueError(f"detail must be True or False, got {detail!r}")
    require_root()
    rows = []
    bpf = compile_program(program_source("helper_probe"), name="helper_probe")
    try:
        for helper in helpers:
            fn = "probe_" + helper.removeprefix("bpf_")
            for ptype in types:
                error = refusal(bpf, fn, ptype, name="helper_probe")
                rows.append(
                    {
                        "helper": helper,
                        "program_type": ptype,
                        "allowed": error is None,
                        "reason": "" if error is None else verifier_reason(error),
                    }
                )
    finally:
        release(bpf)
    long = SUPPORT_DETAIL.frame(rows)
    long["helper"] = pd.Categorical(long["helper"], categories=helpers)
    long["program_type"] = pd.Categorical(long["program_type"], categories=types)
    meta = {"kernel": kernel.release(), "lockdown": kernel.lockdown_mode() or "unknown"}
    if detail:
        long.attrs.update(meta)
        return long
    table = long.pivot(index="helper", columns="program_type", values="allowed")
    table = table.reindex(index=helpers, columns=types).astype(bool)
    table.index.name = "helper"
    table.columns.name = "program_type"
    reasons: dict[str, dict[str, str]] = {}
    for r in long[~long["allowed"]].itertuples(index=False):
        reasons.setdefault(str(r.helper), {})[str(r.program_type)] = str(r.reason)
    table.attrs.update(meta)
    table.attrs["reasons"] = reasons
    return table
