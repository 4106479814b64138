"""Attach points: where a loaded BPF function runs, and how the lab chooses one.

A :class:`Probe` names one attach point and the C function that runs there. The bounded-run core
attaches a list of probes after compiling, and BCC's cleanup detaches them all.

``attach="auto"`` for the execve lessons tries the seed's way first (a kprobe on the execve
syscall) and falls back to the ``syscalls:sys_enter_execve`` tracepoint, recording why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.errors import UnsupportedFeature
from ebpf_lab.core.guards import check_choice, require_root

#: kinds of attach point the core knows how to attach
PROBE_KINDS = (
    "tracepoint",
    "raw_tracepoint",
    "kprobe",
    "kretprobe",
    "uprobe",
    "uretprobe",
    "perf_event",
)

#: how each kind's target is written: (metavar, example, what the kind does). The ``%%ebpf``
#: magic makes one option per kind from this table.
TARGET_FORMS = {
    "tracepoint": ("CATEGORY:EVENT", "syscalls:sys_enter_execve", "run FN at a tracepoint"),
    "raw_tracepoint": ("NAME", "sys_enter", "run FN at a raw tracepoint"),
    "kprobe": ("FUNCTION", "do_sys_openat2", "run FN at a kernel function (needs kprobes)"),
    "kretprobe": ("FUNCTION", "do_sys_openat2", "run FN when a kernel function returns (kprobes)"),
    "uprobe": ("LIBRARY:SYMBOL", "c:getpid", "run FN when a user-space function is entered"),
    "uretprobe": ("LIBRARY:SYMBOL", "c:getpid", "run FN when a user-space function returns"),
    "perf_event": (
        "software:cpu-clock",
        "software:cpu-clock",
        "run FN on a perf event, sample_freq times a second per CPU",
    ),
}

#: kinds that need the kernel's kprobes (CONFIG_KPROBES)
KPROBE_KINDS = ("kprobe", "kretprobe")

#: values of ``attach=`` accepted by the execve lessons
EXEC_ATTACH_CHOICES = ("auto", "kprobe", "tracepoint")


@dataclass(frozen=True)
class Probe:
    """One attach point and the C function that runs there.

    Attributes:
        kind: one of :data:`PROBE_KINDS`.
        target: tracepoint ``"category:event"``; raw tracepoint name; kprobe kernel function, or
            ``"syscall:NAME"`` for a syscall's entry point; uprobe ``"library_or_path:symbol"``;
            perf event ``"software:cpu-clock"`` or ``"hardware:cpu-cycles"``.
        fn: the C function's name.
        pid: for uprobes and perf events, the process to watch (-1: all).
        sample_freq: for perf events, samples per second per CPU.
    """

    kind: str
    target: str
    fn: str
    pid: int = -1
    sample_freq: int = 0

    def __post_init__(self) -> None:
        check_choice(self.kind, "probe kind", PROBE_KINDS)

    def describe(self) -> str:
        """A short human name, e.g. ``"tracepoint syscalls:sys_enter_execve"``."""
        return f"{self.kind} {self.target}"


_PERF_SW = {"cpu-clock": 0, "task-clock": 1, "page-faults": 2, "context-switches": 3}
_PERF_HW = {"cpu-cycles": 0, "instructions": 1, "cache-misses": 3}


def prog_type(bcc: Any, probe: Probe) -> int:
    """The BPF program type BCC must load ``probe.fn`` as."""
    return {
        "tracepoint": bcc.BPF.TRACEPOINT,
        "raw_tracepoint": bcc.BPF.RAW_TRACEPOINT,
        "kprobe": bcc.BPF.KPROBE,
        "kretprobe": bcc.BPF.KPROBE,
        "uprobe": bcc.BPF.KPROBE,
        "uretprobe": bcc.BPF.KPROBE,
        "perf_event": bcc.BPF.PERF_EVENT,
    }[probe.kind]


def attach_probe(bcc: Any, bpf: Any, probe: Probe) -> None:
    """Attach an already loaded function at ``probe`` (BCC's ``attach_*`` calls)."""
    fn = probe.fn.encode()
    if probe.kind == "tracepoint":
        bpf.attach_tracepoint(tp=probe.target.encode(), fn_name=fn)
    elif probe.kind == "raw_tracepoint":
        bpf.attach_raw_tracepoint(tp=probe.target.encode(), fn_name=fn)
    elif probe.kind in ("kprobe", "kretprobe"):
        event = probe.target
        if event.startswith("syscall:"):
            event = bpf.get_syscall_fnname(event.split(":", 1)[1].encode()).decode()
        method = bpf.attach_kprobe if probe.kind == "kprobe" else bpf.attach_kretprobe
        method(event=event.encode(), fn_name=fn)
    elif probe.kind in ("uprobe", "uretprobe"):
        name, _, sym = probe.target.rpartition(":")
        method = bpf.attach_uprobe if probe.kind == "uprobe" else bpf.attach_uretprobe
        method(name=name.encode(), sym=sym.encode(), fn_name=fn, pid=probe.pid)
    elif probe.kind == "perf_event":
        family, _, event = probe.target.partition(":")
        table = _PERF_SW if family == "software" else _PERF_HW
        if family not in ("software", "hardware") or event not in table:
            raise ValueError(
                f"unknown perf event {probe.target!r}; use software:{'|'.join(_PERF_SW)} "
                f"or hardware:{'|'.join(_PERF_HW)}"
            )
        ev_type = 1 if family == "software" else 0
        bpf.attach_perf_event(
            ev_type=ev_type,
            ev_config=table[event],
            fn_name=fn,
            sample_freq=probe.sample_freq or 99,
            pid=probe.pid,
        )


def try_attach(bcc: Any, bpf: Any, probe: Probe) -> str | None:
    """Attach a loaded function at ``probe``; None if it worked, else what the kernel answered.

    BCC explains attach failures on file descriptor 2 (e.g. "create_probe_event: open(...)");
    that text is captured and its last line added to the message.
    """
    from ebpf_lab.core.loader import capture_stderr_fd

    with capture_stderr_fd() as cap:
        try:
            attach_probe(bcc, bpf, probe)
            error = None
        except Exception as exc:  # bcc raises bare Exception
            error = exc
    if error is None:
        return None
    lines = [x.strip() for x in cap.text.splitlines() if x.strip()]
    return f"{error} ({lines[-1]})" if lines else str(error)


def detach_all(bpf: Any) -> None:
    """Detach every probe BCC attached, keeping the compiled module (for trying an alternative)."""
    for k in list(bpf.kprobe_fds):
        bpf.detach_kprobe_event(k)
    for k in list(bpf.uprobe_fds):
        bpf.detach_uprobe_event(k)
    for k in list(bpf.tracepoint_fds):
        bpf.detach_tracepoint(k)
    for k in list(bpf.raw_tracepoint_fds):
        bpf.detach_raw_tracepoint(k)
    for ev_type, ev_config in list(bpf.open_perf_events):
        bpf.detach_perf_event(ev_type, ev_config)


@dataclass(frozen=True)
class ExecAttach:
    """The attach point chosen for an execve lesson, and why."""

    kind: str  # "kprobe" or "tracepoint"
    reason: str


def choose_exec_attach(attach: str) -> ExecAttach:
    """Decide how to hook execve for ``attach`` = ``"auto"``, ``"kprobe"`` or ``"tracepoint"``.

    Raises:
        ValueError: unknown ``attach``.
        UnsupportedFeature: the forced kind is not available here; the message names the other.
    """
    check_choice(attach, "attach", EXEC_ATTACH_CHOICES)
    kernel.require_tracefs()  # attach points are listed there; the error says how to mount it
    have_kprobes, why = kernel.kprobes_available()
    have_tp = kernel.syscall_tracepoint_exists("execve")
    if attach == "kprobe":
        if not have_kprobes:
            raise UnsupportedFeature(
                "kprobe", why, "attach='tracepoint' (the syscalls:sys_enter_execve tracepoint)"
            )
        return ExecAttach("kprobe", "asked for kprobe")
    if attach == "tracepoint":
        if not have_tp:
            raise UnsupportedFeature(
                "tracepoint",
                "no syscalls:sys_enter_execve in tracefs (CONFIG_FTRACE_SYSCALLS unset, "
                "or tracefs not mounted)",
                "attach='kprobe'" if have_kprobes else None,
            )
        return ExecAttach("tracepoint", "asked for tracepoint")
    if have_kprobes:
        return ExecAttach("kprobe", f"auto: kprobes available ({why})")
    if have_tp:
        return ExecAttach("tracepoint", f"auto: fell back to the tracepoint because {why}")
    raise UnsupportedFeature(
        "tracepoint", f"neither kprobes ({why}) nor the syscalls:sys_enter_execve tracepoint exist"
    )


def exec_alternatives(attach: str, kprobe_fn: str, tracepoint_fn: str) -> list[Any]:
    """The ordered ways to hook execve for ``attach``, as the core's ``Alternative`` list.

    ``kprobe_fn`` runs on the execve syscall's kernel entry (the seed's way);
    ``tracepoint_fn`` on ``syscalls:sys_enter_execve``. With ``"auto"`` the kprobe is tried first
    when the kernel has kprobes, and the tracepoint is the fallback.
    """
    from ebpf_lab.classroom.recordings import mode
    from ebpf_lab.core.run import Alternative  # the core imports this module

    check_choice(attach, "attach", EXEC_ATTACH_CHOICES)
    if mode() == "replay":  # the recorded frame says what was attached; the kernel is not asked
        return [Alternative("replay", [])]
    require_root()  # tracefs, where the attach points are listed, is readable by root only
    choice = choose_exec_attach(attach)
    kp = Alternative("kprobe", [Probe("kprobe", "syscall:execve", kprobe_fn)], choice.reason)
    tp = Alternative(
        "tracepoint",
        [Probe("tracepoint", "syscalls:sys_enter_execve", tracepoint_fn)],
        choice.reason,
    )
    if choice.kind == "tracepoint":
        return [tp]
    if attach == "auto" and kernel.syscall_tracepoint_exists("execve"):
        return [kp, Alternative("tracepoint", tp.probes, "auto: the kprobe failed to attach")]
    return [kp]


def check_target(kind: str, target: str) -> None:
    """Check that ``target`` is written as ``kind`` wants (see :data:`TARGET_FORMS`), before
    anything loads; a tracepoint must exist on this kernel.

    Raises:
        ValueError: unknown kind, a badly written target, or a tracepoint this kernel lacks.
    """
    check_choice(kind, "probe kind", PROBE_KINDS)
    metavar, example, _ = TARGET_FORMS[kind]
    wrong = f"a {kind} target is written {metavar}, e.g. {example}; got {target!r}"
    if kind == "tracepoint":
        category, _, event = target.partition(":")
        if not category or not event:
            raise ValueError(wrong)
        root = kernel.tracefs_root()
        if root is not None and not (root / "events" / category / event).is_dir():
            there = category if (root / "events" / category).is_dir() else ""
            raise ValueError(f"no tracepoint {target} on this kernel (see {root}/events/{there})")
    elif kind in ("uprobe", "uretprobe"):
        library, _, symbol = target.rpartition(":")
        if not library or not symbol:
            raise ValueError(wrong)
    elif kind == "perf_event":
        family, _, event = target.partition(":")
        table = _PERF_SW if family == "software" else _PERF_HW if family == "hardware" else {}
        if event not in table:
            raise ValueError(
                f"unknown perf event {target!r}; use software:{'|'.join(_PERF_SW)} "
                f"or hardware:{'|'.join(_PERF_HW)}"
            )
    elif not target:
        raise ValueError(wrong)
