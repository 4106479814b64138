"""Lesson 04: from C to bytecode to the verifier's verdict, without attaching anything.

A BPF program goes through four stages before it runs::

    C  --clang-->  BPF bytecode  --bpf(BPF_PROG_LOAD)-->  verifier  -->  JIT  -->  machine code

This module makes each stage visible, as data:

- :func:`verify` compiles C, loads each function into the kernel with the verifier's log switched
  on, and always unloads it again. It returns a :class:`VerifyResult`: did it pass, at which stage
  it failed, the verifier's own log (text and a frame) and the learner's line numbers.
- :func:`disassemble` turns the bytecode into a frame, one row per 8-byte instruction slot:
  either what clang produced (``stage="compiled"``) or what the kernel keeps after verifying and
  rewriting it (``stage="xlated"``, "translated").
- :func:`program_facts` asks the kernel (``BPF_OBJ_GET_INFO_BY_FD``) for its own numbers about a
  loaded program: translated and JIT-compiled sizes, and how many instructions the verifier
  processed.

The loading and the log reading are the core's (:mod:`ebpf_lab.core.verdict`,
:mod:`ebpf_lab.core.program_log`: the ``%%ebpf`` magic checks cells with them too) and the
decoder is :mod:`ebpf_lab.lessons.l04_verifier.disasm`; this module checks the learner's
arguments and shows the results as frames.

Nothing here attaches a program: it only loads, inspects and unloads. That needs root (loading
BPF tracing programs needs CAP_BPF + CAP_PERFMON).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core import verdict as engine
from ebpf_lab.core.errors import ProgramError
from ebpf_lab.core.guards import require_bcc, require_root
from ebpf_lab.core.loader import compiled_unattached, program_path
from ebpf_lab.core.replay import replayable
from ebpf_lab.lessons.l04_verifier.disasm import INSTRUCTIONS, instruction_frame
from ebpf_lab.show.frames import Schema

#: program types :func:`verify` knows (the name -> BCC's constant name)
PROG_TYPES = engine.PROG_TYPES

#: verifier log levels: 1 = only the path that failed (and statistics), 2 = every instruction
LOG_LEVELS = (1, 2)

ProgType = Union[str, Mapping[str, str]]

#: :attr:`VerifyResult.log_lines`: the log, one row per line
LOG_LINES = Schema(
    line="int64", fn="category", text="object", kind="category", insn="Int64", c_line="Int64"
)

#: :func:`program_facts`: the kernel's facts, one row per function
FACTS = Schema(
    fn="object",
    prog_id="int64",
    prog_type="category",
    tag="object",
    compiled_insns="int64",
    xlated_insns="int64",
    xlated_bytes="int64",
    jited_bytes="int64",
    verified_insns="int64",
    maps="int64",
)


# --------------------------------------------------------------------------------------------
# the result


@dataclass
class VerifyResult:
    """What :func:`verify` found out about a program.

    Attributes:
        ok: True when every function compiled and passed the verifier.
        stage: ``"ok"``, ``"compile"`` (clang refused the C) or ``"verifier"`` (the kernel did).
        log: the compiler's diagnostics, or the verifier's log (all functions, in load order).
        log_lines: the log as a frame: ``line`` (1-based), ``text``, ``fn``, ``kind``
            (``insn``, ``state``, ``source``, ``error``, ``stats``, ``bcc``, ``other``),
            ``insn`` (instruction index on instruction lines) and ``c_line`` (the learner's C line
            a source annotation refers to).
        instructions: how many bytecode instructions clang produced (all functions), when ok.
        processed: how many instructions the verifier walked through (all paths), when ok.
        error_lines: the learner's C line numbers the error is about (compile errors: every line
            clang complained about; verifier errors: the line of the refused instruction).
        message: one sentence: what happened, where.
        functions: the functions that were (or would have been) loaded.
        failed_fn: the function the verifier refused, if any.
        facts: the kernel's own facts about each loaded function (see :func:`program_facts`),
            gathered while it was loaded; empty unless ok.
    """

    ok: bool
    stage: str
    log: str
    log_lines: pd.DataFrame
    instructions: int | None = None
    processed: int | None = None
    error_lines: list[int] = field(default_factory=list)
    message: str = ""
    functions: list[str] = field(default_factory=list)
    failed_fn: str | None = None
    facts: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def errors(self) -> pd.DataFrame:
        """Just the log lines that state the problem (compiler errors, the verifier's verdict)."""
        return self.log_lines[self.log_lines["kind"] == "error"].reset_index(drop=True)

    def __repr__(self) -> str:
        head = f"VerifyResult(ok={self.ok}, stage={self.stage!r}"
        if self.ok:
            head += f", instructions={self.instructions}, processed={self.processed}"
        else:
            head += f", error_lines={self.error_lines}"
        return head + f")\n{self.message}"


# --------------------------------------------------------------------------------------------
# input checks


_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _resolve(source_or_name: Any) -> tuple[str, str]:
    """(C text, label): a shipped program's name (``"exec_count"``) or C text itself."""
    if not isinstance(source_or_name, str):
        raise ValueError(
            "source must be C text or the name of a shipped program (a str), got "
            f"{type(source_or_name).__name__}"
        )
    if not source_or_name.strip():
        raise ValueError("source is empty: give C text or the name of a shipped program")
    if _NAME_RE.match(source_or_name.strip()):
        name = source_or_name.strip()
        return program_path(name).read_text(), name  # ValueError listing the programs if unknown
    return source_or_name, "program"


def _check_prog_type(prog_type: Any) -> ProgType:
    def one(value: Any, what: str) -> str:
        if not isinstance(value, str) or value not in PROG_TYPES:
            raise ValueError(
                f"unknown {what} {value!r}; choose one of {', '.join(map(repr, PROG_TYPES))}"
            )
        return value

    if isinstance(prog_type, Mapping):
        if not prog_type:
            raise ValueError("prog_type mapping is empty: give {function_name: prog_type}")
        for fn, value in prog_type.items():
            if not isinstance(fn, str):
                raise ValueError(f"prog_type keys must be function names (str), got {fn!r}")
            one(value, f"prog_type for {fn}()")
        return dict(prog_type)
    return one(prog_type, "prog_type")


def _check_cflags(cflags: Any) -> list[str]:
    if (
        isinstance(cflags, str)
        or not isinstance(cflags, Sequence)
        or not all(isinstance(c, str) for c in cflags)
    ):
        raise ValueError(f"cflags must be a list of strings like ['-DLOOPS=10'], got {cflags!r}")
    return list(cflags)


def _check_fn(fn: Any) -> str | None:
    if fn is not None and (not isinstance(fn, str) or not fn.isidentifier()):
        raise ValueError(f"fn must be a C function name or None, got {fn!r}")
    return fn


# --------------------------------------------------------------------------------------------
# verify, program_facts, disassemble


def verify(
    source: str,
    prog_type: ProgType = "tracepoint",
    fn: str | None = None,
    cflags: Sequence[str] = (),
    *,
    log_level: int = 2,
) -> VerifyResult:
    """Compile BPF C and run the kernel's verifier on it, with its log; never attaches.

    Each function (or only ``fn``) is loaded into the kernel as ``prog_type`` with the
    verifier's log switched on, the kernel's facts about it are read, and everything is unloaded
    again before this returns, whatever happened.

    Args:
        source: BPF C text, or the name of a program a lesson ships
            (``ebpf_lab/lessons/*/NAME.bpf.c``: ``"exec_count"``, ``"reject_null_check"``...).
        prog_type: how to load the functions: ``"tracepoint"``, ``"raw_tracepoint"``,
            ``"kprobe"``, ``"uprobe"``, ``"perf_event"``, ``"xdp"``, ``"socket_filter"``,
            ``"sched_cls"``, ``"tracing"``, ``"lsm"``; or a dict ``{function: type}`` naming
            exactly the functions to load. Functions named like BCC's auto-attach macros
            (``tracepoint__...``, ``kprobe__...``) get their own type.
        fn: load only this function (default: all of them).
        cflags: compiler flags, e.g. ``["-DFIXED"]``.
        log_level: 2 (default) logs every instruction the verifier walks, with register
            states, also when the program passes; 1 logs only the path that failed.

    Returns:
        A :class:`VerifyResult`. A rejected program is a result with ``ok=False``, not an
        exception: reading the rejection is the point.

    Raises:
        ValueError: ``source`` is not a str (or names no shipped program), unknown
            ``prog_type``, bad ``cflags``/``log_level``, or ``fn`` is not in the program.
        PermissionError: not root.

    Example::

        r = ebpf_lab.verify("reject_null_check")
        r.ok, r.stage, r.error_lines      # (False, 'verifier', [17])
        r.errors                          # the verifier's own words, as a frame
    """
    text, label = _resolve(source)
    prog_type = _check_prog_type(prog_type)
    fn = _check_fn(fn)
    flags = _check_cflags(cflags)
    if isinstance(log_level, bool) or log_level not in LOG_LEVELS:
        raise ValueError(f"log_level must be 1 or 2, got {log_level!r}")
    return _result(engine.check(text, prog_type, fn, flags, log_level, label=label))


def _log_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return LOG_LINES.frame([{"line": n, **r} for n, r in enumerate(rows, 1)])


def _result(v: engine.Verdict) -> VerifyResult:
    """The engine's verdict as the lesson shows it: the log and the facts as frames."""
    facts = FACTS.frame(v.facts) if v.ok else pd.DataFrame()
    return VerifyResult(
        v.ok,
        v.stage,
        v.log,
        _log_frame(v.rows),
        instructions=int(facts["compiled_insns"].sum()) if v.ok else None,
        processed=int(facts["verified_insns"].sum()) if v.ok else None,
        error_lines=list(v.error_lines),
        message=v.message,
        functions=list(v.functions),
        failed_fn=v.failed_fn,
        facts=facts,
    )


def program_facts(
    program: Any,
    fn: str | None = None,
    prog_type: ProgType = "tracepoint",
    cflags: Sequence[str] = (),
) -> pd.DataFrame:
    """The kernel's own facts about a program, one row per function.

    Args:
        program: C text or a shipped program's name (loaded, measured, unloaded), or an already
            loaded BCC function (``bpf.load_func(...)``; measured in place, left loaded).
        fn, prog_type, cflags: as for :func:`verify`.

    Returns:
        Columns ``fn``, ``prog_id``, ``prog_type``, ``tag`` (the kernel's hash of the program),
        ``compiled_insns`` (what clang produced), ``xlated_insns`` / ``xlated_bytes`` (what the
        kernel keeps after verifying and rewriting, 8 bytes per instruction), ``jited_bytes``
        (the native machine code the JIT made), ``verified_insns`` (instructions the verifier
        processed, over all paths) and ``maps`` (how many maps the program uses).

    Raises:
        ValueError: bad input, as for :func:`verify`, or a program the verifier rejects.
    """
    if hasattr(program, "fd") and hasattr(program, "bpf") and hasattr(program, "name"):
        require_bcc()
        name = program.name.decode() if isinstance(program.name, bytes) else str(program.name)
        return FACTS.frame([engine.facts_row(name, program, engine.bytecode(program.bpf, name))])
    result = verify(program, prog_type=prog_type, fn=fn, cflags=cflags, log_level=1)
    if not result.ok:
        raise ValueError(f"no facts: {result.message}")
    return result.facts


DISASM_STAGES = ("compiled", "xlated")


@replayable  # replayed notebooks show the recorded instructions (loading needs root)
def disassemble(
    source_or_name: str,
    fn: str | None = None,
    *,
    stage: str = "compiled",
    prog_type: ProgType = "tracepoint",
    cflags: Sequence[str] = (),
) -> pd.DataFrame:
    """The program's instructions as a frame, one row per 8-byte instruction slot.

    Args:
        source_or_name: BPF C text or a shipped program's name.
        fn: only this function (default: all, one after the other, told apart by ``fn``).
        stage: ``"compiled"`` (default): the bytecode clang produced, before the kernel saw it
            (what BCC's ``disassemble_func`` shows). ``"xlated"``: what the kernel keeps after the
            verifier rewrote it (map references resolved, some helpers inlined, dead code
            removed); this loads the program (as ``prog_type``), reads it back and unloads it.
        prog_type, cflags: as for :func:`verify`.

    Returns:
        Columns ``fn``, ``index``, ``opcode`` (hex), ``insn_class`` (``alu64``, ``jmp``,
        ``ldx``...), ``mnemonic``, ``text`` (the instruction, readable), ``dst_reg``,
        ``src_reg``, ``offset``, ``imm``. ``attrs``: ``stage``, ``functions``, ``kernel``.

    Raises:
        ValueError: bad input, a program that does not compile or (``"xlated"``) that the
            verifier rejects.
    """
    text, label = _resolve(source_or_name)
    fn = _check_fn(fn)
    flags = _check_cflags(cflags)
    prog_type = _check_prog_type(prog_type)
    if not isinstance(stage, str) or stage not in DISASM_STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose 'compiled' or 'xlated'")
    frames = []
    try:
        if stage == "compiled":
            require_root()
            with compiled_unattached(text, flags, name=label) as (bpf, _):
                names = engine.function_names(bpf)
                if fn is not None and fn not in names:
                    raise ValueError(
                        f"no function {fn}() in {label}; it has: "
                        f"{', '.join(n + '()' for n in names)}"
                    )
                for name in [fn] if fn is not None else names:
                    frames.append(instruction_frame(engine.bytecode(bpf, name), name))
        else:
            with engine.loading(text, prog_type, fn, flags, 1) as loaded:
                if loaded.failed_fn is not None:
                    raise ValueError(
                        f"{label}: the verifier rejected {loaded.failed_fn}(): "
                        "nothing to disassemble; see verify() for why"
                    )
                for name in loaded.functions:
                    _, raw = engine.prog_info(loaded.handles[name].fd, xlated=True)
                    frames.append(instruction_frame(raw, name, xlated=True))
    except ProgramError as exc:
        raise ValueError(f"{label} does not compile:\n{exc.log}") from None
    df = INSTRUCTIONS.frame(pd.concat(frames, ignore_index=True) if frames else [])
    df.attrs.update(
        {
            "stage": stage,
            "functions": list(dict.fromkeys(df["fn"].astype(str))),
            "kernel": kernel.release(),
        }
    )
    return df
