"""Lesson 08 (data transfer): checkable exercises. The check runs a ring buffer in the kernel."""

from __future__ import annotations

import os
from typing import Any

from ebpf_lab.classroom.checks import Right, Wrong, exercise, prediction, run_answer
from ebpf_lab.workloads import getppid_child

GETPPID = "syscalls:sys_enter_getppid"
#: the size of one page here: each ring buffer of the check is one page
PAGE = os.sysconf("SC_PAGE_SIZE")
#: the event sizes (bytes) the check reserves, one ring buffer each
SIZES = (16, 12, 40)
#: the header the kernel puts before every ring buffer record
HEADER = 8
#: the check's getppid() calls: more than any of its rings can hold
CALLS = PAGE // 4


def _ring_fill_source() -> str:
    """The check's program: per event size, one ring buffer of one page that nobody reads;
    every getppid() of the watched process reserves one event in each and counts whether it
    fit (``kept``) or not (``refused``), by the size's index in :data:`SIZES`."""
    parts = [
        "BPF_ARRAY(target, u32, 1);",
        f"BPF_ARRAY(kept, u64, {len(SIZES)});",
        f"BPF_ARRAY(refused, u64, {len(SIZES)});",
    ]
    body = []
    for i, size in enumerate(SIZES):
        parts += [f"struct e{size} {{ u8 data[{size}]; }};", f"BPF_RINGBUF_OUTPUT(ring{size}, 1);"]
        body.append(
            f"""    struct e{size} *e{i} = ring{size}.ringbuf_reserve(sizeof(struct e{size}));
    if (e{i}) {{
        e{i}->data[0] = 1;
        ring{size}.ringbuf_submit(e{i}, BPF_RB_NO_WAKEUP);
        kept.atomic_increment({i});
    }} else {{
        refused.atomic_increment({i});
    }}"""
        )
    head = """int count(void *ctx)
{
    int zero = 0;
    u32 *pid = target.lookup(&zero);
    if (!pid || (bpf_get_current_pid_tgid() >> 32) != *pid)
        return 0;
"""
    return "\n".join(parts) + "\n\n" + head + "\n".join(body) + "\n    return 0;\n}\n"


def record_size(size: int) -> int:
    """The room one event of ``size`` bytes takes in a BPF ring buffer: the 8-byte header plus
    the event, rounded up to a multiple of 8."""
    return -(-(size + HEADER) // 8) * 8


def measure() -> dict[int, dict[str, int]]:
    """Run the check's ring buffer program while a child makes :data:`CALLS` getppid() calls:
    per event size, how many events its one-page ring kept and how many it refused."""
    with getppid_child(CALLS) as child:
        maps = run_answer(
            _ring_fill_source(),
            tracepoint=GETPPID,
            fn="count",
            workload=child.run,
            duration=0.2,
            fill={"target": {0: child.pid}},
        )
    kept = dict(zip(maps["kept"].iloc[:, 0], maps["kept"]["value"]))
    refused = dict(zip(maps["refused"].iloc[:, 0], maps["refused"]["value"]))
    return {
        size: {"kept": int(kept.get(i, 0)), "refused": int(refused.get(i, 0))}
        for i, size in enumerate(SIZES)
    }


@exercise(
    "08.3",
    title="How many events fit?",
    asks="a dict predicting, before the check runs it, how many events of "
    f"{', '.join(map(str, SIZES))} bytes a BPF ring buffer of one page ({PAGE} bytes) "
    "keeps when nobody reads it and "
    f"{CALLS} events are sent: {{{', '.join(f'{s}: n' for s in SIZES)}}}",
    needs_kernel=True,
)
def ring_capacity(answer: Any) -> Right:
    answer = prediction(
        answer, SIZES, f"the number of events of that many bytes a {PAGE}-byte ring keeps"
    )
    measured = measure()
    got = {s: measured[s]["kept"] for s in SIZES}
    lost = [s for s in SIZES if measured[s]["kept"] + measured[s]["refused"] != CALLS]
    if lost:
        raise Wrong(
            f"the run did not see all {CALLS} calls of the child ({measured}): run the check again",
            measured=measured,
        )
    naive = {s: PAGE // s for s in SIZES}
    plus_header = {s: PAGE // (s + HEADER) for s in SIZES}
    wrong = [s for s in SIZES if answer[s] != got[s]]
    if not wrong:
        return Right(
            f"right: the ring kept {got} and refused the rest of the {CALLS} events. Every "
            f"record takes an {HEADER}-byte header plus the event, rounded up to 8 bytes: "
            + ", ".join(f"{s} -> {record_size(s)}" for s in SIZES)
            + f" bytes, so {PAGE} // {record_size(SIZES[0])} = {got[SIZES[0]]}. A 12-byte event "
            "costs as much room as a 16-byte one; nothing is freed until user space reads",
            measured=measured,
        )
    said = "; ".join(f"{s} bytes: you said {answer[s]}, the ring kept {got[s]}" for s in wrong)
    if all(answer[s] == naive[s] for s in wrong):
        hint = (
            "a record is more than the event: the kernel writes a header before each one "
            "(length, flags, the offset of its page)"
        )
    elif all(answer[s] == plus_header[s] for s in wrong):
        hint = "the header is counted; is every record's start aligned to some size?"
    else:
        hint = (
            "how many bytes does one record take in the ring (the event, its header, and the "
            "alignment of the next record), and how many such records fit into one page?"
        )
    raise Wrong(f"{said}. Think again: {hint}", measured=measured)
