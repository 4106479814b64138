"""The one place that decides whether a run touches the kernel: live, record or replay.

A session (:class:`ebpf_lab.classroom.recordings.Recording`) is installed here by
``ebpf_lab.record(dir)`` / ``ebpf_lab.replay(dir)``; the core asks :func:`current` or
:func:`mode` and nothing else:

* :func:`ebpf_lab.core.run.bounded_run` hands a whole run to the session (replay returns the
  recorded frame without compiling, loading or attaching; record saves what the run returned);
* :func:`replayable` known workloads return their recorded result while replaying;
* the few checks that would touch the kernel before a run (root, the attach choice, BTF) skip it
  while replaying, asking :func:`replaying`.

:func:`bypass` runs a block live even while a session is in force (exercise checks do).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any, Callable, Protocol

import pandas as pd


class Session(Protocol):
    """What the core needs from a recording or a replay (see ``classroom.recordings``)."""

    mode: str  # "record" or "replay"

    def record_run(
        self,
        name: str,
        frame: pd.DataFrame | None,
        error: BaseException | None,
        *,
        workload_ran: bool = False,
    ) -> None: ...

    def replay_run(
        self,
        *,
        name: str,
        duration: float,
        workload: Callable[[], Any] | None,
        live: bool | None,
        on_workload_result: Callable[[Any], None] | None,
    ) -> pd.DataFrame: ...

    def record_workload(self, name: str, result: Any, error: BaseException | None) -> None: ...

    def replay_workload(self, name: str) -> Any: ...


_LOCK = threading.Lock()
_SESSION: Session | None = None
_BYPASS = 0


def install(session: Session | None) -> Session | None:
    """Put ``session`` in force (None: live); returns the one it replaces."""
    global _SESSION
    with _LOCK:
        old, _SESSION = _SESSION, session
    return old


def installed() -> Any:
    """The session in force, even inside :func:`bypass` (None: live)."""
    return _SESSION


def current() -> Session | None:
    """The recording or replay in force (None: live, or inside :func:`bypass`)."""
    return None if _BYPASS else _SESSION


def mode() -> str:
    """``"live"``, ``"record"`` or ``"replay"``."""
    session = current()
    return "live" if session is None else session.mode


def replaying() -> bool:
    """True while a replay is in force: nothing may touch the kernel."""
    return mode() == "replay"


@contextlib.contextmanager
def bypass() -> Iterator[None]:
    """Run the block on the live kernel even while recording or replaying (used by checks)."""
    global _BYPASS
    with _LOCK:
        _BYPASS += 1
    try:
        yield
    finally:
        with _LOCK:
            _BYPASS -= 1


def replayable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a known workload: while recording it saves its result, while replaying it
    returns the recorded result instead of running (so notebooks can still compare the
    kernel's story with the truth), and live it just runs."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = current()
        if session is None:
            return fn(*args, **kwargs)
        if session.mode == "replay":
            return session.replay_workload(name)
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            session.record_workload(name, None, exc)
            raise
        session.record_workload(name, result, None)
        return result

    wrapper.__ebpf_lab_replayable__ = True  # type: ignore[attr-defined]
    return wrapper
