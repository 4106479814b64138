"""Lesson 14: a tail call, counted.

:func:`tail_call_counts` loads ``tail_call.bpf.c``: ``dispatch`` on the execve tracepoint, and
``second``, which is never attached anywhere: before attaching, the lab loads it as a program of
the same type and writes its fd into slot 1 of the ``BPF_PROG_ARRAY`` called ``jump`` (in BCC,
``jump.call(ctx, 1)`` is ``bpf_tail_call(ctx, &jump, 1)``). Slot 2 stays empty. While a known
number of execs run as a UID nobody else uses, each program counts its runs in ``runs``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ebpf_lab.core.attach import Alternative, Probe
from ebpf_lab.core.collectors import fill_maps
from ebpf_lab.core.guards import check_duration, check_required_int, check_uid, require_bcc
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Collector, RunContext, bounded_run
from ebpf_lab.show.frames import Schema
from ebpf_lab.workloads import MAX_EXECS, execs, unused_uid

#: the program and its tracepoint
PROGRAM = "tail_call"
TRACEPOINT = "syscalls:sys_enter_execve"
#: the slot of ``jump`` that holds ``second``; the slot ``dispatch`` tries first stays empty
SECOND_SLOT = 1
EMPTY_SLOT = 2

#: one row per counter of ``runs``: where in the C it counts, and how many times it ran
RUNS = Schema(slot="int64", counts="string", runs="int64")
#: what each slot of ``runs`` counts, in slot order
COUNTERS = (
    "dispatch ran (for the workload's UID)",
    f"dispatch went on after jump.call(ctx, {EMPTY_SLOT}) (an empty slot)",
    f"second ran (reached by jump.call(ctx, {SECOND_SLOT}))",
    f"dispatch went on after jump.call(ctx, {SECOND_SLOT})",
)


class _TailCall(Collector):
    """Puts ``second`` into the program array before attaching; reads ``runs`` at the end."""

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.second_fd = -1

    def prepare(self, bpf: Any) -> None:
        bcc = require_bcc()
        fill_maps(bpf, {"target_uid": {0: self.uid}})
        # a tail call only jumps to a program of the caller's type: dispatch is a tracepoint
        second = bpf.load_func(b"second", bcc.BPF.TRACEPOINT)
        self.second_fd = second.fd
        jump = bpf[b"jump"]
        jump[jump.Key(SECOND_SLOT)] = jump.Leaf(second.fd)

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        table = ctx.table("runs")
        counts = {int(k.value): int(v.value) for k, v in table.items()}
        ctx.attrs["second_slot"] = SECOND_SLOT
        return RUNS.frame(
            [
                {"slot": slot, "counts": what, "runs": counts.get(slot, 0)}
                for slot, what in enumerate(COUNTERS)
            ]
        )


def tail_call_counts(
    execs_count: int = 20,
    uid: int | None = None,
    duration: float = 0.5,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """Run ``/bin/true`` ``execs_count`` times as ``uid`` while ``dispatch`` tail-calls ``second``.

    Args:
        execs_count: execs as ``uid`` while attached (1..MAX_EXECS).
        uid: the UID they run as; default: a UID nobody uses
            (:func:`ebpf_lab.workloads.unused_uid`), so every count is exact.
        duration: seconds to stay attached at least (the run also waits for the execs).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per counter of the ``runs`` map: ``slot``, ``counts`` (where in the C it counts)
        and ``runs``. For a kernel with tail calls: ``execs_count``, ``execs_count``,
        ``execs_count``, 0: the empty slot falls through, the filled one never returns.
        ``df.attrs``: ``uid``, ``execs``, ``second_slot`` (the slot of ``jump`` that holds
        ``second``) and the run's own.

    Raises:
        ValueError: a bad count, uid or duration (before anything loads).
        PermissionError: not root.
    """
    execs_count = check_required_int(execs_count, "execs_count", MAX_EXECS, 20)
    duration = check_duration(duration)
    if uid is None:
        uid = unused_uid()
    else:
        try:
            uid = check_uid(uid)
        except ValueError as exc:
            raise ValueError(f"uid: {exc}") from None
    probes = [Probe("tracepoint", TRACEPOINT, "dispatch")]
    return bounded_run(
        name="tail_call",
        source=program_source(PROGRAM),
        alternatives=[Alternative("tracepoint", probes, "the stable execve tracepoint")],
        collector=_TailCall(uid),
        duration=duration,
        workload=lambda: execs({uid: execs_count}),
        live=live,
        attrs={"uid": uid, "execs": execs_count},
    )
