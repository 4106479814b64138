"""Make the lab see a kernel without a feature, so the "why not" paths run on every kernel.

The lab decides that kprobes are missing from files (``ebpf_lab.core.kernelfs.kprobes_available``);
pointing those files at an empty directory shows it a kernel built without CONFIG_KPROBES, even
on a kernel that has them. Nothing of the kernel itself is changed or mocked: the lessons then
raise before anything loads, which is what the tests check.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ebpf_lab.core import kernelfs as kernel


def hide_kprobes(monkeypatch: pytest.MonkeyPatch, empty_dir: Path) -> None:
    """From now on (until the test ends) the lab sees no kprobe PMU, no kprobe_events and no
    debugfs kprobes: a kernel without CONFIG_KPROBES. Its tracefs is ``empty_dir``."""
    monkeypatch.setattr(kernel, "KPROBE_PMU", empty_dir / "no-kprobe-pmu")
    monkeypatch.setattr(kernel, "DEBUGFS_KPROBES", empty_dir / "no-debugfs-kprobes")
    monkeypatch.setattr(kernel, "tracefs_root", lambda: empty_dir)


@contextlib.contextmanager
def kprobes_hidden() -> Iterator[None]:
    """:func:`hide_kprobes` for the duration of a ``with`` block (where no fixture reaches)."""
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as empty:
        hide_kprobes(mp, Path(empty))
        yield
