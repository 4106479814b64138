"""Throw-away network namespaces: attach XDP (and later tc) programs without touching the host.

A network namespace is a private copy of the network stack: its own interfaces (at first only a
``lo`` that is down), routes and sockets. Attaching XDP to the ``lo`` of a fresh namespace cannot
disturb the machine's real traffic, and deleting the namespace takes everything in it away.

Two pieces:

- :func:`temporary_netns`: a context manager that creates a named namespace with
  ``ip netns add`` (by default bringing its ``lo`` up) and always deletes it on exit.
- :func:`run_in_netns`: runs a callable in a worker thread that has entered the namespace with
  ``setns(2)``. Only that thread switches; the rest of the process (a Jupyter kernel, say) stays
  in its own namespace. Sockets and netlink calls made by the callable live in the namespace.

Example (as root)::

    from ebpf_lab import netns

    with netns.temporary_netns("ebpf-lab-demo") as name:
        print(netns.run_in_netns(name, lambda: open("/proc/net/dev").read()))
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

#: where ``ip netns add`` bind-mounts named namespaces
NETNS_DIR = Path("/run/netns")
#: ``setns(2)`` flag for a network namespace
CLONE_NEWNET = 0x40000000

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_libc: Any = None


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(
            f"bad network namespace name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return name


def _ip(*args: str) -> str:
    """Run ``ip ARGS`` and return its stdout; raise RuntimeError with ip's own message."""
    ip = shutil.which("ip") or "/usr/sbin/ip"
    try:
        proc = subprocess.run([ip, *args], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise RuntimeError(
            "the `ip` command (iproute2) is not installed: `sudo apt-get install iproute2`"
        ) from None
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {message}")
    return proc.stdout


def list_netns() -> list[str]:
    """Names of the named network namespaces (those ``ip netns list`` shows)."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError:
        return []


def exists(name: str) -> bool:
    """Whether a named network namespace ``name`` exists."""
    return (NETNS_DIR / _check_name(name)).exists()


def create(name: str, *, loopback_up: bool = True) -> None:
    """Create the named network namespace ``name`` (``ip netns add``), optionally with ``lo`` up."""
    _ip("netns", "add", _check_name(name))
    if loopback_up:
        try:
            _ip("-n", name, "link", "set", "lo", "up")
        except Exception:
            with contextlib.suppress(Exception):
                delete(name)
            raise


def delete(name: str) -> None:
    """Delete the named network namespace ``name`` (``ip netns del``); no error if it is gone."""
    if exists(name):
        _ip("netns", "del", name)


def delete_stale(prefix: str) -> list[str]:
    """Delete namespaces named ``<prefix><pid>`` whose process no longer exists; return their names.

    A process that was killed (``kill -9``) inside :func:`temporary_netns` cannot delete its
    namespace; the next run calls this to tidy up. Namespaces of live processes are left alone.
    """
    pattern = re.compile(re.escape(prefix) + r"(\d+)$")
    removed = []
    for name in list_netns():
        m = pattern.match(name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            with contextlib.suppress(Exception):
                delete(name)
                removed.append(name)
    return removed


@contextlib.contextmanager
def temporary_netns(name: str, *, loopback_up: bool = True) -> Iterator[str]:
    """Create network namespace ``name`` for the ``with`` block and always delete it afterwards.

    Args:
        name: the namespace's name; it must not exist yet (put your pid in it to stay unique).
        loopback_up: bring the namespace's ``lo`` up, so 127.0.0.1 works inside it.

    Yields:
        ``name``, for :func:`run_in_netns`.
    """
    if exists(name):
        raise RuntimeError(
            f"network namespace {name!r} already exists; delete it with `sudo ip netns del {name}`"
        )
    create(name, loopback_up=loopback_up)
    try:
        yield name
    finally:
        delete(name)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling *thread* into the namespace open at ``fd`` (libc ``setns(2)``).

    Python 3.12 has ``os.setns``; this works on older Pythons too.
    """
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


def run_in_netns(
    name: str, fn: Callable[..., T], *args: Any, timeout: float = 30.0, **kwargs: Any
) -> T:
    """Call ``fn(*args, **kwargs)`` in a worker thread inside network namespace ``name``.

    Only the worker thread enters the namespace (with ``setns``); it returns to the process's
    namespace before it ends. ``fn``'s return value is returned, and its exception re-raised here.

    Raises:
        TimeoutError: ``fn`` did not finish within ``timeout`` seconds (the thread is abandoned).
    """
    path = NETNS_DIR / _check_name(name)
    outcome: dict[str, Any] = {}

    def worker() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    setns(target)
                finally:
                    os.close(target)
                try:
                    outcome["result"] = fn(*args, **kwargs)
                finally:
                    setns(own)
            finally:
                os.close(own)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"the call inside network namespace {name!r} took over {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
