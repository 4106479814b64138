"""Reliability and security on the real kernel: every exit path leaves nothing behind.

What this module covers, exactly:

1. **200 bounded runs, round-robin** (``test_cycle``) over every public function that loads a
   program and attaches it for a bounded time (the :data:`CASES` list: hello, exec_counts,
   exec_events perf and ring, map_counts hash and array, lru_survivors, size_histogram write and
   read, helper_calls, user_space_updates, count_at tracepoint / raw_tracepoint / uprobe /
   perf_event, attach_points, open_latency, tracing_cost, run_queue_latency, cpu_profile,
   exec_watch, xdp_firewall, stream_events batched and callback, buffer_comparison,
   transfer_rates, and the ``%%ebpf`` cell magic). exec_deny (BPF LSM) is in its own test:
   on kernels without BPF LSM it refuses before attaching, and that refusal is what is checked.
   Each cycle ends one of four ways, rotating so that every function meets every ending
   (cycle ``i`` runs ``CASES[i % n]`` with ending ``(i // n + i % n) % 4``):

   - ``normal``: the run returns; for the lessons with a known workload the result is exact
     (e.g. execs per UID);
   - ``exception``: the workload raises after doing its work; the caller gets that exception;
   - ``interrupt``: SIGINT (what Ctrl-C and Jupyter's interrupt send) once the workload runs;
     the run returns a frame with ``attrs["interrupted"]`` / ``stopped_by == "interrupt"``;
   - ``stop``: :func:`ebpf_lab.core.run.stop_all` (the Stop button) once the workload runs; the run
     returns with ``stopped_by == "stop button"``.

   The ending is injected at one place for every lesson: the core's ``_run_live`` is wrapped so
   that the first bounded run of the call gets a workload that runs the lesson's own workload,
   then raises (exception) or waits until the run is told to stop (interrupt, stop: so the
   signal always lands while the run is attached). Functions made of several runs
   (attach_points, tracing_cost, transfer_rates) get the ending in their first run; the later
   runs are normal, and only "returns or raises, leaves nothing" is checked for them.

   After every cycle: the BPF programs, maps and perf events this process holds, its open file
   descriptors (``/proc/self/fd``, both ways: nothing new, nothing closed), the lab's tracefs
   instances and network namespaces are exactly as before; no child process and no lab thread is
   left; no run is active. The first round is the warm-up: there, only kernel objects are compared
   (libraries open files they keep for the life of the process). ``test_after_all_cycles`` then
   compares the end with the start (file descriptors: with the end of the warm-up round), and, in
   CI only (``CI`` set: the machine is ours alone), ``bpftool prog list`` / ``bpftool map list``
   and every tracefs instance on the machine.

2. **Two bounded runs at once** (fresh UIDs): two threads (exec_counts and exec_events ring) and
   two processes (exec_counts each); both attach before either workload starts, and each run
   counts exactly its own workload's execs, and exactly the other's.

3. **Bad input** (:data:`BAD_INPUT`, in-process, and :data:`NON_ROOT`, in a subprocess running as
   uid 65534): a typed error with a message that names the problem; for argument errors the
   core compiles and attaches nothing (its compile_program / try_attach are replaced by traps);
   this process's kernel objects and fds unchanged.

4. **Missing pieces**: bcc not importable (``sys.modules["bcc"] = None`` in a subprocess, and an
   unrelated module called ``bcc`` first on the path), tracefs not mounted
   (``kernel.TRACEFS_CANDIDATES`` pointed at an empty directory), kernel headers missing
   (``kernel.header_status`` patched; and, in a subprocess, BCC pointed at a missing header tree
   with ``BCC_KERNEL_SOURCE``): each error or doctor row says what to run.

Jupyter exposure (127.0.0.1 only, 403 without the token, the token in no world-readable file) is
tested in ``tests/test_lab_server.py``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import REPO, Started, needs_root, run_as_nobody, send_sigint
from forced_kernel import kprobes_hidden
from kernel_state import Held, global_map_ids, global_prog_ids, held, settle

import ebpf_lab
import ebpf_lab.core.run as core
from ebpf_lab import ProgramError, UnsupportedFeature
from ebpf_lab.lessons.l11_security.exec_watch import temporary_programs
from ebpf_lab.workloads import (
    busy_children,
    execs,
    mixed_cpu_child,
    opens_child,
    reads,
    writes,
)

pytestmark = needs_root

#: bounded runs round-robin over CASES; the kernel matrix's VMs run fewer over fewer cases
#: (``EBPF_LAB_CYCLES``, ``EBPF_LAB_CYCLE_CASES``: scripts/kernels.py sets them)
CYCLES = int(os.environ.get("EBPF_LAB_CYCLES", "200"))
ENDINGS = ("normal", "exception", "interrupt", "stop")
#: seconds after the workload starts before SIGINT / Stop is sent
ACT_DELAY = 0.2
#: the longest an interrupt/stop cycle's workload waits for the run to be told to stop
HOLD = 20.0


class InjectedError(RuntimeError):
    """The exception an ``exception`` cycle's workload raises."""


# ------------------------------------------------------------------------------ the cases


@dataclass
class Case:
    """One public bounded function, called with a small known workload."""

    name: str
    call: Callable[[Any], Any]  # (ctx) -> result
    check: Callable[[Any, Any], None] | None = None  # (result, ctx), for normal endings
    single_run: bool = True  # one bounded run (composite functions make several)


@dataclass
class Ctx:
    """What a case may use: two fresh UIDs, a temp dir, the IPython shell, a box for results."""

    uids: list[int]
    tmp: Path
    ip: Any
    box: dict[str, Any] = field(default_factory=dict)


def _frames(result: Any) -> list[pd.DataFrame]:
    if isinstance(result, pd.DataFrame):
        return [result]
    if isinstance(result, dict):
        return [v for v in result.values() if isinstance(v, pd.DataFrame)]
    if isinstance(result, tuple):
        return [v for v in result if isinstance(v, pd.DataFrame)]
    return []


def _run_attrs(result: Any) -> dict[str, Any]:
    """The core's attrs of the run that made ``result`` (the first frame that has them)."""
    for frame in _frames(result):
        if "stopped_by" in frame.attrs:
            return frame.attrs
    raise AssertionError(f"no frame with the run's attrs in {type(result).__name__}")


def _uid_execs(df: pd.DataFrame, uid: int) -> int:
    if "execs" in df.columns:  # exec_counts, or the magic's map frame
        return int(df.loc[df["uid"] == uid, "execs"].sum())
    return int((df["uid"] == uid).sum())  # one row per event


def _exec_plan(ctx: Ctx) -> Callable[[], Any]:
    a, b = ctx.uids
    return lambda: ctx.box.update(done=execs({a: 3, b: 2}, interleave=True))


def _check_execs(result: Any, ctx: Ctx) -> None:
    a, b = ctx.uids
    assert (_uid_execs(result, a), _uid_execs(result, b)) == (3, 2)


SIZES = [1, 2, 2, 100]


def _check_sizes(result: Any, ctx: Ctx) -> None:
    assert dict(zip(result["size"], result["calls"])) == {1: 1, 2: 2, 100: 1}


def _check_histogram(result: Any, ctx: Ctx) -> None:
    assert int(result["count"].sum()) == len(SIZES)


def _open_latency(ctx: Ctx) -> Any:
    target = ctx.tmp / "target.txt"
    target.write_text("ebpf-lab\n")
    with opens_child(str(target), 10, 5) as child:
        return ebpf_lab.open_latency(duration=0.05, workload=child.run, pid=child.pid)


def _cpu_profile(ctx: Ctx) -> Any:
    with mixed_cpu_child(0.05, 0.05) as child:
        return ebpf_lab.cpu_profile(duration=0.05, workload=child.run, pid=child.pid)


def _exec_watch(ctx: Ctx) -> Any:
    (a, _b) = ctx.uids
    with temporary_programs(["alarm", "quiet"]) as prog:

        def work() -> None:
            execs({a: 2}, program=prog["alarm"])
            execs({a: 1}, program=prog["quiet"])

        return ebpf_lab.exec_watch([prog["alarm"]], duration=0.05, workload=work)


MAGIC_CELL = """\
BPF_HASH(counts, u32, u64);
int count(void *ctx)
{
    u32 uid = bpf_get_current_uid_gid() & 0xFFFFFFFF;
    counts.atomic_increment(uid);
    return 0;
}
"""


def _magic(ctx: Ctx) -> Any:
    ctx.ip.user_ns["plan"] = {ctx.uids[0]: 3, ctx.uids[1]: 2}
    return ctx.ip.run_cell_magic(
        "ebpf",
        '--tracepoint syscalls:sys_enter_execve count -d 0.05 --workload "lambda: execs(plan)"',
        MAGIC_CELL,
    )


def _check_magic(result: Any, ctx: Ctx) -> None:
    a, b = ctx.uids
    counts = dict(zip(result.iloc[:, 0], result.iloc[:, 1]))
    assert (counts.get(a), counts.get(b)) == (3, 2), counts


def _check_stream(result: Any, ctx: Ctx) -> None:
    a = result.attrs
    assert a["generated"] == 20_000 and a["delivered"] + a["lost"] == a["generated"]


CASES: list[Case] = [
    Case(
        "hello",
        lambda c: ebpf_lab.hello(duration=0.05, workload=_exec_plan(c)),
        lambda r, c: (
            None if set(c.box["done"]["pid"]) <= set(r["pid"]) else pytest.fail("missing execs")
        ),
    ),
    Case(
        "exec_counts",
        lambda c: ebpf_lab.exec_counts(duration=0.05, interval=0.05, workload=_exec_plan(c)),
        _check_execs,
    ),
    Case(
        "exec_events_perf",
        lambda c: ebpf_lab.exec_events(duration=0.05, buffer="perf", workload=_exec_plan(c)),
        _check_execs,
    ),
    Case(
        "exec_events_ring",
        lambda c: ebpf_lab.exec_events(duration=0.05, buffer="ring", workload=_exec_plan(c)),
        _check_execs,
    ),
    Case(
        "map_counts_hash",
        lambda c: ebpf_lab.map_counts(
            "hash", uid=c.uids[0], duration=0.05, workload=lambda: writes(SIZES, uid=c.uids[0])
        ),
        _check_sizes,
    ),
    Case(
        "map_counts_array",
        lambda c: ebpf_lab.map_counts(
            "array",
            uid=c.uids[0],
            duration=0.05,
            max_entries=128,
            workload=lambda: writes(SIZES, uid=c.uids[0]),
        ),
        lambda r, c: _check_sizes(r[r["calls"] > 0], c),
    ),
    Case(
        "lru_survivors",
        lambda c: ebpf_lab.lru_survivors(
            2, uid=c.uids[0], duration=0.05, workload=lambda: writes(SIZES, uid=c.uids[0])
        ),
        lambda r, c: None if r.attrs["events"] == len(SIZES) else pytest.fail(str(r.attrs)),
    ),
    Case(
        "size_histogram_write",
        lambda c: ebpf_lab.size_histogram(
            "write", uid=c.uids[0], duration=0.05, workload=lambda: writes(SIZES, uid=c.uids[0])
        ),
        _check_histogram,
    ),
    Case(
        "size_histogram_read",
        lambda c: ebpf_lab.size_histogram(
            "read", uid=c.uids[0], duration=0.05, workload=lambda: reads(SIZES, uid=c.uids[0])
        ),
        _check_histogram,
    ),
    Case(
        "helper_calls",
        lambda c: ebpf_lab.helper_calls(
            duration=0.05, uid=c.uids[0], wide=True, workload=lambda: execs({c.uids[0]: 2})
        ),
        lambda r, c: None if len(r) == 2 else pytest.fail(f"{len(r)} rows"),
    ),
    Case(
        "user_space_updates",
        lambda c: ebpf_lab.user_space_updates(tuple(c.uids), calls=1, duration=0.05),
        lambda r, c: None if (r["kernel_added"] == r["expected"]).all() else pytest.fail("sum"),
    ),
    *[
        Case(
            f"count_at_{kind}",
            (lambda k: lambda c: ebpf_lab.count_at(k, calls=50, cpu_seconds=0.05))(kind),
            lambda r, c: None if r.attrs["within_bound"] else pytest.fail(str(r.attrs)),
        )
        for kind in ("tracepoint", "raw_tracepoint", "uprobe", "perf_event")
    ],
    Case(
        "attach_points",
        lambda c: ebpf_lab.attach_points(calls=50, cpu_seconds=0.05),
        single_run=False,
    ),
    Case(
        "open_latency",
        _open_latency,
        lambda r, c: None if len(r.events) == 15 else pytest.fail(f"{len(r.events)} events"),
    ),
    Case(
        "tracing_cost",
        lambda c: ebpf_lab.tracing_cost(opens=50, missing=10, repeats=1),
        single_run=False,
    ),
    Case(
        "run_queue_latency",
        lambda c: ebpf_lab.run_queue_latency(
            duration=0.05, workload=lambda: busy_children(2, 0.05, [os.sched_getaffinity(0).pop()])
        ),
    ),
    Case("cpu_profile", _cpu_profile),
    Case(
        "exec_watch",
        _exec_watch,
        lambda r, c: None if len(r) == 2 else pytest.fail(f"{len(r)} alerts"),
    ),
    Case(
        "xdp_firewall",
        lambda c: ebpf_lab.xdp_firewall(pings=2, connections=1, datagrams=1, duration=0.05),
    ),
    Case(
        "stream_events_batched",
        lambda c: ebpf_lab.stream_events("batched", 20_000, batch=64, ring_kb=256),
        _check_stream,
    ),
    Case(
        "stream_events_callback",
        lambda c: ebpf_lab.stream_events("callback", 20_000, ring_kb=256),
        _check_stream,
    ),
    Case(
        "buffer_comparison",
        lambda c: ebpf_lab.buffer_comparison(2_000, buffer_kb=1024),
        lambda r, c: None if r.attrs["generated"] == 2_000 else pytest.fail(str(r.attrs)),
    ),
    Case(
        "transfer_rates",
        lambda c: ebpf_lab.transfer_rates(20_000, ring_kb=256),
        single_run=False,
    ),
    Case("magic", _magic, _check_magic),
]


if os.environ.get("EBPF_LAB_CYCLE_CASES"):
    _wanted = os.environ["EBPF_LAB_CYCLE_CASES"].split(",")
    _unknown = set(_wanted) - {c.name for c in CASES}
    assert not _unknown, f"EBPF_LAB_CYCLE_CASES names no case {sorted(_unknown)}"
    CASES = [c for c in CASES if c.name in _wanted]


def schedule(i: int) -> tuple[Case, str]:
    """Cycle ``i``: which case, which ending (every case meets every ending in 4 rounds)."""
    n = len(CASES)
    return CASES[i % n], ENDINGS[(i // n + i % n) % len(ENDINGS)]


# ------------------------------------------------------------------------------ injection


@dataclass
class Injection:
    """The ending of one cycle, injected into the first bounded run of the call."""

    ending: str
    started: Started = field(default_factory=lambda: Started(lambda: None))
    active: threading.Event = field(default_factory=threading.Event)
    used: bool = False
    acted: list[Any] = field(default_factory=list)


def _patched_run_live(original: Callable[..., Any], inj: Injection) -> Callable[..., Any]:
    def run_live(spec: Any) -> Any:
        if inj.used:
            return original(spec)
        inj.used = True
        inner = spec.workload

        def workload() -> Any:
            inj.active.set()
            inj.started()  # the moment the actor waits for
            result = inner() if inner is not None else None
            if inj.ending == "exception":
                raise InjectedError("the workload failed on purpose")
            if inj.ending in ("interrupt", "stop"):
                deadline = time.monotonic() + HOLD
                while not core.stop_requested() and time.monotonic() < deadline:
                    time.sleep(0.005)
            return result

        return original(dataclasses.replace(spec, workload=workload))

    return run_live


def _actor(inj: Injection) -> threading.Thread | None:
    """For interrupt / stop: a thread that acts ACT_DELAY s after the workload started, if the
    run is still attached then (it cannot have ended: the workload waits for the stop)."""
    if inj.ending not in ("interrupt", "stop"):
        return None

    def act() -> None:
        if inj.started.event.wait(120):
            time.sleep(ACT_DELAY)
            if inj.active.is_set():
                if inj.ending == "interrupt":
                    send_sigint()
                    inj.acted.append("sigint")
                else:
                    inj.acted.append(core.stop_all())

    thread = threading.Thread(target=act, name="reliability-actor", daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------------------ state checks


def _children() -> set[int]:
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def _lab_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("ebpf-lab")]


def _tracefs_instances() -> set[str]:
    root = ebpf_lab.core.kernelfs.tracefs_root()
    return {p.name for p in (root / "instances").iterdir()} if root else set()


def _compare(before: Held, strict_fds: bool) -> str:
    """What differs from ``before`` now (after the kernel had a moment to free objects)."""
    after = settle(before, fds=strict_fds)
    problems = [before.diff(after, fds=strict_fds)]
    if strict_fds and before.fds - after.fds:
        problems.append(f"fds closed that were open before: {sorted(before.fds - after.fds)}")
    return "; ".join(p for p in problems if p)


STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    """What the process (and, in CI, the machine) held before the first cycle."""
    # Garbage that earlier test modules left (e.g. clients of Jupyter kernels) may hold fds; if
    # the collector freed it during a cycle, that cycle would see fds close that it never had.
    gc.collect()
    STATE.update(
        held=held(),
        instances=_tracefs_instances(),
        children=_children(),
        progs=global_prog_ids() if os.environ.get("CI") else set(),
        maps=global_map_ids() if os.environ.get("CI") else set(),
    )
    return STATE


@pytest.fixture(scope="module")
def ip():
    """A real IPython shell with ``%%ebpf`` (shared with test_magic.py when both run)."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    if InteractiveShell.initialized():
        shell = InteractiveShell.instance()
    else:
        config = Config()
        config.HistoryManager.enabled = False
        shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "ebpf_lab")
    shell.user_ns["execs"] = execs
    return shell


def _ids(i: int) -> str:
    case, ending = schedule(i)
    return f"{i:03d}-{case.name}-{ending}"


# ------------------------------------------------------------------------------ 1. the cycles


@pytest.mark.parametrize("cycle", range(CYCLES), ids=_ids)
def test_cycle(cycle, baseline, ip, fresh_uids, tmp_path, monkeypatch):
    case, ending = schedule(cycle)
    warm_up = cycle < len(CASES)  # the first use of each function may open lasting files
    gc.collect()  # (see baseline)
    before = held()
    children = _children()
    ctx = Ctx(uids=fresh_uids(2), tmp=tmp_path, ip=ip)
    inj = Injection(ending)
    monkeypatch.setattr(core, "_run_live", _patched_run_live(core._run_live, inj))
    actor = _actor(inj)
    result: Any = None
    error: BaseException | None = None
    try:
        try:
            result = case.call(ctx)
        except Exception as exc:
            error = exc
        finally:
            inj.active.clear()
            if actor is not None:
                inj.started()  # release an actor whose workload never started: it does nothing
                actor.join(ACT_DELAY + 5)
    except KeyboardInterrupt:  # pragma: no cover - would mean a SIGINT outside the run
        pytest.fail("SIGINT reached the caller: it arrived after the run had ended")
    monkeypatch.undo()

    if ending == "exception":
        assert isinstance(error, InjectedError), f"expected the workload's error, got {error!r}"
    else:
        if error is not None:
            raise error
        if ending != "normal":
            assert inj.acted, f"{ending}: the workload never started, nothing was sent"
        if case.single_run:
            attrs = _run_attrs(result)
            want = {"normal": None, "interrupt": "interrupt", "stop": "stop button"}[ending]
            assert attrs["stopped_by"] == want, attrs
            assert attrs["interrupted"] is (ending != "normal")
        if ending == "normal" and case.check is not None:
            case.check(result, ctx)

    problems = _compare(before, strict_fds=not warm_up)
    assert not problems, f"{case.name} ({ending}) left behind: {problems}"
    assert core.active_views() == [], "a run is still registered as active"
    assert _children() <= children, f"child processes left: {_children() - children}"
    left = _lab_threads()
    deadline = time.monotonic() + 3
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = _lab_threads()
    assert not left, f"lab threads still running: {left}"
    if cycle == len(CASES) - 1:
        STATE["after_warm_up"] = held()


def test_after_all_cycles(baseline):
    """The process and the machine hold what they held before the first cycle."""
    start = baseline["held"]
    now = settle(start, fds=False)
    assert not start.diff(now, fds=False), start.diff(now, fds=False)
    reference = STATE.get("after_warm_up", start)
    assert now.fds == reference.fds, (
        f"fds differ from the end of the warm-up round: new {sorted(now.fds - reference.fds)}, "
        f"closed {sorted(reference.fds - now.fds)}"
    )
    mine = {n for n in _tracefs_instances() if n.startswith(f"ebpf_lab_{os.getpid()}_")}
    assert not mine, f"tracefs instances of this process left: {sorted(mine)}"
    assert _children() <= baseline["children"]
    if os.environ.get("CI"):  # alone on the machine: the global lists must match too
        time.sleep(1.5)  # the kernel frees objects a moment after their last fd closes
        assert global_prog_ids() - baseline["progs"] == set(), "bpftool prog list grew"
        assert global_map_ids() - baseline["maps"] == set(), "bpftool map list grew"
        assert _tracefs_instances() == baseline["instances"], "tracefs instances differ"


def test_exec_deny_refuses_or_denies_and_leaves_nothing(no_leaks):
    """BPF LSM: where the kernel refuses LSM programs, exec_deny says why and attaches nothing;
    where it allows them, the denied program fails exactly ``attempts`` times."""
    with temporary_programs(["forbidden"]) as prog:
        if not ebpf_lab.supports("lsm"):
            with pytest.raises(UnsupportedFeature, match="lsm"):
                ebpf_lab.exec_deny(prog["forbidden"], attempts=2, duration=0.05)
            return
        df = ebpf_lab.exec_deny(prog["forbidden"], attempts=2, duration=0.05)
    assert df.attrs["interrupted"] is False


# ------------------------------------------------------------------------------ 2. concurrency


def test_two_runs_in_two_threads_each_count_exactly(fresh_uids, no_leaks):
    a, b = fresh_uids(2)
    gate = threading.Barrier(2, timeout=120)  # both attached before either workload execs
    done = threading.Barrier(2, timeout=120)
    results: dict[str, Any] = {}

    def work(uid: int, n: int) -> Callable[[], None]:
        def run() -> None:
            gate.wait()  # both attached
            results[f"done-{uid}"] = execs({uid: n})
            done.wait()  # both workloads done: neither detaches before the other's last exec

        return run

    def counts() -> None:
        results["counts"] = ebpf_lab.exec_counts(duration=0.1, interval=0.1, workload=work(a, 7))

    def events() -> None:
        results["events"] = ebpf_lab.exec_events(duration=0.1, buffer="ring", workload=work(b, 5))

    threads = [threading.Thread(target=f) for f in (counts, events)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert set(results) >= {"counts", "events"}, results.keys()
    for df in (results["counts"], results["events"]):
        assert (_uid_execs(df, a), _uid_execs(df, b)) == (7, 5)
    assert len(results[f"done-{a}"]) == 7 and len(results[f"done-{b}"]) == 5


CHILD_RUN = textwrap.dedent(
    """
    import json, os, sys, time
    import ebpf_lab
    from ebpf_lab.workloads import execs

    uid, n, gate, other = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

    def wait_for(path):
        deadline = time.monotonic() + 120
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)

    def work():
        open(f"{gate}.ready-{uid}", "w").close()  # attached: the core starts workloads then
        wait_for(gate + ".go")
        done = len(execs({uid: n}))
        open(f"{gate}.done-{uid}", "w").close()
        wait_for(f"{gate}.done-{other}")  # stay attached until the other run's execs are done
        return done

    box = {}
    df = ebpf_lab.exec_counts(
        duration=0.1, interval=0.1, workload=lambda: box.update(done=work())
    )
    counts = df.groupby("uid")["execs"].sum()
    print(json.dumps({"counts": {str(k): int(v) for k, v in counts.items()}, "done": box["done"]}))
    """
)


def test_two_runs_in_two_processes_each_count_exactly(fresh_uids, tmp_path):
    a, b = fresh_uids(2)
    plan = {a: 9, b: 4}
    gate = str(tmp_path / "gate")
    procs = {
        uid: subprocess.Popen(
            [sys.executable, "-c", CHILD_RUN, str(uid), str(n), gate, str(other)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for (uid, n), other in zip(plan.items(), reversed(plan))
    }
    try:
        deadline = time.monotonic() + 120
        while not all(os.path.exists(f"{gate}.ready-{u}") for u in plan):
            assert time.monotonic() < deadline, "the two runs did not both attach"
            assert all(p.poll() is None for p in procs.values()), "a run ended early"
            time.sleep(0.05)
        Path(gate + ".go").touch()
        outputs = {uid: p.communicate(timeout=120) for uid, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for uid, (out, err) in outputs.items():
        assert procs[uid].returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        assert report["done"] == plan[uid]
        # each run counted its own workload exactly, and the other run's too (both attached)
        assert {int(k): v for k, v in report["counts"].items() if int(k) in plan} == plan


# ------------------------------------------------------------------------------ 3. bad input

COMPILE_ERROR = "int count(void *ctx)\n{\n    return undeclared_thing;\n}\n"
VERIFIER_ERROR = (
    "BPF_HASH(a, u32, u64);\n"
    "int count(void *ctx)\n{\n    u32 k = 0;\n    u64 *v = a.lookup(&k);\n    return *v;\n}\n"
)
TP_LINE = "--tracepoint syscalls:sys_enter_execve count"


def _usage_error() -> type[BaseException]:
    from IPython.core.error import UsageError

    return UsageError


def _without_kprobes(call: Callable[[], Any]) -> Any:
    """Run ``call`` while the lab sees a kernel without kprobes (forced: kernels with kprobes
    must give the same clear error for a kernel that lacks them)."""
    with kprobes_hidden():
        return call()


@dataclass(frozen=True)
class Bad:
    """One bad call: what it is, the call, the error type, a regex the message must match."""

    label: str
    call: Callable[[Any], Any]  # (ip) -> ...
    error: Any  # an exception type, or a callable giving one (IPython's UsageError, lazily)
    match: str
    loads: bool = False  # True: the error comes from clang or the verifier (a compile happens)


BAD_INPUT = [
    Bad("duration as text", lambda ip: ebpf_lab.exec_counts(duration="5"), ValueError, "number"),
    Bad("negative duration", lambda ip: ebpf_lab.hello(duration=-1), ValueError, "> 0"),
    Bad("nan duration", lambda ip: ebpf_lab.exec_events(duration=float("nan")), ValueError, "fin"),
    Bad("duration over an hour", lambda ip: ebpf_lab.exec_counts(7200), ValueError, "limit"),
    Bad(
        "interval longer than duration",
        lambda ip: ebpf_lab.exec_counts(duration=1, interval=2),
        ValueError,
        "interval",
    ),
    Bad("unknown attach", lambda ip: ebpf_lab.exec_counts(attach="fentry"), ValueError, "attach"),
    Bad("unknown buffer", lambda ip: ebpf_lab.exec_events(buffer="pipe"), ValueError, "ring"),
    Bad(
        "huge max_events",
        lambda ip: ebpf_lab.exec_events(max_events=10**12),
        ValueError,
        "limit",
    ),
    Bad("bool max_events", lambda ip: ebpf_lab.exec_events(max_events=True), ValueError, "whole"),
    Bad("workload not callable", lambda ip: ebpf_lab.hello(workload="ls"), ValueError, "callable"),
    Bad("unknown map kind", lambda ip: ebpf_lab.map_counts("tree"), ValueError, "hash"),
    Bad("uid out of range", lambda ip: ebpf_lab.size_histogram(uid=2**32), ValueError, "UID"),
    Bad("uid as text", lambda ip: ebpf_lab.helper_calls(uid="root"), ValueError, "root"),
    Bad("unknown attach kind", lambda ip: ebpf_lab.count_at("kfunc"), ValueError, "kfunc"),
    Bad("huge stream", lambda ip: ebpf_lab.stream_events(events=10**9), ValueError, "5,000,000"),
    Bad("unknown protocol", lambda ip: ebpf_lab.xdp_firewall(drop="all"), ValueError, "icmp"),
    Bad("zero sample rate", lambda ip: ebpf_lab.cpu_profile(sample_freq=0), ValueError, "freq"),
    Bad(
        "kprobe without kprobes",
        lambda ip: _without_kprobes(lambda: ebpf_lab.exec_counts(duration=1, attach="kprobe")),
        UnsupportedFeature,
        "tracepoint",
    ),
    Bad(
        "%%ebpf negative duration",
        lambda ip: ip.run_cell_magic("ebpf", TP_LINE + " -d -1", MAGIC_CELL),
        _usage_error,
        "duration",
    ),
    Bad(
        "%%ebpf unknown tracepoint",
        lambda ip: ip.run_cell_magic("ebpf", "--tracepoint nosuch:event count", MAGIC_CELL),
        _usage_error,
        "nosuch:event",
    ),
    Bad(
        "%%ebpf function not in the cell",
        lambda ip: ip.run_cell_magic("ebpf", "--tracepoint syscalls:sys_enter_execve f", "//"),
        _usage_error,
        "f",
        loads=True,  # the magic compiles the cell to learn which functions it defines
    ),
    Bad(
        "%%ebpf workload not callable",
        lambda ip: ip.run_cell_magic("ebpf", TP_LINE + ' --workload "42"', MAGIC_CELL),
        _usage_error,
        "callable",
    ),
    Bad(
        "%%ebpf C that does not compile",
        lambda ip: ip.run_cell_magic("ebpf", TP_LINE, COMPILE_ERROR),
        ProgramError,
        r"did not compile(.|\n)*line +4(.|\n)*undeclared_thing",
        loads=True,
    ),
    Bad(
        "%%ebpf C the verifier rejects",
        lambda ip: ip.run_cell_magic("ebpf", TP_LINE, VERIFIER_ERROR),
        ProgramError,
        r"verifier rejected count\(\)(.|\n)*line +7",
        loads=True,
    ),
]


@pytest.mark.parametrize("bad", BAD_INPUT, ids=[b.label for b in BAD_INPUT])
def test_bad_input_is_a_clear_typed_error_and_nothing_is_attached(bad, ip, monkeypatch):
    before = held()

    def must_not(*a: Any, **k: Any) -> Any:
        raise AssertionError("a program was compiled for a bad argument")

    if not bad.loads:
        monkeypatch.setattr(core, "compile_program", must_not)
        monkeypatch.setattr(core, "try_attach", must_not)
    error = bad.error() if bad.error is _usage_error else bad.error
    with pytest.raises(error, match=bad.match) as info:
        bad.call(ip)
    assert len(str(info.value)) > 20, "the message should say what to do"
    if isinstance(info.value, ProgramError):
        assert info.value.stage in ("compile", "verifier") and info.value.log
    assert core.active_views() == []
    problems = _compare(before, strict_fds=True)
    assert not problems, problems


NON_ROOT_SCRIPT = textwrap.dedent(
    """
    import json
    import ebpf_lab
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell.instance(config=config)
    ip.run_line_magic("load_ext", "ebpf_lab")
    calls = {
        "exec_counts": lambda: ebpf_lab.exec_counts(duration=0.2, interval=0.1),
        "exec_events": lambda: ebpf_lab.exec_events(duration=0.2, buffer="ring"),
        "hello": lambda: ebpf_lab.hello(duration=0.2),
        "map_counts": lambda: ebpf_lab.map_counts(duration=0.2),
        "count_at": lambda: ebpf_lab.count_at("tracepoint", calls=10),
        "stream_events": lambda: ebpf_lab.stream_events(events=10),
        "cpu_profile": lambda: ebpf_lab.cpu_profile(duration=0.2),
        "xdp_firewall": lambda: ebpf_lab.xdp_firewall(pings=1),
        "verify": lambda: ebpf_lab.verify("int f(void *ctx) { return 0; }"),
        "magic": lambda: ip.run_cell_magic(
            "ebpf", "--tracepoint syscalls:sys_enter_execve f -d 0.2",
            "int f(void *ctx) { return 0; }"
        ),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = ["returned", ""]
        except BaseException as exc:
            out[name] = [type(exc).__name__, str(exc)]
    doctor = ebpf_lab.doctor().set_index("feature")
    out["doctor root"] = [str(doctor.loc["root", "supported"]), doctor.loc["root", "detail"]]
    print(json.dumps(out))
    """
)
NON_ROOT = [
    "exec_counts",
    "exec_events",
    "hello",
    "map_counts",
    "count_at",
    "stream_events",
    "cpu_profile",
    "xdp_firewall",
    "verify",
    "magic",
]


@pytest.fixture(scope="module")
def non_root_report() -> dict[str, list[str]]:
    out = run_as_nobody(NON_ROOT_SCRIPT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", NON_ROOT)
def test_non_root_is_a_permission_error_saying_how_to_start(name, non_root_report):
    kind, message = non_root_report[name]
    assert kind == "PermissionError", (kind, message)
    assert "sudo make lab" in message


def test_non_root_doctor_says_how_to_start(non_root_report):
    supported, detail = non_root_report["doctor root"]
    assert supported == "False" and "sudo make lab" in detail


# ------------------------------------------------------------------------------ 4. missing pieces

NO_BCC_SCRIPT = textwrap.dedent(
    """
    import json, sys
    MODE = sys.argv[1]
    if MODE == "none":
        sys.modules["bcc"] = None          # `import bcc` fails, as without python3-bpfcc
    else:
        sys.path.insert(0, sys.argv[2])    # an unrelated module called bcc (as PyPI's) first
    import ebpf_lab
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.enabled = False
    ip = InteractiveShell.instance(config=config)
    ip.run_line_magic("load_ext", "ebpf_lab")
    out = {}
    for name, call in {
        "exec_counts": lambda: ebpf_lab.exec_counts(duration=0.2, interval=0.1),
        "hello": lambda: ebpf_lab.hello(duration=0.2),
        "stream_events": lambda: ebpf_lab.stream_events(events=10),
        "magic": lambda: ip.run_cell_magic(
            "ebpf", "--tracepoint syscalls:sys_enter_execve f -d 0.2",
            "int f(void *ctx) { return 0; }"
        ),
    }.items():
        try:
            call()
            out[name] = ["returned", ""]
        except BaseException as exc:
            out[name] = [type(exc).__name__, str(exc)]
    doctor = ebpf_lab.doctor().set_index("feature")
    out["doctor"] = {f: [bool(r.supported), r.detail] for f, r in doctor.iterrows()}
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("mode", ["none", "unrelated"])
def test_bcc_missing_says_what_to_install(mode, tmp_path):
    fake = tmp_path / "bcc"
    fake.mkdir()
    (fake / "__init__.py").write_text('"""Not BCC: an unrelated package of the same name."""\n')
    out = subprocess.run(
        [sys.executable, "-c", NO_BCC_SCRIPT, mode, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("exec_counts", "hello", "stream_events", "magic"):
        kind, message = report[name]
        assert kind == "BccMissing", (name, kind, message)
        assert "apt-get install python3-bpfcc" in message and "pip install bcc" in message
        if mode == "unrelated":
            assert "is not BCC" in message
    doctor = report["doctor"]
    assert doctor["bcc"][0] is False and "apt-get install python3-bpfcc" in doctor["bcc"][1]
    assert doctor["tracepoint"][0] is False and "python3-bpfcc" in doctor["tracepoint"][1]


@pytest.fixture
def fresh_doctor(monkeypatch):
    """doctor() probes again here; the process's cached answer is put back afterwards."""
    doctor_module = sys.modules["ebpf_lab.kernel.doctor"]
    monkeypatch.setattr(doctor_module, "_CACHE", None)
    return doctor_module


@pytest.fixture
def no_tracefs(tmp_path, monkeypatch):
    """tracefs looked for in an empty directory only, as on a machine where it is not mounted."""
    from ebpf_lab.core import kernelfs as kernel

    empty = tmp_path / "tracing"
    empty.mkdir()
    monkeypatch.setattr(kernel, "TRACEFS_CANDIDATES", (empty,))
    assert kernel.tracefs_root() is None
    return empty


def test_tracefs_not_mounted_says_how_to_mount(no_tracefs, fresh_doctor):
    before = held()
    with pytest.raises(UnsupportedFeature, match=r"mount -t tracefs"):
        ebpf_lab.count_at("tracepoint", calls=10)
    problems = _compare(before, strict_fds=True)
    assert not problems, problems
    row = ebpf_lab.doctor().set_index("feature").loc["tracefs"]
    assert not row["supported"]
    assert "mount -t tracefs" in row["detail"] and "sudo make lab" in row["detail"]


def test_tracefs_not_mounted_exec_lessons_say_how_to_mount(no_tracefs):
    before = held()
    try:
        with pytest.raises(UnsupportedFeature, match=r"mount -t tracefs"):
            ebpf_lab.hello(duration=0.05)
    finally:
        problems = _compare(before, strict_fds=True)
        assert not problems, problems


def test_headers_missing_doctor_says_what_to_run(monkeypatch, fresh_doctor):
    from ebpf_lab.core import kernelfs as kernel

    monkeypatch.setattr(kernel, "header_status", lambda: kernel.HeaderStatus("missing", None, None))
    row = ebpf_lab.doctor().set_index("feature").loc["kernel_headers"]
    assert not row["supported"]
    assert "sudo make lab" in row["detail"] and f"/lib/modules/{kernel.release()}" in row["detail"]


def test_headers_really_missing_compile_error_says_what_to_run():
    """BCC pointed at a header tree that does not exist (``BCC_KERNEL_SOURCE``), in a child."""
    code = textwrap.dedent(
        """
        import ebpf_lab
        try:
            ebpf_lab.exec_counts(duration=0.1, interval=0.1)
        except Exception as exc:
            print(type(exc).__name__ + ": " + str(exc))
        """
    )
    env = dict(os.environ, BCC_KERNEL_SOURCE="/nonexistent/ebpf-lab-headers")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    # (BCC itself prints a line of its own to stdout first, which a notebook does not show)
    error = out.stdout[out.stdout.find("ProgramError") :]
    assert error.startswith("ProgramError"), out.stdout + out.stderr
    assert "make setup" in error or "make lab" in error, out.stdout


# ------------------------------------------------------------------------------ Ctrl-C in callbacks


def test_interrupt_during_a_callback_storm_ends_the_run(no_leaks, monkeypatch):
    started = Started(lambda: None)
    done = threading.Event()

    def act() -> None:
        if started.event.wait(60):
            time.sleep(0.5)
            if not done.is_set():
                send_sigint()

    original = core._run_live

    def run_live(spec: Any) -> Any:
        inner = spec.workload
        return original(dataclasses.replace(spec, workload=lambda: (started(), inner())[1]))

    actor = threading.Thread(target=act, daemon=True)
    actor.start()
    monkeypatch.setattr(core, "_run_live", run_live)
    t0 = time.monotonic()
    try:
        df = ebpf_lab.stream_events("callback", 2_000_000, ring_kb=1024)
    finally:
        done.set()
        started()
        actor.join()
    assert df.attrs["stopped_by"] == "interrupt", f"ran to the end in {time.monotonic() - t0:.1f}s"
