"""The %%ebpf cell magic, driven through a real IPython shell on the real kernel."""

from __future__ import annotations

import pytest
from conftest import needs_root
from forced_kernel import hide_kprobes

from ebpf_lab import ProgramError, UnsupportedFeature
from ebpf_lab.show.magic import CellError
from ebpf_lab.workloads import execs

pytestmark = needs_root

COUNT_EXECS = """\
BPF_HASH(counts, u32, u64);            // key: UID, value: execs

int count(void *ctx)
{
    u32 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    counts.increment(uid);
    return 0;
}
"""
TP = "--tracepoint syscalls:sys_enter_execve count"


@pytest.fixture(scope="module")
def ip():
    """A real IPython shell with the extension loaded (history off: no sqlite thread, no fds)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    if InteractiveShell.initialized():  # another test module made one: share it
        shell = InteractiveShell.instance()
    else:
        config = Config()
        config.HistoryManager.enabled = False
        shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "ebpf_lab")
    shell.user_ns["execs"] = execs
    # warm-up: libraries open what they keep open for the process before tests count fds
    shell.run_cell_magic("ebpf", TP + " -d 0.05", COUNT_EXECS)
    return shell


def cell_line(cell: str, marker: str) -> int:
    """The line in the notebook cell (the %%ebpf line is line 1) of the body line with marker."""
    for n, text in enumerate(cell.splitlines(), 2):
        if marker in text:
            return n
    raise AssertionError(marker)


def test_counts_execs_per_uid_exactly(ip, fresh_uids, no_leaks):
    a, b = fresh_uids(2)
    ip.user_ns["plan"] = {a: 6, b: 3}
    df = ip.run_cell_magic(
        "ebpf", f'{TP} --duration 0.3 --workload "lambda: execs(plan)" --out seen', COUNT_EXECS
    )
    assert ip.user_ns["seen"] is df
    assert list(df.columns) == ["key", "value"]
    counts = dict(zip(df["key"], df["value"]))
    assert counts[a] == 6 and counts[b] == 3
    assert df.attrs["map"] == "counts"
    assert df.attrs["attach"] == "tracepoint syscalls:sys_enter_execve"
    assert df.attrs["duration"] == 0.3
    assert df.attrs["interrupted"] is False


def test_several_maps_give_a_dict_per_cpu_columns_and_skip_buffers(ip, fresh_uids, no_leaks):
    (uid,) = fresh_uids(1)
    cell = f"""\
struct event_t {{ u32 uid; }};
BPF_PERF_OUTPUT(events);                     // a stream, not a table: skipped
BPF_PERCPU_ARRAY(per_cpu, u64, 1);
struct key_t {{ u32 uid; char comm[16]; }};
BPF_HASH(by_comm, struct key_t, u64);

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{{
    struct key_t key = {{}};
    key.uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    if (key.uid != {uid})
        return 0;
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    by_comm.increment(key);
    int zero = 0;
    per_cpu.increment(zero);
    return 0;
}}
"""
    ip.user_ns["uid"] = uid
    maps = ip.run_cell_magic("ebpf", '-d 0.2 --workload "lambda: execs({uid: 5})"', cell)
    assert set(maps) == {"per_cpu", "by_comm"}
    cpu_cols = [c for c in maps["per_cpu"].columns if c.startswith("cpu")]
    assert len(cpu_cols) >= 1
    assert int(maps["per_cpu"][cpu_cols].to_numpy().sum()) == 5
    by_comm = maps["by_comm"]
    assert list(by_comm.columns) == ["uid", "comm", "value"]
    assert int(by_comm["value"].sum()) == 5 and set(by_comm["uid"]) == {uid}
    assert maps["by_comm"].attrs["skipped_maps"] == {"events": "perf buffer"}
    assert maps["by_comm"].attrs["attach"] == "auto tracepoint__syscalls__sys_enter_execve"


def test_syntax_error_names_the_cells_line_and_loads_nothing(ip, no_leaks):
    cell = COUNT_EXECS.replace("    return 0;", "    return 0")
    with pytest.raises(CellError) as info:
        ip.run_cell_magic("ebpf", TP, cell)
    err = info.value
    assert isinstance(err, ProgramError) and err.stage == "compile"
    line = cell_line(cell, "return 0")
    assert err.lines == [line]
    text = "".join(err._render_traceback_())
    assert f"line {line:>3} |     return 0" in text
    assert "expected ';' after return statement" in text


def test_verifier_rejection_names_the_cells_line_and_loads_nothing(ip, no_leaks):
    cell = COUNT_EXECS.replace(
        "    counts.increment(uid);", "    u64 *n = counts.lookup(&uid);\n    *n += 1;"
    )
    with pytest.raises(CellError) as info:
        ip.run_cell_magic("ebpf", TP, cell)
    err = info.value
    assert err.stage == "verifier"
    line = cell_line(cell, "*n += 1;")
    assert err.lines == [line]
    text = "".join(err._render_traceback_())
    assert f"rejected count() at line {line}" in text
    assert f"line {line:>3} |     *n += 1;" in text
    assert "R0 invalid mem access 'map_value_or_null'" in text
    assert "map_value_or_null" in err.log


@pytest.mark.parametrize(
    "line,message",
    [
        ("--duration soon " + TP, "invalid float value"),
        ("--duration -1 " + TP, "--duration must be > 0"),
        ("--tracepoint sys_enter_execve count", "CATEGORY:EVENT"),
        ("--tracepoint syscalls:sys_enter_nosuch count", "no tracepoint syscalls:sys_enter_nosuch"),
        ("--tracepoint syscalls:sys_enter_execve", "expected 2 arguments"),
        ("--tracepoint syscalls:sys_enter_execve no_such_fn", "no function no_such_fn()"),
        ("--uprobe getpid count", "LIBRARY:SYMBOL"),
        ("--perf-event software:nope count", "unknown perf event"),
        ("--perf-event software:cpu-clock count --freq 0", "--freq must be a positive"),
        ("--bogus 1 " + TP, "unrecognized arguments"),
        (TP + " --workload 42", "must give a callable"),
        (TP + " --workload undefined_name", "NameError"),
        (TP + " --out 1x", "--out wants a Python variable name"),
        (TP + " -D 'not ok'", "-D wants NAME or NAME=VALUE"),
        (TP + ' --workload "unbalanced', "%%ebpf options"),
        ("", "say where to attach"),
    ],
)
def test_bad_options_are_usage_errors(ip, line, message, no_leaks):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match=None) as info:
        ip.run_cell_magic("ebpf", line, COUNT_EXECS)
    assert message in str(info.value)


def test_empty_cell_is_a_usage_error(ip):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="empty"):
        ip.run_cell_magic("ebpf", TP, "  \n")


def test_kprobe_is_unsupported_where_the_kernel_has_none(ip, no_leaks, tmp_path, monkeypatch):
    """Forced (the lab is shown a kernel without kprobes), so it runs on kernels with them too."""
    hide_kprobes(monkeypatch, tmp_path)
    with pytest.raises(UnsupportedFeature, match="--tracepoint") as info:
        ip.run_cell_magic("ebpf", "--kprobe do_sys_openat2 count", COUNT_EXECS)
    assert "CONFIG_KPROBES" in str(info.value)


def test_defines_reach_the_c(ip, fresh_uids, no_leaks):
    (uid,) = fresh_uids(1)
    cell = """\
BPF_ARRAY(hits, u64, 1);
int count(void *ctx)
{
    if ((bpf_get_current_uid_gid() & 0xFFFFFFFF) != WATCH_UID)
        return 0;
    int zero = 0;
    hits.increment(zero);
    return 0;
}
"""
    ip.user_ns["uid"] = uid
    df = ip.run_cell_magic(
        "ebpf", f'{TP} -D WATCH_UID={uid} -d 0.2 --workload "lambda: execs({{uid: 4}})"', cell
    )
    assert list(df.columns) == ["key", "value"]
    assert df["value"].tolist() == [4]


def test_one_option_per_attach_kind_of_the_core(ip):
    """The probe options are made from the core's attach kinds: a new kind needs no new code."""
    from ebpf_lab.core.attach import CELL_KINDS, PROBE_KINDS
    from ebpf_lab.show.magic import EbpfMagics

    parser = EbpfMagics.ebpf.parser
    options = {a.dest: a for a in parser._actions}
    # every kind but those BCC attaches itself or that need the lab's cable
    assert set(PROBE_KINDS) - set(CELL_KINDS) == {"xdp", "tc", "lsm", "autoload", "usdt"}
    for kind in CELL_KINDS:
        assert options[kind].option_strings == [f"--{kind.replace('_', '-')}"]
        assert options[kind].nargs == 2


def test_kretprobe_is_unsupported_where_the_kernel_has_none(ip, no_leaks, tmp_path, monkeypatch):
    hide_kprobes(monkeypatch, tmp_path)
    with pytest.raises(UnsupportedFeature, match="--kretprobe do_sys_openat2 count"):
        ip.run_cell_magic("ebpf", "--kretprobe do_sys_openat2 count", COUNT_EXECS)
