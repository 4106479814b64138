"""One frame on disk and back: :func:`save` / :func:`load` (Parquet, dtypes and ``df.attrs`` kept).

``df.attrs`` may hold what JSON cannot (frames, timestamps, bytes, tuples): :func:`_encode` and
:func:`_decode` carry them through the Parquet file's metadata. Recordings
(:mod:`ebpf_lab.classroom.recordings`) store their frames the same way.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

#: the key of the lab's own metadata in a Parquet file's schema metadata
PARQUET_KEY = b"ebpf_lab"
#: the version of the lab's metadata in saved frames and recordings
FORMAT = 1


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _kernel_release() -> str:
    return os.uname().release


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
