"""A private tracefs instance for reading ``bpf_trace_printk`` lines.

``bpf_trace_printk()`` writes to the kernel's global trace buffer, and whoever reads
``/sys/kernel/tracing/trace_pipe`` *consumes* the lines: another lab, a student's terminal running
the seed's hello.py, or bpftrace would lose them to us (or we to them). Since Linux 5.x every
printk is also a trace event, ``bpf_trace:bpf_trace_printk``. The lab creates its own tracefs
instance (``instances/ebpf_lab_<pid>_<n>``), enables just that event there with the monotonic
clock, reads the instance's own ``trace_pipe``, and removes the instance afterwards. The global
buffer is left alone. The instance still receives every program's printk lines, so lessons tag
their messages and keep only their own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import select
from dataclasses import dataclass
from pathlib import Path

from ebpf_lab.core.kernelfs import require_tracefs

_COUNTER = itertools.count()
INSTANCE_PREFIX = "ebpf_lab_"

# "  python3-1234    [001] d..31  5123.456789: bpf_trace_printk: message"
_LINE_RE = re.compile(
    r"^\s*(?P<comm>.*)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
    r"(?P<ts>\d+\.\d+):\s+bpf_trace_printk:\s(?P<msg>.*)$"
)


@dataclass(frozen=True)
class TraceLine:
    """One parsed trace line: who printed (the current task), where, when, what."""

    comm: str
    pid: int
    cpu: int
    ktime_ns: int
    message: str


def parse_line(line: str) -> TraceLine | None:
    """Parse one ``trace_pipe`` line of the bpf_trace_printk event, or None if it is not one."""
    m = _LINE_RE.match(line)
    if not m:
        return None
    secs, _, frac = m.group("ts").partition(".")
    ktime_ns = int(secs) * 1_000_000_000 + int(frac.ljust(9, "0")[:9])
    return TraceLine(
        m.group("comm").strip(),
        int(m.group("pid")),
        int(m.group("cpu")),
        ktime_ns,
        m.group("msg").rstrip("\n"),
    )


class PrintkInstance:
    """A tracefs instance that receives ``bpf_trace_printk`` lines; use as a context manager."""

    def __init__(self) -> None:
        self.root = require_tracefs()
        self.path = self.root / "instances" / f"{INSTANCE_PREFIX}{os.getpid()}_{next(_COUNTER)}"
        self.fd: int | None = None
        self._partial = b""

    def open(self) -> PrintkInstance:
        """Create the instance, enable the printk event with the monotonic clock, open its pipe."""
        os.mkdir(self.path)  # mkdir in instances/ creates a new trace buffer
        try:
            (self.path / "trace_clock").write_text("mono")
            (self.path / "events" / "bpf_trace" / "bpf_trace_printk" / "enable").write_text("1")
            self.fd = os.open(self.path / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        except BaseException:
            self.close()
            raise
        return self

    def read(self, timeout: float = 0.0) -> list[TraceLine]:
        """Lines that arrived, waiting up to ``timeout`` seconds for the first."""
        if self.fd is None:
            return []
        if timeout > 0:
            select.select([self.fd], [], [], timeout)
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        data = self._partial + b"".join(chunks)
        lines = data.split(b"\n")
        self._partial = lines.pop()
        parsed = (parse_line(raw.decode(errors="replace")) for raw in lines)
        return [p for p in parsed if p is not None]

    def close(self) -> None:
        """Close the pipe and remove the instance (idempotent)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self.path.exists():
            with contextlib.suppress(OSError):
                (self.path / "events" / "bpf_trace" / "bpf_trace_printk" / "enable").write_text("0")
            with contextlib.suppress(OSError):
                os.rmdir(self.path)

    def __enter__(self) -> PrintkInstance:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def lab_instances() -> list[Path]:
    """Tracefs instances the lab created that still exist (should be none between runs)."""
    try:
        root = require_tracefs()
    except Exception:
        return []
    return sorted((root / "instances").glob(f"{INSTANCE_PREFIX}*"))
