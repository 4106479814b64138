"""Saved runs, recordings and replays: show a lesson on a machine that cannot run eBPF.

One frame::

    ebpf_lab.save(df, "exec-counts.parquet")   # Parquet: dtypes and df.attrs kept
    df = ebpf_lab.load("exec-counts.parquet")

A whole notebook: record it where eBPF works, replay it anywhere::

    ebpf_lab.record("recordings/02")   # from now on every bounded run is saved, in call order
    ...                                # run the notebook as usual
    ebpf_lab.replay("recordings/02")   # on the projector: the same calls return those frames
    ebpf_lab.classroom.recordings.off()          # back to the live kernel

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

import base64
import contextlib
import datetime as _dt
import functools
import html
import io
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

#: the lab's known workloads (in :mod:`ebpf_lab.workloads`) that a recording keeps and a replay
#: returns instead of running them; add a name here when a new workload returns a DataFrame

#: the manifest of a recording directory
MANIFEST = "recording.json"
#: the key of the lab's own metadata in a Parquet file's schema metadata
PARQUET_KEY = b"ebpf_lab"
FORMAT = 1

ENV_RECORD = "EBPF_LAB_RECORD"
ENV_REPLAY = "EBPF_LAB_REPLAY"


class ReplayError(RuntimeError):
    """A replay cannot go on: the notebook asks for a run the recording does not have."""


# ---------------------------------------------------------------- df.attrs <-> JSON


def _frame_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    _write_parquet(df, buf)
    return buf.getvalue()


def _encode(value: Any) -> Any:
    """``value`` as JSON, with tagged objects for what JSON lacks (decoded by :func:`_decode`)."""
    import numpy as np

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        return _encode(value.item())
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, pd.Timestamp) or isinstance(value, _dt.datetime):
        return {"__timestamp__": pd.Timestamp(value).isoformat()}
    if isinstance(value, (pd.Timedelta, _dt.timedelta)):
        return {"__timedelta__": int(pd.Timedelta(value).value)}
    if isinstance(value, pd.DataFrame):
        return {"__frame__": base64.b64encode(_frame_bytes(value)).decode()}
    if isinstance(value, pd.Series):
        frame = value.to_frame(name="__series__")
        return {"__series__": base64.b64encode(_frame_bytes(frame)).decode(), "name": value.name}
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"__set__": [_encode(v) for v in sorted(value, key=repr)]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v) for k, v in value.items()}
        return {"__dict__": [[_encode(k), _encode(v)] for k, v in value.items()]}
    return {"__repr__": repr(value)}


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__timestamp__" in value:
        return pd.Timestamp(value["__timestamp__"])
    if "__timedelta__" in value:
        return pd.Timedelta(value["__timedelta__"], unit="ns")
    if "__frame__" in value:
        return _read_parquet(io.BytesIO(base64.b64decode(value["__frame__"])))
    if "__series__" in value:
        frame = _read_parquet(io.BytesIO(base64.b64decode(value["__series__"])))
        return frame["__series__"].rename(value.get("name"))
    if "__bytes__" in value:
        return base64.b64decode(value["__bytes__"])
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__set__" in value:
        return {_decode(v) for v in value["__set__"]}
    if "__dict__" in value:
        return {_decode(k): _decode(v) for k, v in value["__dict__"]}
    if "__repr__" in value:
        return value["__repr__"]
    return {k: _decode(v) for k, v in value.items()}


# ---------------------------------------------------------------- one frame


def _write_parquet(df: pd.DataFrame, target: Any, extra: dict[str, Any] | None = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = df.copy(deep=False)
    plain.attrs = {}
    try:
        table = pa.Table.from_pandas(plain)
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError) as exc:
        raise ValueError(
            f"this frame cannot be stored as Parquet ({exc}); column names must be text and each "
            "column must hold one kind of value"
        ) from None
    meta = {
        "format": FORMAT,
        "attrs": _encode(dict(df.attrs)),
        "saved_at": _now_iso(),
        **(extra or {}),
    }
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[PARQUET_KEY] = json.dumps(meta).encode()
    table = table.replace_schema_metadata(schema_meta)
    # coerce nothing: nanosecond timestamps stay nanoseconds (Parquet format 2.6)
    pq.write_table(table, target, version="2.6", coerce_timestamps=None)


def _read_parquet(source: Any) -> pd.DataFrame:
    import pyarrow.parquet as pq

    table = pq.read_table(source)
    df = table.to_pandas()
    df.attrs = {}
    raw = (table.schema.metadata or {}).get(PARQUET_KEY)
    if raw is not None:
        meta = json.loads(raw)
        df.attrs = _decode(meta.get("attrs", {}))
    return df


def save(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Save one lesson frame as a Parquet file, keeping its dtypes and ``df.attrs``.

    Categories, datetimes (to the nanosecond), nullable and string columns come back as they
    were; ``df.attrs`` (what ran, on which kernel, how long...) is stored in the file's schema
    metadata, including nested frames, timestamps and tuples. Attribute values of other types
    come back as their ``repr`` text.

    Args:
        df: the frame, e.g. from :func:`ebpf_lab.exec_counts`.
        path: the file to write (conventionally ``*.parquet``); its directory must exist.

    Returns:
        The path written.

    Example::

        df = ebpf_lab.exec_counts(duration=5)
        ebpf_lab.save(df, "exec-counts.parquet")
        same = ebpf_lab.load("exec-counts.parquet")   # same.attrs["kernel"], same dtypes
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"save() stores a pandas DataFrame, got {type(df).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name such as {path}/run.parquet")
    if not path.parent.is_dir():
        raise ValueError(f"the directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        _write_parquet(df, str(tmp), {"kernel": _kernel_release()})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load a frame written by :func:`save`: the same columns, dtypes and ``df.attrs``.

    Raises:
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved frame at {path}")
    return _read_parquet(str(path))


# ---------------------------------------------------------------- recordings


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _kernel_release() -> str:
    return os.uname().release


def _pretty_time(iso: str | None) -> str:
    if not iso:
        return "an unknown time"
    try:
        t = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc)
        return t.strftime("%Y-%m-%d %H:%M:%S UTC")
    return t.strftime("%Y-%m-%d %H:%M:%S")


def banner_text(kernel: str | None, recorded_at: str | None) -> str:
    """The line a replayed output shows: ``REPLAY of a run recorded on <kernel> at <time>``."""
    where = kernel or "an unknown kernel"
    return f"REPLAY of a run recorded on {where} at {_pretty_time(recorded_at)}"


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
        from ebpf_lab.core.live import make_live
        from ebpf_lab.core.run import _WorkloadThread

        entry = self._next("run", name)
        kernel = self.manifest.get("kernel")
        banner = banner_text(kernel, self.manifest.get("recorded_at"))
        view = make_live(f"REPLAY {name}"[:24], duration, live)
        view.open()
        view.update(0.0, "REPLAY: replaying the workload")
        if workload is not None and entry.get("workload_ran", True):
            worker = _WorkloadThread(workload, view.stop)
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


_LOCK = threading.Lock()
_SESSION: Recording | None = None
_BYPASS = 0


def current() -> Recording | None:
    """The recording or replay in force (None: live, or inside :func:`bypass`)."""
    return None if _BYPASS else _SESSION


def mode() -> str:
    """``"live"``, ``"record"`` or ``"replay"``."""
    session = current()
    return "live" if session is None else session.mode


@contextlib.contextmanager
def bypass() -> Iterator[None]:
    """Run the block on the live kernel even while recording or replaying (used by checks)."""
    global _BYPASS
    with _LOCK:
        _BYPASS += 1
    try:
        yield
    finally:
        with _LOCK:
            _BYPASS -= 1


def record(path: str | os.PathLike[str]) -> Recording:
    """From now on save every bounded run (and known workload) into the directory ``path``.

    Starts a new recording: a recording already in ``path`` is replaced. Run the notebook as
    usual; each lesson call adds a Parquet file and a line in ``path/recording.json``. Replay it
    with :func:`replay` (or ``EBPF_LAB_REPLAY=path``); stop with :func:`off`.
    """
    global _SESSION
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
    with _LOCK:
        _SESSION = session
    _uninstall_display()
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
    global _SESSION
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"no recording in {root} (no {MANIFEST}); make one on a machine with eBPF with "
            f'ebpf_lab.record("{root}") or EBPF_LAB_RECORD={root}'
        )
    manifest = json.loads(manifest_path.read_text())
    session = Recording(root, "replay", manifest)
    with _LOCK:
        _SESSION = session
    _install_display()
    return session


def off() -> Recording | None:
    """Stop recording or replaying; the lesson functions use the kernel again. Returns the
    recording that was in force (None if there was none)."""
    global _SESSION
    with _LOCK:
        session, _SESSION = _SESSION, None
    _uninstall_display()
    return session


# ---------------------------------------------------------------- known workloads


def replayable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a known workload: while recording it saves its result, while replaying it
    returns the recorded result instead of running (so notebooks can still compare the
    kernel's story with the truth), and live it just runs."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = current()
        if session is None:
            return fn(*args, **kwargs)
        if session.mode == "replay":
            return session.replay_workload(name)
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            session.record_workload(name, None, exc)
            raise
        session.record_workload(name, result, None)
        return result

    wrapper.__ebpf_lab_replayable__ = True  # type: ignore[attr-defined]
    return wrapper


# ---------------------------------------------------------------- the banner in Jupyter

_DISPLAY: dict[str, Any] = {}
_FIGURE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "application/pdf")
_STYLE = (
    "background:#b22222;color:#fff;font-weight:bold;padding:3px 8px;margin:2px 0 4px 0;"
    "border-radius:3px;display:inline-block;font-family:sans-serif;font-size:12px"
)


def _banner_for(obj: Any) -> str:
    info = getattr(obj, "attrs", {}).get("replay") if hasattr(obj, "attrs") else None
    if isinstance(info, dict) and info.get("banner"):
        return str(info["banner"])
    session = _SESSION
    return session.banner if session is not None else banner_text(None, None)


def _html_banner(text: str) -> str:
    return f'<div class="ebpf-lab-replay" style="{_STYLE}">{html.escape(text)}</div>'


def _frame_html(df: pd.DataFrame) -> str:
    inner = df._repr_html_()
    if inner is None:
        inner = f"<pre>{html.escape(repr(df))}</pre>"
    return _html_banner(_banner_for(df)) + inner


def _series_html(s: pd.Series) -> str:
    return _html_banner(_banner_for(s)) + f"<pre>{html.escape(repr(s))}</pre>"


def _plain(obj: Any, p: Any, cycle: bool) -> None:
    p.text(f"[{_banner_for(obj)}]\n{obj!r}")


def _stamp_figure(fig: Any) -> None:
    text = _banner_for(None)
    if getattr(fig, "_ebpf_lab_replay_banner", None) == text:
        return
    fig.text(
        0.5,
        1.0,
        text,
        ha="center",
        va="bottom",
        fontsize=9,
        fontweight="bold",
        color="white",
        bbox={"facecolor": "#b22222", "edgecolor": "none", "pad": 3},
    )
    fig._ebpf_lab_replay_banner = text


def _figure_printer(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def printer(fig: Any) -> Any:
        _stamp_figure(fig)
        return original(fig)

    printer.__ebpf_lab_banner__ = True  # type: ignore[attr-defined]
    return printer


def _ensure_figure_banner(*_args: Any) -> None:
    """Wrap whatever prints matplotlib figures now (``%matplotlib inline`` may set it later)."""
    import sys

    if "matplotlib.figure" not in sys.modules or "shell" not in _DISPLAY:
        return
    from matplotlib.figure import Figure

    formatters = _DISPLAY["shell"].display_formatter.formatters
    for mime in _FIGURE_MIMES:
        fmt = formatters.get(mime)
        if fmt is None:
            continue
        try:
            current_printer = fmt.lookup_by_type(Figure)
        except KeyError:
            continue
        if getattr(current_printer, "__ebpf_lab_banner__", False):
            continue
        _DISPLAY.setdefault("figure", []).append((mime, current_printer))
        fmt.for_type(Figure, _figure_printer(current_printer))
    plain = formatters["text/plain"]
    if "figure_plain" not in _DISPLAY:
        _DISPLAY["figure_plain"] = plain.for_type(Figure, _plain)


def _install_display() -> None:
    """Register the REPLAY banner for frames, Series and figures in the running IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return
    shell = get_ipython()
    if shell is None or "shell" in _DISPLAY:
        return
    formatters = shell.display_formatter.formatters
    _DISPLAY["shell"] = shell
    _DISPLAY["types"] = []
    for mime, typ, fn in (
        ("text/html", pd.DataFrame, _frame_html),
        ("text/html", pd.Series, _series_html),
        ("text/plain", pd.DataFrame, _plain),
        ("text/plain", pd.Series, _plain),
    ):
        _DISPLAY["types"].append((mime, typ, formatters[mime].for_type(typ, fn)))
    shell.events.register("pre_execute", _ensure_figure_banner)
    _ensure_figure_banner()


def _uninstall_display() -> None:
    shell = _DISPLAY.pop("shell", None)
    if shell is None:
        return
    formatters = shell.display_formatter.formatters
    for mime, typ, old in _DISPLAY.pop("types", []):
        _restore(formatters[mime], typ, old)
    if "figure" in _DISPLAY or "figure_plain" in _DISPLAY:
        from matplotlib.figure import Figure

        for mime, old in _DISPLAY.pop("figure", []):
            _restore(formatters[mime], Figure, old)
        if "figure_plain" in _DISPLAY:
            _restore(formatters["text/plain"], Figure, _DISPLAY.pop("figure_plain"))
    with contextlib.suppress(ValueError):
        shell.events.unregister("pre_execute", _ensure_figure_banner)


def _restore(fmt: Any, typ: type, old: Any) -> None:
    if old is None:
        fmt.type_printers.pop(typ, None)
    else:
        fmt.for_type(typ, old)


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
