"""The core's tracer path (``RunSpec(tracer=...)``): another tool loads its own BPF programs.

Run with bpftrace, the tool the lessons compare with, on this kernel: exact counts for a known
workload, the tool gone and its programs unloaded on every exit path, bad input named first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pandas as pd
import pytest
from conftest import needs_root
from kernel_state import global_prog_ids

from ebpf_lab.core.errors import ProgramError, UnsupportedFeature
from ebpf_lab.core.external import ExternalTracer, TracerProcess
from ebpf_lab.core.run import Collector, RunSpec, bounded_run
from ebpf_lab.workloads.processes import execs, unused_uid

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("bpftrace") is None, reason="bpftrace is not installed"),
]

READY = json.dumps({"type": "printf", "data": "ready\n"})


def prog_type(prog_id: int) -> str:
    out = subprocess.run(
        ["bpftool", "-j", "prog", "show", "id", str(prog_id)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return json.loads(out)["type"] if out else "gone"


def bpftrace(script: str) -> ExternalTracer:
    return ExternalTracer(
        argv=["bpftrace", "-f", "json", "-e", 'BEGIN { printf("ready\\n"); } ' + script],
        label="bpftrace",
        ready=READY,
        install="sudo apt-get install bpftrace",
    )


class Lines(Collector):
    """Keeps every JSON line the tool printed; remembers the tool's pid and programs."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.pid = 0
        self.progs: set[int] = set()

    def start(self, ctx) -> None:
        assert isinstance(ctx.bpf, TracerProcess)
        self.pid = ctx.bpf.pid
        self.progs = ctx.bpf.program_ids()
        self.types = sorted(prog_type(i) for i in self.progs)

    def poll(self, ctx, timeout: float) -> None:
        for line in ctx.bpf.read_lines(timeout):
            if line.strip():
                self.records.append(json.loads(line))

    def finish(self, ctx) -> pd.DataFrame:
        maps = [r["data"]["@"] for r in self.records if r["type"] == "map"]
        counts = maps[-1] if maps else {}
        return pd.DataFrame({"uid": [int(k) for k in counts], "execs": list(counts.values())})


def test_bpftrace_counts_exactly_the_execs_of_a_known_workload():
    uid = unused_uid()
    collector = Lines()
    df = bounded_run(
        RunSpec(
            name="bpftrace-execs",
            tracer=bpftrace(
                f"tracepoint:syscalls:sys_enter_execve /uid == {uid}/ {{ @ [uid] = count(); }}"
            ),
            collector=collector,
            duration=0.5,
            workload=lambda: execs({uid: 7}),
            live=False,
        )
    )
    assert df.set_index("uid")["execs"].to_dict() == {uid: 7}
    assert df.attrs["attach"] == "bpftrace"
    # while it ran, bpftrace held its programs; they left the kernel with it
    assert collector.types.count("tracepoint") == 1
    assert not collector.progs & global_prog_ids()
    with pytest.raises(ProcessLookupError):
        os.kill(collector.pid, 0)


def test_a_tool_that_fails_to_attach_raises_with_its_stderr_and_is_gone():
    before = global_prog_ids()
    with pytest.raises(ProgramError) as err:
        bounded_run(
            RunSpec(
                name="bpftrace-bad",
                tracer=bpftrace("tracepoint:no_such_group:no_such_event { @ = count(); }"),
                collector=Lines(),
                duration=0.5,
                live=False,
            )
        )
    assert "exited with status" in str(err.value)
    assert "no_such_event" in err.value.log
    assert global_prog_ids() <= before


def test_a_missing_tool_is_named_before_anything_starts():
    tracer = ExternalTracer(argv=["no-such-tracer-xyz"], label="xyz", install="apt-get install xyz")
    with pytest.raises(
        UnsupportedFeature, match="no-such-tracer-xyz is not installed: apt-get install xyz"
    ):
        bounded_run(
            RunSpec(name="missing", tracer=tracer, collector=Lines(), duration=0.5, live=False)
        )


def test_a_spec_with_both_a_tracer_and_c_source_is_refused():
    with pytest.raises(ValueError, match="no source to compile"):
        RunSpec(
            name="both",
            tracer=bpftrace("BEGIN { exit(); }"),
            source="int f() { return 0; }",
            collector=Lines(),
            duration=0.5,
        )
    with pytest.raises(ValueError, match="needs source and alternatives, or a tracer"):
        RunSpec(name="neither", collector=Lines(), duration=0.5)
