"""User-space C helpers (fast, known workloads), built with the system's C compiler on first use.

Some workloads must be faster than Python or a shell tool can be: lesson 08's stream of one-byte
``read()`` calls (``workloads/c/read_loop.c``) is one. Their C ships in ``ebpf_lab/workloads/c/``
and :func:`build` compiles it with gcc the first time it is needed, into a cache directory that
only root can write (0700), keyed by a hash of the source, the shared header ``c/lab.h`` and the
compiler flags: an edited source gets a new binary, an unchanged one is reused. A binary is
written under a temporary name and renamed into place, so a half-written file is never run, even
with two builds at once.

Without a compiler, :func:`build` raises :class:`~ebpf_lab.core.errors.HelperBuildError` saying what
to install (``sudo make setup`` installs gcc and libc6-dev).

A build of several steps (lesson 15's libbpf loader: ``vmlinux.h``, clang, ``bpftool gen
skeleton``, gcc) uses the same cache through :func:`cached_build`: the caller computes the key
from everything that makes the result differ (:func:`cache_key`) and says how to build it in a
private scratch directory (:func:`run_step` for each command); the result, a file or a directory,
is renamed into place whole.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from ebpf_lab.core.errors import HelperBuildError

SOURCES_DIR = Path(__file__).resolve().parent / "c"
#: flags every helper is built with (part of the cache key)
CFLAGS = ("-O2", "-pthread", "-Wall")
#: environment variable naming another cache directory (tests use it)
CACHE_ENV = "EBPF_LAB_NATIVE_CACHE"

INSTALL_HINT = (
    "install a C compiler and the C library headers: `sudo apt-get install gcc libc6-dev` "
    "(or `sudo make setup`, which installs them)"
)


def source_path(name: str) -> Path:
    """The C source of the helper ``name`` (``"read_loop"`` -> ``workloads/c/read_loop.c``)."""
    path = SOURCES_DIR / f"{name}.c"
    if not path.is_file():
        known = sorted(p.stem for p in SOURCES_DIR.glob("*.c"))
        raise ValueError(f"no C helper called {name!r}; the lab ships: {', '.join(known)}")
    return path


def cache_dir() -> Path:
    """Where built helpers are kept: ``$EBPF_LAB_NATIVE_CACHE``, else ``~/.cache/ebpf-lab/native``
    (``$XDG_CACHE_HOME`` when set)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ebpf-lab" / "native"


def source_key(source: Path) -> str:
    """The cache key of a helper: a hash of its source, the shared headers it may include
    (``workloads/c/*.h``) and the compiler flags, so that editing any of them rebuilds it."""
    digest = hashlib.sha256(source.read_bytes())
    for header in sorted(SOURCES_DIR.glob("*.h")):
        digest.update(b"\0" + header.name.encode() + b"\0" + header.read_bytes())
    digest.update(b"\0" + " ".join(CFLAGS).encode())
    return digest.hexdigest()[:16]


def _private_dir(path: Path) -> Path:
    """Create ``path`` (0700) or check that it is a real directory only this user can write."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(
            f"{path} must be a directory owned by uid {os.geteuid()} (the lab runs programs "
            f"built there); remove it or set {CACHE_ENV} to another directory"
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def compiler() -> str | None:
    """The C compiler to use: ``$CC`` if set, else ``gcc``, else ``cc`` on PATH (None: none)."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return shutil.which("gcc") or shutil.which("cc")


def cache_key(*parts: bytes | str) -> str:
    """A cache key: a short hash of ``parts`` (file contents, versions, flags), in order."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def run_step(
    argv: Sequence[str | Path], what: str, hint: str, *, stdout: Path | None = None
) -> None:
    """Run one build command; raises :class:`HelperBuildError` with ``what``, ``hint`` and its
    output if it fails. ``stdout``: a file that receives its standard output (a generated header).
    """
    argv = [str(a) for a in argv]
    try:
        if stdout is not None:
            with open(stdout, "w") as sink:
                out = subprocess.run(
                    argv,
                    stdout=sink,
                    stderr=subprocess.PIPE,
                    text=True,
                    timeout=300,
                    stdin=subprocess.DEVNULL,
                )
            log = out.stderr
        else:
            out = subprocess.run(
                argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
            )
            log = out.stderr + out.stdout
    except OSError as exc:
        raise HelperBuildError(f"{what}: {argv[0]} could not run ({exc}); {hint}") from None
    if out.returncode != 0:
        raise HelperBuildError(f"{what} failed ({' '.join(argv[:2])} ...); {hint}", log)


def cached_build(name: str, key: str, make: Callable[[Path], Path]) -> Path:
    """Return ``<cache>/<name>-<key>``, made by ``make`` first if it is not there yet.

    ``make(scratch)`` builds in ``scratch``, a private temporary directory in the cache, and
    returns the result (a file or a directory inside it), which is renamed into place whole:
    a reader never sees half a build, even with two builds at once. Whatever ``make`` raises is
    raised, and the scratch directory is removed on every path.

    Raises:
        PermissionError: the cache directory is not a private directory of this user.
    """
    directory = cache_dir()
    target = directory / f"{name}-{key}"
    if target.exists():
        _private_dir(directory)  # never run a binary from a directory others can write
        return target
    _private_dir(directory)
    scratch = Path(tempfile.mkdtemp(dir=directory, prefix=f".{name}-", suffix=".tmp"))
    try:
        result = make(scratch)
        os.chmod(result, 0o700)
        try:
            os.replace(result, target)  # atomic: a reader sees nothing or the whole result
        except OSError:
            if not target.exists():  # (a directory cannot replace one another build made)
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def build(name: str) -> Path:
    """Return the path of the helper ``name``, compiling it first if it is not in the cache.

    Raises:
        ValueError: no such helper.
        HelperBuildError: no C compiler, or the source did not compile (with the log).
        PermissionError: the cache directory is not a private directory of this user.
    """
    source = source_path(name)

    def make(scratch: Path) -> Path:
        cc = compiler()
        if cc is None:
            raise HelperBuildError(
                f"the lab's C helper {source.name} must be compiled, but no C compiler (gcc or "
                f"cc) is on PATH: {INSTALL_HINT}"
            )
        run_step(
            [cc, *CFLAGS, "-o", scratch / name, source],
            f"compiling the lab's C helper {source.name} with {cc}",
            f"if headers such as stdio.h are missing, {INSTALL_HINT}",
        )
        return scratch / name

    return cached_build(name, source_key(source), make)
