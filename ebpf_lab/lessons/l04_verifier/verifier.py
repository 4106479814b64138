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

Nothing here attaches a program: it only loads, inspects and unloads. That needs root (loading
BPF tracing programs needs CAP_BPF + CAP_PERFMON).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import difflib
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.guards import require_bcc, require_root
from ebpf_lab.core.loader import (
    _trim_log,
    capture_stderr_fd,
    compile_error_lines,
    program_path,
    release,
)
from ebpf_lab.core.replay import replayable

#: program types :func:`verify` knows (the name -> BCC's constant name)
PROG_TYPES = {
    "tracepoint": "TRACEPOINT",
    "raw_tracepoint": "RAW_TRACEPOINT",
    "kprobe": "KPROBE",
    "uprobe": "KPROBE",  # uprobes are loaded as kprobe programs
    "perf_event": "PERF_EVENT",
    "xdp": "XDP",
    "socket_filter": "SOCKET_FILTER",
    "sched_cls": "SCHED_CLS",
    "tracing": "TRACING",  # fentry/fexit (BCC's KFUNC_PROBE)
    "lsm": "LSM",
}

#: BCC attaches functions with these name prefixes by itself; their program type follows
AUTOLOAD_PREFIXES = (
    ("raw_tracepoint__", "raw_tracepoint"),
    ("tracepoint__", "tracepoint"),
    ("kretprobe__", "kprobe"),
    ("kprobe__", "kprobe"),
    ("kretfunc__", "tracing"),
    ("kfunc__", "tracing"),
    ("lsm__", "lsm"),
)

#: verifier log levels: 1 = only the path that failed (and statistics), 2 = every instruction
LOG_LEVELS = (1, 2)

ProgType = Union[str, Mapping[str, str]]


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
# compiling without attaching, and mapping BCC's rewritten lines back to the learner's


class _CompileFailed(Exception):
    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


_CLASSES: dict[str, Any] = {}
_CREATED: list[Any] = []


def _quiet_class(bcc: Any) -> Any:
    """``bcc.BPF`` that never attaches by itself and remembers itself even if compiling fails.

    BCC's constructor loads *and attaches* functions named ``tracepoint__*``, ``kprobe__*``...
    (``TRACEPOINT_PROBE`` and friends). Here nothing may be attached, so that step is skipped;
    :func:`verify` loads those functions itself, with their own program type.
    """
    if "quiet" not in _CLASSES:

        class QuietBPF(bcc.BPF):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                _CREATED.append(self)
                super().__init__(*args, **kwargs)

            def _trace_autoload(self) -> None:
                return None

        _CLASSES["quiet"] = QuietBPF
    return _CLASSES["quiet"]


_DUMP_START = "#if defined(BPF_LICENSE)"
_DUMP_END = "#include <bcc/footer.h>"


def _rewritten_source(captured: str) -> list[str] | None:
    """The C as BCC rewrote it (printed with DEBUG_PREPROCESSOR), or None if not found.

    The verifier's line annotations (``; text @ main.c:N``) count lines of this text, which has a
    preamble and one extra line per function; compiler errors count the learner's own lines.
    """
    lines = captured.splitlines()
    try:
        end = len(lines) - 1 - lines[::-1].index(_DUMP_END)
        start = max(i for i in range(end) if lines[i] == _DUMP_START)
    except ValueError:
        return None
    return lines[start : end + 1]


class _LineMap(dict):  # type: ignore[type-arg]
    """Rewritten main.c line -> learner line, plus ``by_text``: a source line's text (stripped)
    -> the learner lines it may be. Older kernels (6.1 among them) annotate the verifier's log
    with the source text only (``; *count += 1;``), without `` @ main.c:N``: the text finds the
    line."""

    def __init__(self, mapping: dict[int, int], by_text: dict[str, list[int]]) -> None:
        super().__init__(mapping)
        self.by_text = by_text


def _line_map(rewritten: list[str] | None, learner: list[str]) -> dict[int, int]:
    """Map 1-based lines of BCC's rewritten main.c to the learner's 1-based lines."""
    by_text: dict[str, list[int]] = {}
    for j, line in enumerate(learner, 1):
        by_text.setdefault(line.strip(), []).append(j)
    if not rewritten:
        return _LineMap({}, by_text)
    a = [line.strip() for line in rewritten]
    b = [line.strip() for line in learner]
    mapping: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for k in range(i2 - i1):
                mapping[i1 + k + 1] = j1 + k + 1
        elif tag == "replace":  # BCC rewrote a macro over different lines: map to the first
            for k in range(i2 - i1):
                mapping[i1 + k + 1] = j1 + min(k, j2 - j1 - 1) + 1
    for i, text in enumerate(a, 1):  # BCC's rewritten text of a line names the learner's line too
        if i in mapping and mapping[i] not in by_text.setdefault(text, []):
            by_text[text].append(mapping[i])
    return _LineMap(mapping, by_text)


@contextlib.contextmanager
def _stdout_discarded() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null for the block (BCC's debug mode chats on stdout)."""

    with contextlib.suppress(Exception):
        sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


@contextlib.contextmanager
def _compiled(text: str, cflags: Sequence[str]) -> Iterator[tuple[Any, dict[int, int]]]:
    """Compile (never attach), yield (bpf, rewritten-line -> learner-line); always release."""
    bcc = require_bcc()
    cls = _quiet_class(bcc)
    bpf = None
    with capture_stderr_fd() as cap, _stdout_discarded():
        try:
            bpf = cls(text=text.encode(), cflags=list(cflags), debug=bcc.DEBUG_PREPROCESSOR)
            error = None
        except Exception as exc:  # bcc raises bare Exception
            error = exc
        finally:
            half_built = list(_CREATED)
            _CREATED.clear()
    try:
        if error is not None:
            for obj in half_built:
                release(obj)
            # compile again without the preprocessor dump, for clean diagnostics
            with capture_stderr_fd() as clean:
                with contextlib.suppress(Exception):
                    again = cls(text=text.encode(), cflags=list(cflags))
                    release(again)
            for obj in _CREATED:
                release(obj)
            _CREATED.clear()
            log = "\n".join(
                line
                for line in _trim_log(clean.text).splitlines()
                if not line.startswith("Running from kernel directory")
            )
            raise _CompileFailed(str(error), log)
        yield bpf, _line_map(_rewritten_source(cap.text), text.splitlines())
    finally:
        if bpf is not None:
            release(bpf)


def _function_names(bcc: Any, bpf: Any) -> list[str]:
    lib = bcc.libbcc.lib
    return [
        lib.bpf_function_name(bpf.module, i).decode()
        for i in range(lib.bpf_num_functions(bpf.module))
    ]


def _type_for(fn: str, prog_type: ProgType) -> str:
    if isinstance(prog_type, Mapping) and fn in prog_type:
        return prog_type[fn]
    for prefix, kind in AUTOLOAD_PREFIXES:
        if fn.startswith(prefix):
            return kind
    return prog_type if isinstance(prog_type, str) else "tracepoint"


def autoloaded(fn: str) -> bool:
    """Whether BCC attaches ``fn`` by itself (``TRACEPOINT_PROBE`` and friends name them so)."""
    return fn.startswith(tuple(prefix for prefix, _ in AUTOLOAD_PREFIXES))


def _bytecode(bpf: Any, fn: str) -> bytes:
    return bytes(bpf.dump_func(fn.encode()))


# --------------------------------------------------------------------------------------------
# the verifier's log


_INSN_RE = re.compile(r"^(\d+): \(([0-9a-f]{2})\)")
_STATE_RE = re.compile(r"^(\d+): (R\d+|frame\d+)")
_SOURCE_RE = re.compile(r"^; (.*?)(?: @ main\.c:(\d+))?$")
_STATS_RE = re.compile(r"^processed (\d+) insns")
_CLANG_RE = re.compile(r"^/virtual/main\.c:(\d+):\d+: (error|warning|note)")
_OTHER_RE = re.compile(
    r"^(func#\d+ @\d+|Live regs before insn:|\s+\d+\s+\d+: |SCC |from \d+ to \d+|"
    r"last_idx |frame\d+: |mark_precise|regs=|parent |Validating |Func#|"
    r"verification time|stack depth|\d+: safe$|propagating |\(\d+\) )"
)


def _classify(lines: list[str], line_map: dict[int, int]) -> list[dict[str, Any]]:
    """Label each line of one function's verifier log."""
    rows: list[dict[str, Any]] = []
    last_code = -1
    by_text: dict[str, list[int]] = getattr(line_map, "by_text", {})
    last_c_line = 0
    for i, text in enumerate(lines):
        if _INSN_RE.match(text) or _STATE_RE.match(text):
            last_code = i
    for i, text in enumerate(lines):
        insn = c_line = None
        m = _INSN_RE.match(text)
        if m:
            kind, insn = "insn", int(m.group(1))
        elif _STATE_RE.match(text):
            kind, insn = "state", int(text.split(":", 1)[0])
        elif text.startswith("; "):
            kind = "source"
            sm = _SOURCE_RE.match(text)
            if sm and sm.group(2):
                c_line = line_map.get(int(sm.group(2)))
            elif sm and sm.group(1).strip() and by_text.get(sm.group(1).strip()):
                # no "@ main.c:N" (older kernels): the line's text says which line it is
                found = sorted(set(by_text[sm.group(1).strip()]))
                c_line = next((n for n in found if n >= last_c_line), found[0])
            if c_line is not None:
                last_c_line = c_line
        elif _STATS_RE.match(text):
            kind = "stats"
        elif text.startswith(("bpf: ", "HINT: ")):
            kind = "bcc"
        elif _OTHER_RE.match(text) or not text.strip():
            kind = "other"
        elif i > last_code:
            kind = "error"
        else:
            kind = "other"
        rows.append({"text": text, "kind": kind, "insn": insn, "c_line": c_line})
    return rows


def _log_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["fn", "text", "kind", "insn", "c_line"])
    df.insert(0, "line", range(1, len(df) + 1))
    return df.astype(
        {
            "line": "int64",
            "text": "object",
            "fn": "category",
            "kind": "category",
            "insn": "Int64",
            "c_line": "Int64",
        }
    )


def _compile_rows(log: str) -> list[dict[str, Any]]:
    rows = []
    for text in log.splitlines():
        m = _CLANG_RE.match(text)
        kind = "other"
        c_line = None
        if m:
            c_line = int(m.group(1))
            kind = "error" if m.group(2) == "error" else m.group(2)
        rows.append({"fn": None, "text": text, "kind": kind, "insn": None, "c_line": c_line})
    return rows


# --------------------------------------------------------------------------------------------
# the kernel's facts: BPF_OBJ_GET_INFO_BY_FD


class _ProgInfo(ct.Structure):
    """``struct bpf_prog_info`` (include/uapi/linux/bpf.h) up to ``attach_btf_id`` (5.16+).

    The struct only ever grows at its end, and the kernel accepts a shorter one, so this layout
    is valid on every kernel since 5.16 (older kernels zero the fields they do not know).
    """

    _fields_ = [
        ("type", ct.c_uint32),
        ("id", ct.c_uint32),
        ("tag", ct.c_uint8 * 8),
        ("jited_prog_len", ct.c_uint32),
        ("xlated_prog_len", ct.c_uint32),
        ("jited_prog_insns", ct.c_uint64),
        ("xlated_prog_insns", ct.c_uint64),
        ("load_time", ct.c_uint64),
        ("created_by_uid", ct.c_uint32),
        ("nr_map_ids", ct.c_uint32),
        ("map_ids", ct.c_uint64),
        ("name", ct.c_char * 16),
        ("ifindex", ct.c_uint32),
        ("gpl_compatible", ct.c_uint32),
        ("netns_dev", ct.c_uint64),
        ("netns_ino", ct.c_uint64),
        ("nr_jited_ksyms", ct.c_uint32),
        ("nr_jited_func_lens", ct.c_uint32),
        ("jited_ksyms", ct.c_uint64),
        ("jited_func_lens", ct.c_uint64),
        ("btf_id", ct.c_uint32),
        ("func_info_rec_size", ct.c_uint32),
        ("func_info", ct.c_uint64),
        ("nr_func_info", ct.c_uint32),
        ("nr_line_info", ct.c_uint32),
        ("line_info", ct.c_uint64),
        ("jited_line_info", ct.c_uint64),
        ("nr_jited_line_info", ct.c_uint32),
        ("line_info_rec_size", ct.c_uint32),
        ("jited_line_info_rec_size", ct.c_uint32),
        ("nr_prog_tags", ct.c_uint32),
        ("prog_tags", ct.c_uint64),
        ("run_time_ns", ct.c_uint64),
        ("run_cnt", ct.c_uint64),
        ("recursion_misses", ct.c_uint64),
        ("verified_insns", ct.c_uint32),
        ("attach_btf_obj_id", ct.c_uint32),
        ("attach_btf_id", ct.c_uint32),
        ("_pad", ct.c_uint32),
    ]


def _prog_info(bcc: Any, fd: int, xlated: bool = False) -> tuple[_ProgInfo, bytes]:
    """The kernel's ``bpf_prog_info`` for a program fd, and (optionally) its xlated bytes."""
    info = _ProgInfo()
    size = ct.c_uint32(ct.sizeof(info))
    get = bcc.libbcc.lib.bpf_obj_get_info
    if get(ct.c_int(fd), ct.byref(info), ct.byref(size)) != 0:
        raise OSError(ct.get_errno(), f"BPF_OBJ_GET_INFO_BY_FD failed for fd {fd}")
    raw = b""
    if xlated and info.xlated_prog_len:
        buf = (ct.c_uint8 * info.xlated_prog_len)()
        second = _ProgInfo()
        second.xlated_prog_len = info.xlated_prog_len
        second.xlated_prog_insns = ct.addressof(buf)
        size = ct.c_uint32(ct.sizeof(second))
        if get(ct.c_int(fd), ct.byref(second), ct.byref(size)) != 0:
            raise OSError(ct.get_errno(), f"could not read the translated program of fd {fd}")
        raw = bytes(buf)
    return info, raw


def _type_names(bcc: Any) -> dict[int, str]:
    names: dict[int, str] = {}
    for name, const in PROG_TYPES.items():
        names.setdefault(getattr(bcc.BPF, const), name)
    names[bcc.BPF.KPROBE] = "kprobe"
    return names


def _facts_row(bcc: Any, fn: str, handle: Any, compiled: bytes) -> dict[str, Any]:
    info, _ = _prog_info(bcc, handle.fd)
    return {
        "fn": fn,
        "prog_id": info.id,
        "prog_type": _type_names(bcc).get(info.type, str(info.type)),
        "tag": bytes(info.tag).hex(),
        "compiled_insns": len(compiled) // 8,
        "xlated_insns": info.xlated_prog_len // 8,
        "xlated_bytes": info.xlated_prog_len,
        "jited_bytes": info.jited_prog_len,
        "verified_insns": info.verified_insns,
        "maps": info.nr_map_ids,
    }


FACT_COLUMNS = [
    "fn",
    "prog_id",
    "prog_type",
    "tag",
    "compiled_insns",
    "xlated_insns",
    "xlated_bytes",
    "jited_bytes",
    "verified_insns",
    "maps",
]


def _facts_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=FACT_COLUMNS)
    ints = {c: "int64" for c in FACT_COLUMNS if c not in ("fn", "prog_type", "tag")}
    return df.astype({**ints, "fn": "object", "prog_type": "category", "tag": "object"})


# --------------------------------------------------------------------------------------------
# loading


@dataclass
class _Loaded:
    bpf: Any
    functions: list[str]
    handles: dict[str, Any]
    logs: dict[str, str]
    line_map: dict[int, int]
    failed_fn: str | None = None
    failure: str = ""


@contextlib.contextmanager
def _loading(
    text: str,
    prog_type: ProgType,
    fn: str | None,
    cflags: Sequence[str],
    log_level: int,
    stop_at_failure: bool = True,
) -> Iterator[_Loaded]:
    """Compile and load the chosen functions with the verifier log on; always unload."""
    require_root()
    bcc = require_bcc()
    with _compiled(text, cflags) as (bpf, line_map):
        names = _function_names(bcc, bpf)
        if isinstance(prog_type, Mapping):  # these, and whatever BCC would auto-attach
            wanted = list(prog_type) + [n for n in names if autoloaded(n) and n not in prog_type]
        elif fn is not None:
            wanted = [fn]
        else:
            wanted = names
        if not wanted and not isinstance(prog_type, Mapping):
            raise ValueError(
                "the program defines no function to load (a BPF program is a non-static C "
                "function, e.g. int count(void *ctx) { ... })"
            )
        missing = [w for w in wanted if w not in names]
        if missing:
            raise ValueError(
                f"no function {', '.join(m + '()' for m in missing)} in the program; it has: "
                f"{', '.join(n + '()' for n in names) or 'none (functions must not be static)'}"
            )
        loaded = _Loaded(bpf, wanted, {}, {}, line_map)
        bpf.debug = bcc.DEBUG_BPF_REGISTER_STATE if log_level == 2 else bcc.DEBUG_BPF
        for name in wanted:
            const = getattr(bcc.BPF, PROG_TYPES[_type_for(name, prog_type)])
            with capture_stderr_fd() as cap:
                try:
                    loaded.handles[name] = bpf.load_func(name.encode(), const)
                    error = None
                except Exception as exc:
                    error = exc
            loaded.logs[name] = cap.text
            if error is not None:
                loaded.failed_fn, loaded.failure = name, str(error)
                if stop_at_failure:
                    break
        bpf.debug = 0
        yield loaded


def _verifier_message(
    rows: list[dict[str, Any]], fn: str, learner: list[str], failure: str
) -> tuple[str, list[int]]:
    errors = [r["text"] for r in rows if r["kind"] == "error"]
    sources = [r["c_line"] for r in rows if r["kind"] == "source" and r["c_line"] is not None]
    line = sources[-1] if sources else None
    what = errors[0] if errors else failure
    if line is not None and 0 < line <= len(learner):
        msg = (
            f"the verifier rejected {fn}() at line {line}: {learner[line - 1].strip()}\n  -> {what}"
        )
        return msg, [line]
    return f"the verifier rejected {fn}(): {what}", []


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
    return _verify(text, label, prog_type, fn, flags, log_level)


def _verify(
    text: str, label: str, prog_type: ProgType, fn: str | None, flags: list[str], log_level: int
) -> VerifyResult:
    """:func:`verify` after its checks (the ``%%ebpf`` magic calls this with a type per function,
    possibly none when the cell only uses BCC's auto-attach macros)."""
    learner = text.splitlines()
    try:
        with _loading(text, prog_type, fn, flags, log_level) as loaded:
            bcc = require_bcc()
            rows: list[dict[str, Any]] = []
            for name in loaded.functions:
                if name not in loaded.logs:
                    continue
                lines = _trim_log(loaded.logs[name]).splitlines()
                for row in _classify(lines, loaded.line_map):
                    rows.append({"fn": name, **row})
            log = "\n".join(r["text"] for r in rows)
            compiled = {n: _bytecode(loaded.bpf, n) for n in loaded.functions}
            if loaded.failed_fn is not None:
                failed_rows = [r for r in rows if r["fn"] == loaded.failed_fn]
                message, lines_ = _verifier_message(
                    failed_rows, loaded.failed_fn, learner, loaded.failure
                )
                return VerifyResult(
                    False,
                    "verifier",
                    log,
                    _log_frame(rows),
                    error_lines=lines_,
                    message=message,
                    functions=loaded.functions,
                    failed_fn=loaded.failed_fn,
                )
            facts = _facts_frame(
                [_facts_row(bcc, n, loaded.handles[n], compiled[n]) for n in loaded.functions]
            )
    except _CompileFailed as exc:
        rows = _compile_rows(exc.log)
        lines_ = compile_error_lines(exc.log)
        first = next((r["text"] for r in rows if r["kind"] == "error"), str(exc))
        where = f" (line {', '.join(map(str, lines_))})" if lines_ else ""
        return VerifyResult(
            False,
            "compile",
            exc.log,
            _log_frame(rows),
            error_lines=lines_,
            message=f"{label}: the C did not compile{where}: {first}",
        )
    processed = int(facts["verified_insns"].sum())
    instructions = int(facts["compiled_insns"].sum())
    names = ", ".join(f"{n}()" for n in loaded.functions)
    message = f"{names}: passed the verifier: {instructions} instructions, {processed} processed"
    return VerifyResult(
        True,
        "ok",
        log,
        _log_frame(rows),
        instructions=instructions,
        processed=processed,
        message=message,
        functions=loaded.functions,
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
        bcc = require_bcc()
        name = program.name.decode() if isinstance(program.name, bytes) else str(program.name)
        row = _facts_row(bcc, name, program, _bytecode(program.bpf, name))
        return _facts_frame([row])
    result = verify(program, prog_type=prog_type, fn=fn, cflags=cflags, log_level=1)
    if not result.ok:
        raise ValueError(f"no facts: {result.message}")
    return result.facts


# --------------------------------------------------------------------------------------------
# the disassembler


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

DISASM_COLUMNS = [
    "fn",
    "index",
    "opcode",
    "insn_class",
    "mnemonic",
    "text",
    "dst_reg",
    "src_reg",
    "offset",
    "imm",
]


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
    rows = [{"fn": fn, **r} for r in _decode(bytes(raw), xlated)]
    df = pd.DataFrame(rows, columns=DISASM_COLUMNS)
    return df.astype(
        {
            "fn": "category",
            "index": "int64",
            "opcode": "object",
            "insn_class": "category",
            "mnemonic": "category",
            "text": "object",
            "dst_reg": "int64",
            "src_reg": "int64",
            "offset": "int64",
            "imm": "int64",
        }
    )


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
            bcc = require_bcc()
            with _compiled(text, flags) as (bpf, _):
                names = _function_names(bcc, bpf)
                wanted = [fn] if fn is not None else names
                if fn is not None and fn not in names:
                    raise ValueError(
                        f"no function {fn}() in {label}; it has: "
                        f"{', '.join(n + '()' for n in names)}"
                    )
                for name in wanted:
                    frames.append(instruction_frame(_bytecode(bpf, name), name))
        else:
            bcc = require_bcc()
            with _loading(text, prog_type, fn, flags, 1) as loaded:
                if loaded.failed_fn is not None:
                    raise ValueError(
                        f"{label}: the verifier rejected {loaded.failed_fn}(): "
                        "nothing to disassemble; see verify() for why"
                    )
                for name in loaded.functions:
                    _, raw = _prog_info(bcc, loaded.handles[name].fd, xlated=True)
                    frames.append(instruction_frame(raw, name, xlated=True))
    except _CompileFailed as exc:
        raise ValueError(f"{label} does not compile:\n{exc.log}") from None
    df = pd.concat(frames, ignore_index=True) if frames else instruction_frame(b"")
    df["fn"] = df["fn"].astype("category")
    df.attrs.update(
        {
            "stage": stage,
            "functions": list(dict.fromkeys(df["fn"].astype(str))),
            "kernel": kernel.release(),
        }
    )
    return df
