"""Lesson 15 (CO-RE with libbpf): checkable exercises."""

from __future__ import annotations

import traceback
from typing import Any

import pandas as pd

from ebpf_lab.classroom.checks import AnswerError, Right, Wrong, exercise


def recorded_relocations(rows: list[tuple[int, str, str, int, int]]) -> pd.DataFrame:
    """A frame shaped like :func:`ebpf_lab.core_relocations`'s, from
    (insn, struct, field, object_offset, kernel_offset) per relocation."""
    return pd.DataFrame(
        {
            "program": pd.array(["exec_core"] * len(rows), dtype="string"),
            "relo": pd.array(range(len(rows)), dtype="int64"),
            "kind": pd.array(["byte_off"] * len(rows), dtype="string"),
            "struct": pd.array([r[1] for r in rows], dtype="string"),
            "field": pd.array([r[2] for r in rows], dtype="string"),
            "access": pd.array(["0:0"] * len(rows), dtype="string"),
            "object_offset": pd.array([r[3] for r in rows], dtype="int64"),
            "kernel_offset": pd.array([r[4] for r in rows], dtype="int64"),
            "insn": pd.array([r[0] for r in rows], dtype="int64"),
        }
    )


# An object compiled against one kernel's vmlinux.h (object_offset), loaded on a second kernel
# (kernel_offset); the question is what libbpf writes on a third, whose BTF says OTHER_*.
RELOS_A = recorded_relocations(
    [
        (3, "trace_event_raw_sys_enter", "args[0]", 16, 16),
        (27, "task_struct", "real_parent", 2456, 2472),
        (34, "task_struct", "tgid", 2444, 2460),
    ]
)
OTHER_A = {
    "trace_event_raw_sys_enter.args[0]": 16,
    "task_struct.real_parent": 1280,
    "task_struct.tgid": 1268,
}
# Another such object; the third kernel lacks one of its fields (renamed, as task_struct.state
# became __state in Linux 5.14).
RELOS_B = recorded_relocations(
    [
        (5, "task_struct", "state", 16, 24),
        (9, "task_struct", "pid", 2440, 2448),
        (12, "task_struct", "comm", 3000, 3016),
    ]
)
OTHER_B = {"task_struct.pid": 2464, "task_struct.comm": 3040}


def _truth(relos: pd.DataFrame, offsets: dict[str, int]) -> dict[int, int | None]:
    return {
        int(r.insn): offsets.get(f"{r.struct}.{r.field}") for r in relos.itertuples(index=False)
    }


def _as_mapping(got: Any) -> dict[int, Any]:
    if isinstance(got, pd.Series):
        got = got.to_dict()
    if not isinstance(got, dict):
        raise Wrong(
            f"your function returned a value of type {type(got).__name__}; return a dict "
            "{instruction number: offset on the other kernel, or None}"
        )
    out: dict[int, Any] = {}
    for key, value in got.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise Wrong(
                f"the keys are instruction numbers (the insn column), not {key!r}"
            ) from None
        out[k] = None if value is None or pd.isna(value) else int(value)
    return out


@exercise(
    "15.1",
    title="The same object on another kernel",
    asks="a function (relocations, offsets) -> {insn: offset or None}: for each instruction a "
    "core_relocations() frame lists, the offset libbpf writes into it on another kernel whose "
    "BTF gives `offsets` ({'task_struct.real_parent': 1280, ...}); None where that kernel "
    "lacks the field",
)
def offsets_on_another_kernel(answer: Any) -> Right:
    if not callable(answer):
        raise Wrong(
            f"give a function of two arguments, not a {type(answer).__name__}: "
            "def answer(relocations, offsets): ..."
        )
    for relos, offsets in ((RELOS_A, OTHER_A), (RELOS_B, OTHER_B)):
        try:
            raw = answer(relos.copy(), dict(offsets))
        except Exception as exc:
            raise AnswerError(
                f"your answer raised {type(exc).__name__}: {exc} (when run on a recorded "
                f"relocations frame with the columns {', '.join(relos.columns)})",
                traceback.format_exc(),
            ) from None
        got = _as_mapping(raw)
        want = _truth(relos, offsets)
        if got == want:
            continue
        insn = relos["insn"].astype(int)
        if set(got) == set(relos["relo"].astype(int)) and set(got) != set(insn):
            raise Wrong(
                "key by the instruction libbpf patches (the insn column), not by the "
                "relocation's number",
                got=got,
            )
        if got == dict(zip(insn, relos["object_offset"].astype(int))):
            raise Wrong(
                "those are the offsets the object was compiled with (object_offset): libbpf "
                "replaces them with where the *other* kernel keeps each field, looked up by "
                "struct and field name in that kernel's BTF",
                got=got,
            )
        if got == dict(zip(insn, relos["kernel_offset"].astype(int))):
            raise Wrong(
                "those are this kernel's offsets (kernel_offset); on the other kernel libbpf "
                "looks each field up in *its* BTF: `offsets`",
                got=got,
            )
        missing = [k for k, v in want.items() if v is None]
        if missing and any(got.get(k) is not None for k in missing):
            raise Wrong(
                f"the other kernel has no {relos.set_index('insn').loc[missing[0], 'field']} "
                "field: there libbpf cannot relocate that instruction (it refuses to load the "
                "program); say None for it",
                got=got,
            )
        raise Wrong(f"on that kernel libbpf writes {want}, your answer says {got}", got=got)
    moved = RELOS_A.iloc[1]
    return Right(
        f"right: the object says 'task_struct.{moved['field']}' (a name), not an offset; libbpf "
        f"finds it at {OTHER_A['task_struct.real_parent']} on the other kernel (it was "
        f"{moved['object_offset']} where the object was compiled) and patches instruction "
        f"{moved['insn']}. A field the kernel lacks fails the load, before anything runs."
    )
