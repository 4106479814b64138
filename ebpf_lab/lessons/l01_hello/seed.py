"""Lesson 01: what the seed's ``hello.py`` needs to run bounded in a notebook, and no more.

The seed reads ``bpf_trace_printk`` lines with BCC's ``trace_print()``, which opens the global
``trace_pipe``: every reader on the machine takes lines from that one stream. BCC reads whatever
file its ``BPF.tracefile`` attribute holds, so :func:`private_trace_pipe` hands it the pipe of a
private tracefs instance (:class:`ebpf_lab.core.tracefs.PrintkInstance`) instead; the seed's
reading code stays as it is. :data:`SEED_LINES` turns the raw lines into a frame.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ebpf_lab.core.tracefs import PrintkInstance, parse_line
from ebpf_lab.show.frames import Schema

#: one trace line as BCC's ``trace_fields()`` splits it: who printed (task name and its kernel
#: pid, i.e. the thread id), on which CPU, when (seconds of the instance's clock), and what
SEED_LINES = Schema(task="category", pid="int64", cpu="int64", seconds="float64", message="string")


@contextlib.contextmanager
def private_trace_pipe(b: Any) -> Iterator[Path]:
    """Make BCC's trace readers of ``b`` (``trace_print``, ``trace_readline``, ``trace_fields``)
    read a private tracefs instance instead of the global ``trace_pipe``; yields its path.

    The instance exists only inside the ``with`` block: enter it before attaching, so that no
    line of the run is missed. On leaving, BCC's file is closed and the instance removed, also
    when the block raises (e.g. KeyboardInterrupt). BCC opens its pipe non-blocking only when it
    opens the file itself; this one is always non-blocking, so ``trace_readline()`` returns an
    empty line at once when nothing is waiting.

    Example::

        with BPF(text=program) as b, private_trace_pipe(b):
            b.attach_tracepoint(tp="syscalls:sys_enter_execve", fn_name="hello")
            line = b.trace_readline(nonblocking=True)
    """
    if not hasattr(b, "tracefile"):
        raise TypeError(f"b must be a bcc.BPF object, got {type(b).__name__}")
    if b.tracefile is not None:
        raise ValueError("b already reads a trace pipe: use private_trace_pipe(b) before reading")
    with PrintkInstance() as instance:
        assert instance.fd is not None
        # trace_pipe opens only once (EBUSY): BCC gets a second descriptor of the same open file
        b.tracefile = os.fdopen(os.dup(instance.fd), "rb")
        try:
            yield instance.path / "trace_pipe"
        finally:
            if b.tracefile is not None:
                b.tracefile.close()  # before the instance goes: an open pipe keeps it busy
                b.tracefile = None


def trace_frame(lines: Iterable[bytes | str]) -> pd.DataFrame:
    """Raw ``trace_pipe`` lines (as ``trace_readline()`` returns them) as a :data:`SEED_LINES`
    frame; lines that are not ``bpf_trace_printk`` output are left out."""
    rows = []
    for raw in lines:
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        line = parse_line(text)
        if line is None:
            continue
        rows.append(
            {
                "task": line.comm,
                "pid": line.pid,
                "cpu": line.cpu,
                "seconds": line.ktime_ns / 1e9,
                "message": line.message,
            }
        )
    return SEED_LINES.frame(rows)


__all__ = ["SEED_LINES", "private_trace_pipe", "trace_frame"]
