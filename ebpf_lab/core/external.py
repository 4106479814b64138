"""Programs that another tool loads: bpftrace, a libbpf loader, run inside one bounded run.

Some lessons compare the lab's BCC programs with the same measurement made by another tool:
a bpftrace one-liner, or a CO-RE object loaded by a small libbpf loader. Such a tool compiles,
loads and attaches its programs itself, in its own process. :class:`ExternalTracer` says how to
start it and how it tells that its probes are attached (a line it prints, e.g. from bpftrace's
``BEGIN`` probe); :func:`ebpf_lab.core.run.bounded_run` runs it in place of a BCC program
(``RunSpec(tracer=...)``): same deadline, workload, Stop button, recording and replay. The
collector reads the tool's output lines (``ctx.bpf`` is the :class:`TracerProcess`).

Every exit path ends the process: SIGINT first (bpftrace prints its maps then), SIGKILL after
``stop_timeout``. Its programs and maps belong to its file descriptors, so they leave the kernel
with it; :meth:`TracerProcess.program_ids` names them while it runs.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ebpf_lab.core.errors import ProgramError, UnsupportedFeature
from ebpf_lab.core.kernelfs import held_prog_ids

#: how many lines of the tool's stderr an error message quotes
_STDERR_TAIL = 25


@dataclass(frozen=True)
class ExternalTracer:
    """How to run a tool that loads its own BPF programs.

    Args:
        argv: the command (``argv[0]`` is looked up on PATH unless it is a path).
        label: the run's ``attrs["attach"]`` (e.g. ``"bpftrace"``, ``"libbpf"``).
        ready: the line (stripped) the tool prints on stdout once its probes are attached; the
            workload starts only then.
        install: what to install when ``argv[0]`` is missing (shown in the error).
        start_timeout: seconds to wait for ``ready`` (a bpftrace compile under emulation is slow).
        stop_timeout: seconds between SIGINT and SIGKILL at the end.
    """

    argv: Sequence[str]
    label: str
    ready: str = "ready"
    install: str = ""
    start_timeout: float = 180.0
    stop_timeout: float = 30.0

    def executable(self) -> str:
        """The path of ``argv[0]``; raises :class:`UnsupportedFeature` naming what to install."""
        if not self.argv:
            raise ValueError("ExternalTracer needs a command (argv)")
        prog = str(self.argv[0])
        found = prog if os.sep in prog and os.access(prog, os.X_OK) else shutil.which(prog)
        if not found:
            hint = f": {self.install}" if self.install else ""
            raise UnsupportedFeature(self.label, f"{prog} is not installed{hint}")
        return found

    def start(self, name: str) -> TracerProcess:
        """Start the tool and wait for its ready line; on failure it is gone and this raises."""
        proc = TracerProcess(self, name)
        try:
            proc.wait_ready()
        except BaseException:
            proc.stop()
            raise
        return proc


class TracerProcess:
    """A running :class:`ExternalTracer`: its stdout lines arrive in a queue, stderr is kept."""

    def __init__(self, tracer: ExternalTracer, name: str) -> None:
        self.tracer = tracer
        self.name = name
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        argv = [tracer.executable(), *map(str, tracer.argv[1:])]
        # its own session: a terminal's Ctrl-C reaches us, and we end it in order
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._readers = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.lines.put)),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.stderr.append)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    @staticmethod
    def _pump(stream, put) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            put(line.rstrip("\n"))
        stream.close()

    @property
    def pid(self) -> int:
        """The tool's process id."""
        return self.popen.pid

    def _failure(self, what: str) -> ProgramError:
        tail = "\n".join(self.stderr[-_STDERR_TAIL:])
        return ProgramError("load", f"{self.tracer.label} ({self.name}) {what}", tail)

    def wait_ready(self) -> None:
        """Block until the ready line; raises ProgramError if the tool exits or times out first.

        Lines printed before the ready line are dropped (bpftrace's "Attaching N probes...").
        """
        deadline = time.monotonic() + self.tracer.start_timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    self._readers[1].join(1)
                    raise self._failure(
                        f"exited with status {self.popen.returncode} before its probes were "
                        "attached"
                    ) from None
                continue
            if line.strip() == self.tracer.ready:
                return
        raise self._failure(
            f"did not say {self.tracer.ready!r} within {self.tracer.start_timeout:g} s"
        )

    def read_lines(self, timeout: float) -> list[str]:
        """The output lines that arrived, waiting up to ``timeout`` seconds for the first."""
        out: list[str] = []
        try:
            out.append(self.lines.get(timeout=timeout) if timeout > 0 else self.lines.get_nowait())
        except queue.Empty:
            return out
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.lines.get_nowait())
        return out

    def program_ids(self) -> set[int]:
        """Ids of the BPF programs the tool holds open now (from its fds' ``prog_id``)."""
        return held_prog_ids(self.pid)

    def stop(self) -> int:
        """End the tool (SIGINT, then SIGKILL after ``stop_timeout``) and collect its output.

        Returns its exit status; safe to call more than once. When it returns, the reader
        threads have queued every line the tool wrote.
        """
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGINT)
            try:
                self.popen.wait(self.tracer.stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        for reader in self._readers:
            reader.join(5)
        return self.popen.returncode
