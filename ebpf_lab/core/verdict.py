"""The verifier's verdict on a program: compile, load each function with the verifier's log on,
read the kernel's facts, unload. Nothing is ever attached.

:func:`check` is the engine behind ``ebpf_lab.verify`` (lesson 04) and the ``%%ebpf`` magic's
check before it runs a cell. It returns a :class:`Verdict` whose rows are the log read against
the learner's lines (:mod:`ebpf_lab.core.program_log`); the lesson turns them into frames.
Loading BPF tracing programs needs root (CAP_BPF + CAP_PERFMON).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from ebpf_lab.core import program_log
from ebpf_lab.core.attach import AUTOLOAD_PREFIXES
from ebpf_lab.core.errors import ProgramError
from ebpf_lab.core.guards import require_bcc, require_root
from ebpf_lab.core.loader import (
    _trim_log,
    capture_stderr_fd,
    compiled_unattached,
    load_function,
    unload_function,
)

#: program types by name -> BCC's constant name (``bcc.BPF.<NAME>``)
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

#: a program type: a name of :data:`PROG_TYPES` or BCC's constant (``bcc.BPF.TRACEPOINT``)
ProgType = Union[str, int]


@dataclass
class Verdict:
    """What :func:`check` found out.

    Attributes:
        ok: every function compiled and passed the verifier.
        stage: ``"ok"``, ``"compile"`` or ``"verifier"``.
        log: the compiler's diagnostics or the verifier's log (all functions, in load order).
        rows: the log, one dict per line: ``fn``, ``text``, ``kind``, ``insn``, ``c_line``.
        error_lines: the learner's lines the error is about.
        message: one sentence: what happened, where.
        functions: the functions that were (or would have been) loaded.
        failed_fn: the function the verifier refused, if any.
        facts: the kernel's facts about each loaded function (:func:`facts_row`), when ok.
    """

    ok: bool
    stage: str
    log: str
    rows: list[dict[str, Any]]
    error_lines: list[int] = field(default_factory=list)
    message: str = ""
    functions: list[str] = field(default_factory=list)
    failed_fn: str | None = None
    facts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """The log lines that state the problem."""
        return [r["text"] for r in self.rows if r["kind"] == "error"]


def autoloaded(fn: str) -> bool:
    """Whether BCC attaches ``fn`` by itself (``TRACEPOINT_PROBE`` and friends name them so)."""
    return fn.startswith(tuple(AUTOLOAD_PREFIXES))


def _const(bcc: Any, prog_type: ProgType) -> int:
    if isinstance(prog_type, int):
        return prog_type
    return getattr(bcc.BPF, PROG_TYPES.get(prog_type, prog_type))  # a name, or BCC's own


def _type_for(fn: str, types: Mapping[str, ProgType] | ProgType) -> ProgType:
    if isinstance(types, Mapping) and fn in types:
        return types[fn]
    for prefix, const_name in AUTOLOAD_PREFIXES.items():
        if fn.startswith(prefix):
            return const_name
    return "tracepoint" if isinstance(types, Mapping) else types


def refusal(
    bpf: Any, fn: str, prog_type: ProgType, *, name: str = "program"
) -> ProgramError | None:
    """Load ``fn`` of a compiled program as ``prog_type`` (a name of :data:`PROG_TYPES` or BCC's
    constant) and unload it at once; nothing is attached. None when the verifier accepted it,
    else the :class:`ProgramError` with its log. ``fn`` can then be loaded again, as another
    type."""
    try:
        load_function(bpf, fn, _const(require_bcc(), prog_type), name=name)
    except ProgramError as exc:
        return exc
    unload_function(bpf, fn)
    return None


def function_names(bpf: Any) -> list[str]:
    """The functions of a compiled program, in BCC's order."""
    lib = require_bcc().libbcc.lib
    return [
        lib.bpf_function_name(bpf.module, i).decode()
        for i in range(lib.bpf_num_functions(bpf.module))
    ]


def bytecode(bpf: Any, fn: str) -> bytes:
    """The instructions clang produced for ``fn``."""
    return bytes(bpf.dump_func(fn.encode()))


@dataclass
class Loaded:
    """The functions :func:`loading` loaded (``handles``), their logs, the line map."""

    bpf: Any
    functions: list[str]
    handles: dict[str, Any]
    logs: dict[str, str]
    lines_of: program_log.LineMap
    failed_fn: str | None = None
    failure: str = ""


@contextlib.contextmanager
def loading(
    text: str,
    types: Mapping[str, ProgType] | ProgType,
    fn: str | None,
    cflags: Sequence[str],
    log_level: int,
) -> Iterator[Loaded]:
    """Compile, load the chosen functions with the verifier's log on (stop at the first refusal);
    always unload.

    ``types`` is one program type for every function, or ``{function: type}`` naming exactly the
    functions to load (BCC's auto-attach functions are loaded too, with their own type).

    Raises:
        ProgramError: the C does not compile (``stage="compile"``).
        ValueError: no function to load, or ``fn``/a named function is not in the program.
    """
    require_root()
    bcc = require_bcc()
    with compiled_unattached(text, cflags) as (bpf, rewritten):
        names = function_names(bpf)
        if isinstance(types, Mapping):
            wanted = list(types) + [n for n in names if autoloaded(n) and n not in types]
        elif fn is not None:
            wanted = [fn]
        else:
            wanted = names
        if not wanted and not isinstance(types, Mapping):
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
        loaded = Loaded(bpf, wanted, {}, {}, program_log.line_map(rewritten, text.splitlines()))
        bpf.debug = bcc.DEBUG_BPF_REGISTER_STATE if log_level == 2 else bcc.DEBUG_BPF
        for name in wanted:
            with capture_stderr_fd() as cap:
                try:
                    const = _const(bcc, _type_for(name, types))
                    loaded.handles[name] = bpf.load_func(name.encode(), const)
                    error = None
                except Exception as exc:
                    error = exc
            loaded.logs[name] = cap.text
            if error is not None:
                loaded.failed_fn, loaded.failure = name, str(error)
                break
        bpf.debug = 0
        yield loaded


def check(
    text: str,
    types: Mapping[str, ProgType] | ProgType,
    fn: str | None = None,
    cflags: Sequence[str] = (),
    log_level: int = 1,
    *,
    label: str = "program",
) -> Verdict:
    """Compile ``text``, run the verifier on its functions with the log, unload; the verdict.

    A compile error or a refusal is a :class:`Verdict` with ``ok=False``, not an exception.

    Raises:
        ValueError: no function to load, or a named function is not in the program.
        PermissionError: not root.
    """
    learner = text.splitlines()
    try:
        with loading(text, types, fn, cflags, log_level) as loaded:
            rows: list[dict[str, Any]] = []
            for name in loaded.functions:
                if name in loaded.logs:
                    lines = _trim_log(loaded.logs[name]).splitlines()
                    rows += [
                        {"fn": name, **r} for r in program_log.verifier_rows(lines, loaded.lines_of)
                    ]
            log = "\n".join(r["text"] for r in rows)
            if loaded.failed_fn is not None:
                message, error_lines = program_log.verifier_verdict(
                    [r for r in rows if r["fn"] == loaded.failed_fn],
                    loaded.failed_fn,
                    learner,
                    loaded.failure,
                )
                return Verdict(
                    False,
                    "verifier",
                    log,
                    rows,
                    error_lines,
                    message,
                    loaded.functions,
                    loaded.failed_fn,
                )
            facts = [
                facts_row(n, loaded.handles[n], bytecode(loaded.bpf, n)) for n in loaded.functions
            ]
    except ProgramError as exc:
        rows = program_log.compile_rows(exc.log)
        error_lines = program_log.compile_error_lines(exc.log)
        first = next((r["text"] for r in rows if r["kind"] == "error"), str(exc).split("\n")[0])
        where = f" (line {', '.join(map(str, error_lines))})" if error_lines else ""
        message = f"{label}: the C did not compile{where}: {first}"
        return Verdict(False, "compile", exc.log, rows, error_lines, message)
    processed = sum(f["verified_insns"] for f in facts)
    instructions = sum(f["compiled_insns"] for f in facts)
    names = ", ".join(f"{n}()" for n in loaded.functions)
    message = f"{names}: passed the verifier: {instructions} instructions, {processed} processed"
    return Verdict(True, "ok", log, rows, [], message, loaded.functions, None, facts)


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


def prog_info(fd: int, xlated: bool = False) -> tuple[_ProgInfo, bytes]:
    """The kernel's ``bpf_prog_info`` for a program fd, and (optionally) its xlated bytes."""
    info = _ProgInfo()
    size = ct.c_uint32(ct.sizeof(info))
    get = require_bcc().libbcc.lib.bpf_obj_get_info
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


def facts_row(fn: str, handle: Any, compiled: bytes) -> dict[str, Any]:
    """The kernel's own numbers about one loaded function (``handle``: BCC's loaded function)."""
    info, _ = prog_info(handle.fd)
    return {
        "fn": fn,
        "prog_id": info.id,
        "prog_type": _type_names(require_bcc()).get(info.type, str(info.type)),
        "tag": bytes(info.tag).hex(),
        "compiled_insns": len(compiled) // 8,
        "xlated_insns": info.xlated_prog_len // 8,
        "xlated_bytes": info.xlated_prog_len,
        "jited_bytes": info.jited_prog_len,
        "verified_insns": info.verified_insns,
        "maps": info.nr_map_ids,
    }
