"""Lesson 14: the link step BCC leaves out, done by hand for one ``bpf_loop()`` callback.

``bpf_loop(n, callback, ctx, 0)`` needs the callback's address in the bytecode as a 64-bit load
whose source register says "a BPF function" (``BPF_PSEUDO_FUNC``, 4) and whose immediate is the
distance, in instructions, to the callback's first instruction. Clang cannot write that distance:
it leaves a relocation for a loader (libbpf fills it in). BCC 0.26 loads each function by itself
and applies no such relocation, so the verifier sees a plain number in ``r2`` and refuses the call
(``R2 type=scalar expected=func``).

``loop_cost.bpf.c`` puts the callback into the caller's own ELF section (BCC names a function's
section ``.bpf.fn.<function>``), right after the caller; clang then writes the callback's *byte
offset* in the section into the load. :func:`load_linked` does what a linker would:

1. takes the caller's instructions as BCC compiled them, and the callback's, which follow them in
   the same section, up to the callback's ``exit``;
2. turns the load of that byte offset into ``BPF_PSEUDO_FUNC`` with the distance in instructions;
3. writes the fd of the program's map into the callback's map loads (BCC resolved map names in
   the caller only; the callback's loads carry fd -1);
4. loads caller + callback through BCC (``bcc_func_load``), which passes the section's BTF
   function information: the verifier needs it for a callback.

It is written for the one-callback, one-map shape of ``loop_cost.bpf.c``: anything else is
refused with a ValueError, not guessed at.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import struct
from collections.abc import Iterator
from typing import Any

from ebpf_lab.core.guards import require_bcc

#: ``src_reg`` values of a 64-bit load (``lddw``): a map fd, a BPF function
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_FUNC = 4
#: the opcodes this step reads: 64-bit load, exit
_LDDW, _EXIT = 0x18, 0x95
#: at most this many callback instructions are read after the caller
MAX_CALLBACK_INSNS = 4096
#: the verifier's log buffer for a linked load
_LOG_SIZE = 1 << 20


def _insn(code: bytes | bytearray, i: int) -> tuple[int, int, int, int, int]:
    """(opcode, dst_reg, src_reg, offset, imm) of instruction ``i``."""
    op, regs, off, imm = struct.unpack_from("<BBhi", code, i * 8)
    return op, regs & 0x0F, regs >> 4, off, imm


def linked_bytecode(bpf: Any, fn: str, map_name: str) -> bytes:
    """``fn`` and the callback after it in its section, linked as described in the module.

    Args:
        bpf: a BCC object compiled by BCC itself (not from the compile cache: it needs BCC's
            module, which holds the section).
        fn: the function that calls ``bpf_loop()``.
        map_name: the one map the callback uses.

    Raises:
        ValueError: ``fn`` has no load of the byte offset just past its end (no callback after
            it in its section), the callback has no ``exit`` within MAX_CALLBACK_INSNS
            instructions, or ``bpf`` has no BCC module.
    """
    lib = require_bcc().libbcc.lib
    if getattr(bpf, "module", None) is None:
        raise ValueError("linking needs a program compiled by BCC itself, not a cached copy")
    name = fn.encode()
    start = lib.bpf_function_start(bpf.module, name)
    size = lib.bpf_function_size(bpf.module, name)
    if not start or not size:
        raise ValueError(f"no function {fn}() in this program")
    caller = bytearray(ct.string_at(start, size))
    count = size // 8
    loads = [
        i
        for i in range(count - 1)
        if _insn(caller, i)[0] == _LDDW and _insn(caller, i)[2] == 0 and _insn(caller, i)[4] == size
    ]
    if len(loads) != 1:
        raise ValueError(
            f"{fn}() must load the address of one callback placed right after it in its section "
            f'(__attribute__((section(".bpf.fn.{fn}")))); found {len(loads)} such loads'
        )
    at = loads[0]
    caller[at * 8 + 1] = (caller[at * 8 + 1] & 0x0F) | (BPF_PSEUDO_FUNC << 4)
    struct.pack_into("<i", caller, at * 8 + 4, count - at - 1)

    callback = bytearray()
    for k in range(MAX_CALLBACK_INSNS):
        callback += ct.string_at(start + size + 8 * k, 8)
        if callback[-8] == _EXIT:
            break
    else:
        raise ValueError(f"no exit within {MAX_CALLBACK_INSNS} instructions after {fn}()")
    map_fd = bpf[map_name.encode()].map_fd
    for j in range(len(callback) // 8):
        op, _, src, _, imm = _insn(callback, j)
        if op == _LDDW and src == BPF_PSEUDO_MAP_FD and imm == -1:
            struct.pack_into("<i", callback, j * 8 + 4, map_fd)
    return bytes(caller) + bytes(callback)


@contextlib.contextmanager
def load_linked(bpf: Any, fn: str, map_name: str, prog_type: int) -> Iterator[tuple[int, str, int]]:
    """Load :func:`linked_bytecode` as ``prog_type``; yield ``(fd, verifier log, instructions)``;
    close the fd afterwards.

    The fd is -1 when the verifier refused the program (the log says why).
    """
    lib = require_bcc().libbcc.lib
    code = linked_bytecode(bpf, fn, map_name)
    buf = ct.create_string_buffer(code, len(code))
    log = ct.create_string_buffer(_LOG_SIZE)
    fd = lib.bcc_func_load(
        bpf.module,
        prog_type,
        fn.encode(),
        buf,
        len(code),
        lib.bpf_module_license(bpf.module),
        lib.bpf_module_kern_version(bpf.module),
        1,
        log,
        _LOG_SIZE,
        None,
        -1,
    )
    try:
        yield fd, log.value.decode(errors="replace"), len(code) // 8
    finally:
        if fd >= 0:
            os.close(fd)
