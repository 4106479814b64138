"""Lesson 07, user space: a uprobe, a uretprobe and a USDT probe on the lab's own C loop.

:func:`user_probes` runs ``probe_loop`` (:func:`ebpf_lab.workloads.c_helpers.probe_loop_child`),
a gated C program that calls its own function ``lab_tick(i)`` (returning ``3*i + 7``) ``calls``
times and fires its USDT probe ``ebpf_lab:tick`` after each call. ``user_probes.bpf.c`` attaches
at three places of that one process and reads at each what is there to read: the function's
first argument (uprobe, ``PT_REGS_PARM1``), its return value (uretprobe, ``PT_REGS_RC``), the
USDT probe's two arguments (``bpf_usdt_readarg``). Everything is known in advance, so every
count and every sum is compared exactly.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ebpf_lab.core.attach import Alternative, Probe, usdt_source
from ebpf_lab.core.guards import check_duration, check_whole, require_root
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Collector, RunContext, bounded_run
from ebpf_lab.lessons.l07_attach_points.probes import _precheck
from ebpf_lab.show.frames import Schema
from ebpf_lab.workloads.c_helpers import PROBE_LOOP_FUNCTION, PROBE_LOOP_USDT, probe_loop_child
from ebpf_lab.workloads.checks import MAX_CALLS

#: :func:`user_probes`' frame: one row per attach point
USER_PROBES = Schema(
    kind=None,
    target=None,
    reads=None,
    events="int64",
    expected_events="int64",
    sum_first="int64",
    expected_first="int64",
    sum_second="Int64",
    expected_second="Int64",
    ok="bool",
)

#: the rows of :func:`user_probes`: kind, the map's key, what the program reads there
_ROWS = (
    ("uprobe", 0, "PT_REGS_PARM1(ctx): the argument i"),
    ("uretprobe", 1, "PT_REGS_RC(ctx): the return value 3*i + 7"),
    ("usdt", 2, "bpf_usdt_readarg(1, 2): i and value"),
)


class _Sums(Collector):
    """Reads the three (events, first, second) sums at the end."""

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        table = ctx.table("sums")
        got = {key: table[table.Key(key)] for _, key, _ in _ROWS}
        return pd.DataFrame(
            [
                {"key": k, "events": v.events, "first": v.first, "second": v.second}
                for k, v in got.items()
            ]
        )


def user_probes(
    calls: int = 1000, *, duration: float = 0.1, live: bool | None = None
) -> pd.DataFrame:
    """Attach a uprobe, a uretprobe and a USDT probe to the lab's C loop and read their values.

    The loop (``probe_loop``) calls ``lab_tick(i)`` for ``i`` = 0 .. ``calls``-1; it returns
    ``3*i + 7``; then the loop fires ``DTRACE_PROBE2(ebpf_lab, tick, i, value)``. The probes are
    opened for that process only (a uprobe with a pid; the USDT probe found in it by BCC's
    ``USDT(pid=...)``), before it is released.

    Args:
        calls: how many times the loop calls ``lab_tick`` (1 .. 1,000,000).
        duration: the least time to stay attached, in seconds; the run also waits for the loop.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per attach point (``uprobe``, ``uretprobe``, ``usdt``): ``target``, ``reads``
        (what the program reads there), ``events``, ``sum_first`` (the arguments i, or for the
        uretprobe the return values), ``sum_second`` (the USDT probe's second argument), each
        with its ``expected_*`` value, and ``ok`` (all exact). ``df.attrs``: ``calls``,
        ``binary``, ``pid``, ``usdt_c`` (the argument readers BCC wrote for the USDT probe),
        and the core's attach, duration, kernel...

    Raises:
        ValueError: bad calls or duration (before anything is built or loaded).
        PermissionError: not root.
        HelperBuildError: the C loop could not be built (says what to install).
        UnsupportedFeature: the kernel has no uprobes (CONFIG_UPROBE_EVENTS unset: said before
            anything loads) or refused one.
    """
    check_whole(calls, "calls", 1, MAX_CALLS)
    duration = check_duration(duration)
    require_root()
    _precheck("uprobe")  # no uprobe PMU: say so before anything is built or loaded
    with probe_loop_child(calls) as child:
        binary = child.program
        probes = [
            Probe("uprobe", f"{binary}:{PROBE_LOOP_FUNCTION}", "on_tick_entry", pid=child.pid),
            Probe("uretprobe", f"{binary}:{PROBE_LOOP_FUNCTION}", "on_tick_return", pid=child.pid),
            Probe("usdt", PROBE_LOOP_USDT, "on_usdt_tick", pid=child.pid),
        ]
        readers = usdt_source(probes)
        box: dict[str, Any] = {}
        raw = bounded_run(
            name="user_probes",
            source=readers + program_source("user_probes"),
            alternatives=[Alternative("uprobe+uretprobe+usdt", probes, "for the loop's pid")],
            collector=_Sums(),
            duration=duration,
            live=live,
            workload=child.run,
            on_workload_result=lambda done: box.update(done=done),
        )
    triangle = calls * (calls - 1) // 2
    expected = {
        "uprobe": (triangle, None),
        "uretprobe": (3 * triangle + 7 * calls, None),
        "usdt": (triangle, 3 * triangle + 7 * calls),
    }
    rows = []
    by_key = raw.set_index("key")
    for kind, key, reads in _ROWS:
        got = by_key.loc[key]
        first, second = expected[kind]
        events, sum_first = int(got["events"]), int(got["first"])
        sum_second = int(got["second"]) if second is not None else None
        rows.append(
            {
                "kind": kind,
                "target": probes[key].target,
                "reads": reads,
                "events": events,
                "expected_events": calls,
                "sum_first": sum_first,
                "expected_first": first,
                "sum_second": sum_second,
                "expected_second": second,
                "ok": events == calls and sum_first == first and sum_second == second,
            }
        )
    df = USER_PROBES.frame(rows)
    df.attrs.update(raw.attrs)
    df.attrs.update({"calls": calls, "binary": binary, "pid": child.pid, "usdt_c": readers})
    return df
