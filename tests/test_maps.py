"""Lesson 05 (maps) on the real kernel: exact counts from known write()/read() workloads."""

from __future__ import annotations

import ctypes
import os
from collections import Counter, OrderedDict

import pytest
from conftest import needs_root

import ebpf_lab
import ebpf_lab.core.run
from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.loader import compile_program, release
from ebpf_lab.show.frames import table_frame
from ebpf_lab.show.log2 import bucket_bounds, log2_bucket
from ebpf_lab.workloads import reads, writes

pytestmark = needs_root


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _possible_cpus() -> int:
    from bcc.utils import get_possible_cpus

    return len(get_possible_cpus())


def _kernel_at_least(major: int, minor: int) -> bool:
    parts = kernel.release().split(".")
    return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)


# ------------------------------------------------------------------------------ map_counts


def test_hash_counts_every_size_exactly(fresh_uids, no_leaks):
    (who,) = fresh_uids(1)
    sizes = [1, 1, 2, 3, 3, 3, 100, 4096, 0]
    box = {}
    df = ebpf_lab.map_counts(
        "hash", uid=who, duration=0.2, workload=lambda: box.update(done=writes(sizes, uid=who))
    )
    assert list(df.columns) == ["size", "calls"]
    assert dict(zip(df["size"], df["calls"])) == Counter(sizes)
    assert df["size"].is_monotonic_increasing
    assert str(df["size"].dtype) == str(df["calls"].dtype) == "int64"
    assert df.attrs["no_slot"] == 0
    assert df.attrs["map_type"] == "HashTable"
    assert df.attrs["kind"] == "hash" and df.attrs["uid"] == who
    assert df.attrs["attach"] == "tracepoint"
    done = box["done"]
    assert list(done["size"]) == sizes and (done["uid"] == who).all()


def test_full_hash_refuses_new_keys(fresh_uids, no_leaks):
    (who,) = fresh_uids(1)
    sizes = [5, 4, 3, 2, 1, 5]
    df = ebpf_lab.map_counts(
        "hash", uid=who, max_entries=3, duration=0.2, workload=lambda: writes(sizes, uid=who)
    )
    # the first three sizes got the three entries; 2 and 1 found the map full
    assert dict(zip(df["size"], df["calls"])) == {3: 1, 4: 1, 5: 2}
    assert df.attrs["no_slot"] == 2
    assert df.attrs["max_entries"] == 3


def test_array_lists_every_slot_and_counts_sizes_without_one(fresh_uids, no_leaks):
    (who,) = fresh_uids(1)
    sizes = [0, 1, 1, 7, 8, 100]
    df = ebpf_lab.map_counts(
        "array", uid=who, max_entries=8, duration=0.2, workload=lambda: writes(sizes, uid=who)
    )
    assert list(df["size"]) == list(range(8))  # an array always has all its slots
    assert dict(zip(df["size"], df["calls"])) == {0: 1, 1: 2, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 1}
    assert df.attrs["no_slot"] == 2  # 8 and 100 have no slot in an 8-slot array
    assert df.attrs["map_type"] == "Array"


@pytest.mark.parametrize("kind", ["percpu_hash", "percpu_array"])
def test_percpu_values_split_exactly_by_cpu(kind, fresh_uids, no_leaks):
    cpus = _cpus()
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to split a workload between")
    first, second = cpus[0], cpus[-1]
    (who,) = fresh_uids(1)
    on_first, on_second = [1, 1, 2, 5], [2, 3, 3, 3]

    def both() -> None:
        writes(on_first, uid=who, cpu=first)
        writes(on_second, uid=who, cpu=second)

    df = ebpf_lab.map_counts(kind, uid=who, max_entries=16, duration=0.2, workload=both)
    ncpu = _possible_cpus()
    assert list(df.columns) == ["size", *(f"cpu{i}" for i in range(ncpu)), "calls"]
    df = df[df["calls"] > 0].set_index("size")
    want_first, want_second = Counter(on_first), Counter(on_second)
    for size in sorted(set(on_first) | set(on_second)):
        row = df.loc[size]
        assert row[f"cpu{first}"] == want_first[size], (size, row)
        assert row[f"cpu{second}"] == want_second[size], (size, row)
        others = [f"cpu{i}" for i in range(ncpu) if i not in (first, second)]
        assert (row[others] == 0).all()
    # the sum over CPUs is the total, and the total is what the workload did
    assert (df[[f"cpu{i}" for i in range(ncpu)]].sum(axis=1) == df["calls"]).all()
    assert df["calls"].to_dict() == Counter(on_first + on_second)
    assert df.attrs["no_slot"] == 0


# --------------------------------------------------------------------------- lru_survivors


def _true_lru(keys: list[int], capacity: int) -> set[int]:
    held: OrderedDict[int, None] = OrderedDict()
    for k in keys:
        if k in held:
            held.move_to_end(k)
        else:
            if len(held) >= capacity:
                held.popitem(last=False)
            held[k] = None
    return set(held)


def test_lru_keeps_recent_keys_plain_hash_keeps_first(fresh_uids, no_leaks):
    (who,) = fresh_uids(1)
    sizes = [1, 2, 3, 4, 1, 5, 6, 1, 7, 8]  # 1 is used again and again
    df = ebpf_lab.lru_survivors(
        4, uid=who, duration=0.2, workload=lambda: writes(sizes, uid=who, cpu=_cpus()[0])
    )
    assert list(df.columns) == [
        "size",
        "in_lru",
        "lru_calls",
        "lru_last_event",
        "in_plain",
        "plain_calls",
        "plain_last_event",
    ]
    plain = df[df["in_plain"]].set_index("size")
    lru = df[df["in_lru"]].set_index("size")
    # the plain hash kept the first four keys, and refused the four calls with a new key after
    assert list(plain.index) == [1, 2, 3, 4]
    assert plain["plain_calls"].to_dict() == {1: 3, 2: 1, 3: 1, 4: 1}
    assert df.attrs["refused"] == 4
    assert df.attrs["events"] == len(sizes)
    # the LRU hash: at most four keys, the newest and the often used one among them
    assert len(lru) <= 4
    assert 8 in lru.index and 1 in lru.index
    assert lru.loc[1, "lru_calls"] == 3 and lru.loc[1, "lru_last_event"] == 8
    assert lru.loc[8, "lru_last_event"] == 10
    if _kernel_at_least(6, 16):
        # since 6.16 a small LRU frees one entry at a time: with one CPU inserting, the
        # eviction order is exactly least-recently-used
        assert set(lru.index) == _true_lru(sizes, 4) == {1, 6, 7, 8}


def test_lru_with_keys_used_once_keeps_the_last_ones(fresh_uids, no_leaks):
    (who,) = fresh_uids(1)
    sizes = list(range(1, 11))
    df = ebpf_lab.lru_survivors(
        4, uid=who, duration=0.2, workload=lambda: writes(sizes, uid=who, cpu=_cpus()[-1])
    )
    lru = df[df["in_lru"]]
    assert sorted(df[df["in_plain"]]["size"]) == [1, 2, 3, 4]
    assert df.attrs["refused"] == 6
    assert 10 in set(lru["size"]) and len(lru) <= 4
    if _kernel_at_least(6, 16):
        assert sorted(lru["size"]) == [7, 8, 9, 10]
        assert list(lru["lru_last_event"]) == [7, 8, 9, 10]


# --------------------------------------------------------------------------- size_histogram


@pytest.mark.parametrize("syscall", ["write", "read"])
def test_histogram_bucket_counts_are_exact(syscall, fresh_uids, no_leaks):
    (who,) = fresh_uids(1)
    sizes = [0, 1, 2, 3, 4, 7, 8, 100, 100, 4095, 4096, 4096, 65536]
    make = writes if syscall == "write" else reads
    df = ebpf_lab.size_histogram(
        syscall, uid=who, duration=0.2, workload=lambda: make(sizes, uid=who)
    )
    assert list(df.columns) == ["bucket", "low", "high", "count"]
    want = Counter(log2_bucket(n) for n in sizes)
    # one row per slot from the smallest to the largest used one, empty slots included
    assert list(df["bucket"]) == list(range(min(want), max(want) + 1))
    assert dict(zip(df["bucket"], df["count"])) == {b: want.get(b, 0) for b in df["bucket"]}
    for row in df.itertuples():
        assert (row.low, row.high) == bucket_bounds(row.bucket)
    assert df.attrs["total"] == len(sizes)
    assert df.attrs["syscall"] == syscall
    assert df.attrs["attach"] == "tracepoint"


def test_histograms_of_two_uids_compile_once(fresh_uids, no_leaks):
    """The UID goes into the filter_uid map, not the C: a second UID reuses the first compile,
    and each run counts only its own UID's calls."""
    from ebpf_lab.core import compile_cache

    a, b = fresh_uids(2)
    compile_cache.clear()
    first = ebpf_lab.size_histogram(uid=a, duration=0.1, workload=lambda: writes([1, 8], uid=a))
    second = ebpf_lab.size_histogram(uid=b, duration=0.1, workload=lambda: writes([100], uid=b))
    info = compile_cache.info()
    assert (info["misses"], info["hits"], info["entries"]) == (1, 1, 1)
    assert dict(zip(first["bucket"], first["count"])) == {1: 1, 2: 0, 3: 0, 4: 1}
    assert dict(zip(second["bucket"], second["count"])) == {7: 1}


def test_histogram_plot(fresh_uids, no_leaks):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (who,) = fresh_uids(1)
    df = ebpf_lab.size_histogram(
        uid=who, duration=0.1, workload=lambda: writes([1, 100, 1000], uid=who)
    )
    ax = ebpf_lab.plot_log2_histogram(df)
    assert len(ax.patches) == len(df)
    assert [int(p.get_height()) for p in ax.patches] == list(df["count"])
    plt.close("all")


# --------------------------------------------------------------------- user space -> kernel


def test_user_space_insert_update_delete_clear_are_seen_by_the_kernel(fresh_uids, no_leaks):
    a, b = fresh_uids(2)
    df = ebpf_lab.user_space_updates((a, b), calls=2)
    assert list(df.columns) == [
        "step",
        "action",
        "uid",
        "weight",
        "writes",
        "expected",
        "kernel_added",
        "watched_after",
    ]
    assert len(df) == 12 and (df["writes"] == 2).all()
    added = {(r.step, r.uid): r.kernel_added for r in df.itertuples()}
    assert added == {
        (0, a): 0,
        (0, b): 0,  # nothing watched
        (1, a): 2,
        (1, b): 0,  # watched[a] = 1
        (2, a): 2,
        (2, b): 2000,  # watched[b] = 1000
        (3, a): 4,
        (3, b): 2000,  # watched[a] = 2 (update)
        (4, a): 4,
        (4, b): 0,  # del watched[b]
        (5, a): 0,
        (5, b): 0,  # watched.clear()
    }
    assert (df["kernel_added"] == df["expected"]).all()
    after = df.drop_duplicates("step").set_index("step")["watched_after"]
    assert after[0] == "{}" and after[5] == "{}"
    assert after[2] == str({a: 1, b: 1000})  # fresh_uids are increasing: a < b
    assert after[4] == str({a: 2})


def test_table_frame_reads_struct_keys_and_per_cpu_values(no_leaks):
    """table_frame() on maps filled from user space: no program attached, nothing runs."""
    src = r"""
    struct k_t { u32 id; char name[8]; };
    struct v_t { u64 a; u64 b; };
    BPF_HASH(by_struct, struct k_t, struct v_t, 8);
    BPF_PERCPU_ARRAY(per_cpu, u64, 3);
    BPF_PERCPU_HASH(per_cpu_struct, u32, struct v_t, 4);
    int unused(void *ctx) { return 0; }
    """
    bpf = compile_program(src, name="table_frame_test")
    try:
        t = bpf[b"by_struct"]
        k = t.Key(2, b"two")
        t[k] = t.Leaf(20, 21)
        t[t.Key(1, b"one")] = t.Leaf(10, 11)
        df = table_frame(t)
        assert list(df.columns) == ["id", "name", "a", "b"]
        assert df.values.tolist() == [[1, "one", 10, 11], [2, "two", 20, 21]]
        del t[k]  # user space deletes; the map forgets
        assert table_frame(t)["id"].tolist() == [1]
        t.clear()
        assert table_frame(t).empty and list(table_frame(t).columns) == ["id", "name", "a", "b"]

        ncpu = _possible_cpus()
        pc = bpf[b"per_cpu"]
        pc[pc.Key(1)] = (pc.sLeaf * ncpu)(*range(1, ncpu + 1))
        df = table_frame(pc)
        assert list(df.columns) == ["key", *(f"cpu{i}" for i in range(ncpu))]
        assert df["key"].tolist() == [0, 1, 2]
        assert df.loc[1, [f"cpu{i}" for i in range(ncpu)]].tolist() == list(range(1, ncpu + 1))
        assert df.loc[0, [f"cpu{i}" for i in range(ncpu)]].sum() == 0

        ps = bpf[b"per_cpu_struct"]
        leaf = (ps.sLeaf * ncpu)(*[ps.sLeaf(i, 100 + i) for i in range(ncpu)])
        ps[ps.Key(7)] = leaf
        df = table_frame(ps)
        assert list(df.columns) == [
            "key",
            *(f"a_cpu{i}" for i in range(ncpu)),
            *(f"b_cpu{i}" for i in range(ncpu)),
        ]
        assert df.loc[0, f"b_cpu{ncpu - 1}"] == 100 + ncpu - 1
        with pytest.raises(ValueError):
            table_frame(object())
        assert ctypes.sizeof(t.Key) >= 12
    finally:
        release(bpf)


# ---------------------------------------------------------------------------------- bad input


BAD_CALLS = {
    "unknown kind": lambda: ebpf_lab.map_counts("tree"),
    "negative uid": lambda: ebpf_lab.map_counts(uid=-1),
    "uid as text": lambda: ebpf_lab.map_counts(uid="root"),
    "zero duration": lambda: ebpf_lab.map_counts(duration=0),
    "zero entries": lambda: ebpf_lab.map_counts(max_entries=0),
    "huge map": lambda: ebpf_lab.map_counts(max_entries=10**6),
    "workload not callable": lambda: ebpf_lab.map_counts(workload=5),
    "lru without size": lambda: ebpf_lab.lru_survivors(max_entries=None),
    "lru negative size": lambda: ebpf_lab.lru_survivors(max_entries=-4),
    "nan duration": lambda: ebpf_lab.lru_survivors(duration=float("nan")),
    "unknown syscall": lambda: ebpf_lab.size_histogram("open"),
    "uid too big": lambda: ebpf_lab.size_histogram(uid=2**32),
    "same uid twice": lambda: ebpf_lab.user_space_updates(uids=(5, 5)),
    "one uid": lambda: ebpf_lab.user_space_updates(uids=(5,)),
    "zero calls": lambda: ebpf_lab.user_space_updates(calls=0),
    "negative size": lambda: writes([-1]),
    "sizes as text": lambda: writes("abc"),
    "no such cpu": lambda: writes([1], cpu=10_000),
    "size too big": lambda: reads([2**30]),
    "workload bad uid": lambda: writes([1], uid=-3),
}


@pytest.mark.parametrize("call", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_input_is_refused_before_anything_loads(call, monkeypatch, no_leaks):
    def must_not_compile(*args, **kwargs):
        raise AssertionError("compiled a program despite bad input")

    monkeypatch.setattr(ebpf_lab.core.run, "compile_program", must_not_compile)
    with pytest.raises(ValueError):
        call()
