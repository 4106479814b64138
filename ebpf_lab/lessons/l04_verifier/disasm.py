"""Lesson 04's disassembler: BPF bytecode as a frame, one row per 8-byte instruction slot.

The text of each instruction is written the way the kernel's verifier log writes it
(``r1 = *(u32 *)(r10 -4)``, ``goto pc-2``, ``call bpf_map_lookup_elem#1``), so the disassembly and
the verifier's log read alike. Helper names come from the running kernel's BTF (every helper it
has), and the translated program's calls name the kernel function they became. It decodes every
instruction class, atomic instructions among them (``lock *(u64 *)(r0 +0) += r1``: what
``atomic_increment()`` compiles to), which BCC's own ``bcc.disassembler`` (0.26) cannot.
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
from ebpf_lab.show.frames import Schema

_CLASS_NAMES = ("ld", "ldx", "st", "stx", "alu", "jmp", "jmp32", "alu64")
_ALU_OPS = {
    0x00: ("add", "+="),
    0x10: ("sub", "-="),
    0x20: ("mul", "*="),
    0x30: ("div", "/="),
    0x40: ("or", "|="),
    0x50: ("and", "&="),
    0x60: ("lsh", "<<="),
    0x70: ("rsh", ">>="),
    0x80: ("neg", ""),
    0x90: ("mod", "%="),
    0xA0: ("xor", "^="),
    0xB0: ("mov", "="),
    0xC0: ("arsh", "s>>="),
    0xD0: ("end", ""),
}
_JMP_OPS = {
    0x00: ("ja", ""),
    0x10: ("jeq", "=="),
    0x20: ("jgt", ">"),
    0x30: ("jge", ">="),
    0x40: ("jset", "&"),
    0x50: ("jne", "!="),
    0x60: ("jsgt", "s>"),
    0x70: ("jsge", "s>="),
    0x80: ("call", ""),
    0x90: ("exit", ""),
    0xA0: ("jlt", "<"),
    0xB0: ("jle", "<="),
    0xC0: ("jslt", "s<"),
    0xD0: ("jsle", "s<="),
}
_SIZES = {0x00: ("w", "u32"), 0x08: ("h", "u16"), 0x10: ("b", "u8"), 0x18: ("dw", "u64")}
_ATOMIC_OPS = {0x00: "add", 0x40: "or", 0x50: "and", 0xA0: "xor"}

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


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def _decode(raw: bytes, xlated: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    count = len(raw) // 8
    i = 0
    while i < count:
        slot = raw[i * 8 : i * 8 + 8]
        code, regs = slot[0], slot[1]
        dst, src = regs & 0x0F, regs >> 4
        off = _signed(int.from_bytes(slot[2:4], "little"), 16)
        imm = _signed(int.from_bytes(slot[4:8], "little"), 32)
        cls = code & 0x07
        cname = _CLASS_NAMES[cls]
        mnemonic, text, extra = "", "", None
        if cls in (4, 7):  # alu, alu64
            op = code & 0xF0
            name, sym = _ALU_OPS.get(op, (f"alu_op_{op:#x}", "?="))
            r = "w" if cls == 4 else "r"
            operand = f"{r}{src}" if code & 0x08 else str(imm)
            suffix = "32" if cls == 4 else ""
            if op == 0xD0:
                order = "be" if (code & 0x08 and cls == 4) else ("bswap" if cls == 7 else "le")
                mnemonic, text = order, f"r{dst} = {order}{imm} r{dst}"
            elif op == 0x80:
                mnemonic, text = "neg" + suffix, f"{r}{dst} = -{r}{dst}"
            elif op == 0xB0 and code & 0x08 and off in (8, 16, 32):
                mnemonic, text = "movsx" + suffix, f"{r}{dst} = (s{off}){r}{src}"
            elif op in (0x30, 0x90) and off == 1:
                mnemonic = ("sdiv" if op == 0x30 else "smod") + suffix
                text = f"{r}{dst} s{sym} {operand}"
            else:
                mnemonic, text = name + suffix, f"{r}{dst} {sym} {operand}"
        elif cls in (5, 6):  # jmp, jmp32
            op = code & 0xF0
            name, sym = _JMP_OPS.get(op, (f"jmp_op_{op:#x}", "?"))
            r = "w" if cls == 6 else "r"
            if op == 0x80:
                mnemonic, text = "call", _call_text(src, imm, xlated)
            elif op == 0x90:
                mnemonic, text = "exit", "exit"
            elif op == 0x00:
                delta = imm if cls == 6 else off
                mnemonic = "gotol" if cls == 6 else "ja"
                text = f"goto pc{delta:+d}"
            else:
                operand = f"{r}{src}" if code & 0x08 else str(imm)
                mnemonic = name + ("32" if cls == 6 else "")
                text = f"if {r}{dst} {sym} {operand} goto pc{off:+d}"
        elif cls == 1:  # ldx
            size, ctype = _SIZES[code & 0x18]
            if code & 0xE0 == 0x80:  # BPF_MEMSX
                mnemonic, text = f"ldxs{size}", f"r{dst} = *(s{ctype[1:]} *)(r{src} {off:+d})"
            else:
                mnemonic, text = f"ldx{size}", f"r{dst} = *({ctype} *)(r{src} {off:+d})"
        elif cls == 2:  # st
            size, ctype = _SIZES[code & 0x18]
            mnemonic, text = f"st{size}", f"*({ctype} *)(r{dst} {off:+d}) = {imm}"
        elif cls == 3:  # stx
            size, ctype = _SIZES[code & 0x18]
            if code & 0xE0 == 0xC0:  # BPF_ATOMIC
                op = imm & 0xF0
                fetch = imm & 0x01
                where = f"*({ctype} *)(r{dst} {off:+d})"
                if imm == 0xE1:
                    mnemonic, text = "xchg", f"r{src} = xchg({where}, r{src})"
                elif imm == 0xF1:
                    mnemonic, text = "cmpxchg", f"r0 = cmpxchg({where}, r0, r{src})"
                elif imm == 0x100:
                    mnemonic = "load_acquire"
                    text = f"r{dst} = load_acquire(({ctype} *)(r{src} {off:+d}))"
                elif imm == 0x110:
                    mnemonic, text = "store_release", f"store_release({where}, r{src})"
                else:
                    aname = _ATOMIC_OPS.get(op, f"op{op:#x}")
                    if fetch:
                        mnemonic = f"atomic_fetch_{aname}"
                        text = f"r{src} = atomic_fetch_{aname}({where}, r{src})"
                    else:
                        mnemonic = f"atomic_{aname}"
                        sym = {"add": "+=", "or": "|=", "and": "&=", "xor": "^="}.get(aname, "?=")
                        text = f"lock {where} {sym} r{src}"
            else:
                mnemonic, text = f"stx{size}", f"*({ctype} *)(r{dst} {off:+d}) = r{src}"
        else:  # ld
            if code == 0x18:
                mnemonic = "lddw"
                high = 0
                if i + 1 < count:
                    high = int.from_bytes(raw[i * 8 + 12 : i * 8 + 16], "little")
                value = (high << 32) | (imm & 0xFFFFFFFF)
                if src in (1, 2, 5, 6):  # map fd / map value / map idx
                    kind = "id" if xlated else ("fd" if src in (1, 2) else "idx")
                    target = f"map[{kind}:{imm}]"
                    if src in (2, 6):
                        target += f"[0]+{high}"
                    text = f"r{dst} = {target}"
                elif src == 4:
                    text = f"r{dst} = &func (pc{imm:+d})"
                else:
                    text = f"r{dst} = {value:#x}"
                extra = i + 1
            else:
                size, ctype = _SIZES[code & 0x18]
                mode = "abs" if code & 0xE0 == 0x20 else "ind"
                mnemonic = f"ld{mode}{size}"
                text = (
                    f"r0 = *({ctype} *)skb[{imm}]"
                    if mode == "abs"
                    else f"r0 = *({ctype} *)skb[r{src} {imm:+d}]"
                )
        rows.append(
            {
                "index": i,
                "opcode": f"{code:#04x}",
                "insn_class": cname,
                "mnemonic": mnemonic,
                "text": text,
                "dst_reg": dst,
                "src_reg": src,
                "offset": off,
                "imm": imm,
            }
        )
        if extra is not None and extra < count:  # the second half of a 16-byte lddw
            s2 = raw[extra * 8 : extra * 8 + 8]
            rows.append(
                {
                    "index": extra,
                    "opcode": f"{s2[0]:#04x}",
                    "insn_class": "ld",
                    "mnemonic": "(lddw)",
                    "text": "(upper 32 bits of the 64-bit load above)",
                    "dst_reg": s2[1] & 0x0F,
                    "src_reg": s2[1] >> 4,
                    "offset": _signed(int.from_bytes(s2[2:4], "little"), 16),
                    "imm": _signed(int.from_bytes(s2[4:8], "little"), 32),
                }
            )
            i = extra
        i += 1
    return rows


def instruction_frame(raw: bytes, fn: str = "", *, xlated: bool = False) -> pd.DataFrame:
    """Decode raw BPF bytecode (8 bytes per slot) into a frame, one row per slot.

    A 64-bit constant load (``lddw``) takes two slots; its second row is marked ``(lddw)``, so
    the number of rows always equals the number of instruction slots (bytes / 8).
    """
    if not isinstance(raw, (bytes, bytearray)) or len(raw) % 8:
        raise ValueError("BPF bytecode must be bytes, a multiple of 8 long")
    return INSTRUCTIONS.frame([{"fn": fn, **r} for r in _decode(bytes(raw), xlated)])
