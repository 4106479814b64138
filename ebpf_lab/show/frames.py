"""Turning raw kernel records into tidy DataFrames: columns, dtypes, user names.

Conventions every lesson follows: snake_case columns; ``time`` is wall-clock ``datetime64[ns]``;
repeating strings (``comm``, ``user``, ``command``) are ``category``; ids are ``int64``.
"""

from __future__ import annotations

import functools
import pwd
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd


@functools.lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    """The passwd name for ``uid``, or the uid as text when there is none (e.g. ``"1000"``)."""
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except (KeyError, OverflowError, ValueError):
        return str(int(uid))


def decode_c_string(raw: Any) -> str:
    """A NUL-terminated C ``char[]`` (bytes or ctypes array) as text."""
    data = bytes(raw)
    return data.split(b"\0", 1)[0].decode(errors="replace")


def process_columns(
    to_time: Any, raw: pd.DataFrame, strings: dict[str, str] | None = None
) -> dict[str, Any]:
    """The columns every per-process event frame starts with, from the raw event fields.

    ``raw`` has ``ktime_ns``, ``pid``, ``ppid``, ``uid`` and raw C strings; the result has
    ``time`` (wall clock, through ``to_time``, e.g. ``RunContext.to_time``), ``pid``, ``ppid``,
    ``uid``, ``user`` and, for each ``{name: raw_column}`` in ``strings``, the decoded string.
    """
    columns: dict[str, Any] = {
        "time": to_time(raw["ktime_ns"]).to_numpy(),
        "pid": raw["pid"],
        "ppid": raw["ppid"],
        "uid": raw["uid"],
        "user": [user_name(u) for u in raw["uid"]],
    }
    for name, source in (strings or {}).items():
        columns[name] = [decode_c_string(v) for v in raw[source]]
    return columns


def require_columns(df: pd.DataFrame, columns: Iterable[str], who: str, made_by: str) -> None:
    """Raise ValueError unless ``df`` has ``columns``: ``"<who> needs <made_by> frame; missing
    [...]"`` (``made_by`` with its article, e.g. ``"a cpu_profile"``)."""
    missing = set(columns) - set(df.columns)
    if missing:
        raise ValueError(f"{who} needs {made_by} frame; missing {sorted(missing)}")


class Schema:
    """A frame's shape, written once: its columns in order, each with its dtype.

    ``"time"`` means wall-clock ``datetime64[ns]``; ``None`` keeps the column as built (objects
    such as lists). Every lesson's frame is made by its schema, so its columns and dtypes are the
    same whether the run saw a thousand events or none::

        EVENTS = Schema(time="time", pid="int64", comm="category")
        df = EVENTS.frame(rows)          # exactly these columns, in this order, these dtypes
        EVENTS.columns                   # ["time", "pid", "comm"]
    """

    def __init__(self, **dtypes: str | None) -> None:
        self.dtypes: dict[str, str | None] = dict(dtypes)

    @property
    def columns(self) -> list[str]:
        """The column names, in order."""
        return list(self.dtypes)

    def frame(self, rows: Sequence[dict[str, Any]] | dict[str, Any] = ()) -> pd.DataFrame:
        """A frame of ``rows`` (dicts, or a dict of columns) with exactly this schema."""
        df = pd.DataFrame(rows, columns=self.columns)
        for col, dtype in self.dtypes.items():
            if dtype == "time":
                df[col] = pd.to_datetime(df[col]).astype("datetime64[ns]")
            elif dtype is not None:
                df[col] = df[col].astype(dtype)
        return df

    def extend(self, **dtypes: str | None) -> Schema:
        """This schema with more columns after its own."""
        return Schema(**{**self.dtypes, **dtypes})

    def __repr__(self) -> str:
        return f"Schema({', '.join(f'{c}={t!r}' for c, t in self.dtypes.items())})"


#: the columns of an exec event frame (lesson 03's BCC program, lesson 15's CO-RE object):
#: the start of :func:`process_columns` plus the command (comm before the exec) and filename
EXEC_EVENTS = Schema(
    time="time",
    pid="int64",
    ppid="int64",
    uid="int64",
    user="category",
    command="category",
    filename="string",
)


def _flatten(value: Any, name: str) -> dict[str, Any]:
    """A ctypes value as ``{column: python value}``: struct fields (nested ones joined with
    ``_``), ``char[]`` as text, other arrays as ``name_0, name_1, ...``, numbers as ints."""
    import ctypes

    if isinstance(value, (ctypes.Structure, ctypes.Union)):
        out: dict[str, Any] = {}
        for field in value._fields_:
            fname = field[0]
            out.update(_flatten(getattr(value, fname), f"{name}_{fname}" if name else fname))
        return out
    if isinstance(value, ctypes.Array):
        if value._type_ is ctypes.c_char:
            return {name: decode_c_string(value)}
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{name}_{i}"))
        return out
    if isinstance(value, bytes):  # a c_char array field read through a Structure
        return {name: decode_c_string(value)}
    return {name: getattr(value, "value", value)}


def table_frame(table: Any) -> pd.DataFrame:
    """A BCC table (a BPF map) as a DataFrame: one row per entry, key columns then value columns.

    * An integer key is the column ``key``; a struct key gives one column per field (nested
      structs joined with ``_``); ``char[]`` fields become text.
    * An integer value is the column ``value``; a struct value gives one column per field.
    * Per-CPU maps (``BPF_PERCPU_ARRAY``, ``BPF_PERCPU_HASH``...) give one column per possible
      CPU: ``cpu0``, ``cpu1``, ... (for struct values ``<field>_cpu0``, ...).

    Arrays list every slot (zeros included: an array entry always exists); hashes list the
    entries present. Rows are sorted by key. The map is read once, entry by entry, while the
    kernel may still be writing it.

    Example::

        b = BPF(text=...)
        ebpf_lab.show.frames.table_frame(b["counts"])

    Raises:
        ValueError: ``table`` is not a key/value map (e.g. a perf or ring buffer).
    """
    if not hasattr(table, "Key") or not hasattr(table, "Leaf") or not hasattr(table, "items"):
        raise ValueError(f"table_frame needs a BCC key/value table, got {type(table).__name__}")
    kind = type(table).__name__
    if kind in ("PerfEventArray", "RingBuf", "StackTrace", "QueueStack", "ProgArray"):
        raise ValueError(f"a {kind} is not a key/value map that can be read as a frame")
    percpu = hasattr(table, "total_cpu") and hasattr(table, "sLeaf")
    leaf_type = table.sLeaf if percpu else table.Leaf
    key_cols = list(_flatten(table.Key(), "key" if not _is_struct(table.Key) else ""))
    leaf_cols = list(_flatten(leaf_type(), "value" if not _is_struct(leaf_type) else ""))
    if percpu:
        ncpu = int(table.total_cpu)
        leaf_cols = [
            (f"{col}_cpu{i}" if col != "value" else f"cpu{i}")
            for col in leaf_cols
            for i in range(ncpu)
        ]
    rows = []
    for key, leaf in table.items():
        row = _flatten(key, "key" if not _is_struct(table.Key) else "")
        if percpu:
            values = table.getvalue(key) if getattr(table, "reducer", None) else leaf
            for i in range(int(table.total_cpu)):
                for col, v in _flatten(
                    values[i], "value" if not _is_struct(leaf_type) else ""
                ).items():
                    row[f"{col}_cpu{i}" if col != "value" else f"cpu{i}"] = v
        else:
            row.update(_flatten(leaf, "value" if not _is_struct(leaf_type) else ""))
        rows.append(row)
    df = pd.DataFrame(rows, columns=key_cols + leaf_cols)
    if rows:
        df = df.sort_values(key_cols, kind="stable").reset_index(drop=True)
    df.attrs["map"] = getattr(table, "_name", None) or ""
    df.attrs["map_type"] = kind
    df.attrs["max_entries"] = int(getattr(table, "max_entries", 0))
    return df


def _is_struct(ctype: Any) -> bool:
    import ctypes

    return isinstance(ctype, type) and issubclass(ctype, (ctypes.Structure, ctypes.Union))
