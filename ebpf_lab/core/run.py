"""The bounded-run core: compile, attach, run for ``duration`` seconds, detach on every exit path.

Every lesson goes through :func:`bounded_run`. A lesson names its C program, its attach points and a
:class:`Collector` that reads what the program gathered; the core does the rest:

1. checks (root, bcc) before anything loads; lessons check their own arguments first; removes
   what runs of processes killed mid-run left in the kernel (:func:`ebpf_lab.core.leftovers.reap`);
2. compiles the C and loads each function (compile and verifier errors become ProgramError);
3. attaches the probes, trying alternatives in order (e.g. kprobe, then tracepoint);
4. starts the optional ``workload`` in a thread once everything is attached;
5. polls the collector until ``duration`` has passed *and* the workload has finished, or until
   the Stop button, a Jupyter interrupt (KeyboardInterrupt) or an error ends it early;
6. drains what is left, builds the DataFrame, and always detaches and closes everything, with
   Ctrl-C deferred so a second interrupt cannot leave a probe behind.

An interrupt or Stop returns the data gathered so far with ``df.attrs["interrupted"] = True``.
An exception in the workload is re-raised after everything is detached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core import leftovers, replay
from ebpf_lab.core.attach import Alternative, detach_all, prog_type, try_attach
from ebpf_lab.core.errors import ProgramError, UnsupportedFeature
from ebpf_lab.core.external import ExternalTracer, TracerProcess
from ebpf_lab.core.guards import require_bcc, require_root
from ebpf_lab.core.live import Live, make_live
from ebpf_lab.core.loader import compile_program, load_function, release

#: how long one poll may block, in seconds: the Stop button and the deadline are checked this often
POLL_SLICE = 0.1
#: how long to wait for a workload that was asked to stop after an interrupt, in seconds
WORKLOAD_STOP_GRACE = 10.0

_local = threading.local()
_ACTIVE: list[Live] = []
_ACTIVE_LOCK = threading.Lock()


def active_views() -> list[Live]:
    """The views (progress bar + Stop button) of the bounded runs going on now."""
    with _ACTIVE_LOCK:
        return list(_ACTIVE)


def stop_all() -> int:
    """Press Stop on every bounded run going on now; returns how many were asked to stop."""
    views = active_views()
    for view in views:
        view.request_stop()
    return len(views)


def stop_requested() -> bool:
    """Inside a workload: True once the run was stopped or interrupted, so the workload should end.

    The lab's own workloads (:mod:`ebpf_lab.workloads`) check this between steps.
    """
    event = getattr(_local, "stop", None)
    return bool(event is not None and event.is_set())


def ended_early(df: Any) -> bool:
    """True if a bounded run's frame says Stop or an interrupt ended it (``attrs["interrupted"]``).

    A function that makes several runs in a row checks this after each one and makes no more:
    one click on Stop (or one Ctrl-C) ends the whole call, not just the run that was going.
    """
    return bool(getattr(df, "attrs", {}).get("interrupted"))


@dataclass
class RunContext:
    """What a collector gets: the loaded program and the run's clocks."""

    bpf: Any
    bcc: Any
    attach: str
    duration: float
    live: Live
    t0_mono_ns: int = 0
    t0_wall_ns: int = 0
    attrs: dict[str, Any] = field(default_factory=dict)

    def table(self, name: str) -> Any:
        """The program's map called ``name`` (a BCC table object)."""
        return self.bpf[name.encode()]

    def elapsed(self) -> float:
        """Seconds since the probes were attached."""
        return (time.monotonic_ns() - self.t0_mono_ns) / 1e9

    def to_time(self, ktime_ns: Any) -> pd.Series:
        """Kernel monotonic nanoseconds (``bpf_ktime_get_ns``) -> wall-clock ``datetime64[ns]``."""
        values = np.asarray(ktime_ns, dtype="int64") - self.t0_mono_ns + self.t0_wall_ns
        return pd.Series(pd.to_datetime(values, unit="ns"), name="time")

    def now(self) -> pd.Timestamp:
        """The current wall-clock time as a Timestamp."""
        return pd.Timestamp(time.time_ns(), unit="ns")


class Collector:
    """A lesson's reading side. Override what you need; the defaults do nothing.

    ``start`` runs once the probes are attached (open buffers, take a first snapshot); ``poll``
    waits at most ``timeout`` seconds for data; ``finish`` builds the DataFrame after a last
    drain; ``close`` releases what ``start`` opened and runs on every exit path. A collector that
    has all it wants (e.g. ``max_events``) sets ``full = True`` and the run ends early.
    """

    full: bool = False
    #: the first exception raised inside a callback BCC called (BCC would print and drop it)
    callback_error: BaseException | None = None

    def guard(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a BCC callback (perf/ring buffer) so an exception in it ends the run and is
        raised to the caller, instead of being printed and ignored by BCC."""

        def guarded(*args: Any) -> Any:
            try:
                return callback(*args)
            except Exception as exc:
                if self.callback_error is None:
                    self.callback_error = exc
                self.full = True  # end the run
                return None

        return guarded

    def prepare(self, bpf: Any) -> None:
        """Write the run's own values (a tag, a pid) into the program's maps; called once, after
        compiling and before attaching, so the program never runs without them."""

    def start(self, ctx: RunContext) -> None:
        """Open buffers and take first readings; called once, after attaching."""

    def poll(self, ctx: RunContext, timeout: float) -> None:
        """Read what arrived, waiting up to ``timeout`` seconds."""
        if timeout > 0:
            time.sleep(timeout)

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        """Build the result frame (a last ``poll(ctx, 0)`` has already drained the buffers)."""
        return pd.DataFrame()

    def close(self, ctx: RunContext | None) -> None:
        """Release resources opened in ``start``; called on every exit path."""


@contextlib.contextmanager
def sigint_deferred() -> Iterator[list[int]]:
    """Hold off Ctrl-C / Jupyter interrupts for the block (main thread only); yield what arrived."""
    arrived: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield arrived
        return
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
    except ValueError:  # not the main interpreter
        yield arrived
        return
    try:
        yield arrived
    finally:
        signal.signal(signal.SIGINT, previous)


class WorkloadThread(threading.Thread):
    """A run's workload in its own thread: keeps its result or the exception it raised.

    ``stop`` is the run's Stop event (:func:`stop_requested` in the workload sees it).
    """

    def __init__(self, workload: Callable[[], Any], stop: threading.Event) -> None:
        super().__init__(name="ebpf-lab-workload", daemon=True)
        self.workload = workload
        self.stop = stop
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        _local.stop = self.stop
        try:
            self.result = self.workload()
        except BaseException as exc:  # reported to the caller after detaching
            self.error = exc
        finally:
            _local.stop = None


def _attach_first_working(
    bcc: Any, bpf: Any, alternatives: Sequence[Alternative], name: str
) -> tuple[Alternative, list[str]]:
    """Load and attach the first alternative that works; returns it and why the others failed."""
    failures: list[str] = []
    for i, alt in enumerate(alternatives):
        last = i == len(alternatives) - 1
        try:
            for probe in alt.probes:
                load_function(bpf, probe.fn, prog_type(bcc, probe), name=name)
                error = try_attach(bcc, bpf, probe)
                if error is not None:
                    raise UnsupportedFeature(probe.kind, f"{probe.describe()}: {error}")
            return alt, failures
        except UnsupportedFeature as exc:
            failures.append(f"{alt.label}: {exc.reason}")
            # undo what this alternative attached before trying the next
            with contextlib.suppress(Exception):
                detach_all(bpf)
            if last:
                raise
        except ProgramError:
            raise
    raise ValueError("bounded_run needs at least one attach alternative")  # pragma: no cover


@dataclass(frozen=True)
class RunSpec:
    """Everything one bounded run needs, written once (see :func:`bounded_run` for each field)."""

    name: str
    collector: Collector
    duration: float
    source: str = ""
    alternatives: Sequence[Alternative] = ()
    tracer: ExternalTracer | None = None
    workload: Callable[[], Any] | None = None
    cflags: Sequence[str] = ()
    live: bool | None = None
    attrs: dict[str, Any] | None = None
    on_workload_result: Callable[[Any], None] | None = None

    def __post_init__(self) -> None:
        if self.tracer is None and not (self.source and self.alternatives):
            raise ValueError(
                f"{self.name}: a bounded run needs source and alternatives, or a tracer"
            )
        if self.tracer is not None and (self.source or self.alternatives or self.cflags):
            raise ValueError(f"{self.name}: a tracer loads its own programs: no source to compile")


def bounded_run(spec: RunSpec | None = None, /, **fields: Any) -> pd.DataFrame:
    """Run one BPF program for a bounded time and return the collector's DataFrame.

    Called with a :class:`RunSpec`, or with its fields as keywords
    (``bounded_run(name=..., source=..., alternatives=..., collector=..., duration=...)``).

    This is the one place where a run is recorded or replayed (:mod:`ebpf_lab.core.replay`;
    sessions come from :mod:`ebpf_lab.classroom.recordings`):
    while recording (``ebpf_lab.record(dir)`` / ``EBPF_LAB_RECORD``) the frame returned, or the
    exception raised, is also saved; while replaying (``ebpf_lab.replay(dir)`` /
    ``EBPF_LAB_REPLAY``) nothing is compiled, loaded or attached: the ``workload`` runs (the
    lab's known workloads replay their recorded results) and the next recorded frame is
    returned, with ``df.attrs["replay"]``.

    Args:
        name: a short name for messages and the progress bar.
        source: the C text.
        alternatives: ways to attach, tried in order; the first that attaches is used.
        tracer: instead of ``source`` and ``alternatives``, another tool that loads and
            attaches its own programs (:mod:`ebpf_lab.core.external`: bpftrace, a libbpf
            loader); the collector reads its output lines from ``ctx.bpf``.
        collector: reads the program's maps/buffers and builds the frame.
        duration: seconds to run (checked by the caller); the run also waits for the workload.
        workload: a callable started in a thread once the probes are attached.
        cflags: extra compiler flags (``-DNAME=value``).
        live: show the progress bar and Stop button (default: only in Jupyter).
        attrs: extra ``df.attrs`` entries.
        on_workload_result: called with the workload's return value when it finished normally.

    Returns:
        The collector's frame with ``attrs``: ``attach``, ``attach_reason``, ``duration``,
        ``elapsed``, ``kernel``, ``interrupted``, ``stopped_by`` and the lesson's own.
    """
    if spec is None:
        spec = RunSpec(**fields)
    elif fields:
        raise TypeError("bounded_run takes a RunSpec or keywords, not both")
    session = replay.current()
    if session is not None and session.mode == "replay":
        return session.replay_run(
            name=spec.name,
            duration=spec.duration,
            workload=spec.workload,
            live=spec.live,
            on_workload_result=spec.on_workload_result,
        )
    started: list[bool] = []
    if session is not None and spec.workload is not None:  # remember whether the workload ran
        inner = spec.workload

        def noted() -> Any:
            started.append(True)
            return inner()

        spec = dataclasses.replace(spec, workload=noted)
    try:
        frame = _run_live(spec)
    except Exception as exc:
        if session is not None:
            session.record_run(spec.name, None, exc, workload_ran=bool(started))
        raise
    if session is not None:
        session.record_run(spec.name, frame, None, workload_ran=bool(started))
    return frame


def _poll_until_done(
    ctx: RunContext,
    collector: Collector,
    view: Live,
    worker: WorkloadThread | None,
    deadline: float,
    interrupts: list[int],
) -> str | None:
    """Poll until the duration is over and the workload done; return why it ended early."""
    while True:
        if interrupts:
            return "interrupt"
        if view.stop.is_set():
            return "stop button"
        if collector.full:
            return "limit"
        if worker is not None and worker.error is not None:
            return None
        now = time.monotonic()
        worker_busy = worker is not None and worker.is_alive()
        if now >= deadline and not worker_busy:
            return None
        timeout = POLL_SLICE if now >= deadline else min(POLL_SLICE, deadline - now)
        collector.poll(ctx, timeout)
        if collector.callback_error is not None:
            raise collector.callback_error
        view.update(ctx.elapsed(), "waiting for the workload" if now >= deadline else "")
        view.pump()


def _run_live(spec: RunSpec) -> pd.DataFrame:
    """:func:`bounded_run` on the kernel (no recording or replay): see its docstring."""
    name, source, alternatives, collector = (
        spec.name,
        spec.source,
        spec.alternatives,
        spec.collector,
    )
    duration, workload, live = spec.duration, spec.workload, spec.live
    require_root()
    bcc = require_bcc()
    if spec.tracer is not None:
        spec.tracer.executable()  # a missing tool is named before anything starts
    # what runs killed mid-run left (tracefs instances, network namespaces) goes before we load
    leftovers.reap()
    view = make_live(name, duration, live)
    stop = view.stop
    with _ACTIVE_LOCK:
        _ACTIVE.append(view)
    bpf = None
    ctx: RunContext | None = None
    worker: WorkloadThread | None = None
    stopped_by: str | None = None
    failed: str | None = None  # how an exception ended the run (not the exception: no cycle)
    try:
        # Ctrl-C is held off while BCC builds maps and programs: interrupted half-way, they
        # would belong to no Python object and stay until the process exits.
        with sigint_deferred() as arrived:
            if spec.tracer is not None:
                bpf = spec.tracer.start(name)
                label, reason, failures = (
                    spec.tracer.label,
                    f"{spec.tracer.label} loads its own",
                    [],
                )
            else:
                bpf = compile_program(source, spec.cflags, name=name)
                collector.prepare(bpf)  # the run's own values, before anything runs
                chosen, failures = _attach_first_working(bcc, bpf, alternatives, name)
                label, reason = chosen.label, chosen.reason
        if arrived:
            raise KeyboardInterrupt
        ctx = RunContext(bpf=bpf, bcc=bcc, attach=label, duration=duration, live=view)
        ctx.t0_mono_ns = time.monotonic_ns()
        ctx.t0_wall_ns = time.time_ns()
        collector.start(ctx)
        view.open()
        view.attached.set()
        if workload is not None:
            worker = WorkloadThread(workload, stop)
            worker.start()
        deadline = time.monotonic() + duration
        # While polling, Ctrl-C only raises a flag checked between polls: raised as an exception
        # inside a BCC callback, ctypes would swallow it and the run would go on.
        try:
            with sigint_deferred() as interrupts:
                stopped_by = _poll_until_done(ctx, collector, view, worker, deadline, interrupts)
        except KeyboardInterrupt:
            stopped_by = "interrupt"
        with sigint_deferred() as arrived:
            if stopped_by:
                stop.set()
            if worker is not None and stopped_by:
                worker.join(WORKLOAD_STOP_GRACE)
            if isinstance(bpf, TracerProcess):
                bpf.stop()  # a tool prints its totals as it ends (bpftrace's maps)
            collector.poll(ctx, 0)
            frame = collector.finish(ctx)
            if arrived and not stopped_by:
                stopped_by = "interrupt"
    except BaseException as exc:
        failed = (
            "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed: {type(exc).__name__}"
        )
        raise
    finally:
        with sigint_deferred():
            if stopped_by is None and worker is not None and worker.is_alive():
                stop.set()  # an error ended the run: ask the workload to end too
            with contextlib.suppress(Exception):
                collector.close(ctx)
            if isinstance(bpf, TracerProcess):
                bpf.stop()
            elif bpf is not None:
                with contextlib.suppress(Exception):
                    detach_all(bpf)  # the core's own attachments (XDP) too, not only BCC's
                release(bpf)
            with _ACTIVE_LOCK:
                _ACTIVE.remove(view)
            if failed is not None:  # an exception ends the run: the view ends too
                with contextlib.suppress(Exception):
                    view.close(failed)
    if worker is not None and worker.error is not None and stopped_by is None:
        view.close("workload failed")
        raise worker.error
    if worker is not None and spec.on_workload_result is not None and worker.error is None:
        spec.on_workload_result(worker.result)
    elapsed = ctx.elapsed()
    view.close(
        f"stopped ({stopped_by}) after {elapsed:.1f} s"
        if stopped_by
        else f"done: {len(frame)} rows in {elapsed:.1f} s"
    )
    frame.attrs.update(spec.attrs or {})
    frame.attrs.update(ctx.attrs)
    frame.attrs.update(
        {
            "program": name,
            "attach": label,
            "attach_reason": "; ".join([reason, *failures]).strip("; "),
            "duration": duration,
            "elapsed": round(elapsed, 3),
            "kernel": kernel.release(),
            "interrupted": stopped_by in ("stop button", "interrupt"),
            "stopped_by": stopped_by,
        }
    )
    return frame
