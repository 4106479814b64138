"""Lesson 14: the link step BCC leaves out, done by hand for a callback or a called function.

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

A BPF-to-BPF call (``bpf_to_bpf_call.bpf.c``) needs only step 1: inside one section clang
already aims ``call pc+N`` at the callee, but BCC loads the caller alone, so the call points past
its end ("call to invalid destination").

It is written for the shape of these two programs (one caller, one function after it, at most
one map): anything else is refused with a ValueError, not guessed at.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import re
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd

from ebpf_lab.core import verdict as engine
from ebpf_lab.core.guards import require_bcc
from ebpf_lab.core.loader import compiled_unattached, program_source
from ebpf_lab.show.frames import Schema

#: ``src_reg`` values of a 64-bit load (``lddw``): a map fd, a BPF function
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_FUNC = 4
#: ``src_reg`` of a call of a BPF function (0 calls a helper)
BPF_PSEUDO_CALL = 1
#: the opcodes this step reads: 64-bit load, call, exit
_LDDW, _CALL, _EXIT = 0x18, 0x85, 0x95
#: at most this many callback instructions are read after the caller
MAX_CALLBACK_INSNS = 4096
#: the verifier's log buffer for a linked load
_LOG_SIZE = 1 << 20


def _insn(code: bytes | bytearray, i: int) -> tuple[int, int, int, int, int]:
    """(opcode, dst_reg, src_reg, offset, imm) of instruction ``i``."""
    op, regs, off, imm = struct.unpack_from("<BBhi", code, i * 8)
    return op, regs & 0x0F, regs >> 4, off, imm


def linked_bytecode(bpf: Any, fn: str, map_name: str | None = None) -> bytes:
    """``fn`` and the function after it in its section, linked as described in the module.

    The function after ``fn`` is reached either by a ``bpf_loop()`` callback's address (a
    64-bit load of the byte offset just past ``fn``: made ``BPF_PSEUDO_FUNC``) or by a BPF-to-BPF
    call (``call pc+N`` with ``src_reg`` 1, which clang already aimed at the instruction just
    past ``fn``: left as it is).

    Args:
        bpf: a BCC object compiled by BCC itself (not from the compile cache: it needs BCC's
            module, which holds the section).
        fn: the calling function.
        map_name: the one map the second function uses (None: it uses none).

    Raises:
        ValueError: ``fn`` does not reach code right after it, the second function has no
            ``exit`` within MAX_CALLBACK_INSNS instructions, it uses a map but ``map_name`` is
            None, or ``bpf`` has no BCC module.
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
    insns = [_insn(caller, i) for i in range(count)]
    loads = [i for i, x in enumerate(insns[:-1]) if x[0] == _LDDW and x[2] == 0 and x[4] == size]
    calls = [
        i
        for i, x in enumerate(insns)
        if x[0] == _CALL and x[2] == BPF_PSEUDO_CALL and i + 1 + x[4] == count
    ]
    if not loads and not calls:
        raise ValueError(
            f"{fn}() must call, or load the address of, a function placed right after it in its "
            f'section (__attribute__((section(".bpf.fn.{fn}")))); it does neither'
        )
    for at in loads:
        caller[at * 8 + 1] = (caller[at * 8 + 1] & 0x0F) | (BPF_PSEUDO_FUNC << 4)
        struct.pack_into("<i", caller, at * 8 + 4, count - at - 1)

    callee = bytearray()
    for k in range(MAX_CALLBACK_INSNS):
        callee += ct.string_at(start + size + 8 * k, 8)
        if callee[-8] == _EXIT:
            break
    else:
        raise ValueError(f"no exit within {MAX_CALLBACK_INSNS} instructions after {fn}()")
    for j in range(len(callee) // 8):
        op, _, src, _, imm = _insn(callee, j)
        if op == _LDDW and src == BPF_PSEUDO_MAP_FD and imm == -1:
            if map_name is None:
                raise ValueError(f"the function after {fn}() uses a map: name it in map_name")
            struct.pack_into("<i", callee, j * 8 + 4, bpf[map_name.encode()].map_fd)
    return bytes(caller) + bytes(callee)


@contextlib.contextmanager
def load_linked(
    bpf: Any, fn: str, map_name: str | None, prog_type: int, log_level: int = 1
) -> Iterator[tuple[int, str, int]]:
    """Load :func:`linked_bytecode` as ``prog_type``; yield ``(fd, verifier log, instructions)``;
    close the fd afterwards.

    The fd is -1 when the verifier refused the program (the log says why). ``log_level`` 2 logs
    every instruction the verifier walks, 1 only its statistics (and a refusal's path).
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
        log_level,
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


#: :func:`linked_load`: the verifier's log of a linked program, one row per line
LINKED_LOG = Schema(line="int64", text="string")


def linked_load(
    program: str,
    fn: str,
    map_name: str | None = None,
    *,
    cflags: Sequence[str] = (),
    log_level: int = 2,
) -> pd.DataFrame:
    """Compile a shipped program, link ``fn`` with the function after it, load it as a
    tracepoint program with the verifier's log, read the kernel's facts, unload it.

    Nothing is attached: the program never runs.

    Args:
        program: a shipped program's name (``"bpf_to_bpf_call"``, ``"loop_cost"``).
        fn: the calling function.
        map_name: the one map the function after ``fn`` uses (None: none).
        cflags: compiler flags, e.g. ``["-DLOOPS=64"]``.
        log_level: 2 (default) logs every instruction the verifier walks, 1 only its statistics.

    Returns:
        The verifier's log, one row per line (``line``, ``text``). ``df.attrs``: ``accepted``,
        ``instructions`` (of the linked program), ``processed`` (the kernel's
        ``verified_insns``; None when refused), ``functions`` (the verifier's ``func#N @K``
        lines: where it found each function) and ``error`` (its last words when refused, else "").

    Raises:
        ValueError: an unknown program, a bad ``fn``/``cflags``/``log_level``, or a ``fn`` that
            reaches no function after it (before anything is loaded).
        PermissionError: not root.
    """
    text = program_source(program)  # ValueError naming the programs there are
    if not isinstance(fn, str) or not fn.isidentifier():
        raise ValueError(f"fn must be a C function name, got {fn!r}")
    if isinstance(cflags, str) or not all(isinstance(c, str) for c in cflags):
        raise ValueError(f"cflags must be a list of strings like ['-DLOOPS=8'], got {cflags!r}")
    if isinstance(log_level, bool) or log_level not in (1, 2):
        raise ValueError(f"log_level must be 1 or 2, got {log_level!r}")
    bcc = require_bcc()
    processed = None
    with compiled_unattached(text, list(cflags), name=program) as (bpf, _):
        with load_linked(bpf, fn, map_name, bcc.BPF.TRACEPOINT, log_level) as (fd, log, insns):
            if fd >= 0:
                processed = int(engine.prog_info(fd)[0].verified_insns)
    lines = [ln for ln in log.splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith(("processed ", "func#"))]
    df = LINKED_LOG.frame([{"line": n, "text": ln} for n, ln in enumerate(lines, 1)])
    df.attrs.update(
        {
            "accepted": fd >= 0,
            "instructions": insns,
            "processed": processed,
            "functions": [ln for ln in lines if re.match(r"func#\d+ @\d+$", ln)],
            "error": "" if fd >= 0 else (said[-1] if said else "refused, with no log"),
        }
    )
    return df
