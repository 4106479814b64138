"""The workloads' pure parts: argument checks, plans, report parsing, rows, the public index.

No root, no BCC, no child process: every test here either calls pure logic or makes sure that a
bad argument is refused before anything could start (spawning is patched to fail).
"""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

import ebpf_lab
import ebpf_lab.workloads as workloads
from ebpf_lab.show.frames import Schema
from ebpf_lab.workloads import c_helpers, checks, cpu, fileio, gated, native, processes

ROOT = Path(__file__).resolve().parents[2]
#: modules that are the workloads' index: the package, and ebpf_lab.workload (its old name)
_INDEX = {"ebpf_lab.workloads", "ebpf_lab.workload"}


def _index_imports() -> set[str]:
    """The names ``ebpf_lab/workloads/__init__.py`` imports from its own modules: the index."""
    tree = ast.parse((ROOT / "ebpf_lab" / "workloads" / "__init__.py").read_text())
    return {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ebpf_lab.workl")
        for alias in node.names
    }


def _code_of(path: Path) -> list[str]:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return [path.read_text()]


def _taken_from_the_index() -> set[str]:
    """Every name notebooks, tests, benchmarks, scripts and the package take from the index:
    ``from ebpf_lab.workloads import name`` and ``<the module>.name``."""
    files = [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("tests/**/*.py")]
    files += [*ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py")]
    files += [p for p in ROOT.glob("ebpf_lab/**/*.py") if "workloads" not in p.parts]
    names: set[str] = set()
    for path in files:
        for code in _code_of(path):
            try:
                tree = ast.parse(code)
            except SyntaxError:  # a cell magic (%%ebpf ...) is not Python
                continue
            aliases = set(_INDEX)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    aliases |= {a.asname or a.name for a in node.names if a.name in _INDEX}
                elif isinstance(node, ast.ImportFrom) and node.module == "ebpf_lab":
                    found = {
                        a.asname or a.name
                        for a in node.names
                        if a.name in ("workloads", "workload")
                    }
                    aliases |= found
                elif isinstance(node, ast.ImportFrom) and node.module in _INDEX:
                    names |= {a.name for a in node.names}
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and ast.unparse(node.value) in aliases:
                    names.add(node.attr)
    return {n for n in names if not n.startswith("__")}


#: every name the index exports, as it imports them (not a copy of its ``__all__``)
PUBLIC = _index_imports()
#: the index's modules, which the package and tests may reach through it too
_MODULES = {p.stem for p in (ROOT / "ebpf_lab" / "workloads").glob("[!_]*.py")}

ALLOWED = sorted(os.sched_getaffinity(0))
#: a CPU number this process may not use (beyond every CPU it may)
NOT_ALLOWED = max(ALLOWED) + 1


# ---------------------------------------------------------------- the index


def test_the_index_reexports_exactly_the_public_names():
    assert sorted(workloads.__all__) == sorted(PUBLIC)
    taken = _taken_from_the_index() - _MODULES
    assert taken <= PUBLIC, f"taken from ebpf_lab.workloads but not exported: {taken - PUBLIC}"
    assert {"execs", "writes", "GatedChild", "MAX_GETPPID_CALLS"} <= taken
    for name in PUBLIC:
        assert getattr(workloads, name) is not None, name
    assert workloads.native is native


def test_the_old_alias_is_the_same_module():
    assert ebpf_lab.workload is workloads
    assert ebpf_lab.workload.execs is processes.execs


def test_the_index_names_every_public_function_and_class():
    doc = workloads.__doc__ or ""
    for name in PUBLIC - {n for n in PUBLIC if n.startswith("MAX_")}:
        assert f"`{name}`" in doc, f"{name} is missing from help(ebpf_lab.workloads)"


def test_workloads_with_a_recorded_result_are_replayable():
    marked = {
        name
        for name in PUBLIC
        if getattr(getattr(workloads, name), "__ebpf_lab_replayable__", False)
    }
    assert marked == {"execs", "writes", "reads", "getppid_loop", "busy_children"}


# ---------------------------------------------------------------- counts, seconds, threads


@pytest.mark.parametrize("value", [0, 1, 10])
def test_check_count_accepts_whole_numbers_in_range(value):
    assert checks.check_count(value, "n", 10) == value


@pytest.mark.parametrize("value", [-1, 11, 1.0, True, "3", None])
def test_check_count_refuses_the_rest(value):
    with pytest.raises(ValueError, match=r"n must be a whole number from 0 to 10"):
        checks.check_count(value, "n", 10)


def test_check_seconds_open_and_closed_at_zero():
    assert checks.check_seconds(1, "s", 60) == 1.0
    assert isinstance(checks.check_seconds(1, "s", 60), float)
    assert checks.check_seconds(60, "s", 60) == 60.0
    assert checks.check_seconds(0, "s", 60, zero=True) == 0.0
    with pytest.raises(ValueError, match=r"s must be a number in \(0, 60\], got 0"):
        checks.check_seconds(0, "s", 60)
    with pytest.raises(ValueError, match=r"s must be a number in \[0, 60\], got -0.5"):
        checks.check_seconds(-0.5, "s", 60, zero=True)
    for bad in (60.5, True, "1", None, float("nan")):
        with pytest.raises(ValueError):
            checks.check_seconds(bad, "s", 60)


def test_check_threads():
    assert checks.check_threads(1) == 1
    assert checks.check_threads(checks.MAX_READ_THREADS) == checks.MAX_READ_THREADS
    for bad in (0, checks.MAX_READ_THREADS + 1, 2.0, True, "2"):
        with pytest.raises(ValueError, match="threads must be a whole number from 1 to 64"):
            checks.check_threads(bad)


# ---------------------------------------------------------------- CPUs


def test_check_cpu():
    assert checks.check_cpu(None) is None
    assert checks.check_cpu(ALLOWED[0]) == ALLOWED[0]
    for bad in (NOT_ALLOWED, -1, True, "0", 0.0):
        with pytest.raises(ValueError, match="cpu must be one of the CPUs this process may use"):
            checks.check_cpu(bad)


def test_check_cpus_takes_distinct_allowed_cpus():
    assert checks.check_cpus(ALLOWED) == ALLOWED
    assert checks.check_cpus(tuple(ALLOWED[:1])) == ALLOWED[:1]


@pytest.mark.parametrize(
    "cpus, message",
    [
        ([], "non-empty list"),
        ("0", "non-empty list"),
        (0, "non-empty list"),
        (None, "non-empty list"),
        ([ALLOWED[0], ALLOWED[0]], "each CPU once"),
        ([NOT_ALLOWED], "may use"),
        ([None], "CPU numbers"),
        ([ALLOWED[0]] * (checks.MAX_LOOP_CPUS + 1), "at most 64"),
    ],
)
def test_check_cpus_refuses(cpus, message):
    with pytest.raises(ValueError, match=message):
        checks.check_cpus(cpus)


def test_check_cpu_list_allows_a_cpu_twice():
    assert checks.check_cpu_list([ALLOWED[0], ALLOWED[0]]) == [ALLOWED[0], ALLOWED[0]]


# ---------------------------------------------------------------- sizes and exec plans


def test_check_sizes():
    assert checks.check_sizes((1, 0, 4096)) == [1, 0, 4096]
    assert checks.check_sizes([]) == []
    assert checks.check_sizes([checks.MAX_IO_SIZE]) == [checks.MAX_IO_SIZE]
    for bad in ("abc", b"ab", 7, None):
        with pytest.raises(ValueError, match="sizes must be a list of byte counts"):
            checks.check_sizes(bad)
    for bad in ([-1], [checks.MAX_IO_SIZE + 1], [1.0], [True]):
        with pytest.raises(ValueError, match="each size must be a whole number of bytes"):
            checks.check_sizes(bad)
    with pytest.raises(ValueError, match="more than the limit"):
        checks.check_sizes([0] * (checks.MAX_CALLS + 1))


def test_check_plan_counts_the_execs():
    assert checks.check_plan({1000: 5, 65534: 3}) == 8
    assert checks.check_plan({1000: 0}) == 0


@pytest.mark.parametrize(
    "plan, message",
    [
        ({}, "non-empty mapping"),
        ([(1000, 1)], "non-empty mapping"),
        ({-1: 1}, "UID"),
        ({2**32 - 1: 1}, "UID"),
        ({1000: -1}, "whole number >= 0"),
        ({1000: 1.5}, "whole number >= 0"),
        ({1000: True}, "whole number >= 0"),
        ({1000: checks.MAX_EXECS, 1001: 1}, "more than the limit of 100000"),
    ],
)
def test_check_plan_refuses(plan, message):
    with pytest.raises(ValueError, match=message):
        checks.check_plan(plan)


def test_exec_order_one_uid_after_the_other_or_in_turn():
    plan = {1: 3, 2: 1, 3: 2}
    assert checks.exec_order(plan, False) == [1, 1, 1, 2, 3, 3]
    assert checks.exec_order(plan, True) == [1, 2, 3, 1, 3, 1]
    assert checks.exec_order({1: 0}, True) == []


def test_switching_uid_needs_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    checks.check_may_switch_to([1000], "x")  # its own UID: fine
    with pytest.raises(PermissionError, match="running as 1001 needs root"):
        checks.check_may_switch_to([1000, 1001], "running as 1001")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    checks.check_may_switch_to([1000, 1001], "running as 1001")


def test_nullable_ints_in_a_schema_keep_missing_values():
    shape = Schema(pid="int64", name=None, cpu="Int64")
    empty = shape.frame([])
    assert list(empty.columns) == ["pid", "name", "cpu"]
    assert str(empty["pid"].dtype) == "int64" and str(empty["cpu"].dtype) == "Int64"
    full = shape.frame([{"cpu": None, "name": "a", "pid": 3}])
    assert full["pid"].tolist() == [3] and full["name"].tolist() == ["a"]
    assert full["cpu"].isna().tolist() == [True]
    assert str(full["cpu"].dtype) == "Int64"


# ---------------------------------------------------------------- reports of the C helpers


def test_parse_loops_makes_one_row_per_cpu():
    df = c_helpers.parse_loops("0 5 100 2100\n1 5 200 1200\n", 4242, 5, [0, 1])
    assert df.to_dict("records") == [
        {"uid": 4242, "cpu": 0, "calls": 5, "start_ns": 100, "end_ns": 2100, "loop_seconds": 2e-6},
        {"uid": 4242, "cpu": 1, "calls": 5, "start_ns": 200, "end_ns": 1200, "loop_seconds": 1e-6},
    ]
    assert list(df.columns) == c_helpers.LOOPS_FRAME.columns
    assert str(df["cpu"].dtype) == "int64"


@pytest.mark.parametrize(
    "stdout", ["1 5 100 200\n0 5 100 200\n", "0 4 100 200\n1 5 100 200\n", "0 5 x 200\n", ""]
)
def test_parse_loops_refuses_a_report_that_is_not_the_plan(stdout):
    with pytest.raises(RuntimeError, match="getppid_loop reported"):
        c_helpers.parse_loops(stdout, 4242, 5, [0, 1])


def test_report_columns_of_the_reporting_children():
    read_loop = object.__new__(c_helpers.ReadLoopChild)
    assert read_loop._columns("2000000000 500000000\n") == {"loop_seconds": 2.0, "cpu_seconds": 0.5}
    nan = read_loop._columns(None)
    assert set(nan) == {"loop_seconds", "cpu_seconds"} and all(map(math.isnan, nan.values()))
    opens = object.__new__(fileio.OpensChild)
    assert opens._columns("1500000000") == {"loop_seconds": 1.5}
    assert math.isnan(opens._columns("")["loop_seconds"])


def test_opens_argv_with_and_without_the_gate():
    argv = fileio.opens_argv("/etc/hostname", "/nope", 3, 2, "/tmp/r")
    assert argv[1:4] == ["-I", "-S", "-c"]
    assert argv[5:] == ["/etc/hostname", "/nope", "3", "2", "/tmp/r"]
    assert fileio.opens_argv("/a", "/b", 1, 0, "/r", gate=False)[-1] == "nogate"


# ---------------------------------------------------------------- a released child's row


def _fake_child(stops_after: bool) -> gated.GatedChild:
    child = object.__new__(gated.GatedChild)
    child.pid, child.program, child.work = 42, "python: spin", {"spin_seconds": 0.5}
    child.stops_after = stops_after
    child.released_at, child.exited_at = 10.0, 12.5
    return child


def test_row_of_a_child_counts_from_its_release():
    outcome = gated._Outcome(
        child=_fake_child(False),
        returncode=0,
        before=(1_000_000_000, 100, 5),
        after=(1_600_000_000, 400_000_100, 9),
        work_end=None,
        context_switches=7,
    )
    assert outcome.row(scheduler=False) == {
        "pid": 42,
        "program": "python: spin",
        "spin_seconds": 0.5,
        "returncode": 0,
        "wall_seconds": 2.5,
        "cpu_seconds": 0.6,
        "context_switches": 7,
    }
    row = outcome.row(scheduler=True)
    assert list(row)[-3:] == ["run_delay_seconds", "timeslices", "context_switches"]
    assert row["run_delay_seconds"] == 0.4 and row["timeslices"] == 4


def test_row_of_a_child_that_stops_after_its_work_ends_there():
    outcome = gated._Outcome(
        child=_fake_child(True),
        returncode=0,
        before=(1_000_000_000, 0, 0),
        after=(1_700_000_000, 0, 0),
        work_end=(11.0, 1_500_000_000),
        context_switches=3,
    )
    row = outcome.row(scheduler=False)
    assert row["wall_seconds"] == 1.0
    assert row["cpu_seconds"] == 0.5
    assert row["exit_cpu_seconds"] == pytest.approx(0.2)


# ---------------------------------------------------------------- bad input starts nothing


@pytest.fixture
def nothing_starts(monkeypatch):
    def must_not(*a, **k):
        raise AssertionError("something was started with bad input")

    monkeypatch.setattr(os, "posix_spawn", must_not)
    monkeypatch.setattr(subprocess, "Popen", must_not)
    monkeypatch.setattr(native, "build", must_not)


BAD = [
    (workloads.execs, ({1000: -1},), {}),
    (workloads.execs, ({1000: 1},), {"program": "true"}),
    (workloads.execs, ({1000: 1},), {"program": "/etc"}),
    (workloads.execs, ({1000: 1},), {"per_second": 0}),
    (workloads.execs, ({1000: 1},), {"per_second": True}),
    (workloads.fast_execs, (-1, 3), {}),
    (workloads.fast_execs, (1000, workloads.MAX_EXECS + 1), {}),
    (workloads.getppid_loop, (1000, 10, [NOT_ALLOWED]), {}),
    (workloads.getppid_loop, (1000, -1, [ALLOWED[0]]), {}),
    (workloads.writes, ([-1],), {}),
    (workloads.writes, ([1],), {"uid": -5}),
    (workloads.reads, ([1],), {"cpu": NOT_ALLOWED}),
    (workloads.getppid_child, (workloads.MAX_GETPPID_CALLS + 1,), {}),
    (workloads.spin_child, (0,), {}),
    (workloads.spin_child, (61,), {}),
    (workloads.mixed_cpu_child, (0, 0), {}),
    (workloads.mixed_cpu_child, (-1, 1), {}),
    (workloads.read_stream_child, (-1,), {}),
    (workloads.read_loop_child, (10,), {"threads": 0}),
    (workloads.read_loop_child, (-1,), {}),
    (workloads.opens_child, ("/nonexistent/file", 1), {}),
    (workloads.opens_child, ("/etc/hostname", 1), {"missing_path": "/etc/hostname"}),
    (workloads.opens_child, ("/etc/hostname", -1), {}),
    (workloads.busy_children, (0, 0.1), {}),
    (workloads.busy_children, (2, 0), {}),
    (workloads.busy_children, (2, 0.1), {"cpus": []}),
    (workloads.busy_children, (2, 0.1), {"cpus": [NOT_ALLOWED]}),
    (workloads.run_together, ([],), {}),
    (workloads.on_cpu, (None, lambda: None), {}),
    (workloads.on_cpu, (ALLOWED[0], "not callable"), {}),
    (workloads.unused_uid, (10, 5), {}),
]


@pytest.mark.parametrize(
    "fn, args, kwargs", BAD, ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(BAD)]
)
def test_bad_input_is_a_value_error_before_anything_starts(fn, args, kwargs, nothing_starts):
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    assert str(info.value)


def test_another_uid_without_root_is_a_permission_error(nothing_starts, monkeypatch):
    me = os.geteuid()
    other = me + 1 if me else 1000
    monkeypatch.setattr(os, "geteuid", lambda: me or 1)
    with pytest.raises(PermissionError, match="needs root"):
        workloads.execs({other: 1})
    with pytest.raises(PermissionError, match="needs root"):
        workloads.writes([1], uid=other)


# ---------------------------------------------------------------- no root needed


def test_on_cpu_pins_the_work_and_restores_the_cpu_set():
    before = os.sched_getaffinity(0)
    seen = workloads.on_cpu(ALLOWED[-1], lambda: os.sched_getaffinity(0))
    assert seen == {ALLOWED[-1]}
    assert os.sched_getaffinity(0) == before


def test_unused_uid_has_no_account_and_is_in_range():
    import pwd

    uid = workloads.unused_uid(300_000, 300_010)
    assert 300_000 <= uid < 300_010
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)


def test_run_together_refuses_a_child_that_already_ran():
    child = _fake_child(False)
    child._reaped = True
    with pytest.raises(RuntimeError, match="gated and not yet run"):
        workloads.run_together([child])
    assert cpu.MAX_BUSY_CHILDREN == workloads.MAX_BUSY_CHILDREN


# ---------------------------------------------------------------- the C helpers' cache key


def test_a_helper_is_rebuilt_when_its_source_or_the_shared_header_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "SOURCES_DIR", tmp_path)
    source, header = tmp_path / "loop.c", tmp_path / "lab.h"
    source.write_text('#include "lab.h"\nint main(void) { return 0; }\n')
    header.write_text("// v1\n")
    first = native.source_key(source)
    assert first == native.source_key(source)  # the same files: the same binary
    header.write_text("// v2\n")
    second = native.source_key(source)
    assert second != first
    source.write_text('#include "lab.h"\nint main(void) { return 1; }\n')
    assert native.source_key(source) not in {first, second}


def test_every_shipped_helper_includes_the_shared_header():
    sources = sorted(native.SOURCES_DIR.glob("*.c"))
    assert [p.stem for p in sources] == ["exec_loop", "getppid_loop", "probe_loop", "read_loop"]
    for path in sources:
        assert '#include "lab.h"' in path.read_text(), path.name
    assert native.source_path("read_loop") == native.SOURCES_DIR / "read_loop.c"
    with pytest.raises(ValueError, match="no C helper called 'lab'"):
        native.source_path("lab")


# ---------------------------------------------------------------- gated children (no root)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_a_child_that_stops_after_its_work_is_measured_to_that_stop():
    seen = []
    with workloads.spin_child(0.05, stop_after=True) as child:
        row = child.run(at_end=lambda: seen.append(_state(child.pid))).iloc[0]
    assert seen == ["T"]  # at_end ran once, with the child stopped after its spin
    assert row["returncode"] == 0 and row["spin_seconds"] == 0.05
    assert row["cpu_seconds"] >= 0.05  # the spin counts its own CPU time from the release
    assert row["exit_cpu_seconds"] > 0  # Python's exit came after, measured apart
    assert child.exited_at >= child.released_at + row["wall_seconds"]


def test_run_together_releases_every_child_at_the_same_moment():
    children = [workloads.getppid_child(10), workloads.getppid_child(20)]
    try:
        df = workloads.run_together(children)
    finally:
        for c in children:
            c.kill()
    assert df["pid"].tolist() == [c.pid for c in children]
    assert df["calls"].tolist() == [10, 20] and df["returncode"].tolist() == [0, 0]
    assert children[0].released_at == children[1].released_at
    assert list(df.columns)[-3:] == ["run_delay_seconds", "timeslices", "context_switches"]
    assert str(df["timeslices"].dtype) == "int64"


def test_a_gated_child_runs_once():
    with workloads.getppid_child(1) as child:
        assert child.run()["calls"].tolist() == [1]
        with pytest.raises(RuntimeError, match="has already run"):
            child.run()


def test_a_program_that_ends_before_its_gate_is_an_error():
    with pytest.raises(RuntimeError, match="ended before its gate"):
        workloads.GatedChild(["/bin/true"], program="true", work={})


def test_a_failing_child_is_an_error():
    argv = ["/bin/sh", "-c", "kill -STOP $$; exit 3"]
    with workloads.GatedChild(argv, program="sh: exit 3", work={}) as child:
        with pytest.raises(RuntimeError, match=r"sh: exit 3 \(pid \d+\) exited with 3"):
            child.run()
