"""Counters that say they are exact are exact when several CPUs add to the same entry at once.

The load: :func:`ebpf_lab.workloads.getppid_loop`, a C program whose threads, pinned to two CPUs
(``sched_setaffinity``) and started together, each make exactly N getppid() calls as one fresh
UID. The truth is 2 x N. ``increment()`` (load, add, store) may lose counts; how many depends on
timing, so only ``counted <= truth`` is certain for it. ``atomic_increment()`` and a per-CPU map
must count every call.
"""

from __future__ import annotations

import os
import re

import pandas as pd
import pytest
from conftest import REPO, needs_root

import ebpf_lab
from ebpf_lab import workloads as workload
from ebpf_lab.lessons.l02_maps.counter_race import METHODS

CPUS = sorted(os.sched_getaffinity(0))
two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="a race between CPUs needs two CPUs")
PROGRAMS = REPO / "ebpf_lab" / "programs"


@needs_root
@two_cpus
def test_two_cpus_on_one_key_atomic_and_per_cpu_counts_are_exact(fresh_uids, no_leaks, capsys):
    uid = fresh_uids()[0]
    calls = 500_000
    cpus = CPUS[:2]
    df = ebpf_lab.counter_race(calls=calls, cpus=cpus, uid=uid)
    assert list(df.columns) == ["method", "map", "counted", "truth", "lost", "lost_percent"]
    assert list(df["method"]) == [m for m, _, _ in METHODS]
    rows = df.set_index("map")
    truth = 2 * calls
    assert (rows["truth"] == truth).all()
    # exact: every call the two pinned loops made, no more, no fewer
    assert rows.loc["atomic", "counted"] == truth
    assert rows.loc["percpu", "counted"] == truth
    assert rows.loc["atomic", "lost"] == rows.loc["percpu", "lost"] == 0
    # each thread stayed on its CPU, so each CPU's copy holds exactly that thread's calls
    assert df.attrs["per_cpu"] == {cpu: calls for cpu in cpus}
    # increment() can only lose counts, never invent them; how many is up to timing
    plain = rows.loc["plain"]
    assert 0 < plain["counted"] <= truth
    assert plain["lost"] == truth - plain["counted"] >= 0
    assert plain["lost_percent"] == pytest.approx(100 * plain["lost"] / truth)
    assert df.attrs["uid"] == uid and df.attrs["cpus"] == cpus and df.attrs["calls"] == calls
    assert df.attrs["attach"] == "tracepoint"
    assert set(df.attrs["loop_seconds"]) == set(cpus)
    with capsys.disabled():
        print(
            f"\nincrement() lost {plain['lost']} of {truth} counts "
            f"(loops side by side for {df.attrs['side_by_side_seconds']:.3f} s); "
            "atomic_increment() and the per-CPU map lost none"
        )


@needs_root
def test_one_cpu_nothing_races(fresh_uids, no_leaks):
    """On one CPU the three counters agree with the truth: BPF programs on one CPU do not
    interleave (the race needs two CPUs at the same moment)."""
    uid = fresh_uids()[0]
    df = ebpf_lab.counter_race(calls=100_000, cpus=CPUS[:1], uid=uid)
    assert (df["truth"] == 100_000).all()
    assert list(df["counted"]) == [100_000] * 3
    assert df.attrs["per_cpu"] == {CPUS[0]: 100_000}


@needs_root
def test_plot_counter_race(fresh_uids, no_leaks):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = ebpf_lab.counter_race(calls=20_000, cpus=CPUS[:2], uid=fresh_uids()[0])
    ax = ebpf_lab.plot_counter_race(df)
    assert [t.get_text() for t in ax.get_xticklabels()] == [m for m, _, _ in METHODS]
    assert [int(p.get_height()) for p in ax.patches] == list(df["counted"])
    plt.close("all")
    with pytest.raises(ValueError, match="counter_race frame"):
        ebpf_lab.plot_counter_race(pd.DataFrame({"x": [1]}))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"calls": 0},
        {"calls": -5},
        {"calls": 2.5},
        {"calls": True},
        {"calls": 10**8},
        {"cpus": []},
        {"cpus": [CPUS[0], CPUS[0]]},
        {"cpus": [max(CPUS) + 1000]},
        {"cpus": "01"},
        {"cpus": [-1]},
        {"uid": -1},
        {"uid": 2**32},
        {"uid": 0},
        {"uid": "nobody"},
        {"duration": 0},
        {"duration": float("nan")},
    ],
)
def test_bad_input_is_refused_before_anything_loads(kwargs, monkeypatch):
    from ebpf_lab.lessons.l02_maps import counter_race as module

    def must_not_run(**_kw):
        raise AssertionError("bounded_run called despite bad input")

    monkeypatch.setattr(module, "bounded_run", must_not_run)
    with pytest.raises(ValueError):
        ebpf_lab.counter_race(**kwargs)


@pytest.mark.parametrize(
    "uid, calls, cpus",
    [(-1, 10, [CPUS[0]]), (5000, -1, [CPUS[0]]), (5000, 10, []), (5000, 10, [CPUS[0]] * 2)],
)
def test_getppid_loop_bad_input(uid, calls, cpus):
    with pytest.raises(ValueError):
        workload.getppid_loop(uid, calls, cpus)


@needs_root
@two_cpus
def test_getppid_loop_runs_each_thread_on_its_cpu(fresh_uids):
    uid = fresh_uids()[0]
    df = workload.getppid_loop(uid, 1000, CPUS[:2])
    assert list(df.columns) == ["uid", "cpu", "calls", "start_ns", "end_ns", "loop_seconds"]
    assert list(df["cpu"]) == CPUS[:2]
    assert (df["calls"] == 1000).all() and (df["uid"] == uid).all()
    assert (df["end_ns"] >= df["start_ns"]).all()


# ---------------------------------------------------------------- what the kernel runs


def _xlated(source: str) -> pd.DataFrame:
    return ebpf_lab.disassemble(source, stage="xlated")


@needs_root
def test_the_kernel_runs_an_atomic_add_only_where_the_c_asks_for_one(no_leaks):
    """After the verifier: counter_race has one atomic add (atomic_increment) and one plain
    load-add-store (increment() on the shared hash); exec_count adds atomically."""
    race = _xlated("counter_race")
    atomics = race[race["mnemonic"].str.startswith("atomic")]
    assert list(atomics["mnemonic"]) == ["atomic_add"]
    assert atomics["text"].iloc[0].startswith("lock *(u64 *)")
    # the plain counter: load, add 1, store back to the same address
    texts = list(race["text"])
    triples = [
        texts[i : i + 3]
        for i in range(len(texts) - 2)
        if re.fullmatch(r"r(\d) = \*\(u64 \*\)\(r0 \+0\)", texts[i])
    ]
    assert any(t[1].endswith("+= 1") and t[2].startswith("*(u64 *)(r0 +0) =") for t in triples)
    count = _xlated("exec_count")
    assert (count["mnemonic"] == "atomic_add").sum() == 2  # count_kprobe and count_tracepoint


_PERCPU = re.compile(r"BPF_PERCPU_(?:HASH|ARRAY)\(\s*(\w+)")
_INCREMENT = re.compile(r"\b(\w+)\.increment\(")


def test_every_shared_counter_in_the_shipped_programs_adds_atomically():
    """A plain ``increment()`` on a map that CPUs share is allowed only where the C says it
    races on purpose (lesson 02's experiment); per-CPU maps may add plainly."""
    offenders = []
    for path in sorted(PROGRAMS.glob("*.bpf.c")):
        text = path.read_text()
        per_cpu = set(_PERCPU.findall(text))
        for n, line in enumerate(text.splitlines(), 1):
            for name in _INCREMENT.findall(line.split("//")[0]):  # code, not comments
                if name not in per_cpu and "RACES ON PURPOSE" not in line:
                    offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert not offenders, "non-atomic shared counters:\n" + "\n".join(offenders)
