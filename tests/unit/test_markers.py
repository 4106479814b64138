"""The suite's markers (tests/conftest.py): ``slow`` picks the long tests, which still run by
default, so that ``pytest -m "not slow"`` is a quick kernel run."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def collected(*args: str) -> list[str]:
    """The test ids ``pytest --collect-only`` lists for ``args`` (collecting needs no root)."""
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return [line for line in res.stdout.splitlines() if "::" in line]


def test_slow_is_registered_and_not_deselected_by_default(pytestconfig):
    assert any(m.startswith("slow:") for m in pytestconfig.getini("markers"))
    assert "-m" not in pytestconfig.getini("addopts")


def test_the_slow_tests_are_marked():
    """The 200 reliability cycles (and the check after them), setup run twice, every notebook,
    the browser: exactly these are ``slow``."""
    ids = collected("-m", "slow")
    files = {i.split("::")[0] for i in ids}
    assert files == {
        "tests/test_reliability.py",
        "tests/test_setup.py",
        "tests/test_notebooks.py",
        "tests/test_browser.py",
    }
    reliability = [i.split("::")[1] for i in ids if i.startswith("tests/test_reliability.py")]
    cycles = [r for r in reliability if r.startswith("test_cycle[")]
    assert len(cycles) == int(os.environ.get("EBPF_LAB_CYCLES", "200"))
    assert set(reliability) - set(cycles) == {"test_after_all_cycles"}
