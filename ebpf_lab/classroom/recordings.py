"""Saved runs, recordings and replays: show a lesson on a machine that cannot run eBPF.

One frame::

    ebpf_lab.save(df, "exec-counts.parquet")   # Parquet: dtypes and df.attrs kept
    df = ebpf_lab.load("exec-counts.parquet")

A whole notebook: record it where eBPF works, replay it anywhere::

    ebpf_lab.record("recordings/02")   # from now on every bounded run is saved, in call order
    ...                                # run the notebook as usual
    ebpf_lab.replay("recordings/02")   # on the projector: the same calls return those frames
    ebpf_lab.recordings.off()          # back to the live kernel

or, without touching the notebook, set ``EBPF_LAB_RECORD=dir`` or ``EBPF_LAB_REPLAY=dir`` in the
environment of the Jupyter server (``sudo env EBPF_LAB_REPLAY=/abs/dir make lab``). When the
server tells the kernel which notebook it runs (``JPY_SESSION_NAME``) and ``dir/<notebook name>``
exists (or, when recording, always), each notebook gets its own subdirectory.

How it works. Every lesson function goes through one place, the bounded-run core
(:func:`ebpf_lab.core.run.bounded_run`), and that is where recording and replay are hooked:

* record: the core runs as usual and saves the frame it returns (or the exception it raises)
  as the next entry of the recording;
* replay: the core returns the next recorded frame (or raises the recorded exception) without
  compiling, loading or attaching anything. It still runs the call's ``workload``, so what the
  notebook itself does with it (``done.update(runs=execs(...))``) happens; the lab's known
  workloads (those of :mod:`ebpf_lab.workloads` marked :func:`replayable`) are recorded and replayed
  the same way, so the truth a notebook compares with is the truth of the recorded run (the
  same pids) and nothing needs root.

A replay says so: every returned frame has ``df.attrs["replay"]``, the progress widget reads
"REPLAY", and in Jupyter every DataFrame, Series and matplotlib figure displayed while replaying
carries a banner "REPLAY of a run recorded on <kernel> at <time>" (figures get it drawn in).

What is not replayed: things that probe the kernel directly rather than through a bounded run
(``doctor()``, ``verify()``), and the checks a lesson function makes before its bounded run
(e.g. that it runs as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ebpf_lab.classroom.replay_banner import (
    banner_text,
    install_display,
    install_live_only,
    uninstall_display,
    uninstall_live_only,
)
from ebpf_lab.classroom.saved import (
    FORMAT,
    _decode,
    _encode,
    _kernel_release,
    _now_iso,
    _read_parquet,
    _write_parquet,
    load,
    save,
)
from ebpf_lab.core import replay as _replay
from ebpf_lab.core.live import make_live
from ebpf_lab.core.replay import bypass, current, mode, replayable
from ebpf_lab.core.run import WorkloadThread

#: the lab's known workloads (in :mod:`ebpf_lab.workloads`) that a recording keeps and a replay
#: returns instead of running them; add a name here when a new workload returns a DataFrame

#: the manifest of a recording directory
MANIFEST = "recording.json"

ENV_RECORD = "EBPF_LAB_RECORD"
ENV_REPLAY = "EBPF_LAB_REPLAY"


__all__ = [
    "ReplayError",
    "Recording",
    "bypass",
    "current",
    "load",
    "mode",
    "off",
    "record",
    "replay",
    "replayable",
    "save",
]


class ReplayError(RuntimeError):
    """A replay cannot go on: the notebook asks for a run the recording does not have."""


# ---------------------------------------------------------------- recordings


@dataclass
class Recording:
    """A recording directory being written (``mode="record"``) or played back (``"replay"``)."""

    path: Path
    mode: str
    manifest: dict[str, Any] = field(default_factory=dict)
    cursor: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- describing
    def entries(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The recorded entries (``kind``: ``"run"`` or ``"workload"``), in call order."""
        return [e for e in self.manifest.get("entries", []) if kind is None or e["kind"] == kind]

    @property
    def banner(self) -> str:
        return banner_text(self.manifest.get("kernel"), self.manifest.get("recorded_at"))

    def summary(self) -> pd.DataFrame:
        """One row per recorded call: kind, name, file, rows, saved_at, error."""
        rows = [
            {
                "kind": e["kind"],
                "name": e["name"],
                "file": e.get("file"),
                "rows": e.get("rows"),
                "saved_at": e.get("saved_at"),
                "error": (e.get("error") or {}).get("type"),
            }
            for e in self.entries()
        ]
        return pd.DataFrame(rows, columns=["kind", "name", "file", "rows", "saved_at", "error"])

    def __repr__(self) -> str:
        runs = len(self.entries("run"))
        if self.mode == "record":
            return f"<recording to {self.path}: {runs} run(s) so far>"
        done = self.cursor.get("run", 0)
        return f"<{self.banner}: {runs} run(s) in {self.path}, {done} replayed so far>"

    def _repr_markdown_(self) -> str:
        if self.mode == "record":
            return (
                f"**Recording** every bounded run into `{self.path}` "
                f"({len(self.entries('run'))} so far). Replay it with "
                f'`ebpf_lab.replay("{self.path}")`.'
            )
        return (
            f"**{self.banner}** — {len(self.entries('run'))} run(s) from `{self.path}`; the lesson "
            "functions return these frames instead of touching the kernel."
        )

    # -- writing
    def _write_manifest(self) -> None:
        tmp = self.path / f".{MANIFEST}.tmp{os.getpid()}"
        tmp.write_text(json.dumps(self.manifest, indent=1) + "\n")
        os.replace(tmp, self.path / MANIFEST)

    def _add(
        self,
        kind: str,
        name: str,
        value: Any = None,
        error: BaseException | None = None,
        **extra: Any,
    ) -> None:
        with self.lock:
            n = len(self.entries(kind)) + 1
            entry: dict[str, Any] = {"kind": kind, "name": name, "saved_at": _now_iso(), **extra}
            if error is not None:
                entry["error"] = _exception_record(error)
            elif isinstance(value, pd.DataFrame):
                safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
                entry["file"] = f"{kind}-{n:03d}-{safe}.parquet"
                entry["rows"] = len(value)
                _write_parquet(value, str(self.path / entry["file"]))
            else:
                entry["value"] = _encode(value)
            self.manifest["entries"].append(entry)
            self._write_manifest()

    # -- reading
    def _next(self, kind: str, name: str) -> dict[str, Any]:
        with self.lock:
            entries = self.entries(kind)
            i = self.cursor.get(kind, 0)
            what = "bounded run" if kind == "run" else "workload"
            if i >= len(entries):
                raise ReplayError(
                    f"the recording in {self.path} has {len(entries)} {what}(s), and this is "
                    f"call {i + 1} ({name}). The notebook now runs more than when it was "
                    f'recorded: record it again with ebpf_lab.record("{self.path}") on a machine '
                    "with eBPF, or restart the kernel to replay from the start."
                )
            entry = entries[i]
            if entry["name"] != name:
                raise ReplayError(
                    f"{what} call {i + 1} is {name}, but the recording in {self.path} has "
                    f"{entry['name']} there: the notebook changed since it was recorded (or its "
                    "cells ran in another order). Restart the kernel and run the cells top to "
                    "bottom, or record the notebook again."
                )
            self.cursor[kind] = i + 1
            return entry

    def _value(self, entry: dict[str, Any]) -> Any:
        if "error" in entry:
            raise _rebuild_exception(entry["error"])
        if "file" in entry:
            return _read_parquet(str(self.path / entry["file"]))
        return _decode(entry.get("value"))

    # -- the hooks
    def record_run(
        self,
        name: str,
        frame: pd.DataFrame | None,
        error: BaseException | None,
        *,
        workload_ran: bool = False,
    ) -> None:
        """Save what one bounded run returned (or raised) as the next entry."""
        self._add("run", name, frame, error, workload_ran=workload_ran)

    def replay_run(
        self,
        *,
        name: str,
        duration: float,
        workload: Callable[[], Any] | None,
        live: bool | None,
        on_workload_result: Callable[[Any], None] | None,
    ) -> pd.DataFrame:
        """The next recorded frame of ``name``, after running ``workload`` (replayed helpers)."""
        entry = self._next("run", name)
        kernel = self.manifest.get("kernel")
        banner = banner_text(kernel, self.manifest.get("recorded_at"))
        view = make_live(f"REPLAY {name}"[:24], duration, live)
        view.open()
        view.update(0.0, "REPLAY: replaying the workload")
        if workload is not None and entry.get("workload_ran", True):
            worker = WorkloadThread(workload, view.stop)
            worker.start()
            try:
                while worker.is_alive():
                    worker.join(0.1)
                    view.pump()
            except KeyboardInterrupt:
                view.stop.set()
                worker.join()
            if worker.error is not None and "error" not in entry:
                view.close("REPLAY: the workload failed")
                raise worker.error
            if on_workload_result is not None and worker.error is None:
                on_workload_result(worker.result)
        if "error" in entry:
            view.close(f"{banner}: it failed")
        frame = self._value(entry)  # a recorded exception is raised here
        kernel = frame.attrs.get("kernel") or kernel
        banner = banner_text(kernel, self.manifest.get("recorded_at"))
        view.update(duration)
        view.close(f"{banner}: {len(frame)} rows")
        frame.attrs["replay"] = {
            "recording": str(self.path),
            "call": self.cursor.get("run", 0),
            "kernel": kernel,
            "recorded_at": entry.get("saved_at"),
            "banner": banner,
        }
        return frame

    def record_workload(self, name: str, result: Any, error: BaseException | None) -> None:
        self._add("workload", name, result, error)

    def replay_workload(self, name: str) -> Any:
        return self._value(self._next("workload", name))


def _exception_record(exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    state = {k: v for k, v in vars(exc).items() if not k.startswith("_")}
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "args": _encode(list(exc.args)),
        "state": _encode(state),
        "text": str(exc),
    }


def _rebuild_exception(record: dict[str, Any]) -> BaseException:
    """The recorded exception, rebuilt as the same class with the same attributes."""
    import importlib

    module, _, qualname = record["type"].rpartition(".")
    cls: Any = None
    with contextlib.suppress(Exception):
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return RuntimeError(f"(recorded {record['type']}) {record['text']}")
    exc = cls.__new__(cls)
    BaseException.__init__(exc, *_decode(record["args"]))
    with contextlib.suppress(Exception):
        exc.__dict__.update(_decode(record["state"]))
    return exc


def record(path: str | os.PathLike[str]) -> Recording:
    """From now on save every bounded run (and known workload) into the directory ``path``.

    Starts a new recording: a recording already in ``path`` is replaced. Run the notebook as
    usual; each lesson call adds a Parquet file and a line in ``path/recording.json``. Replay it
    with :func:`replay` (or ``EBPF_LAB_REPLAY=path``); stop with :func:`off`.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    old = root / MANIFEST
    if old.is_file():
        with contextlib.suppress(Exception):
            for entry in json.loads(old.read_text()).get("entries", []):
                if entry.get("file") and "/" not in entry["file"]:
                    (root / entry["file"]).unlink(missing_ok=True)
    session = Recording(
        root,
        "record",
        {
            "format": FORMAT,
            "kernel": _kernel_release(),
            "recorded_at": _now_iso(),
            "entries": [],
        },
    )
    session._write_manifest()
    _replay.install(session)
    uninstall_display()
    install_live_only()
    return session


def replay(path: str | os.PathLike[str]) -> Recording:
    """Make the bounded lesson functions return the frames recorded in ``path``, in call order.

    Nothing is compiled, loaded or attached: this works on a machine without eBPF. Every frame
    returned has ``df.attrs["replay"]``; in Jupyter every frame, Series and figure displayed
    from now on carries a "REPLAY of a run recorded on <kernel> at <time>" banner. Restarting
    the kernel (or calling ``replay`` again) starts from the first recorded call.

    Raises:
        FileNotFoundError: ``path`` holds no recording (no ``recording.json``).
    """
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"no recording in {root} (no {MANIFEST}); make one on a machine with eBPF with "
            f'ebpf_lab.record("{root}") or EBPF_LAB_RECORD={root}'
        )
    manifest = json.loads(manifest_path.read_text())
    session = Recording(root, "replay", manifest)
    _replay.install(session)
    install_display()
    install_live_only()
    return session


def off() -> Recording | None:
    """Stop recording or replaying; the lesson functions use the kernel again. Returns the
    recording that was in force (None if there was none)."""
    session = _replay.install(None)
    uninstall_display()
    uninstall_live_only()
    return session  # type: ignore[return-value]


# ---------------------------------------------------------------- start-up


def _env_dir(value: str, recording: bool) -> Path:
    """``value``, or ``value/<notebook name>`` when the server says which notebook runs."""
    root = Path(value)
    notebook = os.environ.get("JPY_SESSION_NAME")
    if notebook:
        sub = root / Path(notebook).stem
        if recording or (sub / MANIFEST).is_file():
            return sub
    return root


def _from_environment() -> None:
    replay_dir = os.environ.get(ENV_REPLAY)
    record_dir = os.environ.get(ENV_RECORD)
    if replay_dir:
        replay(_env_dir(replay_dir, recording=False))
    elif record_dir:
        record(_env_dir(record_dir, recording=True))


_from_environment()
