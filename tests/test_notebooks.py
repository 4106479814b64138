"""Every notebook runs top to bottom on the `ebpf-lab` kernel, on the real kernel, without error.

Notebooks check themselves: their cells compare what the kernel measured with what the known
workload did (``assert`` cells that a learner also reads). Here we also check that each notebook
produced the figures it promises.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import REPO, needs_root
from kernel_state import held, settle

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]-*.ipynb")) + [
    REPO / "notebooks" / "index.ipynb"  # the lesson index
]
KERNELSPEC_DIR = REPO / ".venv" / "share" / "jupyter"

pytestmark = needs_root


def _execute(path: Path) -> object:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_path = os.environ.get("JUPYTER_PATH", "")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(KERNELSPEC_DIR), env_path) if p)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = NotebookClient(
        nb,
        # a cell takes seconds here; under emulation (the kernel matrix's VMs without KVM) the
        # doctor's cell alone took over 10 minutes with a second VM on the same 2 cores
        timeout=1800,
        # a Jupyter kernel takes seconds to start here, over a minute under emulation
        startup_timeout=600,
        kernel_name="ebpf-lab",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return nb


def _images(nb) -> int:
    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "image/png" in out.get("data", {}):
                count += 1
    return count


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path):
    before = held()
    nb = _execute(path)
    errors = [
        out
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors, errors
    expected = json.loads(json.dumps(nb.metadata.get("ebpf_lab", {}))).get("figures", 0)
    assert _images(nb) >= expected, f"{path.name} promised {expected} figures"
    # save the executed copy for a human to look at (never committed)
    out_dir = REPO / "test-artifacts" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    import nbformat

    nbformat.write(nb, out_dir / path.name)
    # the notebook's kernel has exited; no tracefs instance or netns of the lab may remain
    after = settle(before, fds=False)
    assert not before.diff(after, fds=False), before.diff(after, fds=False)
