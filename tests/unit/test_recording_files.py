"""Saved frames and recordings, as files: every dtype and attrs kind survives ``save``/``load``,
and a replay says what does not match. Pure code: no root, no BCC, no kernel programs (the
recordings of real runs are checked in ``tests/test_recordings.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ebpf_lab
from ebpf_lab.classroom import recordings
from ebpf_lab.core.attach import Alternative
from ebpf_lab.core.run import Collector, bounded_run


@pytest.fixture(autouse=True)
def live_afterwards():
    """Every test leaves the lab live (no recording or replay in force)."""
    recordings.off()
    yield
    recordings.off()


class _Nothing(Collector):
    pass


def test_attrs_of_every_kind_round_trip(tmp_path: Path) -> None:
    inner = pd.DataFrame({"pid": pd.array([1, 2], dtype="int64"), "c": pd.Categorical(["a", "b"])})
    df = pd.DataFrame(
        {
            "time": pd.to_datetime([1_700_000_000_123_456_789, 1_700_000_001_000_000_001]),
            "user": pd.Categorical(["root", "nobody"], categories=["nobody", "root", "unused"]),
            "n": pd.array([1, None], dtype="Int64"),
            "text": pd.array(["x", None], dtype="string"),
            "rate": [0.5, np.nan],
        }
    )
    df.attrs = {
        "kernel": "6.1",
        "duration": 1.5,
        "interrupted": False,
        "stopped_by": None,
        "lost": np.int64(3),
        "odd_lines": ["a", "b"],
        "when": pd.Timestamp("2025-01-02 03:04:05.000000006"),
        "took": pd.Timedelta(seconds=2),
        "pair": (1, "x"),
        "ids": {3, 1},
        "raw": b"\x00\x01",
        "nested": {"inner": inner, 7: "seven"},
        "series": pd.Series([1, 2], name="s"),
    }
    path = ebpf_lab.save(df, tmp_path / "run.parquet")
    back = ebpf_lab.load(path)
    pd.testing.assert_frame_equal(df, back, check_exact=True)
    assert back["time"].dtype == "datetime64[ns]"  # nanoseconds survive
    assert list(back["user"].cat.categories) == ["nobody", "root", "unused"]
    attrs = dict(back.attrs)
    pd.testing.assert_frame_equal(attrs.pop("nested")["inner"], inner)
    pd.testing.assert_series_equal(attrs.pop("series"), df.attrs["series"])
    expected = {k: v for k, v in df.attrs.items() if k not in ("nested", "series")}
    assert attrs == expected
    assert back.attrs["nested"][7] == "seven"
    assert isinstance(back.attrs["pair"], tuple) and isinstance(back.attrs["when"], pd.Timestamp)


def test_save_and_load_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="DataFrame"):
        ebpf_lab.save([1, 2], tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="does not exist"):
        ebpf_lab.save(pd.DataFrame({"a": [1]}), tmp_path / "nowhere" / "x.parquet")
    with pytest.raises(ValueError, match="is a directory"):
        ebpf_lab.save(pd.DataFrame({"a": [1]}), tmp_path)
    with pytest.raises(FileNotFoundError, match="no saved frame"):
        ebpf_lab.load(tmp_path / "missing.parquet")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_replay_names_a_mismatch_and_a_missing_recording(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no recording in"):
        ebpf_lab.replay(tmp_path / "none")
    frame = pd.DataFrame({"a": [1]})
    rec = ebpf_lab.record(tmp_path)
    rec.record_run("hello", frame, None)
    recordings.off()
    ebpf_lab.replay(tmp_path)
    with pytest.raises(recordings.ReplayError, match="call 1 is exec_counts.*has hello there"):
        bounded_run(
            name="exec_counts",
            source="int f(void *ctx) { return 0; }",
            alternatives=[Alternative("tracepoint", [])],
            collector=_Nothing(),
            duration=1,
        )


def test_recording_again_replaces_the_old_one(tmp_path: Path) -> None:
    rec = ebpf_lab.record(tmp_path)
    rec.record_run("hello", pd.DataFrame({"a": [1]}), None)
    old_files = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert old_files
    ebpf_lab.record(tmp_path)
    assert not list(tmp_path.glob("*.parquet"))
    manifest = json.loads((tmp_path / recordings.MANIFEST).read_text())
    assert manifest["entries"] == [] and manifest["kernel"] == os.uname().release


def test_replay_banner_in_ipython_formatters(tmp_path: Path, monkeypatch) -> None:
    """The formatters are registered in an IPython shell and removed again by off()."""
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # nobody's HOME is not writable
    shell = InteractiveShell.instance()
    rec = ebpf_lab.record(tmp_path)
    rec.record_run("hello", pd.DataFrame({"a": [1]}), None)
    recordings.off()
    try:
        ebpf_lab.replay(tmp_path)
        data, _ = shell.display_formatter.format(pd.DataFrame({"x": [1, 2]}))
        assert "REPLAY of a run recorded on" in data["text/html"]
        assert data["text/plain"].startswith("[REPLAY of a run recorded on")
        recordings.off()
        data, _ = shell.display_formatter.format(pd.DataFrame({"x": [1, 2]}))
        assert "REPLAY" not in data["text/html"] and "REPLAY" not in data["text/plain"]
    finally:
        recordings.off()
        InteractiveShell.clear_instance()


def test_live_only_cells_are_skipped_only_while_replaying(tmp_path):
    """A ``# live only`` cell (BCC used directly) prints why instead of running in a replay."""
    from ebpf_lab.classroom import recordings
    from ebpf_lab.classroom.replay_banner import skip_live_only

    cell = ["# live only: BCC itself\n", "raise SystemExit('ran')\n"]
    assert skip_live_only(cell) == cell  # live: unchanged
    assert skip_live_only(["x = 1\n"]) == ["x = 1\n"]
    (tmp_path / recordings.MANIFEST).write_text('{"format": 1, "entries": []}')
    recordings.replay(tmp_path)
    try:
        assert skip_live_only(cell) == [
            "print('REPLAY: this cell runs on a live kernel only (BCC itself)')\n"
        ]
        assert skip_live_only(["x = 1\n"]) == ["x = 1\n"]  # other cells run
    finally:
        recordings.off()


def test_live_only_cells_run_outside_a_recording(tmp_path):
    """While recording, a ``# live only`` cell's calls are not saved (a replay skips the cell)."""
    from types import SimpleNamespace

    from ebpf_lab.classroom import recordings
    from ebpf_lab.classroom.replay_banner import _post_run_cell, _pre_run_cell
    from ebpf_lab.core import replay

    session = recordings.record(tmp_path)
    try:
        _pre_run_cell(SimpleNamespace(raw_cell="x = 1\n"))
        assert replay.current() is session  # an ordinary cell is recorded
        _post_run_cell()
        _pre_run_cell(SimpleNamespace(raw_cell="# live only: BCC itself\nx = 1\n"))
        assert replay.current() is None and replay.mode() == "live"
        _post_run_cell()
        assert replay.current() is session
    finally:
        recordings.off()
