"""The frame schema every lesson's frame is made by (pure pandas: no root, no BCC)."""

from ebpf_lab.show.frames import Schema

EVENTS = Schema(time="time", pid="int64", comm="category", args=None)


def test_empty_frame_has_the_schema():
    df = EVENTS.frame([])
    assert list(df.columns) == ["time", "pid", "comm", "args"]
    assert str(df["time"].dtype) == "datetime64[ns]"
    assert str(df["pid"].dtype) == "int64"
    assert str(df["comm"].dtype) == "category"
    assert len(df) == 0


def test_rows_get_the_dtypes_and_order():
    rows = [
        {"comm": "sh", "pid": 7, "time": "2026-11-28 12:00:00", "args": ["a", "b"]},
        {"comm": "sh", "pid": 8, "time": "2026-11-28 12:00:01", "args": []},
    ]
    df = EVENTS.frame(rows)
    assert df.columns.tolist() == EVENTS.columns
    assert df["pid"].tolist() == [7, 8]
    assert df["comm"].cat.categories.tolist() == ["sh"]
    assert df["args"].tolist() == [["a", "b"], []]  # None: kept as built
    assert (df["time"].diff().dt.total_seconds().iloc[1]) == 1.0


def test_extend_adds_columns_after():
    more = EVENTS.extend(ppid="int64")
    assert more.columns == ["time", "pid", "comm", "args", "ppid"]
    assert EVENTS.columns == ["time", "pid", "comm", "args"]  # unchanged
    assert "ppid='int64'" in repr(more)
