"""The seed's three BCC scripts, as the notebooks run them: exact counts, nothing left loaded.

Notebooks 01, 02 and 03 each have cells tagged ``seed`` that run the seed's script (hello.py,
hello-map.py, hello-buffer.py) nearly verbatim, bounded, against a known workload, and assert
the exact count. These tests run those very cells (read from the notebook, so there is no second
copy of the seed to drift apart) in this process, where the ``no_leaks`` fixture sees every
program, map, perf event, fd and tracefs instance: the notebook test only sees what the Jupyter
kernel left after it exited. A Ctrl-C in the middle of a seed cell must detach too.
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from conftest import REPO, needs_root, send_sigint

import ebpf_lab
from ebpf_lab.core.links import programs_held
from ebpf_lab.lessons.l01_hello.seed import SEED_LINES, private_trace_pipe, trace_frame
from ebpf_lab.workloads import execs

NOTEBOOKS = {
    "01": "01-hello.ipynb",
    "02": "02-maps-exec-per-uid.ipynb",
    "03": "03-perf-buffer.ipynb",
}


def seed_cells(lesson: str) -> list[str]:
    """The source of the notebook's code cells tagged ``seed``, in order."""
    nb = json.loads((REPO / "notebooks" / NOTEBOOKS[lesson]).read_text())
    return [
        "".join(cell["source"])
        for cell in nb["cells"]
        if cell["cell_type"] == "code" and "seed" in cell["metadata"].get("tags", [])
    ]


def notebook_namespace(**overrides) -> dict:
    """What the notebooks' first cell defines (the names the seed cells use)."""
    return {"ebpf_lab": ebpf_lab, "execs": execs, "pd": pd, "os": os, **overrides}


def run_cells(cells: list[str], namespace: dict) -> dict:
    for n, source in enumerate(cells):
        exec(compile(source, f"<seed cell {n}>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("lesson", sorted(NOTEBOOKS))
def test_each_notebook_has_a_run_and_a_check(lesson):
    cells = seed_cells(lesson)
    # the seed's run (with its BPF(...) and a bounded loop), a computed sentence, the check
    assert len(cells) == 3, cells
    run, prose, check = cells
    code = "\n".join(line.partition("#")[0] for line in run.splitlines())  # comments say it
    assert "with BPF(text=program" in code and "while True" not in code
    assert "attach_kprobe(event=syscall" in run and "attach_tracepoint(" in run
    assert "choose_exec_attach" in run, "the attach point is detected, not written down"
    assert "as_sentence(choice.reason" in prose
    assert check.count("assert ") >= 3


@needs_root
def test_hello_seed_prints_one_marked_line_per_exec(no_leaks):
    ns = run_cells(seed_cells("01"), notebook_namespace())
    plan, ours = ns["seed_plan"], ns["ours"]
    assert list(plan.uid.unique()) == [ns["seed_uid"]] and len(plan) == 5
    assert sorted(ours.pid) == sorted(plan.pid)
    assert (ours.message == f"Hello World! {ns['marker']}").all()
    assert list(ns["seed_df"].columns) == SEED_LINES.columns
    # the marker keeps other programs' lines out, and every execve (ours or not) printed one
    mine = ns["mine"]
    assert mine.pid.is_unique and set(plan.pid) <= set(mine.pid)
    assert ns["choice"].kind in ("kprobe", "tracepoint")


@needs_root
def test_hello_map_seed_counts_running_totals(no_leaks):
    ns = run_cells(seed_cells("02"), notebook_namespace())
    uid = ns["seed_uid"]
    assert len(ns["seed_done"]["plan"]) == 6
    assert ns["seed_final"][uid] == 6
    assert len(ns["printed"]) == 3 and ns["seen"][-1] == 6
    # a UID nobody else uses: its entry exists only for the workload's execs
    assert list(ns["seed_done"]["plan"].uid.unique()) == [uid]


@needs_root
def test_hello_buffer_seed_sends_one_event_per_exec(no_leaks):
    ns = run_cells(seed_cells("03"), notebook_namespace())
    plan, ours = ns["seed_plan"], ns["ours"]
    assert len(plan) == 5 and sorted(ours.pid) == sorted(plan.pid)
    assert (ours.uid == ns["seed_uid"]).all()
    assert (ours.message == "Hello World").all()


def interrupting_execs(plan, **kw):
    """The workload, then Ctrl-C: SIGINT to this process while the seed cell is attached."""
    done = execs(plan, **kw)
    send_sigint()
    return done


@needs_root
@pytest.mark.parametrize("lesson", sorted(NOTEBOOKS))
def test_ctrl_c_in_a_seed_cell_leaves_nothing_loaded(lesson, no_leaks):
    run = seed_cells(lesson)[0]
    ns = notebook_namespace(execs=interrupting_execs)
    with pytest.raises(KeyboardInterrupt):
        run_cells([run], ns)
    assert programs_held() == [], "cleanup() closed the program"
    # no_leaks: no program, map, perf event, fd or tracefs instance of this process remains


def test_private_trace_pipe_refuses_what_is_not_a_bpf_object(no_leaks):
    with pytest.raises(TypeError, match=r"b must be a bcc\.BPF object, got dict"):
        with private_trace_pipe({}):
            pass


def test_trace_frame_parses_trace_pipe_lines():
    lines = [
        b"          python-28077   [001] ...21 14035.646368: bpf_trace_printk: Hello World! ab12",
        b"CPU:1 [LOST 3 EVENTS]",
        "  tmux: server-9  (      9) [000] d..3. 7.000001: bpf_trace_printk: other",
    ]
    df = trace_frame(lines)
    assert list(df.columns) == SEED_LINES.columns
    assert df.dtypes.astype(str).to_dict() == {
        "task": "category",
        "pid": "int64",
        "cpu": "int64",
        "seconds": "float64",
        "message": "string",
    }
    assert df[["task", "pid", "cpu", "message"]].astype(object).values.tolist() == [
        ["python", 28077, 1, "Hello World! ab12"],
        ["tmux: server", 9, 0, "other"],
    ]
    assert df.seconds.tolist() == [14035.646368, 7.000001]
    assert len(trace_frame([])) == 0 and list(trace_frame([]).columns) == SEED_LINES.columns
