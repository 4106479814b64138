"""Strip outputs from notebooks: outputs are never committed (the tests execute the notebooks).

    python scripts/strip_notebooks.py [--check] [NOTEBOOK ...]      (default: notebooks/*.ipynb)

Removes cell outputs, execution counts, per-cell execution metadata (timings nbclient and
JupyterLab record), collapsed/scrolled view state and saved widget state, and sets the kernelspec
to the lab's "ebpf-lab". A notebook that is already clean is not rewritten. With --check nothing is
written: the names of notebooks that need stripping are printed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
KERNELSPEC = {"name": "ebpf-lab", "display_name": "Python 3 (ebpf-lab)", "language": "python"}
CELL_METADATA_DROPPED = ("execution", "collapsed", "scrolled", "ExecuteTime")
NOTEBOOK_METADATA_DROPPED = ("widgets", "signature")


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of `nb` without outputs; `nb` itself is not changed."""
    nb = copy.deepcopy(nb)
    for key in NOTEBOOK_METADATA_DROPPED:
        nb.metadata.pop(key, None)
    nb.metadata["kernelspec"] = nbformat.from_dict(KERNELSPEC)
    for cell in nb.cells:
        for key in CELL_METADATA_DROPPED:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only report; exit 1 if any would change"
    )
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((REPO / "notebooks").glob("*.ipynb"))

    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        clean = strip(nb)
        if clean == nb:
            continue
        dirty.append(path)
        if args.check:
            print(f"{path}: has outputs or metadata to strip (run: make format)")
        else:
            nbformat.write(clean, path)
            print(f"{path}: stripped")
    if args.check and dirty:
        return 1
    if not dirty:
        print(f"{len(paths)} notebook(s) clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
