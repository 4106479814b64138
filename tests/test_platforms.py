"""``scripts/setup.sh`` runs the platform check (``ebpf_lab/kernel/platforms.py``) with the system
Python right after installing bcc: on this machine, it must say what ``platforms.check()`` says.

Its parsing of recorded distributions is checked in ``tests/unit/test_platform_parsing.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ebpf_lab.kernel import platforms

REPO = Path(__file__).resolve().parents[1]


def test_setup_runs_the_same_check_with_the_system_python():
    """What scripts/setup.sh runs right after installing bcc (stdlib + bcc only, no venv)."""
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "ebpf_lab/kernel/platforms.py" in setup
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    out = subprocess.run(
        [python, "-I", str(REPO / "ebpf_lab" / "kernel" / "platforms.py"), "--prefix", "[setup] "],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = platforms.check()
    assert out.returncode == (1 if report.errors else 0), out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("[setup] ")
    assert report.summary in first
