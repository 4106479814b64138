"""Compiling and loading BPF C with BCC, turning failures into :class:`ProgramError` with the log.

clang and the kernel verifier report through the process's file descriptor 2, which a Jupyter
notebook never shows. So every compile and load here captures fd 2 and puts its text into the
exception, where the learner sees it. A failed compile or load leaves nothing loaded: the partly
built BPF object is cleaned up before the error is raised.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import platform
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ebpf_lab.core import compile_cache
from ebpf_lab.core.errors import ProgramError
from ebpf_lab.core.guards import require_bcc

#: the package; every lesson keeps its programs in its own folder, ``lessons/lNN_name/*.bpf.c``
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def _program_dirs() -> list[Path]:
    return sorted(p for p in (PACKAGE_DIR / "lessons").iterdir() if p.is_dir())


# fd 2 is process-wide: two threads capturing at once would steal each other's text.
_FD2_LOCK = threading.Lock()


class _Captured:
    text: str = ""


@contextlib.contextmanager
def capture_stderr_fd() -> Iterator[_Captured]:
    """Redirect file descriptor 2 (where clang and libbpf write) into a buffer for the block."""
    captured = _Captured()
    with _FD2_LOCK, tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode(errors="replace")


def program_path(name: str) -> Path:
    """Path of a shipped program (``"hello"`` -> ``ebpf_lab/lessons/l01_hello/hello.bpf.c``).

    Program names are unique across lessons (the lesson registry's test checks it), so a lesson's
    program is found by its name alone.
    """
    for folder in _program_dirs():
        for path in (folder / name, folder / f"{name}.bpf.c"):
            if path.is_file() and path.name.endswith(".c"):
                return path
    known = sorted(p.name for folder in _program_dirs() for p in folder.glob("*.bpf.c"))
    raise ValueError(f"no BPF program called {name!r}; the lab ships: {', '.join(known)}")


def program_source(name: str) -> str:
    """The C text of a shipped program, exactly as it is compiled."""
    return program_path(name).read_text()


def show_source(name: str) -> Any:
    """Display a shipped program's C with syntax highlighting in Jupyter (plain text elsewhere).

    Example (in a notebook)::

        ebpf_lab.show_source("hello")
    """
    text = program_source(name)
    try:
        from IPython.display import Code

        return Code(text, language="c")
    except ImportError:  # pragma: no cover - IPython is a dependency
        return text


def _trim_log(text: str) -> str:
    """Drop BCC's noise lines; keep compiler diagnostics and the verifier's log."""
    keep = []
    for line in text.splitlines():
        if line.startswith("In file included from") or not line.strip():
            continue
        keep.append(line)
    return "\n".join(keep)


def release(bpf: Any) -> None:
    """Free perf readers, detach every probe and close every fd of a BPF object (never raises).

    Perf buffers are closed first and explicitly: BCC's own ``PerfEventArray.__del__`` would run
    later (at garbage collection), after the map is gone, and print KeyErrors.
    """
    for table in list(getattr(bpf, "tables", {}).values()):
        for key in list(getattr(table, "_open_key_fds", {})):
            with contextlib.suppress(Exception):
                del table[key]
    with contextlib.suppress(Exception):
        bpf.cleanup()
    # BCC registers every BPF object's cleanup with atexit, which keeps each object (and its
    # compiled module) alive until the process ends. Cleaned up now, it can be forgotten.
    with contextlib.suppress(Exception):
        atexit.unregister(bpf.cleanup)


_BPF_CLASS: Any = None

# what clang/BCC say when /lib/modules/$(uname -r)/build (or BCC_KERNEL_SOURCE) is missing
_HEADERS_MISSING = re.compile(
    r"chdir\(.*\): No such file|Unable to find kernel headers|"
    r"'linux/kconfig.h' file not found|/lib/modules/.*/build.*No such file"
)


def _lab_bpf_class(bcc: Any) -> Any:
    """``bcc.BPF`` that remembers itself before auto-attaching, so a failure can be cleaned up.

    ``BPF(text=...)`` attaches ``TRACEPOINT_PROBE``/``KFUNC_PROBE``... functions while it is being
    constructed. If one of them fails, the constructor raises and the caller never gets the
    object, yet the functions already attached stay attached until the process exits.
    """
    global _BPF_CLASS
    if _BPF_CLASS is None:

        class LabBPF(bcc.BPF):  # type: ignore[misc, valid-type]
            def _trace_autoload(self) -> None:
                _PENDING.append(self)
                super()._trace_autoload()

        _BPF_CLASS = LabBPF
    return _BPF_CLASS


_PENDING: list[Any] = []


def compile_program(
    text: str, cflags: Sequence[str] = (), *, name: str = "program", cache: bool = True
) -> Any:
    """Compile BPF C with BCC and return the ``bcc.BPF`` object (functions not yet loaded).

    The first compile of a text with given ``cflags`` is BCC's (clang: ~0.4 s). With ``cache``
    (the default), what it made is kept as bytes (:mod:`ebpf_lab.core.compile_cache`) and the next
    compile of the same text and cflags returns a :class:`~ebpf_lab.core.compile_cache.CachedBPF`
    instead: fresh maps, the same instructions, no clang. Nothing stays in the kernel between
    runs either way.

    Raises:
        ProgramError: with ``stage="compile"`` and clang's diagnostics, or ``stage="verifier"``
            when BCC auto-loads a function (``TRACEPOINT_PROBE`` etc.) that the verifier rejects.
    """
    bcc = require_bcc()
    cache_key = compile_cache.key(text, cflags)
    snap = compile_cache.lookup(cache_key) if cache else None
    if snap is not None:
        try:
            return compile_cache.restore(snap, cache_key)
        except OSError as exc:  # a map could not be created (memory, limits)
            raise ProgramError("compile", f"{name}: {exc}", "") from None
    cls = _lab_bpf_class(bcc)
    with capture_stderr_fd() as cap:
        try:
            bpf = cls(text=text.encode(), cflags=list(cflags))
        except Exception as exc:  # bcc raises bare Exception
            bpf = None
            error = exc
        else:
            error = None
        finally:
            half_built = list(_PENDING)
            _PENDING.clear()
    if error is not None:
        for obj in half_built:
            release(obj)
        message = str(error)
        stage = "compile" if "compile" in message.lower() else "verifier"
        if stage == "compile" and _HEADERS_MISSING.search(cap.text):
            message += (
                f". BCC found no kernel headers for {platform.release()}: run `sudo make setup` "
                "(it installs or links them), or check `ebpf_lab.doctor()`'s kernel_headers row"
            )
        raise ProgramError(stage, f"{name}: {message}", _trim_log(cap.text)) from None
    if cache:
        compile_cache.remember(cache_key, bpf, name=name)
    return bpf


def table_names(bpf: Any) -> list[bytes]:
    """Names of a compiled program's maps (BCC-compiled or from the compile cache)."""
    if hasattr(bpf, "table_names"):
        return list(bpf.table_names())
    from bcc.libbcc import lib

    get_name = lib.bpf_table_name
    get_name.restype = ctypes.c_char_p  # bcc does not declare this one
    return [get_name(bpf.module, i) for i in range(lib.bpf_num_tables(bpf.module))]


def load_function(bpf: Any, fn: str, prog_type: int, *, name: str = "program") -> Any:
    """Load one function of a compiled program into the kernel (the verifier runs here)."""
    with capture_stderr_fd() as cap:
        try:
            result = bpf.load_func(fn.encode(), prog_type)
        except Exception as exc:
            result = None
            error = exc
        else:
            error = None
    if error is not None:
        log = _trim_log(cap.text)
        cache_key = getattr(bpf, "cache_key", None)
        if cache_key is not None:
            # Kept bytecode carries no BTF line info, so the verifier's log has no C lines in
            # it. A refused program is rare and worth a compile: forget it and let BCC load it
            # once more, for the log a learner can read against the C.
            compile_cache.discard(cache_key)
            log = _bcc_load_log(cache_key, fn, prog_type) or log
        raise ProgramError("verifier", f"{name}: the kernel refused {fn}(): {error}", log) from None
    return result


def _bcc_load_log(cache_key: tuple[str, tuple[str, ...]], fn: str, prog_type: int) -> str:
    """The verifier's log for ``fn`` loaded the way BCC loads it (with BTF line info)."""
    text, cflags = cache_key
    fresh = None
    try:
        fresh = compile_program(text, cflags, cache=False)
        with capture_stderr_fd() as cap:
            with contextlib.suppress(Exception):
                fresh.load_func(fn.encode(), prog_type)
        return _trim_log(cap.text)
    except ProgramError:
        return ""
    finally:
        if fresh is not None:
            release(fresh)


_LINE_RE = re.compile(r"^/virtual/main\.c:(\d+):(\d+):", re.M)


def compile_error_lines(log: str) -> list[int]:
    """Line numbers (1-based, of the C text as given) that clang complained about."""
    return sorted({int(m.group(1)) for m in _LINE_RE.finditer(log)})
