"""The lessons, what each needs from the kernel, and how each adapts when something is missing.

:func:`lesson_plan` joins this catalogue with :func:`ebpf_lab.doctor` to say, for the kernel in
front of you, which lessons run as written, which adapt (and how), and which cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"


@dataclass(frozen=True)
class Lesson:
    """One notebook: its number, title, the doctor features it needs and its fallbacks.

    ``needs`` lists features that must all be supported; an entry ``"a|b"`` needs either.
    ``adapts`` maps a feature to what the lesson does instead when the kernel lacks it.
    """

    number: str
    notebook: str
    title: str
    needs: tuple[str, ...]
    adapts: dict[str, str] = field(default_factory=dict)


_EXEC_HOOK = {"kprobe": "hooks execve with the syscalls:sys_enter_execve tracepoint instead"}

CATALOGUE: tuple[Lesson, ...] = (
    Lesson("00", "00-setup-check.ipynb", "Setup check: what this kernel can do", ("root", "bcc")),
    Lesson(
        "01",
        "01-hello.ipynb",
        "Hello, kernel: bpf_trace_printk on every execve",
        ("root", "bcc", "tracefs", "kprobe|tracepoint"),
        _EXEC_HOOK,
    ),
    Lesson(
        "02",
        "02-maps-exec-per-uid.ipynb",
        "Maps: execs per user, counted in the kernel",
        ("root", "bcc", "kprobe|tracepoint", "hash_map"),
        _EXEC_HOOK,
    ),
    Lesson(
        "03",
        "03-perf-buffer.ipynb",
        "Perf and ring buffers: one event per exec",
        ("root", "bcc", "kprobe|tracepoint", "btf", "perf_buffer", "ring_buffer"),
        _EXEC_HOOK,
    ),
    Lesson(
        "04",
        "04-bytecode-and-verifier.ipynb",
        "Bytecode and the verifier",
        ("root", "bcc", "tracepoint"),
    ),
    Lesson(
        "05",
        "05-maps.ipynb",
        "Maps: hash, array, per-CPU, LRU, histograms",
        ("root", "bcc", "tracepoint", "hash_map", "array_map", "percpu_array", "lru_hash"),
    ),
    Lesson(
        "06",
        "06-helpers.ipynb",
        "Helpers: what a program may ask the kernel",
        ("root", "bcc", "tracepoint"),
    ),
    Lesson(
        "07",
        "07-attach-points.ipynb",
        "Attach points: one counter, up to seven hooks",
        ("root", "bcc", "tracepoint", "raw_tracepoint", "uprobe", "perf_event"),
        {
            "kprobe": "explains kprobes and kretprobes (the doctor's reason) and runs the other "
            "attach types live",
            "fentry": "explains why fentry is unavailable (the doctor's reason) and runs the other "
            "attach types live",
        },
    ),
    Lesson(
        "08",
        "08-data-transfer.ipynb",
        "Data transfer: trace vs perf vs ring buffer",
        ("root", "bcc", "tracefs", "tracepoint", "perf_buffer", "ring_buffer"),
    ),
    Lesson(
        "09",
        "09-tracing.ipynb",
        "Tracing: openat() latency per call and as a histogram; what strace costs",
        ("root", "bcc", "tracepoint", "hash_map", "ring_buffer"),
    ),
    Lesson(
        "10",
        "10-networking.ipynb",
        "Networking: an XDP firewall on a private veth cable",
        ("root", "bcc", "xdp", "hash_map", "array_map"),
    ),
    Lesson(
        "11",
        "11-security.ipynb",
        "Security: exec watchlist (detection) and BPF LSM (enforcement)",
        ("root", "bcc", "btf", "tracepoint", "hash_map", "perf_buffer"),
        {
            "lsm": "explains why BPF LSM cannot deny here (the doctor's reason) and shows "
            "tracepoint detection instead, labelled as detection, not enforcement"
        },
    ),
    Lesson(
        "12",
        "12-performance.ipynb",
        "Performance: CPU profiling with stacks, run-queue latency",
        ("root", "bcc", "perf_event", "tracepoint", "hash_map"),
    ),
)


def _supported(need: str, features: dict[str, bool]) -> bool:
    return any(features.get(alt, False) for alt in need.split("|"))


def lesson_plan(doctor_frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Which lessons run here as written, which adapt, and which cannot run.

    Args:
        doctor_frame: a frame from :func:`ebpf_lab.doctor` (default: run/cached doctor()).

    Returns:
        One row per lesson: ``lesson``, ``title``, ``needs``, ``status`` (``"runs"``,
        ``"adapts"`` or ``"cannot run"``), ``on_this_kernel`` (what it will do here).
    """
    if doctor_frame is None:
        from ebpf_lab.kernel.doctor import doctor

        doctor_frame = doctor()
    features = dict(zip(doctor_frame["feature"], doctor_frame["supported"].astype(bool)))
    rows = []
    for lesson in CATALOGUE:
        missing = [n for n in lesson.needs if not _supported(n, features)]
        adapting = {f: how for f, how in lesson.adapts.items() if not features.get(f, False)}
        if missing:
            status = "cannot run"
            note = "missing: " + ", ".join(missing)
        elif adapting:
            status = "adapts"
            note = "; ".join(f"no {f}: {how}" for f, how in adapting.items())
        else:
            status = "runs"
            note = "runs as written"
        rows.append(
            {
                "lesson": lesson.number,
                "title": lesson.title,
                "needs": ", ".join(n.replace("|", " or ") for n in lesson.needs),
                "status": status,
                "on_this_kernel": note,
            }
        )
    return pd.DataFrame(rows)
