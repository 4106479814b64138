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
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ebpf_lab.core import compile_cache
from ebpf_lab.core.errors import ProgramError
from ebpf_lab.core.guards import require_bcc
from ebpf_lab.core.replay import replayable

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


def show_source(name: str, final: bool = False) -> Any:
    """Display a shipped program's C with syntax highlighting in Jupyter (plain text elsewhere).

    Args:
        name: the program's name, e.g. ``"exec_count"``.
        final: False (default): the C as the lesson wrote it. True: the C after BCC's rewrite,
            the text clang compiles (what BCC prints with ``debug=DEBUG_PREPROCESSOR``): map
            methods such as ``.increment()`` have become calls of the kernel's map helpers on
            the map's file descriptor; ``BPF_HASH(...)`` lines stay, the compiler expands them
            from BCC's ``helpers.h``. A program that takes values from its lesson's Python
            (``-D`` flags, e.g. ``hello``'s ``RUN_TAG``) does not compile alone: the
            :class:`ProgramError` names them, and :func:`final_source` takes them as ``cflags``.

    Example (in a notebook)::

        ebpf_lab.show_source("hello")
        ebpf_lab.show_source("exec_count", final=True)
    """
    text = program_source(name)
    if final:
        try:
            text = final_source(text, name=name)
        except ProgramError as exc:
            macros = sorted(set(_UNDECLARED_MACRO.findall(exc.log)))
            if not macros:
                raise
            raise ProgramError(
                "compile",
                f"{name} takes {', '.join(macros)} from its lesson's Python (as -D flags), so it "
                "does not compile alone; give them to ebpf_lab.core.loader.final_source("
                f"program_source({name!r}), cflags=['-D{macros[0]}=...'])",
                exc.log,
            ) from None
    try:
        from IPython.display import Code

        return Code(text, language="c")
    except ImportError:  # pragma: no cover - IPython is a dependency
        return text


# clang's words for a macro the lesson's Python defines with -D (upper-case by convention)
_UNDECLARED_MACRO = re.compile(r"use of undeclared identifier '([A-Z][A-Z0-9_]*)'")


def _trim_log(text: str) -> str:
    """Drop BCC's noise lines; keep compiler diagnostics and the verifier's log."""
    keep = []
    for line in text.splitlines():
        if line.startswith("In file included from") or not line.strip():
            continue
        keep.append(line)
    return "\n".join(keep)


def shadowed_fds(bpf: Any) -> list[int]:
    """Perf event fds of tracepoint attachments that BCC no longer records.

    BCC 0.26 keeps one fd per tracepoint (``tracepoint_fds[tp]``): attaching a second function
    to the same tracepoint overwrites the first one's fd, and ``cleanup()`` would leave that
    one attached until the process exits. :func:`ebpf_lab.core.attach.attach_probe` moves it
    here first; :func:`close_shadowed` and :func:`release` close these.
    """
    if not hasattr(bpf, "_lab_shadowed_fds"):
        bpf._lab_shadowed_fds = []
    return bpf._lab_shadowed_fds


def close_shadowed(bpf: Any) -> None:
    """Close (detach) the attachments :func:`shadowed_fds` holds (never raises)."""
    fds = getattr(bpf, "_lab_shadowed_fds", [])
    while fds:
        with contextlib.suppress(OSError):
            os.close(fds.pop())


def release(bpf: Any) -> None:
    """Free perf readers, detach every probe and close every fd of a BPF object (never raises).

    Perf buffers are closed first and explicitly: BCC's own ``PerfEventArray.__del__`` would run
    later (at garbage collection), after the map is gone, and print KeyErrors.
    """
    for table in list(getattr(bpf, "tables", {}).values()):
        for key in list(getattr(table, "_open_key_fds", {})):
            with contextlib.suppress(Exception):
                del table[key]
    close_shadowed(bpf)
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


def lab_bpf_class() -> Any:
    """The lab's one ``bcc.BPF`` subclass, ``LabBPF``: every BCC compile of the lab makes one.

    * It remembers itself before compiling, so a constructor that fails half-way (clang refused
      the C, or an auto-attached function was refused) can still be cleaned up: BCC attaches
      ``TRACEPOINT_PROBE``/``KFUNC_PROBE``... functions while the object is being constructed,
      and if one of them fails the caller never gets the object, yet the functions already
      attached stay attached until the process exits.
    * ``LabBPF(..., autoload=False)`` never attaches anything by itself: for loading functions
      only to read the verifier's verdict (:mod:`ebpf_lab.core.verdict`).
    """
    global _BPF_CLASS
    if _BPF_CLASS is None:
        bcc = require_bcc()

        class LabBPF(bcc.BPF):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, autoload: bool = True, **kwargs: Any) -> None:
                self._lab_autoload = autoload
                _PENDING.append(self)
                super().__init__(*args, **kwargs)

            def _trace_autoload(self) -> None:
                if self._lab_autoload:
                    super()._trace_autoload()

        _BPF_CLASS = LabBPF
    return _BPF_CLASS


_PENDING: list[Any] = []


@contextlib.contextmanager
def _constructing() -> Iterator[list[Any]]:
    """Collect the LabBPF objects constructed in the block (also those whose constructor raised)."""
    made: list[Any] = []
    _PENDING.clear()  # (only objects made in this block count; fd 2's lock keeps others out)
    try:
        yield made
    finally:
        made.extend(_PENDING)
        _PENDING.clear()


def _compile_failed(name: str, error: Exception, captured: str) -> ProgramError:
    message = str(error)
    stage = "compile" if "compile" in message.lower() else "verifier"
    if stage == "compile" and _HEADERS_MISSING.search(captured):
        message += (
            f". BCC found no kernel headers for {platform.release()}: run `sudo make setup` "
            "(it installs or links them), or check `ebpf_lab.doctor()`'s kernel_headers row"
        )
    log = "\n".join(
        line
        for line in _trim_log(captured).splitlines()
        if not line.startswith("Running from kernel directory")
    )
    return ProgramError(stage, f"{name}: {message}", log)


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
    require_bcc()
    cache_key = compile_cache.key(text, cflags)
    snap = compile_cache.lookup(cache_key) if cache else None
    if snap is not None:
        try:
            return compile_cache.restore(snap, cache_key)
        except OSError as exc:  # a map could not be created (memory, limits)
            raise ProgramError("compile", f"{name}: {exc}", "") from None
    cls = lab_bpf_class()
    with capture_stderr_fd() as cap, _constructing() as made:
        try:
            bpf = cls(text=text.encode(), cflags=list(cflags))
        except Exception as exc:  # bcc raises bare Exception
            bpf = None
            error = exc
        else:
            error = None
    if error is not None:
        for obj in made:
            release(obj)
        raise _compile_failed(name, error, cap.text) from None
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


def unload_function(bpf: Any, fn: str) -> None:
    """Unload one function that nothing attached: close its program and let ``bpf`` forget it,
    so that :func:`load_function` loads it anew (e.g. as another program type). A function
    that is not loaded is left alone."""
    loaded = bpf.funcs.pop(fn.encode(), None)
    if loaded is not None:
        with contextlib.suppress(OSError):
            os.close(loaded.fd)


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


_DUMP_START = "#if defined(BPF_LICENSE)"
_DUMP_END = "#include <bcc/footer.h>"


def _rewritten(captured: str) -> list[str] | None:
    """The C as BCC rewrote it, cut out of what ``debug=DEBUG_PREPROCESSOR`` printed."""
    lines = captured.splitlines()
    try:
        end = len(lines) - 1 - lines[::-1].index(_DUMP_END)
        start = max(i for i in range(end) if lines[i] == _DUMP_START)
    except ValueError:
        return None
    return lines[start : end + 1]


@contextlib.contextmanager
def compiled_unattached(
    text: str, cflags: Sequence[str] = (), *, name: str = "program"
) -> Iterator[tuple[Any, list[str] | None]]:
    """Compile with BCC, never attaching anything; yield ``(bpf, rewritten lines)``; release.

    The rewritten lines are the C as BCC rewrote it (``debug=DEBUG_PREPROCESSOR``), the text
    clang compiles and the verifier's line annotations count (None if BCC printed none). Nothing
    is cached: the verifier's log needs BCC's own load, with BTF line info.

    Raises:
        ProgramError: ``stage="compile"`` with clang's diagnostics (compiled once more without
            the debug dump, so the diagnostics are clean); nothing stays loaded.
    """
    bcc = require_bcc()
    cls = lab_bpf_class()
    bpf = None
    with capture_stderr_fd() as cap, _stdout_discarded(), _constructing() as made:
        try:
            bpf = cls(
                text=text.encode(),
                cflags=list(cflags),
                debug=bcc.DEBUG_PREPROCESSOR,
                autoload=False,
            )
            error = None
        except Exception as exc:  # bcc raises bare Exception
            error = exc
    try:
        if error is not None:
            for obj in made:
                release(obj)
            with capture_stderr_fd() as clean, _constructing() as again:
                with contextlib.suppress(Exception):
                    cls(text=text.encode(), cflags=list(cflags), autoload=False)
            for obj in again:
                release(obj)
            raise _compile_failed(name, error, clean.text) from None
        yield bpf, _rewritten(cap.text)
    finally:
        if bpf is not None:
            release(bpf)


@replayable  # a replayed notebook shows the recorded text (compiling needs root and BPF)
def final_source(text: str, cflags: Sequence[str] = (), *, name: str = "program") -> str:
    """The C after BCC's rewrite: what clang compiles (see :func:`show_source` ``final=True``).

    Raises:
        ProgramError: the C does not compile.
    """
    with compiled_unattached(text, cflags, name=name) as (_, rewritten):
        if rewritten is None:
            raise ProgramError("compile", f"{name}: BCC printed no rewritten source", "")
        return "\n".join(rewritten) + "\n"
