"""The bounded-run core against the real kernel: exact counts, every exit path detaches."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import REPO, Started, after_start, needs_root, run_as_nobody, send_sigint
from kernel_state import global_map_ids, global_prog_ids, held, settle

from ebpf_lab import ProgramError, UnsupportedFeature
from ebpf_lab.core.attach import Probe
from ebpf_lab.core.run import Alternative, Collector, RunContext, active_views, bounded_run
from ebpf_lab.workloads import execs

pytestmark = needs_root

# A tiny program written for these tests: count execve calls by one UID.
TINY = r"""
BPF_ARRAY(count, u64, 1);
int on_exec(void *ctx)
{
    if ((bpf_get_current_uid_gid() & 0xFFFFFFFF) != WATCH_UID)
        return 0;
    int zero = 0;
    u64 *n = count.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
"""
TP = [Alternative("tracepoint", [Probe("tracepoint", "syscalls:sys_enter_execve", "on_exec")])]


class CountReader(Collector):
    def finish(self, ctx: RunContext):
        import pandas as pd

        return pd.DataFrame({"execs": [ctx.table("count")[0].value]})


def tiny_run(uid: int, duration: float, workload=None, **kw):
    return bounded_run(
        name="tiny",
        source=TINY,
        alternatives=TP,
        collector=CountReader(),
        duration=duration,
        workload=workload,
        cflags=[f"-DWATCH_UID={uid}"],
        **kw,
    )


def test_exact_count_of_known_execs(fresh_uids, no_leaks):
    (uid,) = fresh_uids(1)
    box = {}
    df = tiny_run(uid, 1.0, workload=lambda: box.update(done=execs({uid: 17})))
    assert len(box["done"]) == 17
    assert int(df["execs"].iloc[0]) == 17
    assert df.attrs["attach"] == "tracepoint"
    assert df.attrs["interrupted"] is False
    assert df.attrs["kernel"] == os.uname().release
    assert df.attrs["duration"] == 1.0
    assert df.attrs["elapsed"] >= 1.0  # it ran for its duration (how much longer: the machine's)


def test_two_functions_on_one_tracepoint_both_count_and_both_detach(fresh_uids, no_leaks):
    """BCC 0.26 records one perf fd per tracepoint: the first function's attachment must still
    be detached when a second one is attached to the same tracepoint (core.loader.shadowed_fds)."""
    (uid,) = fresh_uids(1)
    source = TINY.replace("count, u64, 1", "count, u64, 2") + TINY.replace(
        "BPF_ARRAY(count, u64, 1);", ""
    ).replace("on_exec", "on_exec_too").replace("int zero = 0;", "int zero = 1;")

    class BothReader(Collector):
        def finish(self, ctx: RunContext):
            import pandas as pd

            table = ctx.table("count")
            return pd.DataFrame({"execs": [table[0].value, table[1].value]})

    probes = [
        Probe("tracepoint", "syscalls:sys_enter_execve", fn) for fn in ("on_exec", "on_exec_too")
    ]
    df = bounded_run(
        name="two-on-one",
        source=source,
        alternatives=[Alternative("tracepoint", probes)],
        collector=BothReader(),
        duration=0.2,
        workload=lambda: execs({uid: 9}),
        cflags=[f"-DWATCH_UID={uid}"],
    )
    assert list(df["execs"]) == [9, 9]
    # no_leaks: no perf event, program or map of either function is left


def test_run_waits_for_a_workload_longer_than_duration(fresh_uids, no_leaks):
    (uid,) = fresh_uids(1)

    def slow():
        time.sleep(0.6)
        execs({uid: 4})

    df = tiny_run(uid, 0.2, workload=slow)
    assert int(df["execs"].iloc[0]) == 4
    assert df.attrs["elapsed"] >= 0.6


def test_exception_in_workload_is_raised_after_detaching(fresh_uids, no_leaks):
    (uid,) = fresh_uids(1)

    def broken():
        execs({uid: 2})
        raise RuntimeError("workload broke")

    with pytest.raises(RuntimeError, match="workload broke"):
        tiny_run(uid, 5.0, workload=broken)


def test_keyboard_interrupt_returns_partial_data_and_detaches(fresh_uids, no_leaks):
    (uid,) = fresh_uids(1)
    box = {}
    work = Started(lambda: box.update(done=execs({uid: 100_000})))
    timer = after_start(work, send_sigint)
    df = tiny_run(uid, 30.0, workload=work)
    timer.join()
    assert df.attrs["elapsed"] < 30.0  # ended by the interrupt, before its duration
    assert df.attrs["interrupted"] is True
    assert df.attrs["stopped_by"] == "interrupt"
    # the workload was told to stop, and the count matches what it really did
    assert 0 < len(box["done"]) < 100_000
    assert int(df["execs"].iloc[0]) == len(box["done"])


def warm_widgets() -> None:
    """First use of IPython/widgets opens an event loop for good: do it before a leak check."""
    from ebpf_lab.core.live import WidgetLive

    warm = WidgetLive("warm-up", 1.0)
    warm.open()
    warm.close("done")


def assert_ended(view, description: str) -> None:
    """The run's Stop button is off: disabled, grey (no red "danger" style), saying how."""
    assert view.button.disabled is True
    assert view.button.button_style == ""
    assert view.button.description == description
    assert view._ui is None  # the notebook's event pump was handed back


def test_stop_button_returns_partial_data(fresh_uids):
    (uid,) = fresh_uids(1)
    box = {}
    warm_widgets()
    before = held()
    pressed = []

    def press_stop():
        (view,) = active_views()
        assert view.button.description == "Stop" and not view.button.disabled
        assert view.button.button_style == "danger"
        pressed.append(view)
        view.button.click()  # the real widget's click handler

    work = Started(lambda: box.update(done=execs({uid: 100_000})))
    presser = after_start(work, press_stop)
    df = tiny_run(uid, 30.0, workload=work, live=True)
    presser.join()
    assert df.attrs["interrupted"] is True
    assert df.attrs["stopped_by"] == "stop button"
    assert int(df["execs"].iloc[0]) == len(box["done"]) > 0
    assert active_views() == []
    (view,) = pressed
    assert_ended(view, "Stopped")
    assert view.label.value.startswith("stopped (stop button)")
    after = settle(before)
    assert not before.diff(after), before.diff(after)


def test_fifty_short_runs_leave_nothing(fresh_uids):
    (uid,) = fresh_uids(1)
    tiny_run(uid, 0.05)  # warm-up: libraries open what they keep open for the process
    before = held()
    maps_before, progs_before = global_map_ids(), global_prog_ids()
    for i in range(50):
        df = tiny_run(uid, 0.05, workload=(lambda: execs({uid: 1})) if i % 10 == 0 else None)
        assert int(df["execs"].iloc[0]) == (1 if i % 10 == 0 else 0)
    after = settle(before)
    assert not before.diff(after), before.diff(after)
    if os.environ.get("CI"):  # alone on the machine: the global lists must match too
        time.sleep(1.5)
        assert global_prog_ids() - progs_before == set()
        assert global_map_ids() - maps_before == set()


def test_compile_error_is_a_program_error_with_the_log(no_leaks):
    with pytest.raises(ProgramError) as info:
        bounded_run(
            name="broken",
            source="int on_exec(void *ctx) { return undeclared; }",
            alternatives=TP,
            collector=Collector(),
            duration=1,
        )
    assert info.value.stage == "compile"
    assert "undeclared" in info.value.log


def test_verifier_rejection_is_a_program_error_with_the_log(no_leaks):
    # a map lookup may return NULL: dereferencing it unchecked is what the verifier refuses
    src = (
        "BPF_HASH(a, int, u64);\n"
        "int on_exec(void *ctx) { int k = 0; u64 *v = a.lookup(&k); return *v; }"
    )
    with pytest.raises(ProgramError) as info:
        bounded_run(name="bad", source=src, alternatives=TP, collector=Collector(), duration=1)
    assert info.value.stage == "verifier"
    assert "invalid mem access 'map_value_or_null'" in info.value.log


def test_missing_attach_point_is_unsupported_feature(no_leaks):
    alt = [Alternative("tracepoint", [Probe("tracepoint", "nosuch:event", "on_exec")])]
    with pytest.raises(UnsupportedFeature):
        bounded_run(
            name="tiny",
            source=TINY,
            alternatives=alt,
            collector=Collector(),
            duration=1,
            cflags=["-DWATCH_UID=0"],
        )


def test_alternatives_fall_back_in_order(fresh_uids, no_leaks):
    (uid,) = fresh_uids(1)
    alts = [
        Alternative("broken", [Probe("tracepoint", "nosuch:event", "on_exec")]),
        TP[0],
    ]
    df = bounded_run(
        name="tiny",
        source=TINY,
        alternatives=alts,
        collector=CountReader(),
        duration=0.3,
        workload=lambda: execs({uid: 3}),
        cflags=[f"-DWATCH_UID={uid}"],
    )
    assert df.attrs["attach"] == "tracepoint"
    assert "broken" in df.attrs["attach_reason"]
    assert int(df["execs"].iloc[0]) == 3


NONROOT = """
import ebpf_lab
try:
    ebpf_lab.exec_counts(duration=1)
except PermissionError as e:
    print("PermissionError:", e)
"""


def test_non_root_gets_permission_error_with_hint():
    out = run_as_nobody(NONROOT)
    assert "PermissionError:" in out.stdout, out.stderr
    assert "sudo make lab" in out.stdout


def test_missing_bcc_says_how_to_install():
    code = (
        "import sys; sys.modules['bcc'] = None\n"
        "from ebpf_lab.core.guards import require_bcc\n"
        "try:\n    require_bcc()\nexcept ImportError as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert "BccMissing" in out.stdout
    assert "apt-get install python3-bpfcc" in out.stdout


PERF = r"""
BPF_PERF_OUTPUT(events);
int on_exec(void *ctx)
{
    u64 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    if (uid == WATCH_UID)
        events.perf_submit(ctx, &uid, sizeof(uid));
    return 0;
}
"""


class BrokenReader(Collector):
    def start(self, ctx):
        def on_event(cpu, data, size):
            raise LookupError("a bug in the lesson's callback")

        ctx.table("events").open_perf_buffer(self.guard(on_event))

    def poll(self, ctx, timeout):
        ctx.bpf.perf_buffer_poll(timeout=int(timeout * 1000))


def test_exception_in_a_bcc_callback_reaches_the_caller(fresh_uids, no_leaks):
    (uid,) = fresh_uids(1)
    with pytest.raises(LookupError, match="callback"):
        bounded_run(
            name="broken",
            source=PERF,
            alternatives=TP,
            collector=BrokenReader(),
            duration=10,
            workload=lambda: execs({uid: 2}),
            cflags=[f"-DWATCH_UID={uid}"],
        )


def test_interrupt_while_compiling_leaves_nothing(no_leaks):
    """Ctrl-C during the (long) compile is held until BCC is done, then cleans up and raises."""
    timer = threading.Timer(0.2, send_sigint)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            bounded_run(
                name="tiny",
                source=TINY + "\n#include <linux/sched.h>\n",
                alternatives=TP,
                collector=CountReader(),
                duration=30,
                cflags=["-DWATCH_UID=0"],
            )
    finally:
        timer.join()


def _broken_workload(uid: int):
    def broken():
        execs({uid: 1})
        raise RuntimeError("workload broke")

    return broken


ENDINGS = {
    # how the run ends: (run it, the exception it raises or None)
    "time up": (lambda uid: tiny_run(uid, 0.2, lambda: execs({uid: 2}), live=True), None),
    "workload error": (
        lambda uid: tiny_run(uid, 5.0, _broken_workload(uid), live=True),
        RuntimeError,
    ),
    "callback error": (
        lambda uid: bounded_run(
            name="broken",
            source=PERF,
            alternatives=TP,
            collector=BrokenReader(),
            duration=10,
            workload=lambda: execs({uid: 2}),
            cflags=[f"-DWATCH_UID={uid}"],
            live=True,
        ),
        LookupError,
    ),
    "compile error": (
        lambda uid: bounded_run(
            name="bad",
            source="int on_exec(void *ctx) { return undeclared; }",
            alternatives=TP,
            collector=CountReader(),
            duration=1,
            live=True,
        ),
        ProgramError,
    ),
}
ENDS_AS = {
    "time up": ("Done", "done:"),
    "workload error": ("Failed", "workload failed"),
    "callback error": ("Failed", "failed: LookupError"),
    "compile error": ("Failed", "failed: ProgramError"),
    "ctrl-c": ("Stopped", "stopped (interrupt)"),
}


@pytest.mark.parametrize("ending", [*ENDINGS, "ctrl-c"])
def test_stop_button_is_off_once_the_run_ended(ending, fresh_uids, monkeypatch):
    """However a live run ends, its Stop button ends disabled and grey, saying how it ended."""
    import ebpf_lab.core.run as core

    (uid,) = fresh_uids(1)
    warm_widgets()
    before = held()
    views = []

    def make_live(*args, **kwargs):
        views.append(real_make_live(*args, **kwargs))
        return views[-1]

    real_make_live = core.make_live
    monkeypatch.setattr(core, "make_live", make_live)
    if ending == "ctrl-c":
        work = Started(lambda: execs({uid: 100_000}))
        timer = after_start(work, send_sigint)
        df = tiny_run(uid, 30.0, workload=work, live=True)
        timer.join()
        assert df.attrs["stopped_by"] == "interrupt"
    else:
        run, error = ENDINGS[ending]
        if error is None:
            assert int(run(uid)["execs"].iloc[0]) == 2
        else:
            with pytest.raises(error):
                run(uid)
    (view,) = views
    description, label = ENDS_AS[ending]
    assert_ended(view, description)
    assert view.label.value.startswith(label), view.label.value
    assert active_views() == []
    after = settle(before)
    assert not before.diff(after), before.diff(after)


# A function BCC attaches by itself while compiling (TRACEPOINT_PROBE): the same way in as
# LSM_PROBE (exec_deny), on the execve tracepoint the tests above use.
AUTO = TINY.replace("int on_exec(void *ctx)", "TRACEPOINT_PROBE(syscalls, sys_enter_execve)")
assert AUTO != TINY


def test_autoloaded_function_is_a_probe_the_core_checks_and_detaches(fresh_uids, no_leaks):
    (uid,) = fresh_uids(1)
    fn = "tracepoint__syscalls__sys_enter_execve"
    seen = {}

    class Reader(CountReader):
        def start(self, ctx):
            seen["attached"] = sorted(ctx.bpf.tracepoint_fds)

    box = {}
    df = bounded_run(
        name="auto",
        source=AUTO,
        alternatives=[Alternative("autoload", [Probe("autoload", "execve", fn)], "BCC")],
        collector=Reader(),
        duration=0.2,
        workload=lambda: box.update(done=execs({uid: 6})),
        cflags=[f"-DWATCH_UID={uid}"],
    )
    assert seen["attached"] == [b"syscalls:sys_enter_execve"]
    assert len(box["done"]) == 6 and int(df["execs"].iloc[0]) == 6
    assert df.attrs["attach"] == "autoload"


@pytest.mark.parametrize(
    "kind,target,fn",
    [
        ("lsm", "bprm_check_security", "deny_exec"),  # LSM_PROBE names it lsm__<hook>
        ("autoload", "execve", "on_exec"),  # not a name BCC attaches by itself
        ("xdp", "eth0", "xdp_prog"),  # only the lab cable's ends
        ("fentry", "vfs_read", "on_read"),  # not a kind
    ],
)
def test_probe_kinds_check_their_arguments(kind, target, fn):
    with pytest.raises(ValueError):
        Probe(kind, target, fn)
