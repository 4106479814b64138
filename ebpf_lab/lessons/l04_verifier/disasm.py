"""Lesson 04's disassembler: BPF bytecode as a frame, one row per 8-byte instruction slot.

BCC's own ``bcc.disassembler`` does the reading: its instruction struct splits each slot into
opcode, registers, offset and immediate, and its opcode table names the instruction (``add32``,
``jeq``, ``ldxdw``...). What this module adds is what a learner reading lesson 04 needs and BCC
0.26 lacks:

* the text of each instruction is written the way the kernel's verifier log writes it
  (``r1 = *(u32 *)(r10 -4)``, ``goto pc-2``, ``call bpf_map_lookup_elem#1``), so the disassembly
  and the verifier's log read alike;
* atomic instructions (``lock *(u64 *)(r0 +0) += r1``: what ``atomic_increment()`` compiles to;
  BCC's disassembler raises on them), 32-bit jumps and ``le`` byte swaps;
* helper names from the running kernel's BTF (every helper it has, not BCC's older list), and in
  the translated program the kernel function each call became;
* one row per slot, also for the second half of a 64-bit load, so the row count is the kernel's
  instruction count.

Instructions of the newer cpu v4 set (signed division, sign-extending moves and loads), which
BCC's clang does not emit, are listed but not decoded.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import subprocess
from typing import Any

import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.guards import require_bcc
from ebpf_lab.show.frames import Schema

_CLASS_NAMES = ("ld", "ldx", "st", "stx", "alu", "jmp", "jmp32", "alu64")
#: BPF_ATOMIC operations (the ``imm`` of an atomic ``stx``), as the verifier's log writes them
_ATOMIC_OPS = {0x00: ("add", "+="), 0x40: ("or", "|="), 0x50: ("and", "&="), 0xA0: ("xor", "^=")}


#: :func:`instruction_frame`: one row per 8-byte instruction slot
INSTRUCTIONS = Schema(
    fn="category",
    index="int64",
    opcode="object",
    insn_class="category",
    mnemonic="category",
    text="object",
    dst_reg="int64",
    src_reg="int64",
    offset="int64",
    imm="int64",
)
DISASM_COLUMNS = INSTRUCTIONS.columns


@functools.lru_cache(maxsize=1)
def _helper_names() -> dict[int, str]:
    """Helper function ids -> names, from the running kernel's BTF (``enum bpf_func_id``)."""
    names: dict[int, str] = {}
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    try:
        out = subprocess.run(
            [bpftool, "btf", "dump", "file", str(kernel.BTF_VMLINUX), "format", "raw"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        inside = False
        for line in out.splitlines():
            if line.startswith("["):
                inside = "ENUM 'bpf_func_id'" in line
            elif inside:
                m = re.match(r"\s+'BPF_FUNC_(\w+)' val=(\d+)", line)
                if m:
                    names[int(m.group(2))] = m.group(1)
    except (OSError, subprocess.SubprocessError):
        pass
    if not names:  # BCC's own (shorter) list
        with contextlib.suppress(Exception):
            from bcc.disassembler import BPFDecoder

            names = dict(enumerate(BPFDecoder.bpf_helpers))
    return names


@functools.lru_cache(maxsize=1)
def _kallsyms() -> tuple[int, dict[int, str]]:
    """(address of __bpf_call_base, {address: symbol}) from /proc/kallsyms (root sees addresses)."""
    base, symbols = 0, {}
    with contextlib.suppress(OSError), open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1] in "tTwW":
                addr = int(parts[0], 16)
                symbols.setdefault(addr, parts[2])
                if parts[2] == "__bpf_call_base":
                    base = addr
    return base, symbols


def _call_text(src: int, imm: int, xlated: bool) -> str:
    if src == 1:
        return f"call pc{imm:+d} (a BPF function)"
    if src == 2:
        return f"call kfunc (BTF id {imm})"
    if xlated:  # the kernel replaced the helper's number by its address - __bpf_call_base
        base, symbols = _kallsyms()
        name = symbols.get(base + imm) if base else None
        return f"call {name}" if name else f"call kernel function at __bpf_call_base{imm:+d}"
    name = _helper_names().get(imm)
    return f"call bpf_{name}#{imm}" if name else f"call helper #{imm}"


def _opcodes() -> dict[int, tuple[str, str, str | None, int]]:
    """BCC's table: opcode -> (mnemonic, operand form, operator, bits)."""
    require_bcc()
    from bcc.disassembler import BPFDecoder

    return BPFDecoder.opcodes


def _insn(code: int, dst: int, src: int, off: int, imm: int, xlated: bool) -> tuple[str, str]:
    """(mnemonic, text) of one instruction; the second slot of ``lddw`` is not passed here.

    The mnemonic and operator are BCC's (``bcc.disassembler``); the text is written as the
    verifier's log writes it. What BCC's table lacks is decoded here: 32-bit jumps, ``le``
    byte swaps, and atomic instructions (what ``atomic_increment()`` compiles to).
    """
    cls = code & 0x07
    if cls == 6:  # jmp32: the 64-bit jump's name and operator, on 32-bit registers
        name, form, sym, _ = _opcodes().get((code & 0xF8) | 0x05, (f"op{code:#04x}", "", "?", 0))
        name = name + "32" if code & 0xF0 != 0x00 else "gotol"
    else:
        name, form, sym, bits = _opcodes().get(code, (f"op{code:#04x}", "", None, 0))
    r = "w" if cls in (4, 6) else "r"
    operand = f"{r}{src}" if code & 0x08 else str(imm)
    ctype = f"u{bits}" if cls in (0, 1, 2, 3) and form else ""
    if code & 0xF7 == 0xD4:  # BPF_END: le (0xd4) or be (0xdc)
        order = "be" if code & 0x08 else "le"
        return order, f"r{dst} = {order}{imm} r{dst}"
    if cls == 3 and code & 0xE0 == 0xC0:  # BPF_ATOMIC
        size = 64 if code & 0x18 == 0x18 else 32
        where = f"*(u{size} *)(r{dst} {off:+d})"
        if imm == 0xE1:
            return "xchg", f"r{src} = xchg({where}, r{src})"
        if imm == 0xF1:
            return "cmpxchg", f"r0 = cmpxchg({where}, r0, r{src})"
        op, op_sym = _ATOMIC_OPS.get(imm & 0xF0, (f"op{imm & 0xF0:#x}", "?="))
        if imm & 0x01:  # BPF_FETCH
            return f"atomic_fetch_{op}", f"r{src} = atomic_fetch_{op}({where}, r{src})"
        return f"atomic_{op}", f"lock {where} {op_sym} r{src}"
    if name == "call":
        return name, _call_text(src, imm, xlated)
    if name == "exit":
        return name, "exit"
    if name in ("ja", "gotol"):
        return name, f"goto pc{(imm if name == 'gotol' else off):+d}"
    if form in ("jdstimmoff", "jdstsrcoff"):
        return name, f"if {r}{dst} {sym} {operand} goto pc{off:+d}"
    if cls in (4, 7) and off:  # signed div/mod, movsx: cpu v4 forms, which BCC never emits
        return name, f"(instruction {code:#04x} with offset {off}, not decoded)"
    if form == "dst":  # neg
        return name, f"{r}{dst} = -{r}{dst}"
    if form in ("dstimm", "dstimm_bw", "dstsrc"):
        return name, f"{r}{dst} {sym} {operand}"
    if form == "ldstsrcoff":
        return name, f"r{dst} = *({ctype} *)(r{src} {off:+d})"
    if form == "sdstoffimm":
        return name, f"*({ctype} *)(r{dst} {off:+d}) = {imm}"
    if form == "sdstoffsrc":
        return name, f"*({ctype} *)(r{dst} {off:+d}) = r{src}"
    if form == "ldabs":
        return name, f"r0 = *({ctype} *)skb[{imm}]"
    if form == "ldind":
        return name, f"r0 = *({ctype} *)skb[r{src} {imm:+d}]"
    return name, f"(instruction {code:#04x}, not decoded)"


def _lddw_text(dst: int, src: int, imm: int, high: int, xlated: bool) -> str:
    if src in (1, 2, 5, 6):  # map fd / map value / map idx
        kind = "id" if xlated else ("fd" if src in (1, 2) else "idx")
        target = f"map[{kind}:{imm}]" + (f"[0]+{high}" if src in (2, 6) else "")
        return f"r{dst} = {target}"
    if src == 4:
        return f"r{dst} = &func (pc{imm:+d})"
    return f"r{dst} = {(high << 32) | (imm & 0xFFFFFFFF):#x}"


def _decode(raw: bytes, xlated: bool) -> list[dict[str, Any]]:
    from bcc.disassembler import BPFInstr

    count = len(raw) // 8
    slots = (BPFInstr * count).from_buffer_copy(raw) if count else []
    rows: list[dict[str, Any]] = []
    lddw_high = False
    for i, w in enumerate(slots):
        row = {
            "index": i,
            "opcode": f"{w.opcode:#04x}",
            "insn_class": _CLASS_NAMES[w.opcode & 0x07],
            "dst_reg": w.dst,
            "src_reg": w.src,
            "offset": w.offset,
            "imm": w.imm,
        }
        if lddw_high:  # the second half of a 16-byte lddw
            row.update(mnemonic="(lddw)", text="(upper 32 bits of the 64-bit load above)")
            row["insn_class"] = "ld"
            lddw_high = False
        elif w.opcode == 0x18:
            high = slots[i + 1].immu if i + 1 < count else 0
            row.update(mnemonic="lddw", text=_lddw_text(w.dst, w.src, w.imm, high, xlated))
            lddw_high = True
        else:
            mnemonic, text = _insn(w.opcode, w.dst, w.src, w.offset, w.imm, xlated)
            row.update(mnemonic=mnemonic, text=text)
        rows.append(row)
    return rows


def instruction_frame(raw: bytes, fn: str = "", *, xlated: bool = False) -> pd.DataFrame:
    """Decode raw BPF bytecode (8 bytes per slot) into a frame, one row per slot.

    A 64-bit constant load (``lddw``) takes two slots; its second row is marked ``(lddw)``, so
    the number of rows always equals the number of instruction slots (bytes / 8).
    """
    if not isinstance(raw, (bytes, bytearray)) or len(raw) % 8:
        raise ValueError("BPF bytecode must be bytes, a multiple of 8 long")
    return INSTRUCTIONS.frame([{"fn": fn, **r} for r in _decode(bytes(raw), xlated)])
