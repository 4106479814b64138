"""The package's shape: layers that only import downward, no import cycle, no oversized module.

Read from the source (every ``import``, lazy ones inside functions included), so it runs without
root and without BCC.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ebpf_lab"

#: bottom to top; a module may import its own layer and the layers below it
LAYERS = ["core", "kernel", "show", "workloads", "classroom", "lessons"]
#: the most lines one module may have
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The ebpf_lab modules ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports pkg.mod; ``from mod import name`` imports mod
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # the longest known module the target names (a name imported from a module is that
            # module)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None  # ebpf_lab itself, __main__: the public API on top
    return LAYERS.index(parts[1])


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def test_every_module_is_in_a_layer():
    outside = [
        n for n in modules() if layer(n) is None and n not in {"ebpf_lab", "ebpf_lab.__main__"}
    ]
    assert outside == [], f"modules outside the layer folders {LAYERS}: {outside}"


def test_layers_only_import_downward():
    wrong = []
    for name, targets in graph().items():
        mine = layer(name)
        if mine is None:
            continue
        for target in sorted(targets):
            theirs = layer(target)
            if theirs is None:
                wrong.append(f"{name} imports {target} (the package's top)")
            elif theirs > mine:
                wrong.append(f"{name} ({LAYERS[mine]}) imports {target} ({LAYERS[theirs]})")
    assert wrong == [], "\n".join(wrong)


def test_a_lesson_never_imports_another_lesson():
    wrong = []
    for name, targets in graph().items():
        if layer(name) != LAYERS.index("lessons") or name.count(".") < 2:
            continue
        mine = name.split(".")[2]
        for target in targets:
            parts = target.split(".")
            if len(parts) > 2 and parts[1] == "lessons" and parts[2] != mine:
                wrong.append(f"{name} imports {target}")
    assert wrong == [], "\n".join(wrong)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between modules (package __init__ files aside), or None."""
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state[nxt] == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state[nxt] == 0:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if state[node] == 0:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    mods = modules()

    def own_child(package: str, target: str) -> bool:
        return mods[package].name == "__init__.py" and target.startswith(package + ".")

    # a package's __init__ that re-exports its own modules is not a cycle with them
    edges = {
        name: {t for t in targets if not own_child(name, t)} for name, targets in graph().items()
    }
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_size(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES}): split it"
