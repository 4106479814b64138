"""scripts/setup.sh for real, as root: it is safe to rerun, and what it sets up is right.

Runs the script twice. The first run brings the machine to the lab's state (on a set-up machine it
only checks); the second must find nothing to do and change nothing we can observe.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
SETUP = REPO / "scripts" / "setup.sh"
KERNEL_JSON = VENV / "share" / "jupyter" / "kernels" / "ebpf-lab" / "kernel.json"
STAMP = VENV / ".ebpf-lab-installed"
PIP_LOG = VENV / "pip-install.log"
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
FOREIGN_BCC = f"""
import importlib.metadata as md
for d in md.distributions():
    where = str(d.locate_file(""))
    if (d.metadata["Name"] or "").lower() == "bcc" and where != {DEBIAN_DIST_PACKAGES!r}:
        print(where)
"""

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="scripts/setup.sh installs packages and mounts tracefs: run as root"
)


def run_setup() -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        ["bash", str(SETUP)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, f"setup.sh failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out


def file_state(path: Path) -> tuple[str, int] | None:
    if not path.exists():
        return None
    return path.read_text(), path.stat().st_mtime_ns


def snapshot() -> dict[str, object]:
    build = Path(f"/lib/modules/{os.uname().release}/build")
    mounts = sorted(
        (fields[1], fields[2])
        for fields in (line.split() for line in Path("/proc/self/mounts").read_text().splitlines())
        if fields[2] in ("tracefs", "debugfs", "securityfs")
    )
    dpkg = subprocess.run(["dpkg", "-l"], capture_output=True, text=True, check=True).stdout
    freeze = subprocess.run(
        [str(VENV / "bin" / "python"), "-m", "pip", "freeze", "--all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {
        "headers link": (
            os.readlink(build) if build.is_symlink() else None,
            os.path.realpath(build),
        ),
        "mounts": mounts,
        "stamp": file_state(STAMP),
        "pip log": file_state(PIP_LOG),
        "kernel.json": file_state(KERNEL_JSON),
        "dpkg -l": dpkg,
        "pip freeze": freeze,
        "venv python": os.path.realpath(VENV / "bin" / "python"),
    }


@pytest.fixture(scope="module")
def two_runs() -> dict[str, object]:
    first = run_setup()
    before = snapshot()
    second = run_setup()
    after = snapshot()
    return {"first": first, "second": second, "before": before, "after": after}


def test_second_run_has_nothing_to_do(two_runs) -> None:
    second = two_runs["second"]
    assert "nothing to do" in second.stdout, second.stdout
    assert "WARNING" not in second.stdout


def test_second_run_changes_nothing(two_runs) -> None:
    before, after = two_runs["before"], two_runs["after"]
    for key in before:
        assert before[key] == after[key], f"setup.sh's second run changed {key}"


def test_setup_result(two_runs) -> None:
    snap = two_runs["after"]
    mounted = {point for point, _ in snap["mounts"]}
    assert "/sys/kernel/tracing" in mounted or "/sys/kernel/debug/tracing" in mounted
    assert "/sys/kernel/debug" in mounted
    assert Path(f"/lib/modules/{os.uname().release}/build").exists()
    assert snap["stamp"] is not None
    assert (VENV / "pyvenv.cfg").read_text().count("include-system-site-packages = true") == 1


def test_kernelspec(two_runs) -> None:
    spec = json.loads(KERNEL_JSON.read_text())
    assert spec["display_name"] == "Python 3 (ebpf-lab)"
    assert spec["language"] == "python"
    assert spec["argv"][0] == str(VENV / "bin" / "python")
    assert spec["argv"][1:3] == ["-m", "ipykernel_launcher"]
    assert "{connection_file}" in spec["argv"]
    # the venv's own jupyter finds it
    listed = subprocess.run(
        [str(VENV / "bin" / "jupyter"), "kernelspec", "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    specs = json.loads(listed)["kernelspecs"]
    assert Path(specs["ebpf-lab"]["resource_dir"]) == KERNEL_JSON.parent
    # and the kernel's python has what the notebooks import
    subprocess.run(
        [spec["argv"][0], "-c", "import bcc, ebpf_lab, ipykernel, pandas, jupyter_ui_poll"],
        check=True,
        timeout=120,
    )


@pytest.mark.parametrize("python", ["/usr/bin/python3", str(VENV / "bin" / "python")])
def test_no_pypi_bcc(two_runs, python: str) -> None:
    """PyPI's "bcc" is an unrelated project. The only bcc allowed is Debian's python3-bpfcc."""
    out = subprocess.run(
        [python, "-m", "pip", "show", "bcc"], capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        assert "not found" in out.stderr.lower(), out.stderr
        return
    locations = [
        line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("Location: ")
    ]
    assert locations == [DEBIAN_DIST_PACKAGES], f"{python} sees a non-Debian bcc:\n{out.stdout}"
    # pip shows the first "bcc" on the path; look for any other one too
    others = subprocess.run(
        [python, "-c", FOREIGN_BCC], capture_output=True, text=True, check=True
    ).stdout.split()
    assert others == [], f"{python} sees PyPI's bcc at {others}"
    owner = subprocess.run(
        ["dpkg", "-S", f"{DEBIAN_DIST_PACKAGES}/bcc"], capture_output=True, text=True
    )
    assert owner.returncode == 0 and owner.stdout.startswith("python3-bpfcc"), owner.stdout
    where = subprocess.run(
        [python, "-c", "import bcc; print(bcc.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where.startswith(f"{DEBIAN_DIST_PACKAGES}/bcc/"), where
