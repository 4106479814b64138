"""pyproject.toml and environment.yml agree; notebooks are committed without outputs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
STRIP = REPO / "scripts" / "strip_notebooks.py"
SPEC = re.compile(
    r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*((?:>=|<|==)\s*[0-9][0-9A-Za-z.]*"
    r"(?:\s*,\s*(?:>=|<)\s*[0-9][0-9A-Za-z.]*)?)?\s*(?:#.*)?$"
)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'pandas>=1.5' -> ('pandas', '1.5'); 'x>=6.29,<7' -> ('x', '6.29,<7'): the minimum and
    any upper bound, which must be the same in both files."""
    m = SPEC.match(spec)
    assert m, f"unexpected requirement {spec!r}: use 'name', 'name>=version' or 'name>=a,<b'"
    constraint = m.group(2)
    if constraint is not None:
        constraint = re.sub(r"\s+", "", constraint).removeprefix(">=")
    return normalize(m.group(1)), constraint


def parse_environment_yml(text: str) -> dict:
    """Just enough YAML for environment.yml: top-level keys, lists of strings, one nested list."""
    data: dict = {}
    key = None
    nested = None
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if indent == 0:
            name, _, value = body.partition(":")
            key, nested = name.strip(), None
            data[key] = value.strip() or []
        elif body.startswith("- "):
            item = body[2:].strip()
            if item.endswith(":"):
                nested = {item[:-1]: []}
                data[key].append(nested)
                nested_indent = indent
            elif nested is not None and indent > nested_indent:
                next(iter(nested.values())).append(item)
            else:
                nested = None
                data[key].append(item)
        else:
            raise AssertionError(f"environment.yml line the test's parser does not know: {raw!r}")
    return data


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def environment() -> dict:
    text = (REPO / "environment.yml").read_text()
    data = parse_environment_yml(text)
    try:
        import yaml
    except ImportError:
        return data
    assert yaml.safe_load(text) == data, "the test's environment.yml parser disagrees with PyYAML"
    return data


def conda_specs(environment: dict) -> dict[str, str | None]:
    specs = {}
    for item in environment["dependencies"]:
        if isinstance(item, dict):
            continue
        name, minimum = parse_spec(item)
        specs[name] = minimum
    return specs


def test_environment_yml_matches_pyproject(pyproject: dict, environment: dict) -> None:
    project = pyproject["project"]
    wanted = dict(parse_spec(d) for d in project["dependencies"])
    wanted.update(parse_spec(d) for d in project["optional-dependencies"]["test"])
    conda = conda_specs(environment)
    python = conda.pop("python")
    conda.pop("pip")
    assert conda == wanted
    assert f">={python}" == project["requires-python"]


def test_environment_yml_installs_the_package(environment: dict) -> None:
    pip = [item for item in environment["dependencies"] if isinstance(item, dict)]
    assert pip == [{"pip": ["-e ."]}]
    assert environment["name"] == "ebpf-lab"
    assert environment["channels"] == ["conda-forge"]


def test_pypi_bcc_is_never_a_dependency(pyproject: dict, environment: dict) -> None:
    project = pyproject["project"]
    names = {parse_spec(d)[0] for d in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        names |= {parse_spec(d)[0] for d in extra}
    names |= set(conda_specs(environment))
    assert "bcc" not in names


def test_license_is_an_spdx_expression(pyproject: dict) -> None:
    assert pyproject["project"]["license"] == "Apache-2.0"
    # a string license (PEP 639) needs setuptools >= 77 to build
    build = dict(parse_spec(r) for r in pyproject["build-system"]["requires"])
    assert tuple(int(p) for p in build["setuptools"].split(".")) >= (77,)


def test_live_stop_button_dependency(pyproject: dict) -> None:
    names = {parse_spec(d)[0] for d in pyproject["project"]["dependencies"]}
    assert "jupyter-ui-poll" in names
    assert "nbstripout" not in names


NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "ebpf-lab", "run: make format"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs: run make format"
            assert cell.execution_count is None, f"cell {i} has an execution count: run make format"
        assert "execution" not in cell.metadata, f"cell {i} has execution metadata: make format"
    assert "widgets" not in nb.metadata, "saved widget state: run make format"


def test_all_notebooks_pass_strip_check() -> None:
    out = subprocess.run(
        [sys.executable, str(STRIP), "--check"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stdout + out.stderr


def dirty_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    code = nbformat.v4.new_code_cell("print('hi')", execution_count=3)
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    code.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    code.metadata["tags"] = ["keep-me"]
    nb.cells = [nbformat.v4.new_markdown_cell("# title"), code]
    return nb


def test_strip_notebooks_script(tmp_path: Path) -> None:
    path = tmp_path / "dirty.ipynb"
    nbformat.write(dirty_notebook(), path)

    def strip(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(STRIP), *args, str(path)], capture_output=True, text=True
        )

    before = path.read_text()
    check = strip("--check")
    assert check.returncode == 1 and "dirty.ipynb" in check.stdout
    assert path.read_text() == before  # --check writes nothing

    assert strip().returncode == 0
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = nb.cells[1]
    assert code.outputs == [] and code.execution_count is None
    assert code.source == "print('hi')"
    assert code.metadata == {"tags": ["keep-me"]}
    assert nb.metadata.kernelspec.name == "ebpf-lab"
    assert "widgets" not in nb.metadata
    assert nb.cells[0].source == "# title"

    mtime = path.stat().st_mtime_ns
    assert strip("--check").returncode == 0
    assert strip().returncode == 0
    assert path.stat().st_mtime_ns == mtime  # a clean notebook is not rewritten
