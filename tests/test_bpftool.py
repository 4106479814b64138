"""Lesson 13: bpftool on the lab's own programs, and what a program costs by the kernel's count.

The parsers are checked on JSON as different bpftool versions print it (no root); the rest runs
the real bpftool against the lab's programs while a bounded run holds them, with exact
expectations: the programs bpftool shows are the ones the lab loaded (by id), the map it dumps
is the one BCC reads, and ``run_cnt`` is each program's own count of its runs.
"""

from __future__ import annotations

import json
import stat
import sys

import pytest
from conftest import needs_root

from ebpf_lab.kernel import bpftool
from ebpf_lab.lessons.l13_bpftool import cost as cost_module
from ebpf_lab.lessons.l13_bpftool.cost import COST, plot_cost, program_cost
from ebpf_lab.lessons.l13_bpftool.tour import SCHEMAS, SUMMARY, bpftool_tour, tour_frame

N_EXECS = 7

# ---------------------------------------------------------------- the JSON, version by version


def test_prog_show_without_statistics_has_zero_runs_and_no_mean() -> None:
    # bpftool prints run_time_ns/run_cnt only once the program ran with statistics on
    rows = bpftool.prog_records(
        {"id": 7, "type": "kprobe", "name": "f", "bytes_xlated": 16, "map_ids": [3]}
    )
    assert rows == [
        {
            "id": 7,
            "name": "f",
            "type": "kprobe",
            "tag": "",
            "run_cnt": 0,
            "run_time_ns": 0,
            "ns_per_run": None,
            "bytes_xlated": 16,
            "bytes_jited": None,
            "map_ids": [3],
            "btf_id": None,
            "loaded_at": None,
            "verified_insns": None,
        }
    ]


def test_prog_show_list_with_statistics() -> None:
    rows = bpftool.prog_records(
        [
            {"id": 1, "type": "xdp", "name": "a", "run_time_ns": 900, "run_cnt": 3},
            {"id": 2, "type": "tracepoint", "name": "b", "verified_insns": 12},
            "not a program",
        ]
    )
    assert [(r["id"], r["run_cnt"], r["run_time_ns"], r["ns_per_run"]) for r in rows] == [
        (1, 3, 900, 300.0),
        (2, 0, 0, None),
    ]
    assert rows[1]["verified_insns"] == 12


def test_xlated_offsets_count_64_bit_loads_as_two_slots() -> None:
    data = [
        {"disasm": "(b7) r1 = 0", "proto": "int f(void * ctx)", "src": "int x = 0;"},
        {"disasm": "(18) r1 = map[id:4]"},
        {"disasm": "(95) exit"},
    ]
    rows = bpftool.xlated_records(data)
    assert [(r["insn"], r["disasm"][:4]) for r in rows] == [(0, "(b7)"), (1, "(18)"), (3, "(95)")]
    assert rows[0]["proto"] == "int f(void * ctx)" and rows[1]["src"] is None
    # older bpftool: one object per function with its instructions
    nested = bpftool.xlated_records([{"name": "f", "insns": data}])
    assert [r["insn"] for r in nested] == [0, 1, 3]


def test_jited_rows_flat_and_per_function() -> None:
    flat = bpftool.jited_records([{"pc": "0x0", "operation": "push", "operands": ["rbp"]}])
    assert flat == [{"function": None, "pc": "0x0", "operation": "push", "operands": "['rbp']"}]
    nested = bpftool.jited_records(
        [{"name": "f", "insns": [{"pc": "0x0", "operation": "ret", "operands": []}]}]
    )
    assert nested[0]["function"] == "f" and nested[0]["operation"] == "ret"


def test_map_dump_formatted_raw_and_per_cpu() -> None:
    little = sys.byteorder == "little"
    one = ["0x01", "0x00", "0x00", "0x00"] if little else ["0x00", "0x00", "0x00", "0x01"]
    rows = bpftool.map_records(
        [
            {"key": one, "value": one, "formatted": {"key": 1, "value": {"a": 2}}},
            {"key": one, "value": [f"0x{i:02x}" for i in range(12)]},  # no BTF
            {"key": one, "values": [{"cpu": 0, "value": one}, {"cpu": 1, "value": one}]},
        ]
    )
    assert rows == [
        {"key": 1, "value": {"a": 2}},
        {"key": 1, "value": bytes(range(12)).hex()},
        {"key": 1, "value": [1, 1]},
    ]


def test_btf_types() -> None:
    rows = bpftool.btf_records(
        {
            "types": [
                {"id": 1, "kind": "INT", "name": "int", "size": 4},
                {
                    "id": 2,
                    "kind": "STRUCT",
                    "name": "s",
                    "size": 8,
                    "vlen": 2,
                    "members": [{"name": "a"}, {"name": "b"}],
                },
                {"id": 3, "kind": "FUNC_PROTO", "ret_type_id": 1, "params": [{"name": "ctx"}]},
            ]
        }
    )
    assert [(r["id"], r["kind"], r["size"], r["type_id"], r["members"]) for r in rows] == [
        (1, "INT", 4, None, ""),
        (2, "STRUCT", 8, None, "a, b"),
        (3, "FUNC_PROTO", None, 1, "ctx"),
    ]


def test_feature_probe_sections_lists_and_unset_options() -> None:
    rows = bpftool.feature_records(
        {
            "system_config": {"bpf_jit_enable": 1, "CONFIG_KPROBES": None},
            "helpers": {"xdp_available_helpers": ["bpf_map_lookup_elem", "bpf_redirect"]},
        }
    )
    helpers = "xdp_available_helpers"
    assert rows == [
        {"section": "system_config", "feature": "bpf_jit_enable", "value": "1"},
        {"section": "system_config", "feature": "CONFIG_KPROBES", "value": None},
        {"section": "helpers", "feature": f"{helpers}: bpf_map_lookup_elem", "value": "True"},
        {"section": "helpers", "feature": f"{helpers}: bpf_redirect", "value": "True"},
    ]


def test_net_xdp_and_tc() -> None:
    rows = bpftool.net_records(
        [
            {
                "xdp": [{"devname": "veth0", "ifindex": 5, "mode": "generic", "id": 40}],
                "tc": [{"devname": "eth0", "ifindex": 2, "kind": "clsact/ingress", "name": "c",
                        "id": 41}],
                "flow_dissector": [],
            }
        ]
    )  # fmt: skip
    assert rows == [
        {"kind": "xdp", "devname": "veth0", "ifindex": 5, "id": 40, "name": None,
         "attach": "generic"},
        {"kind": "tc", "devname": "eth0", "ifindex": 2, "id": 41, "name": "c",
         "attach": "clsact/ingress"},
    ]  # fmt: skip
    assert bpftool.net_records([{"xdp": [], "tc": [], "flow_dissector": []}]) == []


def _fake_bpftool(tmp_path, monkeypatch, stdout: str, status: int, stderr: str = "") -> None:
    script = tmp_path / "bpftool"
    script.write_text(
        f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\necho {json.dumps(stderr)} >&2\nexit {status}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(bpftool, "bpftool_path", lambda: str(script))


def test_a_failing_subcommand_is_an_answer_not_an_exception(tmp_path, monkeypatch) -> None:
    _fake_bpftool(tmp_path, monkeypatch, '{"error":"No libbfd support"}', 255)
    answer = bpftool.run("prog", "dump", "jited", "id", 3)
    assert answer == bpftool.Answer(
        ("bpftool", "-j", "prog", "dump", "jited", "id", "3"), False, None, "No libbfd support"
    )
    _fake_bpftool(tmp_path, monkeypatch, "", 1, "Error: can't probe under lockdown")
    assert bpftool.run("feature", "probe").error == "Error: can't probe under lockdown"
    _fake_bpftool(tmp_path, monkeypatch, "[1, 2]", 0)
    assert bpftool.run("x").data == [1, 2] and bpftool.run("x").ok
    monkeypatch.setattr(bpftool, "bpftool_path", lambda: None)
    missing = bpftool.run("prog", "show")
    assert not missing.ok and "not installed" in missing.error
    assert bpftool.version() is None


def test_plot_cost_needs_a_frame_with_rows() -> None:
    with pytest.raises(ValueError, match="program_cost"):
        plot_cost(COST.frame([]))


# ---------------------------------------------------------------- bad input, before loading


@pytest.mark.parametrize(
    "kwargs",
    [
        {"execs_count": 0},
        {"execs_count": 10**9},
        {"uid": -1},
        {"duration": 0},
        {"subcommands": ["prog", "bogus"]},
    ],
)
def test_tour_refuses_bad_input_before_loading(refused_before_loading, kwargs) -> None:
    refused_before_loading(bpftool_tour, kwargs)


@pytest.mark.parametrize("kwargs", [{"execs_count": -3}, {"uid": "root"}, {"duration": -1}])
def test_cost_refuses_bad_input_before_loading(refused_before_loading, kwargs) -> None:
    before = bpftool.stats_sysctl()
    refused_before_loading(program_cost, kwargs)
    assert bpftool.stats_sysctl() == before


# ---------------------------------------------------------------- the real bpftool, live


@needs_root
def test_stats_are_restored_when_the_block_fails() -> None:
    before = bpftool.stats_sysctl()
    with pytest.raises(RuntimeError, match="inside"), bpftool.bpf_stats() as old:
        assert old == before
        assert bpftool.stats_sysctl() == 1
        raise RuntimeError("inside")
    assert bpftool.stats_sysctl() == before


@needs_root
def test_program_cost_restores_the_sysctl_when_the_run_fails(monkeypatch) -> None:
    before = bpftool.stats_sysctl()
    seen = []

    def failing_run(*args, **kwargs):
        seen.append(bpftool.stats_sysctl())
        raise KeyboardInterrupt

    monkeypatch.setattr(cost_module, "run_subject", failing_run)
    with pytest.raises(KeyboardInterrupt):
        program_cost(5)
    assert seen == [1] and bpftool.stats_sysctl() == before


@pytest.fixture(scope="module")
def tour():
    return bpftool_tour(N_EXECS, live=False)


@needs_root
def test_tour_summary_says_what_ran(tour) -> None:
    assert list(tour.columns) == SUMMARY.columns
    assert list(tour["subcommand"]) == list(SCHEMAS)
    for row in tour.itertuples():
        frame = tour_frame(tour, row.subcommand)
        assert list(frame.columns) == SCHEMAS[row.subcommand].columns
        assert row.rows == len(frame)
        assert row.ok == (row.error == "")
    ok = dict(zip(tour["subcommand"], tour["ok"]))
    # these work wherever the lab runs; jited and feature may not (they must say why)
    assert ok["prog"] and ok["xlated"] and ok["map"] and ok["btf"] and ok["net"], tour
    for sub in ("jited", "feature"):
        row = tour[tour["subcommand"] == sub].iloc[0]
        assert row["rows"] > 0 if row["ok"] else row["error"] != ""


@needs_root
def test_tour_shows_the_labs_own_programs(tour) -> None:
    progs = tour_frame(tour, "prog")
    ids = tour.attrs["prog_ids"]
    assert list(progs["id"]) == [ids["count_light"], ids["count_heavy"]]
    assert list(progs["name"]) == ["count_light", "count_heavy"]
    assert set(progs["type"]) == {"tracepoint"}
    light = progs.iloc[0]
    maps = tour_frame(tour, "map")
    assert set(maps["map_id"]) == set(light["map_ids"])
    assert set(maps["map"]) == {"target_uid", "execs_by_uid", "runs"}


@needs_root
def test_tour_map_dump_is_what_bcc_reads(tour) -> None:
    maps = tour_frame(tour, "map")
    dumped = {
        name: dict(zip(group["key"], group["value"]))
        for name, group in maps.groupby("map", observed=True)
    }
    # the UID the lab wrote before attaching, and only that UID counted: exactly its execs
    assert dumped["target_uid"] == {0: tour.attrs["uid"]}
    assert dumped["execs_by_uid"] == {tour.attrs["uid"]: N_EXECS}
    assert dumped["execs_by_uid"] == tour.attrs["bcc_maps"]["execs_by_uid"]
    # every exec runs both programs; no exec but bpftool's own came between BCC's reads
    assert tour.attrs["quiet"]["runs"]
    assert dumped["runs"] == tour.attrs["bcc_maps"]["runs"]
    assert dumped["runs"][0] == dumped["runs"][1] >= N_EXECS + 1


@needs_root
def test_tour_xlated_fills_the_size_the_kernel_reports(tour) -> None:
    xlated = tour_frame(tour, "xlated")
    light = tour_frame(tour, "prog").iloc[0]
    wide = xlated["disasm"].str.startswith("(18)")
    # each line is one 8-byte instruction, a 64-bit load two
    assert len(xlated) + int(wide.sum()) == light["bytes_xlated"] // 8
    last = xlated.iloc[-1]
    assert last["insn"] + 1 == light["bytes_xlated"] // 8 and last["disasm"] == "(95) exit"
    assert xlated["proto"].iloc[0] == "int count_light(void * ctx)"
    map_ids = {int(m) for m in xlated["disasm"].str.extract(r"map\[id:(\d+)\]")[0].dropna()}
    assert map_ids == set(light["map_ids"])


@needs_root
def test_tour_btf_describes_the_maps(tour) -> None:
    btf = tour_frame(tour, "btf")
    structs = btf[btf["kind"] == "STRUCT"].set_index("name")
    for name in ("execs_by_uid", "runs", "scratch"):
        assert structs.loc[f"____btf_map_{name}", "members"] == "key, value"
    assert "count_light" in set(btf.loc[btf["kind"] == "FUNC", "name"])


@needs_root
def test_program_cost_run_cnt_is_the_programs_own_count() -> None:
    before = bpftool.stats_sysctl()
    df = program_cost(40, live=False)
    assert bpftool.stats_sysctl() == before == df.attrs["stats_before"]
    assert list(df.columns) == COST.columns
    assert list(df["name"]) == ["count_light", "count_heavy"]
    assert list(df["id"]) == list(df.attrs["prog_ids"].values())
    assert df.attrs["uid_execs"] == 40
    assert df.attrs["quiet"], df.attrs
    assert list(df["run_cnt"]) == list(df["own_count"])
    # both ran on the workload's 40 execs and bpftool's own; other processes' execs count too,
    # and one that came between the two attaches counts for one program only: no equality here
    assert df["run_cnt"].min() >= 41
    assert list(df["ns_per_run"]) == list(df["run_time_ns"] / df["run_cnt"])
    assert (df["run_time_ns"] > 0).all()
    # 64 lookups and random numbers are more instructions than one add (what each run costs is
    # a measurement: the notebook and `make bench` show it; a test asserts only structure)
    light, heavy = df["bytes_xlated"]
    assert heavy > light


@needs_root
def test_a_recording_replays_the_tour_and_the_cost_with_their_frames(tmp_path, monkeypatch) -> None:
    import ebpf_lab

    ebpf_lab.record(tmp_path)
    try:
        tour = bpftool_tour(3, subcommands=["prog", "map"], live=False)
        costs = program_cost(3, live=False)
    finally:
        ebpf_lab.recordings.off()

    def no_sysctl(*args, **kwargs):
        raise AssertionError("a replay must not touch kernel.bpf_stats_enabled")

    monkeypatch.setattr(bpftool, "bpf_stats", no_sysctl)
    ebpf_lab.replay(tmp_path)
    try:
        again = bpftool_tour(3, subcommands=["prog", "map"], live=False)
        costs_again = program_cost(3, live=False)
    finally:
        ebpf_lab.recordings.off()
    assert again.attrs["replay"] and again.equals(tour)
    assert tour_frame(again, "map").equals(tour_frame(tour, "map"))
    assert again.attrs["bcc_maps"] == tour.attrs["bcc_maps"]
    assert costs_again.drop(columns="map_ids").equals(costs.drop(columns="map_ids"))
    assert costs_again.attrs["uid_execs"] == 3
