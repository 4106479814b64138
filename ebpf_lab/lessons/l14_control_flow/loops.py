"""Lesson 14: what a loop costs the verifier, a bounded C loop against ``bpf_loop()``.

``loop_cost.bpf.c`` has the same loop twice: ``sum_with_for_loop`` is a C ``for`` loop with a
constant bound ``LOOPS``; ``sum_with_bpf_loop`` asks the ``bpf_loop()`` helper (Linux 5.17+) to
call ``add_random_bit()`` ``LOOPS`` times. :func:`loop_cost` compiles both for each bound, loads
each function with the verifier (nothing is attached) and keeps the kernel's count of the
instructions the verifier processed (``verified_insns``), or, when the verifier refuses a
function, its own words.

BCC alone cannot load the ``bpf_loop`` half: the callback's address needs a relocation that BCC
0.26 does not apply (it loads each function by itself, iovisor/bcc#2459), and the verifier
refuses with ``R2 type=scalar expected=func``. :func:`loop_cost` records that answer
(``attrs["bcc_alone"]``) and then loads the function linked by
:mod:`ebpf_lab.lessons.l14_control_flow.linking`, the step a loader like libbpf does. Whether the
kernel has the helper at all is found out too (:func:`kernel_has_helper`), never assumed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ebpf_lab.core import kernelfs
from ebpf_lab.core import verdict as engine
from ebpf_lab.core.loader import program_source
from ebpf_lab.lessons.l14_control_flow.linking import linked_load
from ebpf_lab.show.frames import Schema

#: the program and its two loops (function names)
PROGRAM = "loop_cost"
METHODS = {"for loop": "sum_with_for_loop", "bpf_loop": "sum_with_bpf_loop"}
#: the bounds :func:`loop_cost` measures by default
BOUNDS = (8, 64, 512, 4096)
#: the largest bound accepted (the verifier stops at one million processed instructions)
MAX_LOOPS = 1 << 16

#: :func:`loop_cost`: one row per (bound, method)
COST = Schema(
    loops="int64",
    method="category",
    fn="category",
    accepted="bool",
    instructions="Int64",
    processed="Int64",
    verifier="string",
)


@functools.cache
def kernel_has_helper(name: str) -> bool:
    """Whether the running kernel knows the BPF helper ``name`` (e.g. ``"loop"``).

    Reads the kernel's own BTF (``/sys/kernel/btf/vmlinux``): a kernel names each helper it has
    in ``enum bpf_func_id`` as ``BPF_FUNC_<name>``. False when the kernel has no BTF.

    Raises:
        ValueError: ``name`` is not a helper name like ``"loop"`` or ``"tail_call"``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a helper name looks like 'loop' or 'tail_call', got {name!r}")
    try:
        data = kernelfs.BTF_VMLINUX.read_bytes()
    except OSError:
        return False
    return b"\0BPF_FUNC_" + name.encode() + b"\0" in data


def _check_bounds(loops: Any) -> list[int]:
    if isinstance(loops, (str, bytes)) or not isinstance(loops, Sequence) or not loops:
        raise ValueError(f"loops must be a list of loop bounds like [8, 64], got {loops!r}")
    for n in loops:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LOOPS:
            raise ValueError(
                f"each bound in loops must be a whole number 1..{MAX_LOOPS}, got {n!r} in {loops!r}"
            )
    return list(loops)


def loop_cost(loops: Sequence[int] = BOUNDS) -> pd.DataFrame:
    """The verifier's work for each loop bound, for the C loop and for ``bpf_loop()``.

    Each function of ``loop_cost.bpf.c`` is compiled with ``-DLOOPS=<bound>``, loaded as a
    tracepoint program with the verifier's log at level 1 (only its statistics), measured and
    unloaded; nothing is attached, nothing runs.

    Args:
        loops: the bounds to measure (default 8, 64, 512, 4096), each 1..65536.

    Returns:
        One row per bound and method: ``loops``, ``method`` (``"for loop"`` or ``"bpf_loop"``),
        ``fn``, ``accepted``, ``instructions`` (what clang produced) and ``processed`` (what
        the verifier walked through, the kernel's ``verified_insns``), both empty when the
        verifier refused, and ``verifier`` (its summary line, or its words when it refused).
        The ``bpf_loop`` rows are the lab-linked load whenever BCC alone is refused.
        ``df.attrs``: ``kernel``, ``bpf_loop_helper`` (the kernel has ``bpf_loop``),
        ``bcc_alone`` (the verifier's words on ``sum_with_bpf_loop`` as BCC loads it).

    Raises:
        ValueError: a bad list of bounds (before anything is loaded).
        PermissionError: not root.
    """
    bounds = _check_bounds(loops)
    text = program_source(PROGRAM)
    rows = []
    bcc_alone = ""
    for n in bounds:
        for method, fn in METHODS.items():
            v = engine.check(text, "tracepoint", fn, [f"-DLOOPS={n}"], 1, label=PROGRAM)
            row = _row(n, method, fn, v)
            if method == "bpf_loop" and not v.ok and v.stage == "verifier":
                bcc_alone = bcc_alone or " ".join(v.errors) or v.message
                row = _linked_row(n, method, fn)
            rows.append(row)
    df = COST.frame(rows)
    df.attrs.update(
        {
            "kernel": kernelfs.release(),
            "bpf_loop_helper": kernel_has_helper("loop"),
            "bcc_alone": bcc_alone or "loaded by BCC alone",
        }
    )
    return df


def _row(n: int, method: str, fn: str, v: engine.Verdict) -> dict[str, Any]:
    fact = v.facts[0] if v.ok else {}
    return {
        "loops": n,
        "method": method,
        "fn": fn,
        "accepted": v.ok,
        "instructions": fact.get("compiled_insns"),
        "processed": fact.get("verified_insns"),
        "verifier": v.message if v.ok else " ".join(v.errors) or v.message,
    }


def _linked_row(n: int, method: str, fn: str) -> dict[str, Any]:
    """``fn`` linked with its callback by the lab, loaded, measured and unloaded."""
    log = linked_load(PROGRAM, fn, "out", cflags=[f"-DLOOPS={n}"], log_level=1)
    row: dict[str, Any] = {"loops": n, "method": method, "fn": fn}
    if not log.attrs["accepted"]:
        return {**row, "accepted": False, "verifier": log.attrs["error"]}
    insns, processed = log.attrs["instructions"], log.attrs["processed"]
    said = f"{fn}() + its callback, linked by the lab: {insns} instructions, {processed} processed"
    row.update(accepted=True, instructions=insns, processed=processed, verifier=said)
    return row


def plot_loop_cost(df: pd.DataFrame, ax: Any = None) -> Any:
    """Processed instructions against the loop bound, one line per method; returns the axes.

    A method the verifier refused has no points; its label says so.

    Raises:
        ValueError: ``df`` is not a :func:`loop_cost` frame with rows.
    """
    missing = [c for c in ("loops", "method", "processed") if c not in getattr(df, "columns", [])]
    if missing or len(df) == 0:
        raise ValueError(f"plot_loop_cost needs a loop_cost() frame with rows; missing {missing}")
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for (method, part), marker in zip(df.groupby("method", observed=True), "os^"):
        done = part.dropna(subset=["processed"])
        label = str(method) if len(done) else f"{method} (refused by the verifier: no points)"
        ax.plot(done["loops"], done["processed"].astype(float), marker=marker, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("loop bound (LOOPS)")
    ax.set_ylabel("instructions processed by the verifier")
    ax.set_title("The verifier's work: per round for a C loop, once for bpf_loop")
    ax.legend()
    return ax
