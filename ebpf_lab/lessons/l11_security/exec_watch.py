"""Lesson 11: process-execution policy: detection with a tracepoint, enforcement with BPF LSM.

Two programs, two very different powers:

* :func:`exec_watch` (``exec_watch.bpf.c``, on the ``sched:sched_process_exec``
  tracepoint) **detects**: it looks every successful exec up in a watchlist map that user space
  fills, and reports who (uid, pid, real parent) ran which watched path. The exec has already
  happened when the alert is written; nothing is prevented. Tracepoints work on any kernel with
  BPF, this one included.
* :func:`exec_deny` (``exec_deny_lsm.bpf.c``, a BPF LSM program on the
  ``bprm_check_security`` hook) **enforces**: it makes ``execve()`` of a denylisted path fail
  with EPERM while it is attached. It needs a kernel whose doctor says ``lsm`` is supported; on
  others it raises :class:`~ebpf_lab.core.errors.UnsupportedFeature` with the doctor's reason before
  anything loads, and :func:`lsm_status` shows the facts behind that reason.

Both match the path *as given to execve()* (``bprm->filename``), byte for byte: a symlink, a
hard link, a copy, or ``./name`` run from the right directory is a different string. Path
matching is a teaching device, not a security boundary (see the chapter's exercises).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.attach import Probe, one_probe
from ebpf_lab.core.collectors import open_event_rows
from ebpf_lab.core.errors import UnsupportedFeature
from ebpf_lab.core.guards import check_duration, check_positive_int, check_workload, require_root
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Alternative, Collector, RunContext, bounded_run, stop_requested
from ebpf_lab.kernel.btf import member_offset, task_offsets_cflags
from ebpf_lab.show.frames import Schema, decode_c_string, process_columns

#: paths are map keys of this many bytes: a path must be shorter (room for the final NUL)
PATH_LEN = 128
#: the most paths a watchlist or denylist may hold
WATCH_MAX = 64
#: the most alerts one call keeps in memory
MAX_ALERTS = 1_000_000
#: perf buffer pages per CPU
PERF_PAGES = 64
#: the longest an LSM deny rule may stay attached: it applies to every process on the machine
MAX_DENY_SECONDS = 60.0
#: exec attempts per phase of :func:`exec_deny`
MAX_ATTEMPTS = 100

#: the frame :func:`exec_watch` returns: one row per alert
ALERTS = Schema(
    time="time",
    pid="int64",
    ppid="int64",
    uid="int64",
    user="category",
    filename="category",
    command="category",
    parent_command="category",
    watch_index="int64",
)
COLUMNS = ALERTS.columns
#: the frame :func:`exec_deny` returns: one row per exec attempt
ATTEMPTS = Schema(
    phase=pd.CategoricalDtype(["attached", "detached"], ordered=True),
    attempt="int64",
    ran="bool",
    returncode="Int64",
    error=None,
    errno="int64",
)
#: the LSM hook :func:`exec_deny` attaches to, and its function (``LSM_PROBE`` names it so)
DENY_HOOK = "bprm_check_security"


def check_paths(paths: Any, name: str = "watch") -> list[str]:
    """Return ``paths`` as a list if it is a non-empty sequence of distinct absolute paths that
    fit a map key (shorter than :data:`PATH_LEN` bytes), else raise ValueError."""
    if isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, Sequence):
        raise ValueError(
            f"{name} must be a list of absolute paths, e.g. ['/usr/bin/id'], got {paths!r}"
        )
    if not paths:
        raise ValueError(f"{name} is empty: give at least one absolute path")
    if len(paths) > WATCH_MAX:
        raise ValueError(f"{name} has {len(paths)} paths; the map holds at most {WATCH_MAX}")
    out: list[str] = []
    for p in paths:
        if isinstance(p, Path):
            p = str(p)
        if not isinstance(p, str) or not p.startswith("/"):
            raise ValueError(f"each path in {name} must be an absolute path string, got {p!r}")
        if "\0" in p:
            raise ValueError(f"a path cannot contain a NUL byte: {p!r}")
        size = len(p.encode())
        if size >= PATH_LEN:
            raise ValueError(
                f"{p!r} is {size} bytes; map keys hold paths of at most {PATH_LEN - 1} bytes"
            )
        if p in out:
            raise ValueError(f"{p!r} appears twice in {name}")
        out.append(p)
    return out


def _fill_paths(table: Any, paths: Sequence[str]) -> None:
    """Write ``path -> index`` into a map keyed by ``struct path_t`` (zero padded)."""
    for i, p in enumerate(paths):
        key = table.Key(p.encode())  # a fresh key is all zeros: the bytes after the path stay 0
        table[key] = table.Leaf(i)


class _Alerts(Collector):
    """Fills the watchlist, then decodes each alert from the perf buffer."""

    def __init__(self, paths: list[str], max_alerts: int | None) -> None:
        self.paths = paths
        self.max_alerts = max_alerts
        self.rows: list[tuple[Any, ...]] = []
        self.lost = 0

    def start(self, ctx: RunContext) -> None:
        _fill_paths(ctx.table("watchlist"), self.paths)
        open_event_rows(
            self,
            ctx.table("alerts"),
            lambda a: (
                a.ktime_ns,
                a.pid,
                a.ppid,
                a.uid,
                bytes(a.filename),
                bytes(a.comm),
                bytes(a.parent_comm),
                a.watch_index,
            ),
            self.rows,
            maximum=self.max_alerts,
            pages=PERF_PAGES,
            lost=self._lost,
        )

    def _lost(self, count: int) -> None:
        self.lost += count

    def poll(self, ctx: RunContext, timeout: float) -> None:
        ctx.bpf.perf_buffer_poll(timeout=int(timeout * 1000))

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        raw = pd.DataFrame(
            self.rows,
            columns=["ktime_ns", "pid", "ppid", "uid", "filename", "comm", "parent", "index"],
        )
        strings = {"filename": "filename", "command": "comm", "parent_command": "parent"}
        df = ALERTS.frame(
            {**process_columns(ctx.to_time, raw, strings), "watch_index": raw["index"]}
        )
        seen = ctx.table("seen")
        ctx.attrs.update(
            {
                "watchlist": list(self.paths),
                "execs_seen": int(seen[seen.Key(0)].value),
                "watched_execs": int(seen[seen.Key(1)].value),
                "lost": self.lost,
            }
        )
        return df


def exec_watch(
    watch: Sequence[str],
    duration: float = 1.0,
    workload: Callable[[], Any] | None = None,
    max_alerts: int | None = None,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """Alert on every successful exec of a watched path, for ``duration`` seconds (detection).

    ``exec_watch.bpf.c`` runs on the ``sched:sched_process_exec`` tracepoint, i.e. after
    each successful ``execve()``, in the process that now runs the new program. It looks the
    executed path up in the ``watchlist`` map (filled from ``watch`` before the workload starts)
    and sends an alert for a match. It cannot stop the exec: the alert is written when the
    program already runs. For enforcement see :func:`exec_deny` (BPF LSM).

    Args:
        watch: absolute paths to watch (1 .. 64, each under 128 bytes), matched byte for byte
            against the path given to ``execve()``.
        duration: seconds to stay attached (0 < duration <= 3600); the run also waits for
            ``workload``.
        workload: optional callable run once attached, e.g. ``lambda: execs({4242: 3},
            program=path)``.
        max_alerts: stop after this many alerts (None: no limit).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per alert: ``time``, ``pid``, ``ppid`` (the real parent, read via BTF
        offsets), ``uid``, ``user``, ``filename`` (the watched path), ``command`` (the new
        program's comm), ``parent_command`` (the parent's comm), ``watch_index`` (position in
        ``watch``). ``df.attrs``: ``watchlist``, ``execs_seen`` (every exec on the machine while
        attached), ``watched_execs`` (those that matched: alerts sent), ``lost`` (alerts the perf
        buffer had no room for).

    Raises:
        ValueError: bad watch list, duration, workload or max_alerts (before anything loads).
        PermissionError: not root.
        UnsupportedFeature: no BTF for the parent's offsets.
    """
    paths = check_paths(watch, "watch")
    duration = check_duration(duration)
    check_workload(workload)
    check_positive_int(max_alerts, "max_alerts", MAX_ALERTS)
    require_root()
    cflags = [
        *task_offsets_cflags(),
        f"-DTASK_COMM_OFF={member_offset('task_struct', 'comm')}",
        f"-DWATCH_MAX={WATCH_MAX}",
    ]
    tracepoint = "sched:sched_process_exec"
    return bounded_run(
        name="exec_watch",
        source=program_source("exec_watch"),
        alternatives=one_probe(
            "tracepoint",
            tracepoint,
            "on_exec",
            "fires once per successful exec, in the new program",
        ),
        collector=_Alerts(paths, max_alerts),
        duration=duration,
        workload=workload,
        cflags=cflags,
        live=live,
        attrs={"max_alerts": max_alerts, "hook": tracepoint, "kind": "detection"},
    )


# ---------------------------------------------------------------- enforcement: BPF LSM


@contextlib.contextmanager
def temporary_programs(
    names: Sequence[str], source: str = "/bin/true", directory: str | None = None
) -> Iterator[dict[str, str]]:
    """Copies of ``source`` under new names in a fresh directory, removed after the block.

    A watchlist or denylist entry for a copy affects nothing else on the machine, so a lesson
    can watch or deny it safely. Each copy runs exactly like ``source`` (``/bin/true``: exits 0).

    Args:
        names: file names for the copies (letters, digits, ``.``, ``_``, ``-``).
        source: the executable to copy.
        directory: where to create the fresh directory (default: the system's temp dir).

    Yields:
        ``{name: absolute path}``.
    """
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ValueError(f"names must be a non-empty list of file names, got {names!r}")
    for n in names:
        if not isinstance(n, str) or not n or "/" in n or n in (".", "..") or "\0" in n:
            raise ValueError(f"bad program name {n!r}: a plain file name, without '/'")
    if not (os.path.isabs(source) and os.path.isfile(source) and os.access(source, os.X_OK)):
        raise ValueError(f"source must be an absolute path to an executable, got {source!r}")
    root = tempfile.mkdtemp(prefix="ebpf-lab-programs-", dir=directory)
    try:
        os.chmod(root, 0o755)  # other UIDs (the workload's) must be able to run the copies
        paths = {}
        for n in names:
            dest = os.path.join(root, n)
            shutil.copy2(source, dest)
            os.chmod(dest, 0o755)
            paths[n] = dest
        yield paths
    finally:
        shutil.rmtree(root, ignore_errors=True)


def lsm_status() -> pd.DataFrame:
    """Why BPF LSM programs can or cannot run here: the doctor's verdict and the facts behind it.

    Returns:
        One row per fact: ``fact``, ``value``, ``meaning``. The facts are the doctor's ``lsm``
        row (a real load of a tiny LSM program, and what the kernel answered), the kernel's
        ``CONFIG_BPF_LSM`` and boot-time ``CONFIG_LSM`` list, the LSMs active now
        (``/sys/kernel/security/lsm``), and the lockdown mode.
    """
    from ebpf_lab.kernel.doctor import doctor

    frame = doctor()
    row = frame[frame["feature"] == "lsm"].iloc[0]
    active = kernel.active_lsms()
    lockdown = kernel.lockdown_mode()
    bpf_lsm = kernel.config_option("BPF_LSM")
    rows = [
        (
            "doctor: lsm supported",
            bool(row["supported"]),
            "a tiny LSM_PROBE(file_open) was loaded and attached, and made to fire",
        ),
        ("doctor: detail", str(row["detail"]), "what was tried and what the kernel answered"),
        (
            "CONFIG_BPF_LSM",
            bpf_lsm or "unknown (no /proc/config.gz or /boot/config-*)",
            "the kernel was built with the BPF LSM hooks (y) or without them",
        ),
        (
            "CONFIG_LSM (boot default order)",
            kernel.config_option("LSM") or "unknown",
            "LSMs enabled at boot unless the lsm= boot parameter says otherwise",
        ),
        (
            "active LSMs",
            ",".join(active) or "unknown",
            "/sys/kernel/security/lsm: 'bpf' must be listed for BPF LSM programs to be called",
        ),
        (
            "lockdown",
            lockdown or "unknown",
            "kernel lockdown: 'integrity' forbids changing the running kernel (e.g. "
            "bpf_probe_write_user), 'confidentiality' also reading kernel memory",
        ),
    ]
    out = pd.DataFrame(rows, columns=["fact", "value", "meaning"])
    out["value"] = out["value"].astype(str)
    return out


def lsm_reason() -> str:
    """The doctor's reason why BPF LSM programs do not run here ("" when they do)."""
    from ebpf_lab.kernel.doctor import doctor, supports

    if supports("lsm"):
        return ""
    frame = doctor()
    return str(frame.loc[frame["feature"] == "lsm", "detail"].iloc[0])


class _Denials(Collector):
    """Fills the denylist once the LSM program is attached; reads the refusals at the end."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def start(self, ctx: RunContext) -> None:
        _fill_paths(ctx.table("denylist"), self.paths)

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        denied = {decode_c_string(k.path): int(v.value) for k, v in ctx.table("denied").items()}
        ctx.attrs["denied_in_kernel"] = {p: denied.get(p, 0) for p in self.paths}
        return pd.DataFrame()


def _attempt(path: str, phase: str, attempt: int) -> dict[str, Any]:
    """Try to run ``path`` once; record whether the exec was refused."""
    try:
        proc = subprocess.run([path], stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    except PermissionError as exc:
        return {"phase": phase, "attempt": attempt, "ran": False, "returncode": None,
                "error": f"{exc.strerror} (errno {exc.errno})", "errno": exc.errno}  # fmt: skip
    return {"phase": phase, "attempt": attempt, "ran": True, "returncode": proc.returncode,
            "error": "", "errno": 0}  # fmt: skip


def exec_deny(
    path: str,
    attempts: int = 3,
    duration: float = 1.0,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """Deny ``execve()`` of ``path`` with a BPF LSM program, then detach it (enforcement).

    While ``exec_deny_lsm.bpf.c`` is attached to the ``bprm_check_security`` LSM hook,
    the lab tries to run ``path`` ``attempts`` times: each exec must fail with EPERM. After the
    bounded run has detached the program it tries ``attempts`` more times: each must run. The
    rule applies to every process on the machine while attached, so deny a private copy (see
    :func:`temporary_programs`), and keep it short (at most 60 s).

    Only where the doctor says ``lsm`` is supported: elsewhere it raises before loading.

    Args:
        path: the absolute path to deny (an executable file; under 128 bytes).
        attempts: exec attempts per phase (1 .. 100).
        duration: the least time to stay attached, in seconds (at most 60).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per attempt: ``phase`` (``attached``/``detached``), ``attempt``, ``ran``,
        ``returncode``, ``error``, ``errno``. ``df.attrs["denied_in_kernel"]`` is the program's
        own count of refusals per path.

    Raises:
        ValueError: bad path, attempts or duration (before anything loads).
        UnsupportedFeature: this kernel cannot run BPF LSM programs; the reason is the doctor's,
            the alternative :func:`exec_watch` (detection only).
    """
    (path,) = check_paths([path], "path")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ValueError(f"path must be an executable file (to show the denial), got {path!r}")
    check_positive_int(attempts, "attempts", MAX_ATTEMPTS)
    if attempts is None:
        raise ValueError("attempts must be a whole number >= 1")
    duration = check_duration(duration)
    if duration > MAX_DENY_SECONDS:
        raise ValueError(
            f"duration={duration} s: a deny rule applies to the whole machine; "
            f"keep it to {MAX_DENY_SECONDS:.0f} s or less"
        )
    require_root()
    reason = lsm_reason()
    if reason:
        raise UnsupportedFeature(
            "lsm",
            reason,
            "exec_watch() (the sched:sched_process_exec tracepoint: detects, does not deny)",
        )
    rows: list[dict[str, Any]] = []

    def while_attached() -> None:
        for i in range(attempts):
            if stop_requested():
                break
            rows.append(_attempt(path, "attached", i))

    frame = bounded_run(
        name="exec_deny",
        source=program_source("exec_deny_lsm"),
        # LSM_PROBE: BCC attaches it while compiling; the core checks it and always detaches it
        alternatives=[
            Alternative(
                f"lsm {DENY_HOOK}",
                [Probe("lsm", DENY_HOOK, f"lsm__{DENY_HOOK}")],
                "BPF LSM (enforcement)",
            )
        ],
        collector=_Denials([path]),
        duration=duration,
        workload=while_attached,
        cflags=[
            f"-DBPRM_FILENAME_OFF={member_offset('linux_binprm', 'filename')}",
            f"-DDENY_MAX={WATCH_MAX}",
        ],
        live=live,
        attrs={"path": path, "hook": f"lsm/{DENY_HOOK}", "kind": "enforcement"},
    )
    if not frame.attrs.get("interrupted"):
        rows.extend(_attempt(path, "detached", i) for i in range(attempts))
    df = ATTEMPTS.frame(rows)
    df.attrs.update(frame.attrs)
    return df
