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


def user_names(uids: Iterable[int]) -> pd.Categorical:
    """Names for a column of uids, as a pandas Categorical."""
    return pd.Categorical([user_name(int(u)) for u in uids])


def decode_c_string(raw: Any) -> str:
    """A NUL-terminated C ``char[]`` (bytes or ctypes array) as text."""
    data = bytes(raw)
    return data.split(b"\0", 1)[0].decode(errors="replace")


def typed_frame(
    rows: Sequence[dict[str, Any]] | dict[str, Any], columns: Sequence[str], dtypes: dict[str, str]
) -> pd.DataFrame:
    """Build a frame with exactly ``columns`` in order and the given dtypes (also when empty)."""
    df = pd.DataFrame(rows, columns=list(columns))
    for col, dtype in dtypes.items():
        if dtype == "time":
            df[col] = pd.to_datetime(df[col])
        else:
            df[col] = df[col].astype(dtype)
    return df
