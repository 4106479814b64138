"""Saved runs and replays: frames keep dtypes and attrs; a notebook recorded on the real kernel
replays where no BPF program can be loaded, and says REPLAY in every frame and plot it shows."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import REPO, needs_root, run_as_nobody

import ebpf_lab
from ebpf_lab.classroom import recordings
from ebpf_lab.core.errors import ProgramError
from ebpf_lab.core.run import Alternative, Collector, bounded_run
from ebpf_lab.workloads import execs

KERNELSPEC_DIR = REPO / ".venv" / "share" / "jupyter"
NOTEBOOK_02 = REPO / "notebooks" / "02-maps-exec-per-uid.ipynb"


@pytest.fixture(autouse=True)
def live_afterwards():
    """Every test leaves the lab live (no recording or replay in force)."""
    recordings.off()
    yield
    recordings.off()


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert dict(a.dtypes) == dict(b.dtypes)
    assert a.attrs == b.attrs


# ---------------------------------------------------------------- save / load


@needs_root
@pytest.mark.parametrize("lesson", ["exec_counts", "exec_events", "hello"])
def test_lesson_frames_round_trip(lesson: str, tmp_path: Path, fresh_uids, no_leaks) -> None:
    (uid,) = fresh_uids(1)
    run = {
        "exec_counts": lambda: ebpf_lab.exec_counts(
            duration=1, interval=0.5, workload=lambda: execs({uid: 3})
        ),
        "exec_events": lambda: ebpf_lab.exec_events(
            duration=1, buffer="ring", workload=lambda: execs({uid: 3})
        ),
        "hello": lambda: ebpf_lab.hello(duration=1, workload=lambda: execs({uid: 3})),
    }[lesson]
    df = run()
    assert len(df) and df.attrs["kernel"] == os.uname().release
    back = ebpf_lab.load(ebpf_lab.save(df, tmp_path / f"{lesson}.parquet"))
    assert_same(df, back)
    assert back["time"].dtype == "datetime64[ns]"
    assert any(isinstance(t, pd.CategoricalDtype) for t in back.dtypes)


# ---------------------------------------------------------------- record / replay in-process


class _Nothing(Collector):
    pass


@needs_root
def test_record_then_replay_returns_the_same_frames_and_errors(
    tmp_path: Path, fresh_uids, no_leaks
) -> None:
    (uid,) = fresh_uids(1)
    rec = ebpf_lab.record(tmp_path)
    done: dict = {}
    counted = ebpf_lab.exec_counts(
        duration=1, interval=0.5, workload=lambda: done.update(runs=execs({uid: 4}))
    )
    bad_c = "int broken(void *ctx) { return nope; }"
    alternatives = [Alternative("tp", [], "")]
    with pytest.raises(ProgramError) as live_error:
        bounded_run(
            name="broken", source=bad_c, alternatives=alternatives, collector=_Nothing(), duration=1
        )
    assert [(e["kind"], e["name"]) for e in rec.entries()] == [
        ("workload", "execs"),
        ("run", "exec_counts"),
        ("run", "broken"),
    ]
    assert recordings.off() is rec

    # a fresh replay, as a new kernel would start it
    replayed = ebpf_lab.replay(tmp_path)
    assert recordings.mode() == "replay"
    again: dict = {}
    frame = ebpf_lab.exec_counts(
        duration=1, interval=0.5, workload=lambda: again.update(runs=execs({uid: 4}))
    )
    info = frame.attrs.pop("replay")
    assert_same(counted, frame)
    assert info["kernel"] == os.uname().release and info["banner"].startswith("REPLAY of a run")
    # the workload's own record is the recorded one: same pids, so joins by pid still work
    pd.testing.assert_frame_equal(again["runs"], done["runs"])
    with pytest.raises(ProgramError) as replay_error:
        bounded_run(
            name="broken", source=bad_c, alternatives=alternatives, collector=_Nothing(), duration=1
        )
    assert replay_error.value.stage == live_error.value.stage
    assert replay_error.value.log == live_error.value.log
    assert "nope" in str(replay_error.value)
    # one call more than was recorded
    with pytest.raises(recordings.ReplayError, match="has 2 bounded run"):
        ebpf_lab.hello(duration=1)
    assert replayed.cursor == {"run": 2, "workload": 1}


# ---------------------------------------------------------------- a notebook, recorded and replayed


def _execute(nb: nbformat.NotebookNode, kernel_name: str, env: dict[str, str], jupyter_path: str):
    from nbclient import NotebookClient

    saved = {k: os.environ.get(k) for k in (*env, "JUPYTER_PATH", "MPLBACKEND")}
    os.environ.update(env)
    os.environ["JUPYTER_PATH"] = jupyter_path
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        client = NotebookClient(
            nb,
            timeout=600,
            kernel_name=kernel_name,
            resources={"metadata": {"path": str(NOTEBOOK_02.parent)}},
        )
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def _no_bpf_kernelspec(root: Path) -> str:
    """A kernelspec that starts the kernel as root *without any capability*: its process cannot
    call bpf() at all (no CAP_BPF / CAP_SYS_ADMIN / CAP_PERFMON), like a machine without eBPF."""
    spec = root / "kernels" / "ebpf-lab-no-bpf"
    spec.mkdir(parents=True)
    argv = [
        "setpriv",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--",
        sys.executable,
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    ]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "ebpf-lab, no BPF", "language": "python"})
    )
    return os.pathsep.join([str(root), str(KERNELSPEC_DIR)])


PROOF_CELL = """
import os
import re

from ebpf_lab.classroom import recordings

status = open("/proc/self/status").read()
cap_eff = int(re.search(r"CapEff:\\s*([0-9a-f]+)", status).group(1), 16)
held = 0
for fd in os.listdir("/proc/self/fdinfo"):
    try:
        info = open(f"/proc/self/fdinfo/{fd}").read()
    except OSError:
        continue
    held += sum(line.startswith(("prog_id:", "map_id:")) for line in info.splitlines())
try:  # the live kernel, on purpose: it must fail in this process
    with recordings.bypass():
        ebpf_lab.exec_counts(duration=0.5, interval=0.5)
    live = "loaded"
except Exception as exc:
    live = type(exc).__name__
print("PROOF", recordings.mode(), cap_eff, held, live)
"""


def _rich_outputs(nb: nbformat.NotebookNode):
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") in ("display_data", "execute_result"):
                yield i, cell, out


@needs_root
@pytest.mark.skipif(not Path("/usr/bin/setpriv").exists(), reason="needs setpriv (util-linux)")
def test_notebook_02_recorded_then_replayed_without_bpf(tmp_path: Path) -> None:
    recording = tmp_path / "recording"
    jupyter_path = os.pathsep.join([str(KERNELSPEC_DIR), os.environ.get("JUPYTER_PATH", "")])

    # 1. run it for real, recording
    live = _execute(
        nbformat.read(NOTEBOOK_02, as_version=4),
        "ebpf-lab",
        {"EBPF_LAB_RECORD": str(recording)},
        jupyter_path.rstrip(os.pathsep),
    )
    errors = [o for _, _, o in _rich_outputs(live) if o.get("output_type") == "error"]
    assert not errors
    manifest = json.loads((recording / recordings.MANIFEST).read_text())
    assert [(e["kind"], e["name"]) for e in manifest["entries"]] == [
        ("workload", "execs"),
        ("run", "exec_counts"),
        ("workload", "getppid_loop"),  # the counter race (section 6)
        ("run", "counter_race"),
        ("workload", "disassemble"),  # its bytecode (loading it needs root)
        ("workload", "final_source"),  # the C after BCC's rewrite (compiling it needs BPF)
        ("workload", "execs"),  # "The same with bpftrace": its workload and run
        ("run", "exec_counts_bpftrace"),
    ]

    # 2. replay it in a kernel process that cannot load BPF programs
    nb = nbformat.read(NOTEBOOK_02, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROOF_CELL))
    replayed = _execute(
        nb,
        "ebpf-lab-no-bpf",
        {"EBPF_LAB_REPLAY": str(recording)},
        _no_bpf_kernelspec(tmp_path / "jupyter"),
    )
    out_dir = REPO / "test-artifacts" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(replayed, out_dir / "02-maps-exec-per-uid.replay.ipynb")

    # the notebook's own checks passed (they compare the replayed counts with the replayed
    # workload), and the proof cell saw: replay mode, no capabilities, nothing held, and that
    # loading for real fails in this process
    streams = "".join(
        o.get("text", "") for c in replayed.cells for o in c.get("outputs", []) if "text" in o
    )
    proof = next(line for line in streams.splitlines() if line.startswith("PROOF"))
    _, mode, cap_eff, held, live_result = proof.split()
    assert (mode, cap_eff, held) == ("replay", "0", "0"), proof
    assert live_result != "loaded", proof

    # every frame, series and figure it displayed carries the banner
    checked = {"frame": 0, "series": 0, "figure": 0}
    for i, cell, out in _rich_outputs(replayed):
        data = out["data"]
        plain = data.get("text/plain", "")
        html = data.get("text/html", "")
        if "image/png" in data:
            kind = "figure"
            assert "REPLAY of a run recorded on" in plain, (i, plain)
        elif "<table" in html:
            kind = "frame"
            assert "REPLAY of a run recorded on" in html, (i, cell.source)
        elif "dtype:" in plain:
            kind = "series"
            assert "REPLAY of a run recorded on" in html + plain, (i, cell.source)
        else:
            continue
        assert os.uname().release in (plain + html), (i, plain)
        checked[kind] += 1
    assert checked["frame"] >= 2 and checked["series"] >= 1 and checked["figure"] >= 1, checked
    # the progress widget says REPLAY too
    state = replayed.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json")
    if state:
        labels = [
            m["state"].get("value", "")
            for m in state["state"].values()
            if m.get("model_name") == "LabelModel"
        ]
        assert any("REPLAY" in v for v in labels), labels


REPLAY_AS_NOBODY = """
import ebpf_lab
from ebpf_lab.workloads import execs
ebpf_lab.replay({path!r})
a = ebpf_lab.exec_counts(duration=0.5, interval=0.5, workload=lambda: execs({{{uid}: 3}}))
b = ebpf_lab.exec_events(duration=0.5, buffer="ring", workload=lambda: execs({{{uid}: 2}}))
c = ebpf_lab.hello(duration=0.5, workload=lambda: execs({{{uid}: 2}}))
print("REPLAYED", all("replay" in f.attrs for f in (a, b, c)),
      int(a[a.uid == {uid}].execs.sum()), int((b.uid == {uid}).sum()))
"""


@needs_root
def test_lessons_01_to_03_replay_as_an_unprivileged_user(tmp_path: Path, fresh_uids) -> None:
    """A recording made as root replays as uid 65534: no root, no BPF, same frames."""
    (uid,) = fresh_uids(1)
    recordings.record(tmp_path)
    try:
        ebpf_lab.exec_counts(duration=0.5, interval=0.5, workload=lambda: execs({uid: 3}))
        ebpf_lab.exec_events(duration=0.5, buffer="ring", workload=lambda: execs({uid: 2}))
        ebpf_lab.hello(duration=0.5, workload=lambda: execs({uid: 2}))
    finally:
        recordings.off()
    os.chmod(tmp_path, 0o755)
    for parent in tmp_path.parents:  # pytest's tmp dirs are private to root
        if parent == Path("/tmp") or parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o055)
    for f in tmp_path.iterdir():
        os.chmod(f, 0o644)
    out = run_as_nobody(REPLAY_AS_NOBODY.format(path=str(tmp_path), uid=uid))
    assert "REPLAYED True 3 2" in out.stdout, out.stderr
