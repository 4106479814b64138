"""Lesson 14: control flow, on the real kernel, with exact expectations.

A C loop's cost to the verifier is a straight line in its bound (the kernel's ``verified_insns``);
``bpf_loop`` loads wherever the kernel has it (linked by the lab where BCC cannot), at one cost
for every bound, and BCC's own bytecode shows why it needs linking; a tail call runs the second
program exactly once per exec of a UID nobody else uses, and never returns; a BPF-to-BPF call is
where the verifier splits the program. The appendix to chapter 04 (``docs/compile-cache.md``)
runs as written.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
from conftest import REPO, needs_root

import ebpf_lab
from ebpf_lab.lessons.l14_control_flow import loops as loops_module
from ebpf_lab.lessons.l14_control_flow.linking import linked_load
from ebpf_lab.lessons.l14_control_flow.loops import (
    COST,
    kernel_has_helper,
    loop_cost,
    plot_loop_cost,
)
from ebpf_lab.lessons.l14_control_flow.tail_call import RUNS, tail_call_counts

BOUNDS = (8, 64, 512, 4096)

# ------------------------------------------------------------------ bad input, before loading


@pytest.mark.parametrize("loops", ["8", [], [0], [8, 1 << 17], [True], (8.0,), None])
def test_loop_cost_refuses_bad_bounds(loops, refused_before_loading) -> None:
    refused_before_loading(loop_cost, {"loops": loops})


@pytest.mark.parametrize(
    "kwargs",
    [{"execs_count": 0}, {"execs_count": None}, {"uid": -1}, {"duration": -1}],
    ids=["zero-execs", "no-execs", "negative-uid", "negative-duration"],
)
def test_tail_call_counts_refuses_bad_input(kwargs, refused_before_loading) -> None:
    refused_before_loading(tail_call_counts, kwargs)


@pytest.mark.parametrize("name", ["", "bpf loop", None, 181])
def test_kernel_has_helper_refuses_what_is_not_a_helper_name(name) -> None:
    with pytest.raises(ValueError, match="a helper name looks like 'loop'"):
        kernel_has_helper(name)


@pytest.mark.parametrize("bad", [pd.DataFrame(), pd.DataFrame({"loops": [8]}), "cost"])
def test_plot_loop_cost_refuses_what_is_not_a_loop_cost_frame(bad) -> None:
    with pytest.raises(ValueError, match="plot_loop_cost needs a loop_cost"):
        plot_loop_cost(bad)


def test_kernel_has_helper_reads_the_kernels_helper_names(monkeypatch, tmp_path) -> None:
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"\0BPF_FUNC_unspec\0BPF_FUNC_tail_call\0BPF_FUNC_loop\0int\0")
    monkeypatch.setattr(loops_module.kernelfs, "BTF_VMLINUX", btf)
    kernel_has_helper.cache_clear()
    try:
        assert kernel_has_helper("loop") and kernel_has_helper("tail_call")
        assert not kernel_has_helper("lo") and not kernel_has_helper("timer_set_callback")
        btf.unlink()  # no BTF: no helper is known
        kernel_has_helper.cache_clear()
        assert not kernel_has_helper("loop")
    finally:
        kernel_has_helper.cache_clear()


# ------------------------------------------------------------------ loops


@needs_root
def test_a_c_loop_costs_the_verifier_more_with_a_larger_bound(no_leaks) -> None:
    cost = loop_cost(BOUNDS)
    assert list(cost.columns) == COST.columns
    assert list(cost["loops"]) == [n for n in BOUNDS for _ in range(2)]
    loop = cost[cost["method"] == "for loop"].set_index("loops")
    assert loop["accepted"].all() and set(loop["fn"]) == {"sum_with_for_loop"}
    assert loop["instructions"].nunique() == 1, "the bound does not change the bytecode"
    processed = loop["processed"].astype(int)
    # every round is walked: more rounds, more work (exactly per_round * n + fixed on some
    # kernels, e.g. 6.18; not on Debian's 6.1, measured in its VM: a kernel fact, not asserted)
    assert processed.is_monotonic_increasing and processed.is_unique, processed.to_dict()
    assert processed[4096] > 4096, processed.to_dict()  # at least one instruction per round
    assert all(
        said == f"sum_with_for_loop(): passed the verifier: {loop['instructions'].iloc[0]} "
        f"instructions, {processed[n]} processed"
        for n, said in loop["verifier"].items()
    )


@needs_root
def test_bpf_loop_costs_the_verifier_the_same_at_every_bound_where_the_kernel_has_it(
    no_leaks,
) -> None:
    cost = loop_cost(BOUNDS)
    helper = cost[cost["method"] == "bpf_loop"].set_index("loops")
    assert cost.attrs["bpf_loop_helper"] == kernel_has_helper("loop")
    # every kernel with bpf_loop (5.17+) loads it, linked by the lab where BCC alone cannot
    assert helper["accepted"].tolist() == [kernel_has_helper("loop")] * len(BOUNDS)
    if helper["accepted"].all():
        assert helper["processed"].nunique() == 1, "the callback is checked once"
        for_loop = cost[cost["method"] == "for loop"].set_index("loops")["processed"]
        assert int(helper["processed"].iloc[0]) < int(for_loop[8])
    else:
        assert helper["processed"].isna().all() and helper["verifier"].nunique() == 1


@needs_root
def test_bcc_alone_leaves_the_callbacks_address_unlinked(no_leaks) -> None:
    insns = ebpf_lab.disassemble("loop_cost", fn="sum_with_bpf_loop", cflags=["-DLOOPS=8"])
    load = insns[(insns["mnemonic"] == "lddw") & (insns["dst_reg"] == 2)]
    assert len(load) == 1
    assert insns[insns["mnemonic"] == "call"]["imm"].tolist() == [181]  # BPF_FUNC_loop
    alone = ebpf_lab.verify("loop_cost", fn="sum_with_bpf_loop", log_level=1)
    if int(load["src_reg"].iloc[0]) == 0:  # BCC without a linker: the callback's byte offset
        assert int(load["imm"].iloc[0]) == 8 * len(insns)
        assert load["text"].iloc[0] == f"r2 = {8 * len(insns):#x}"
        assert not alone.ok
        if kernel_has_helper("loop"):
            assert alone.errors["text"].tolist() == ["R2 type=scalar expected=func"]
    else:  # a BCC that links: the verifier's own answer
        assert int(load["src_reg"].iloc[0]) == 4 and alone.ok == kernel_has_helper("loop")


@needs_root
def test_linking_refuses_a_function_without_a_callback(no_leaks) -> None:
    from ebpf_lab.core.loader import compiled_unattached, program_source
    from ebpf_lab.lessons.l14_control_flow.linking import linked_bytecode

    with compiled_unattached(program_source("loop_cost"), name="loop_cost") as (bpf, _):
        with pytest.raises(ValueError, match=r"sum_with_for_loop\(\) must call, or load the"):
            linked_bytecode(bpf, "sum_with_for_loop", "out")
        code = linked_bytecode(bpf, "sum_with_bpf_loop", "out")
        caller = bytes(bpf.dump_func(b"sum_with_bpf_loop"))
    assert code[: len(caller)] != caller and len(code) > len(caller)
    assert code[-8] == 0x95, "the linked program ends with the callback's exit"


@needs_root
def test_plot_loop_cost_draws_one_line_per_method(no_leaks) -> None:
    import matplotlib

    matplotlib.use("Agg")
    cost = loop_cost((8, 64))
    ax = plot_loop_cost(cost)
    lines = {line.get_label(): list(line.get_xdata()) for line in ax.get_lines()}
    assert lines["for loop"] == [8, 64]
    accepted = cost[cost["method"] == "bpf_loop"]["accepted"].all()
    label = "bpf_loop" if accepted else "bpf_loop (refused by the verifier: no points)"
    assert lines[label] == ([8, 64] if accepted else [])


# ------------------------------------------------------------------ tail call


@needs_root
@pytest.mark.parametrize("execs_count", [1, 9])
def test_a_tail_call_runs_the_second_program_once_per_exec_and_never_returns(
    execs_count, fresh_uids, no_leaks
) -> None:
    (uid,) = fresh_uids(1)
    calls = tail_call_counts(execs_count=execs_count, uid=uid)
    assert list(calls.columns) == RUNS.columns
    assert calls["slot"].tolist() == [0, 1, 2, 3]
    assert calls["runs"].tolist() == [execs_count, execs_count, execs_count, 0]
    assert calls.attrs["uid"] == uid and calls.attrs["execs"] == execs_count
    assert calls.attrs["attach"] == "tracepoint" and calls.attrs["second_slot"] == 1


# ------------------------------------------------------------------ BPF-to-BPF call


@needs_root
def test_a_bpf_to_bpf_call_is_where_the_verifier_splits_the_program(no_leaks) -> None:
    insns = ebpf_lab.disassemble("bpf_to_bpf_call")
    calls = insns[insns["mnemonic"] == "call"]
    assert calls["src_reg"].tolist() == [0, 1, 0]
    assert calls["imm"].iloc[0] == 7 and calls["imm"].iloc[2] == 2  # prandom, map update
    local = calls.iloc[1]
    target = int(local["index"]) + 1 + int(local["imm"])
    assert local["text"] == f"call pc{int(local['imm']):+d} (a BPF function)"
    linked = linked_load("bpf_to_bpf_call", "caller")
    assert linked.attrs["accepted"] and linked.attrs["error"] == ""
    assert linked.attrs["functions"] == ["func#0 @0", f"func#1 @{target}"]
    assert linked.attrs["processed"] == linked.attrs["instructions"] - 1  # one path, lddw twice
    assert any(t.startswith(f"{target}: frame1: R1=") for t in linked["text"])
    alone = ebpf_lab.verify("bpf_to_bpf_call", log_level=1)
    if not alone.ok:  # BCC loads caller() alone: the call points just past its end
        assert target == len(insns)
        assert alone.errors["text"].tolist() == ["call to invalid destination"]


@needs_root
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"program": "no_such_program", "fn": "caller"}, "no_such_program"),
        ({"program": "bpf_to_bpf_call", "fn": "caller()"}, "fn must be a C function name"),
        ({"program": "bpf_to_bpf_call", "fn": "caller", "log_level": 3}, "log_level must be"),
        ({"program": "bpf_to_bpf_call", "fn": "caller", "cflags": "-DX"}, "cflags must be"),
    ],
)
def test_linked_load_refuses_bad_input(kwargs, message, no_leaks) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        linked_load(**kwargs)


# ------------------------------------------------------------------ chapter 04's appendix


@needs_root
def test_the_compile_cache_appendix_runs_as_written(no_leaks) -> None:
    text = (REPO / "docs" / "compile-cache.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    scope: dict = {}
    for block in blocks:
        exec(compile(block, "docs/compile-cache.md", "exec"), scope)
    assert len(scope["differ"]) >= 1, "the map's ld_imm64 slot differs between the two builds"
