"""Sentences about the kernel in front of the reader, computed when the notebook runs.

A notebook must never state one machine's facts (its tick rate, its lockdown mode, which attach
points it lacks) as if they held everywhere. Where a chapter talks about "this kernel", it calls
one of these functions and shows the result with :func:`markdown`, so the sentence is true on
every kernel it runs on::

    from ebpf_lab.kernel.prose import markdown, tick_rate
    markdown(tick_rate())

Each function returns plain Markdown text (a str), built from :mod:`ebpf_lab.core.kernelfs` file
checks, the kernel's build configuration, and the doctor's feature outcomes
(:mod:`ebpf_lab.kernel.features`, which load real programs).
"""

from __future__ import annotations

import os
import re
from typing import Any

from ebpf_lab.core import kernelfs as kernel

#: common CONFIG_HZ values (Kconfig offers 100, 250, 300 and 1000)
HZ_CHOICES = (100, 250, 300, 1000)


def markdown(text: str) -> Any:
    """``text`` as rendered Markdown in Jupyter (``IPython.display.Markdown``), else the str."""
    try:
        from IPython.display import Markdown

        return Markdown(text)
    except ImportError:  # pragma: no cover - IPython is a dependency
        return text


def kernel_version() -> tuple[int, int]:
    """The running kernel's (major, minor) version, e.g. ``(6, 1)`` for ``6.1.0-56-amd64``."""
    m = re.match(r"(\d+)\.(\d+)", kernel.release())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def config_hz() -> int | None:
    """The scheduler tick rate the kernel was built with (``CONFIG_HZ``), or None if unknown."""
    value = kernel.config_option("HZ")
    return int(value) if value and value.isdigit() else None


def tick_rate(*sample_freqs: int) -> str:
    """This kernel's ``CONFIG_HZ``, and whether each of ``sample_freqs`` ticks in step with it."""
    hz = config_hz()
    if hz is None:
        text = (
            f"This kernel ({kernel.release()}) does not show its build configuration "
            "(no `/proc/config.gz`, no `/boot/config-*`), so its `CONFIG_HZ` is unknown here."
        )
    else:
        text = f"This kernel ({kernel.release()}) was built with `CONFIG_HZ={hz}`."
    rates = (hz,) if hz else HZ_CHOICES
    for freq in sample_freqs:
        steps = [h for h in rates if freq % h == 0]
        if steps:
            text += (
                f" {freq} Hz is a multiple of {' and '.join(map(str, steps))} Hz: "
                "its samples would fall in step with the tick."
            )
        else:
            text += (
                f" {freq} Hz is not a multiple of {' or '.join(map(str, rates))} Hz: "
                "its samples drift across the ticks."
            )
    return text


def headers() -> str:
    """Whether the installed kernel headers belong to this kernel (what BCC compiles against)."""
    status = kernel.header_status()
    release = kernel.release()
    if status.state == "matched":
        return (
            f"On this kernel ({release}) they do: `{status.path}` holds the headers of "
            f"{release} itself, so a struct read through them would be right *here*. The lab "
            "still takes the offsets from BTF, so the same program is right on kernels where "
            "the headers do not match."
        )
    if status.state == "fallback":
        return (
            f"On this kernel ({release}) they do not: the headers at `{status.path}` are "
            f"version {status.version}'s, linked in by the lab's setup because none for "
            f"{release} were installed. Programs that only call helpers compile fine with them; "
            "a struct field read through them would use the other version's layout."
        )
    return (
        f"On this kernel ({release}) there are no headers at all "
        f"(`/lib/modules/{release}/build` is missing): rerun `sudo make lab`."
    )


def lockdown() -> str:
    """The lockdown mode in force, and what it means for BPF programs."""
    mode = kernel.lockdown_mode()
    if mode is None:
        return (
            "This kernel shows no lockdown state (`/sys/kernel/security/lockdown` is absent: "
            "built without the lockdown LSM), so lockdown restricts nothing here."
        )
    meaning = {
        "none": "lockdown restricts nothing",
        "integrity": "the kernel may not be *changed* from user space (no unsigned modules, "
        "no `/dev/mem` writes, no `bpf_probe_write_user`), but kernel memory may still be *read*",
        "confidentiality": "on top of `integrity`, kernel memory may not be *read* either "
        "(no kprobes, no BPF reads of kernel memory)",
    }.get(mode, "see `man 7 kernel_lockdown`")
    return f"This kernel runs with lockdown `{mode}`: {meaning}."


def feature(name: str, *, yes: str = "", no: str = "") -> str:
    """The doctor's verdict on ``name`` (a ``doctor.FEATURES`` row), as a sentence.

    The verdict is the feature's outcome (:func:`ebpf_lab.kernel.features.probe`, the same
    cached answer the doctor's row shows): supported, not available, or not decided here (an
    inconclusive probe, which the lessons treat as not available).

    Args:
        name: the feature, e.g. ``"kprobe"``, ``"fentry"``, ``"lsm"``.
        yes: text added when the kernel supports it (what the chapter does with it).
        no: text added when it does not, or when that could not be decided (what the chapter
            does instead).
    """
    from ebpf_lab.kernel import features

    outcome = features.probe(name)[name]
    release = kernel.release()
    said = f"The doctor: {as_sentence(outcome.reason)}"
    if outcome.state == features.SUPPORTED:
        return f"**`{name}`: supported on this kernel ({release}).** {said} {yes}".strip()
    if outcome.state == features.INCONCLUSIVE:
        verdict = f"could not be decided on this kernel ({release})"
        return f"**`{name}`: {verdict}, so the lab does not rely on it.** {said} {no}".strip()
    return f"**`{name}`: not available on this kernel ({release}).** {said} {no}".strip()


def as_sentence(text: Any) -> str:
    """``text`` (e.g. a doctor's detail) as one Markdown sentence: special characters escaped."""
    text = re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", str(text).strip())
    return text if text.endswith(".") else text + "."


def python_binary() -> str:
    """The real file of the Python interpreter running this kernel (symlinks resolved)."""
    import sys

    return os.path.realpath(sys.executable)


__all__ = [
    "HZ_CHOICES",
    "as_sentence",
    "config_hz",
    "feature",
    "headers",
    "kernel_version",
    "lockdown",
    "markdown",
    "python_binary",
    "tick_rate",
]
