"""Lesson 04's disassembler on hand-made bytecode: each slot written as the verifier's log does.

No kernel needed (BCC's Python module is): the bytes are written here, one instruction at a time,
as include/uapi/linux/bpf.h lays them out (opcode, dst | src << 4, offset, immediate).
"""

from __future__ import annotations

import struct

import pytest

pytest.importorskip("bcc")

from ebpf_lab.lessons.l04_verifier.disasm import DISASM_COLUMNS, instruction_frame  # noqa: E402


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


def test_each_slot_is_one_row_as_the_verifier_writes_it():
    raw = b"".join(
        [
            insn(0x85, imm=1),  # call helper 1
            insn(0x18, dst=1, src=1, imm=5),  # lddw r1 = map fd 5 (two slots)
            insn(0x00),
            insn(0xB7, dst=2, imm=1),  # r2 = 1
            insn(0xDB, dst=0, src=2),  # atomic add, 64-bit (atomic_increment)
            insn(0xC3, dst=0, src=2, off=8, imm=0x01),  # atomic fetch add, 32-bit
            insn(0x16, dst=1, imm=3, off=2),  # jmp32: if w1 == 3
            insn(0x61, dst=1, src=10, off=-4),  # ldxw
            insn(0xDC, dst=1, imm=16),  # be16
            insn(0x05, off=-2),  # goto
            insn(0x95),  # exit
        ]
    )
    df = instruction_frame(raw, "f")
    assert list(df.columns) == DISASM_COLUMNS
    assert df["text"].tolist() == [
        "call bpf_map_lookup_elem#1",
        "r1 = map[fd:5]",
        "(upper 32 bits of the 64-bit load above)",
        "r2 = 1",
        "lock *(u64 *)(r0 +0) += r2",
        "r2 = atomic_fetch_add(*(u32 *)(r0 +8), r2)",
        "if w1 == 3 goto pc+2",
        "r1 = *(u32 *)(r10 -4)",
        "r1 = be16 r1",
        "goto pc-2",
        "exit",
    ]
    assert df["mnemonic"].tolist() == [
        "call",
        "lddw",
        "(lddw)",
        "mov",
        "atomic_add",
        "atomic_fetch_add",
        "jeq32",
        "ldxw",
        "be",
        "ja",
        "exit",
    ]
    assert df["insn_class"].tolist() == [
        "jmp",
        "ld",
        "ld",
        "alu64",
        "stx",
        "stx",
        "jmp32",
        "ldx",
        "alu",
        "jmp",
        "jmp",
    ]
    assert df["index"].tolist() == list(range(11))
    assert df["offset"].tolist()[7] == -4


def test_a_cpu_v4_form_is_listed_not_decoded():
    df = instruction_frame(insn(0x3F, dst=1, src=2, off=1))  # sdiv r1, r2 (cpu v4)
    assert df["text"].tolist() == ["(instruction 0x3f with offset 1, not decoded)"]


@pytest.mark.parametrize("raw", [b"\x00" * 7, "not bytes", None])
def test_bytes_not_in_slots_are_a_value_error(raw):
    with pytest.raises(ValueError, match="multiple of 8"):
        instruction_frame(raw)
