"""What this kernel can really do, found by loading tiny BPF programs and creating tiny maps.

Reading ``/boot/config-*`` says what the kernel was *built* with; it does not say what a program
may do today (lockdown, a security module or a missing mount can still say no). So
:func:`doctor` asks the kernel itself: for each feature of the table in
:mod:`ebpf_lab.kernel.features` it loads a minimal program, attaches it, makes it fire a known
number of times from this very thread and checks the count (the programs and their checks are in
:mod:`ebpf_lab.kernel.probes`). Maps are created and written and read back from user space.
Everything is detached and closed before the next check; XDP is tried on the ``lo`` of a
throw-away network namespace, which is deleted afterwards.

The answer is cached for the life of the process: call ``doctor(refresh=True)`` to probe again,
and :func:`supports` to ask about one feature (it probes that feature only). From a shell:
``sudo python -m ebpf_lab doctor``.
"""

from __future__ import annotations

import os
import threading
import time

import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core import leftovers
from ebpf_lab.kernel import features
from ebpf_lab.kernel.probes import CALLS, INCONCLUSIVE

#: the rows of :func:`doctor`, in order (the names of :data:`ebpf_lab.kernel.features.TABLE`)
FEATURES: tuple[str, ...] = features.feature_names()

#: what each feature means, in plain words, for the setup-check notebook
MEANINGS: dict[str, str] = {f.name: f.meaning for f in features.TABLE}

_CACHE: pd.DataFrame | None = None
_LOCK = threading.Lock()


def _detail(outcome: features.Outcome) -> str:
    """The ``detail`` column: the reason, marked when the probe could not decide."""
    if outcome.state == INCONCLUSIVE:
        return f"inconclusive: {outcome.reason}"
    return outcome.reason


def _probe() -> pd.DataFrame:
    """Probe every feature now (no cache of the table; each feature's own cache is refreshed)."""
    started = time.monotonic()
    found = features.probe(*FEATURES, refresh=True)
    frame = pd.DataFrame(
        {
            "feature": list(FEATURES),
            "supported": pd.Series([found[f].supported for f in FEATURES], dtype=bool),
            "detail": [_detail(found[f]) for f in FEATURES],
        }
    )
    platform = features.platform_report()
    frame.attrs.update(
        {
            "kernel": kernel.release(),
            "elapsed": round(time.monotonic() - started, 3),
            "pid": os.getpid(),
            "probed_at": pd.Timestamp.now(),
            "system": platform.system if platform else None,
            "bcc_version": platform.bcc_version if platform else None,
            "llvm_version": platform.llvm_version if platform else None,
            "outcomes": {f: found[f].state for f in FEATURES},
            "inconclusive": [f for f in FEATURES if found[f].state == INCONCLUSIVE],
        }
    )
    return frame


def doctor(refresh: bool = False) -> pd.DataFrame:
    """What this kernel can really do for eBPF, one row per feature, probed by loading programs.

    Each program feature is decided by loading and attaching a minimal program and making it
    fire from this thread: a ``syscalls:sys_enter_getppid`` tracepoint must count exactly the
    three ``os.getppid()`` calls made while it is attached, a cpu-clock perf event must sample a
    spinning loop, an XDP program must see a UDP datagram sent over ``lo`` in a throw-away
    network namespace, and so on. Map features create the map and write and read it back from
    user space. Nothing stays loaded afterwards. It takes a few seconds (mostly clang
    compiling a handful of small programs).

    Each probe ends supported, unsupported or inconclusive (the question could not be answered:
    not root, no working BCC, a probe that did not compile or fired a wrong number of times).
    ``supported`` is True only for the first; an inconclusive row's ``detail`` starts with
    ``"inconclusive: "``, and ``df.attrs["inconclusive"]`` lists those rows.

    Args:
        refresh: probe again instead of returning the answer cached by an earlier call in this
            process (the kernel does not change, but a mount or a module might).

    Returns:
        A DataFrame with columns ``feature`` (see :data:`FEATURES`), ``supported`` (bool) and
        ``detail`` (what was used and what happened, or why not and what to use instead).
        ``df.attrs`` has ``kernel``, ``elapsed`` (seconds), ``pid``, ``probed_at``, ``system``,
        ``bcc_version``, ``llvm_version``, ``outcomes`` (``{feature: "supported" |
        "unsupported" | "inconclusive"}``) and ``inconclusive``. Without root or without bcc it
        does not raise: the rows it cannot probe say what to run.

    Example::

        df = ebpf_lab.doctor()
        df[~df.supported]          # what this kernel cannot do, and why
    """
    global _CACHE
    with _LOCK:
        if _CACHE is None or refresh:
            if os.geteuid() == 0:
                # what killed runs left (a doctor's netns, a hello's tracefs instance) goes first
                leftovers.reap()
            _CACHE = _probe()
        return _CACHE.copy()  # callers may add columns; the cache stays as probed


def explain(frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The doctor's table with a ``meaning`` column: what each feature is, in plain words."""
    frame = doctor() if frame is None else frame.copy()
    frame.insert(1, "meaning", frame["feature"].map(MEANINGS))
    return frame


def supports(feature: str) -> bool:
    """Whether the kernel supports ``feature`` (a :data:`FEATURES` name).

    Once :func:`doctor` has run, its cached table answers. Before that, only ``feature`` (and
    what it depends on: root, bcc) is probed, the first time it is asked about, and its outcome
    is cached (:func:`ebpf_lab.kernel.features.probe`). An inconclusive outcome counts as not
    supported.

    Example::

        attach = "kprobe" if ebpf_lab.supports("kprobe") else "tracepoint"
    """
    features.feature(feature)  # an unknown name raises before anything is probed
    with _LOCK:
        frame = _CACHE
    if frame is None:
        return features.supports(feature)
    return bool(frame.loc[frame["feature"] == feature, "supported"].iloc[0])


__all__ = ["CALLS", "FEATURES", "MEANINGS", "doctor", "explain", "supports"]
