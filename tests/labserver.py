"""Starting scripts/lab.sh the way the README says (`PORT=... bash scripts/lab.sh`), for tests.

Shared by tests/test_lab_server.py (what keeps the root server safe) and tests/test_browser.py (the
lab as a learner meets it, in a real browser). :class:`Lab` runs the script in its own session
with a pty as stdin, as from a terminal, keeps its output and reads the token it prints.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
LAB_SH = REPO / "scripts" / "lab.sh"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LAB_", "JUPYTER_", "EBPF_LAB_"))
    }
    env.pop("PORT", None)
    env.update(extra)
    return env


def as_from_a_terminal() -> None:
    """What an interactive shell does for a foreground job: SIGINT at its default.

    A background job of a non-interactive shell inherits SIGINT ignored, and a process can't
    undo that through bash; the instructor's Ctrl-C comes from a terminal, so test that case.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Lab:
    """scripts/lab.sh in its own session with a pty as stdin (as from a terminal), output kept."""

    def __init__(self, port: int, **env: str) -> None:
        self.port = port
        master, slave = pty.openpty()
        self.pty_master = master
        self.proc = subprocess.Popen(
            ["bash", str(LAB_SH)],
            cwd=REPO,
            env=lab_env(PORT=str(port), **env),
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=as_from_a_terminal,
        )
        os.close(slave)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def token(self) -> str:
        m = re.search(r"\?token=([0-9a-f]+)", self.output)
        assert m, f"lab.sh printed no URL with a token:\n{self.output}"
        return m.group(1)

    def get(self, path: str, token: str | None = None) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if token is not None:
            req.add_header("Authorization", f"token {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"lab.sh exited with {self.proc.returncode}:\n{self.output}")
            try:
                self.get("/api/kernels")
                if "?token=" in self.output:
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.25)
        pytest.fail(
            f"JupyterLab did not answer on port {self.port} in {START_TIMEOUT}s:\n" + self.output
        )

    def stop(self) -> None:
        """Always called: kill whatever is left of the process group, and what it left behind."""
        try:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                # a killed server can't remove its runtime files (they hold the token)
                for name in (
                    f"jpserver-{self.proc.pid}.json",
                    f"jpserver-{self.proc.pid}-open.html",
                ):
                    (runtime_dir() / name).unlink(missing_ok=True)
        except ProcessLookupError:
            pass
        finally:
            try:  # anything else left in the group (kernels)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(self.pty_master)
            self._reader.join(5)


def runtime_dir() -> Path:
    out = subprocess.run(
        [str(VENV / "bin" / "jupyter"), "--runtime-dir"],
        env=lab_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())
