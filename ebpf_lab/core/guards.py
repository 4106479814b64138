"""Checks that run before anything touches the kernel: arguments, privileges, bcc.

Every public bounded function calls these first, so a bad call fails with a clear message and
nothing is ever loaded or attached.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from types import ModuleType
from typing import Any, Callable

from ebpf_lab.core import replay
from ebpf_lab.core.errors import ROOT_HINT, BccMissing

#: The longest bounded run the lab accepts, in seconds (one hour). Longer runs belong in a
#: real tool (bpftrace, a daemon), not in a notebook cell.
MAX_DURATION = 3600.0


def check_duration(duration: Any, name: str = "duration") -> float:
    """Return ``duration`` as a float, or raise ValueError if it is not a sane number of seconds."""
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {duration!r}")
    value = float(duration)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {duration!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0 seconds, got {duration!r}")
    if value > MAX_DURATION:
        raise ValueError(
            f"{name}={duration!r} s is longer than the lab's limit of {MAX_DURATION:.0f} s; "
            "use a shorter run (several short runs can be concatenated with pandas.concat)"
        )
    return value


def check_interval(interval: Any, duration: float) -> float:
    """Return ``interval`` as a float in (0, duration], or raise ValueError."""
    value = check_duration(interval, "interval")
    if value > duration:
        raise ValueError(
            f"interval={interval!r} s is longer than duration={duration!r} s; "
            "choose an interval <= duration"
        )
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError listing them."""
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, options))}")
    return value


def check_workload(workload: Any) -> Callable[[], Any] | None:
    """Return ``workload`` if it is None or callable, else raise ValueError."""
    if workload is not None and not callable(workload):
        raise ValueError(
            "workload must be a callable taking no arguments (or None), "
            f"got {type(workload).__name__}; "
            "e.g. workload=lambda: ebpf_lab.workloads.execs({1000: 5})"
        )
    return workload


def check_whole(value: Any, name: str, low: int, high: int) -> int:
    """Return ``value`` if it is a whole number from ``low`` to ``high``, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


def check_positive_int(value: Any, name: str, maximum: int | None = None) -> int | None:
    """Return ``value`` if it is None or an int in [1, maximum], else raise ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive whole number or None, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value} is more than the limit of {maximum}; ask for fewer")
    return value


def check_required_int(value: Any, name: str, maximum: int | None, example: int) -> int:
    """Return ``value`` if it is an int in [1, maximum]; None is refused too, naming ``example``."""
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive whole number, e.g. {example}, got {value!r}")
    check_positive_int(value, name, maximum)  # the limit, and what to do above it
    return value


def check_uid(uid: Any) -> int:
    """Return ``uid`` if it is a valid Linux UID (0 .. 2**32-2), else raise ValueError."""
    if isinstance(uid, bool) or not isinstance(uid, int) or not 0 <= uid < 2**32 - 1:
        raise ValueError(f"a UID must be a whole number from 0 to 4294967294, got {uid!r}")
    return uid


def check_pid(pid: Any) -> int | None:
    """Return ``pid`` if it is None or a possible process id (1 .. 4194304), else ValueError."""
    if pid is None:
        return None
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= 2**22:
        raise ValueError(
            f"pid must be a process id (a whole number from 1 to 4194304), got {pid!r}"
        )
    return pid


def require_root() -> None:
    """Raise PermissionError (with how to start the lab as root) unless running as root.

    While replaying a recording (:func:`ebpf_lab.replay`) nothing touches the kernel, so
    nothing needs root.
    """

    if os.geteuid() != 0 and not replay.replaying():
        raise PermissionError(ROOT_HINT)


def require_bcc() -> ModuleType:
    """Import and return ``bcc``, or raise :class:`BccMissing` saying how to install it."""
    try:
        import bcc
    except ImportError as exc:
        raise BccMissing(str(exc)) from None
    if not hasattr(bcc, "BPF"):
        raise BccMissing(f"the 'bcc' module at {getattr(bcc, '__file__', '?')} is not BCC")
    return bcc


def check_sample_freq(sample_freq: Any) -> int:
    """A perf event's samples per second: a whole number from 1 to the kernel's limit.

    The limit is ``kernel.perf_event_max_sample_rate`` (``/proc/sys``), which the kernel may
    lower by itself when sampling takes too long; 100000 if it cannot be read.
    """
    try:
        with open("/proc/sys/kernel/perf_event_max_sample_rate") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        limit = 100_000
    if (
        isinstance(sample_freq, bool)
        or not isinstance(sample_freq, int)
        or not 1 <= sample_freq <= limit
    ):
        raise ValueError(
            f"sample_freq must be a whole number of samples per second from 1 to {limit} "
            f"(kernel.perf_event_max_sample_rate), got {sample_freq!r}"
        )
    return sample_freq
