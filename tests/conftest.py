"""Shared fixtures: root-only marking, leak checks, unique UIDs for exact counts, bad-input
checks, running code as an unprivileged user, and the ``slow`` and ``matrix`` markers.

Importable and harmless as any user: ``tests/unit`` runs as ``nobody`` (no root, no BCC, no
kernel programs), and nothing here touches the kernel unless a test asks for it.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kernel_state import global_prog_ids, held, settle  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0

needs_root = pytest.mark.skipif(not IS_ROOT, reason="loads real BPF programs: run as root")

# UIDs no one else uses, different in every test session, so concurrent runs of the suite (or
# anything else on the machine) cannot add to the exact counts the tests compare.
_uid_base = 200_000 + random.randrange(0, 700_000, 1000)
_uids = itertools.count(_uid_base)


@pytest.fixture
def fresh_uids():
    """A function returning n UIDs that nothing else on the machine uses."""

    def take(n: int = 1) -> list[int]:
        return [next(_uids) for _ in range(n)]

    return take


@pytest.fixture
def no_leaks():
    """Fail the test if it leaves BPF programs, maps, perf events, fds or tracefs instances."""
    before = held()
    yield before
    after = settle(before)
    assert not before.diff(after), f"left behind: {before.diff(after)}"


#: words with which a bad-input message says what to give instead
_WHAT_TO_DO = re.compile(r"\b(must be|choose|use|ask for|give)\b")


@pytest.fixture
def refused_before_loading(monkeypatch, no_leaks):
    """A function ``check(fn, kwargs)``: ``fn(**kwargs)`` must raise ValueError before anything
    is compiled or loaded, with a message that names the argument, the value it was given (or
    its type) and what to give instead. Returns the message."""
    import ebpf_lab.core.run as run

    def must_not_load(*args, **kwargs):
        raise AssertionError("bounded_run was reached with bad input")

    monkeypatch.setattr(run, "compile_program", must_not_load)

    def check(fn, kwargs: dict) -> str:
        with pytest.raises(ValueError) as info:
            fn(**kwargs)
        message = str(info.value)
        assert any(re.search(rf"\b{name}\b", message) for name in kwargs), (
            f"names none of {list(kwargs)}: {message}"
        )
        assert any(
            repr(v) in message or f"got {type(v).__name__}" in message for v in kwargs.values()
        ), f"does not say what was given: {message}"
        assert _WHAT_TO_DO.search(message), f"does not say what to do: {message}"
        return message

    return check


#: the unprivileged user tests run code as
NOBODY = 65534


def run_as_nobody(code: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -c code`` as uid/gid 65534 without supplementary groups (``setpriv``), in
    ``/``, without PYTHONPATH and with HOME=/tmp (IPython wants a writable profile directory).
    Files it reads must be readable by everyone. ``timeout`` is a safety net, not a
    measurement: importing the lab takes over a minute in an emulated VM beside other runs."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HOME")}
    env["HOME"] = "/tmp"
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        cwd="/",
        env=env,
        timeout=timeout,
    )


_SESSION_PROGS: set[int] = set()


def pytest_sessionstart(session):
    if IS_ROOT:
        try:
            _SESSION_PROGS.update(global_prog_ids())
        except Exception:
            pass


def pytest_sessionfinish(session, exitstatus):
    """After the suite, `bpftool prog list` must show nothing new (strict in CI)."""
    if not IS_ROOT or not _SESSION_PROGS and exitstatus != 0:
        return
    try:
        deadline = time.monotonic() + 3
        left = global_prog_ids() - _SESSION_PROGS
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = global_prog_ids() - _SESSION_PROGS
    except Exception:
        return
    if left:
        msg = f"BPF programs loaded during the suite are still loaded: ids {sorted(left)}"
        if os.environ.get("CI"):
            print("\nERROR: " + msg, file=sys.stderr)
            session.exitstatus = 1
        else:
            print("\nWARNING (not CI; other processes may own them): " + msg, file=sys.stderr)


class Started:
    """Wraps a workload so a test can act once it really runs (probes attached, as the core
    starts workloads only then): ``w = Started(fn); run(workload=w); w.event.wait()``."""

    def __init__(self, fn):
        self.fn = fn
        self.event = threading.Event()

    def __call__(self):
        self.event.set()
        return self.fn()


def after_start(started: Started, action, delay: float = 0.5) -> threading.Thread:
    """In a thread: wait until the workload started, then ``delay`` s, then ``action()``."""

    def run():
        if started.event.wait(120):
            time.sleep(delay)
            action()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def interrupt_once_attached(hold: float = 0.3) -> threading.Thread:
    """In a thread: once a bounded run has been attached and polling (past its compile, which
    holds Ctrl-C back) for ``hold`` seconds, send one SIGINT, as Ctrl-C would. (Programs held
    outside a run, e.g. the doctor's probes, or by a run still compiling, do not count.)"""
    from ebpf_lab.core import run as core

    def run():
        since = None
        deadline = time.monotonic() + 900  # a compile under emulation takes half a minute
        while time.monotonic() < deadline:
            if any(v.attached.is_set() for v in core.active_views()) and held().prog_ids:
                since = since or time.monotonic()
                if time.monotonic() - since >= hold:
                    send_sigint()
                    return
            else:
                since = None
            time.sleep(0.02)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def send_sigint() -> None:
    """What Ctrl-C or Jupyter's interrupt does: SIGINT to this process (main thread raises)."""
    os.kill(os.getpid(), signal.SIGINT)


# ------------------------------------------------------------------------------ kernel matrix
# The portable part of the suite: what `make test-kernels` runs in VMs booted with distribution
# kernels (scripts/kernels.py, `pytest -m matrix`). A whole file, or test names (a test
# function's name takes all its parameters; `name[id]` one of them) of a file. Sized so that
# CI's host suite plus the Debian 6.1 VM fit in 90 minutes under TCG emulation (a BCC compile
# there takes 10-50 s). The reliability cycles run there as a leak check over a few dozen bounded
# runs of the kernel-facing lessons (scripts/kernels.py sets EBPF_LAB_CYCLES/_CYCLE_CASES).
MATRIX: dict[str, set[str] | None] = {
    "test_doctor.py": None,
    "test_seed_lessons.py": None,
    "test_counters.py": None,
    # (lesson 07's newest tests, from syscall_prefix on, have not run in a VM yet)
    "test_attach_points.py": {
        "test_exact_count_for_the_childs_calls",
        "test_uprobe_for_one_pid_sees_only_that_process",
        "test_uprobe_breakpoint_is_in_the_processs_memory_not_in_the_file",
        "test_tracepoints_agree_on_a_second_run",
        "test_perf_event_samples_follow_cpu_time",
        "test_kprobe_explains_itself_before_anything_loads",
        "test_kernel_function_hooks_count_exactly_where_supported",
        "test_attach_point_table",
        "test_gated_child_stops_after_its_work_and_reports_it",
        "test_a_child_that_never_runs_is_killed",
        "test_failed_compile_kills_the_child",
        "test_interrupt_ends_a_long_spin",
        "test_bad_input_is_value_error_before_anything_starts",
        "test_interrupt_ends_the_whole_table",
        "test_uprobe_uretprobe_usdt_read_the_loops_values_exactly",
        "test_vfs_read_latency_counts_every_read_exactly",
    },
    "test_exec_watch.py": None,
    "test_leftovers.py": None,
    "test_reliability.py": {"test_cycle", "test_after_all_cycles"},
    # the core's attach kinds (autoload, xdp, tc) and the lessons that use them
    "test_core.py": None,
    "test_xdp_firewall.py": None,
    "test_tc_egress.py": None,
    "test_helper_calls.py": None,
    "test_magic.py": None,
    "test_seed_scripts.py": None,
    "test_bpftool.py": None,
    # bpftrace beside lessons 01, 02, 09, 12 (setup.sh installs bpftrace)
    "test_bpftrace.py": None,
    # lesson 15: a CO-RE object built from each kernel's BTF, loaded by libbpf
    "test_core_libbpf.py": None,
    "test_notebooks.py": {
        f"test_notebook_runs_top_to_bottom[{nb}]"
        for nb in (
            "00-setup-check",
            "01-hello",
            "02-maps-exec-per-uid",
            "03-perf-buffer",
            "10-networking",
            "11-security",
            "13-bpftool",
            "15-core-libbpf",
        )
    },
}


# ------------------------------------------------------------------------------ slow tests
# The long ones, in the same form as MATRIX: `pytest -m "not slow"` is a quick kernel run. They
# still run by default.
SLOW: dict[str, set[str] | None] = {
    "test_reliability.py": {"test_cycle", "test_after_all_cycles"},  # 200 bounded runs
    "test_setup.py": None,  # scripts/setup.sh twice
    "test_notebooks.py": None,  # every notebook top to bottom
    "test_browser.py": None,  # JupyterLab in a real browser
}


def _chosen(table: dict[str, set[str] | None], item) -> bool:
    names = table.get(item.path.name, set())
    return names is None or item.name in names or item.originalname in names


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _chosen(MATRIX, item):
            item.add_marker(pytest.mark.matrix)
        if _chosen(SLOW, item):
            item.add_marker(pytest.mark.slow)
