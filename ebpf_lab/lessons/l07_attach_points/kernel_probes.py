"""Lesson 07, kernel functions: arguments, return values and latency at a kprobe or fentry.

* :func:`read_latency` watches ``vfs_read()`` for one known process, the C read loop
  (:func:`ebpf_lab.workloads.read_loop_child`: exactly ``reads`` one-byte ``read()`` calls of
  ``/dev/zero``), either with a **kprobe + kretprobe** (arguments from the registers,
  ``PT_REGS_PARM3``; return value ``PT_REGS_RC``) or with **fentry + fexit** (BPF trampolines:
  the arguments and the return value are C parameters). Each call's latency goes into a log2
  histogram; calls, bytes asked and bytes returned are exact.
* :func:`syscall_prefix` runs BCC's ``syscall__execve``, a kprobe on the execve system call
  whose C parameters are the call's arguments: the ``filename`` it reads is the program that
  a known workload execs (``/bin/true``, ``execs`` times, as a UID nobody else uses).

Both need a hook this kernel may lack (kprobes: CONFIG_KPROBES; fentry: BTF, trampolines, and
no LSM refusing it): then :class:`~ebpf_lab.core.errors.UnsupportedFeature` is raised before
anything loads, with the doctor's reason (:func:`ebpf_lab.doctor`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.attach import Alternative, Probe, one_probe
from ebpf_lab.core.errors import UnsupportedFeature
from ebpf_lab.core.guards import check_choice, check_duration, check_whole, require_root
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Collector, RunContext, bounded_run
from ebpf_lab.lessons.l07_attach_points.probes import require_fentry
from ebpf_lab.show.frames import Schema, decode_c_string
from ebpf_lab.show.log2 import bucket_bounds
from ebpf_lab.workloads import fast_execs, read_loop_child, unused_uid
from ebpf_lab.workloads.checks import MAX_EXECS, MAX_STREAM_READS

#: the ways :func:`read_latency` can hook vfs_read
HOOKS = ("kprobe", "fentry")

#: :func:`read_latency`'s frame: one row per power-of-two latency bucket that has calls
LATENCY = Schema(low_ns="int64", high_ns="int64", calls="int64")

#: :func:`syscall_prefix`'s frame: one row per file exec'd by the workload's UID
EXECS = Schema(filename=None, execs="int64")


def require_hook(hook: str) -> None:
    """Raise UnsupportedFeature, before anything loads, when the kernel lacks ``hook``.

    kprobes: the kernel's files (the same check and words as the doctor's ``kprobe`` row);
    fentry: the doctor's ``fentry`` row (only loading one tells).
    """
    if hook == "kprobe":
        ok, why = kernel.kprobes_available()
        if not ok:
            raise UnsupportedFeature(
                "kprobe", why, "hook='fentry' (fentry + fexit, where the kernel allows them)"
            )
    elif hook == "fentry":
        require_fentry("hook='kprobe' (kprobe + kretprobe, where the kernel has kprobes)")


class _Target(Collector):
    """Writes the run's one value (a tgid, a UID) into entry 0 of the array map ``map_name``
    before anything is attached, so the program never runs without it."""

    map_name = "target"

    def __init__(self, value: int) -> None:
        self.value = value

    def prepare(self, bpf: Any) -> None:
        table = bpf[self.map_name.encode()]
        table[table.Key(0)] = table.Leaf(self.value)


class _Latency(_Target):
    """Watches one tgid; reads the histogram and the totals at the end."""

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        rows = [
            # bpf_log2l(ns) is floor(log2(ns)) + 1: slot k holds 2**(k-1) .. 2**k - 1 ns
            dict(zip(("low_ns", "high_ns"), bucket_bounds(k.value)), calls=v.value)
            for k, v in ctx.table("latency").items()
            if v.value
        ]
        t = ctx.table("totals")[0]
        ctx.attrs.update(
            {
                "entries": int(t.entries),
                "returns": int(t.returns),
                "bytes_asked": int(t.bytes_asked),
                "bytes_returned": int(t.bytes_returned),
            }
        )
        return LATENCY.frame(rows).sort_values("low_ns", ignore_index=True)


def read_latency(
    reads: int = 10_000,
    *,
    hook: str = "kprobe",
    duration: float = 0.1,
    live: bool | None = None,
) -> pd.DataFrame:
    """Each ``vfs_read()`` call of a known read loop, timed at its entry and its return.

    Args:
        reads: the one-byte ``read()`` calls the C loop makes (1 .. 50,000,000): exactly that
            many ``vfs_read()`` calls by that process.
        hook: ``"kprobe"`` (kprobe + kretprobe, needs CONFIG_KPROBES) or ``"fentry"`` (fentry +
            fexit through BTF).
        duration: the least time to stay attached, in seconds; the run also waits for the loop.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per power-of-two bucket of latency with calls: ``low_ns``, ``high_ns``,
        ``calls`` (they sum to ``reads``). ``df.attrs``: ``hook``, ``reads``, ``entries`` and
        ``returns`` (calls seen), ``bytes_asked`` (the sum of vfs_read's third argument,
        ``count``: 1 a call), ``bytes_returned`` (the sum of its return values), ``workload``,
        and the core's attach, duration, kernel...

    Raises:
        ValueError: bad reads, hook or duration (before anything loads).
        PermissionError: not root.
        UnsupportedFeature: the kernel lacks ``hook`` (the doctor's reason; the other hook named).
    """
    check_whole(reads, "reads", 1, MAX_STREAM_READS)
    check_choice(hook, "hook", HOOKS)
    duration = check_duration(duration)
    require_root()
    require_hook(hook)
    with read_loop_child(reads) as child:
        if hook == "kprobe":
            probes = [
                Probe("kprobe", "vfs_read", "on_read_entry"),
                Probe("kretprobe", "vfs_read", "on_read_return"),
            ]
            cflags: list[str] = []
        else:  # BCC attaches KFUNC_PROBE/KRETFUNC_PROBE while compiling; the core checks it
            probes = [
                Probe("autoload", "vfs_read", "kfunc__vfs_read"),
                Probe("autoload", "vfs_read", "kretfunc__vfs_read"),
            ]
            cflags = ["-DFENTRY"]
        box: dict[str, pd.DataFrame] = {}
        df = bounded_run(
            name="read_latency",
            source=program_source("read_latency"),
            alternatives=[Alternative(hook, probes, f"asked for {hook} on vfs_read")],
            cflags=cflags,
            collector=_Latency(child.pid),
            duration=duration,
            live=live,
            workload=child.run,
            on_workload_result=lambda done: box.update(done=done),
            attrs={"hook": hook, "reads": reads},
        )
    done = box.get("done")
    df.attrs["workload"] = done.iloc[0].to_dict() if done is not None else {}
    return df


class _Execs(_Target):
    """Watches one UID; reads the per-filename counts at the end."""

    map_name = "target_uid"

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        rows = [
            {"filename": decode_c_string(k.filename), "execs": v.value}
            for k, v in ctx.table("execs").items()
        ]
        return EXECS.frame(rows).sort_values("filename", ignore_index=True)


def syscall_prefix(
    execs: int = 20, *, duration: float = 0.1, live: bool | None = None
) -> pd.DataFrame:
    """Run BCC's ``syscall__execve`` while a known workload execs ``/bin/true`` ``execs`` times.

    ``int syscall__execve(struct pt_regs *ctx, const char __user *filename, ...)`` is attached
    as a kprobe on the execve system call's kernel entry; BCC rewrites a function named
    ``syscall__*`` so that its parameters are the system call's own arguments. It keeps the
    ``filename`` of every exec by one UID nobody else uses (:func:`ebpf_lab.workloads.unused_uid`),
    as which the workload (:func:`ebpf_lab.workloads.fast_execs`) makes its execs.

    Args:
        execs: execs of ``/bin/true`` (1 .. 100,000).
        duration: the least time to stay attached, in seconds; the run also waits for the execs.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per filename the program read: ``filename``, ``execs`` (here one row,
        ``/bin/true``, ``execs`` times). ``df.attrs``: ``uid``, ``expected``
        (``{"/bin/true": execs}``), and the core's attach, duration, kernel...

    Raises:
        ValueError: bad execs or duration (before anything loads).
        PermissionError: not root.
        UnsupportedFeature: the kernel has no kprobes (the doctor's reason; use the
            ``syscalls:sys_enter_execve`` tracepoint, whose ``args->filename`` is the same).
    """
    check_whole(execs, "execs", 1, MAX_EXECS)
    duration = check_duration(duration)
    require_root()
    ok, why = kernel.kprobes_available()
    if not ok:
        raise UnsupportedFeature(
            "kprobe",
            why,
            "the syscalls:sys_enter_execve tracepoint (its args->filename is the same argument)",
        )
    uid = unused_uid()
    df = bounded_run(
        name="syscall_prefix",
        source=program_source("syscall_prefix"),
        alternatives=one_probe(
            "kprobe",
            "syscall:execve",
            "syscall__execve",
            "syscall__execve on the execve syscall's kernel entry",
        ),
        collector=_Execs(uid),
        duration=duration,
        live=live,
        workload=lambda: fast_execs(uid, execs),
        attrs={"uid": uid, "expected": {"/bin/true": execs}},
    )
    return df
