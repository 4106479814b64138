"""Attach points: where a loaded BPF function runs, and how the lab chooses one.

A :class:`Probe` names one attach point and the C function that runs there. The bounded-run core
attaches a list of probes after compiling (:func:`try_attach`) and detaches every one of them on
every exit path (:func:`detach_all`). Every way into the kernel is a kind here:

* ``tracepoint``, ``raw_tracepoint``, ``kprobe``/``kretprobe``, ``uprobe``/``uretprobe``,
  ``perf_event``: BCC's ``attach_*`` calls;
* ``usdt``: a probe a program defines itself (``DTRACE_PROBE2(provider, name, ...)`` from
  ``sys/sdt.h``), found in a running process by BCC's ``USDT(pid=...)``; the C reads its
  arguments with ``bpf_usdt_readarg()``, which :func:`usdt_source` writes (the lesson puts it
  before its C), and the core attaches a uprobe at each of the probe's places;
* ``xdp`` and ``tc``: the core builds the lab's private cable (:class:`~.netns.LabCable`: two
  network namespaces and a veth pair; one a run, shared by its xdp and tc probes), attaches the
  function to one end (xdp: generic/SKB mode; tc: the end's ``clsact`` qdisc, ``ingress`` or
  ``egress``), and on detach removes the programs, then deletes the namespaces
  (:func:`xdp_link`, :func:`tc_link` find them and the cable);
* ``lsm`` and ``autoload``: functions BCC loads and attaches by their name while it compiles the
  C (``LSM_PROBE(hook)`` makes ``lsm__hook``; ``TRACEPOINT_PROBE``, ``KFUNC_PROBE``,
  ``kprobe__*``...). The core checks that BCC attached them, and detaches them with the rest.

``attach="auto"`` for the execve lessons tries the seed's way first (a kprobe on the execve
syscall) and falls back to the ``syscalls:sys_enter_execve`` tracepoint, recording why.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core import netns, replay
from ebpf_lab.core.errors import UnsupportedFeature
from ebpf_lab.core.guards import check_choice, require_bcc, require_root
from ebpf_lab.core.links import (  # noqa: F401 - xdp_link, tc_link... are imported from here too
    CableLink,
    TcLink,
    XdpLink,
    _prog_id,
    attach_tc,
    attach_xdp,
    links,
    tc_link,
    xdp_link,
)
from ebpf_lab.core.loader import close_shadowed, shadowed_fds

#: kinds of attach point the core knows how to attach
PROBE_KINDS = (
    "tracepoint",
    "raw_tracepoint",
    "kprobe",
    "kretprobe",
    "uprobe",
    "uretprobe",
    "usdt",
    "perf_event",
    "xdp",
    "tc",
    "lsm",
    "autoload",
)

#: names BCC gives the functions it attaches while compiling, and the program type of each
AUTOLOAD_PREFIXES = {
    "kprobe__": "KPROBE",
    "kretprobe__": "KPROBE",
    "tracepoint__": "TRACEPOINT",
    "raw_tracepoint__": "RAW_TRACEPOINT",
    "kfunc__": "TRACING",
    "kretfunc__": "TRACING",
    "lsm__": "LSM",
}

#: how each kind's target is written: (metavar, example, what the kind does). The ``%%ebpf``
#: magic makes one option per kind from this table.
TARGET_FORMS = {
    "tracepoint": ("CATEGORY:EVENT", "syscalls:sys_enter_execve", "run FN at a tracepoint"),
    "raw_tracepoint": ("NAME", "sys_enter", "run FN at a raw tracepoint"),
    "kprobe": ("FUNCTION", "do_sys_openat2", "run FN at a kernel function (needs kprobes)"),
    "kretprobe": ("FUNCTION", "do_sys_openat2", "run FN when a kernel function returns (kprobes)"),
    "uprobe": ("LIBRARY:SYMBOL", "c:getpid", "run FN when a user-space function is entered"),
    "uretprobe": ("LIBRARY:SYMBOL", "c:getpid", "run FN when a user-space function returns"),
    "usdt": ("PROVIDER:NAME", "ebpf_lab:tick", "run FN at a USDT probe of process --pid"),
    "perf_event": (
        "software:cpu-clock",
        "software:cpu-clock",
        "run FN on a perf event, sample_freq times a second per CPU",
    ),
}

#: the kinds a ``%%ebpf`` cell can name by an option (those of :data:`TARGET_FORMS` but usdt,
#: whose C needs :func:`usdt_source` and a running process); xdp and tc need the lab's cable,
#: and lsm/autoload functions (``LSM_PROBE``, ``TRACEPOINT_PROBE``...) are attached by BCC
#: itself while it compiles, so a cell needs no option for them
CELL_KINDS = tuple(kind for kind in TARGET_FORMS if kind != "usdt")

#: kinds that need the kernel's kprobes (CONFIG_KPROBES)
KPROBE_KINDS = ("kprobe", "kretprobe")

#: the two ends of the lab's cable, where xdp and tc probes go
CABLE_ENDS = ("veth-a", "veth-b")

#: values of ``attach=`` accepted by the execve lessons
EXEC_ATTACH_CHOICES = ("auto", "kprobe", "tracepoint")


@dataclass(frozen=True)
class Probe:
    """One attach point and the C function that runs there.

    Attributes:
        kind: one of :data:`PROBE_KINDS`.
        target: tracepoint ``"category:event"``; raw tracepoint name; kprobe kernel function, or
            ``"syscall:NAME"`` for a syscall's entry point; uprobe ``"library_or_path:symbol"``;
            usdt ``"provider:name"`` (e.g. ``"ebpf_lab:tick"``, in process ``pid``); perf event
            ``"software:cpu-clock"`` or ``"hardware:cpu-cycles"``; xdp: the end of
            the cable (``"veth-a"`` or ``"veth-b"``); tc: the end and the direction
            (``"veth-a:egress"``, ``"veth-b:ingress"``...); lsm: the LSM hook (``fn`` is then
            ``lsm__<hook>``, as ``LSM_PROBE`` names it); autoload: what it hooks, for messages.
        fn: the C function's name.
        pid: for uprobes and perf events, the process to watch (-1: all); for usdt, the process
            whose probe it is (required).
        sample_freq: for perf events, samples per second per CPU.
        cable: for xdp and tc, the lab cable to build (default: ``LabCable()``); the probes of
            one run share it, so they must name the same cable.
    """

    kind: str
    target: str
    fn: str
    pid: int = -1
    sample_freq: int = 0
    cable: netns.LabCable | None = None

    def __post_init__(self) -> None:
        check_choice(self.kind, "probe kind", PROBE_KINDS)
        if self.kind == "lsm" and self.fn != f"lsm__{self.target}":
            raise ValueError(
                f"an lsm probe on {self.target!r} runs lsm__{self.target} "
                f"(LSM_PROBE({self.target}, ...) names it so), not {self.fn!r}"
            )
        if self.kind == "autoload" and not self.fn.startswith(tuple(AUTOLOAD_PREFIXES)):
            raise ValueError(
                f"BCC attaches by itself only functions named {', '.join(AUTOLOAD_PREFIXES)}*; "
                f"{self.fn!r} is not one"
            )
        if self.kind == "xdp" and self.target not in CABLE_ENDS:
            raise ValueError(f"an xdp probe goes on 'veth-a' or 'veth-b', not {self.target!r}")
        if self.kind == "tc":
            end, _, direction = self.target.partition(":")
            if end not in CABLE_ENDS or direction not in netns.TC_DIRECTIONS:
                raise ValueError(
                    "a tc probe goes on an end of the cable and a direction: 'veth-a:egress', "
                    f"'veth-a:ingress', 'veth-b:egress' or 'veth-b:ingress'; not {self.target!r}"
                )
        if self.kind == "usdt":
            provider, _, name = self.target.partition(":")
            if not provider or not name or ":" in name:
                raise ValueError(f"a usdt probe is named 'provider:name', not {self.target!r}")
            if isinstance(self.pid, bool) or not isinstance(self.pid, int) or self.pid <= 0:
                raise ValueError(f"a usdt probe needs the pid of a running process, not {self.pid}")
        if self.kind in ("xdp", "tc"):
            if self.cable is None:
                object.__setattr__(self, "cable", netns.LabCable())
            elif not isinstance(self.cable, netns.LabCable):
                raise ValueError(f"cable must be a netns.LabCable, got {self.cable!r}")

    def describe(self) -> str:
        """A short human name, e.g. ``"tracepoint syscalls:sys_enter_execve"``."""
        return f"{self.kind} {self.target}"


@dataclass(frozen=True)
class Alternative:
    """One way to attach a program: a label for ``df.attrs["attach"]`` and the probes.

    :func:`ebpf_lab.core.run.bounded_run` tries its alternatives in order and keeps the first
    whose probes all attach (``df.attrs["attach"]`` is its label, ``attach_reason`` its reason).
    """

    label: str
    probes: Sequence[Probe]
    reason: str = ""


def one_probe(
    kind: str, target: str, fn: str, reason: str = "", *, label: str | None = None, **probe: Any
) -> list[Alternative]:
    """The one way to attach a one-probe program, as :func:`~ebpf_lab.core.run.bounded_run`'s
    ``alternatives``: ``[Alternative(label or kind, [Probe(kind, target, fn, **probe)], reason)]``.
    """
    return [Alternative(label or kind, [Probe(kind, target, fn, **probe)], reason)]


def sys_enter(syscall: str, fn: str) -> list[Alternative]:
    """``fn`` at the ``syscalls:sys_enter_<syscall>`` tracepoint: once per ``syscall()`` call."""
    tracepoint = f"syscalls:sys_enter_{syscall}"
    return one_probe(
        "tracepoint", tracepoint, fn, f"{syscall}() calls: the {tracepoint} tracepoint"
    )


_PERF_SW = {"cpu-clock": 0, "task-clock": 1, "page-faults": 2, "context-switches": 3}
_PERF_HW = {"cpu-cycles": 0, "instructions": 1, "cache-misses": 3}


#: the BPF program type (BCC's ``BPF.<NAME>``) each kind loads its function as
PROG_TYPES = {
    "tracepoint": "TRACEPOINT",
    "raw_tracepoint": "RAW_TRACEPOINT",
    "kprobe": "KPROBE",
    "kretprobe": "KPROBE",
    "uprobe": "KPROBE",
    "uretprobe": "KPROBE",
    "usdt": "KPROBE",
    "perf_event": "PERF_EVENT",
    "xdp": "XDP",
    "tc": "SCHED_CLS",
    "lsm": "LSM",
}


def prog_type(bcc: Any, probe: Probe) -> int:
    """The BPF program type BCC must load ``probe.fn`` as."""
    name = PROG_TYPES.get(probe.kind) or _autoload_type(probe.fn)
    return getattr(bcc.BPF, name)


def _autoload_type(fn: str) -> str:
    return next((t for p, t in AUTOLOAD_PREFIXES.items() if fn.startswith(p)), "KPROBE")


def _bcc_attached(bpf: Any, fn: str) -> bool:
    """Whether BCC's records say it attached ``fn`` while compiling (its autoload)."""
    name = fn.encode()
    if fn.startswith("lsm__"):
        return name in getattr(bpf, "lsm_fds", {})
    if fn.startswith("kfunc__"):
        return name in getattr(bpf, "kfunc_entry_fds", {})
    if fn.startswith("kretfunc__"):
        return name in getattr(bpf, "kfunc_exit_fds", {})
    if fn.startswith("tracepoint__"):
        tp = fn[len("tracepoint__") :].replace("__", ":")
        return tp.encode() in getattr(bpf, "tracepoint_fds", {})
    if fn.startswith("raw_tracepoint__"):
        return fn[len("raw_tracepoint__") :].encode() in getattr(bpf, "raw_tracepoint_fds", {})
    # kprobe__/kretprobe__: BCC keeps {event: {function: fd}}
    return any(name in fns for fns in getattr(bpf, "kprobe_fds", {}).values())


def attach_probe(bcc: Any, bpf: Any, probe: Probe) -> None:
    """Attach an already loaded function at ``probe`` (BCC's ``attach_*`` calls)."""
    fn = probe.fn.encode()
    if probe.kind == "tracepoint":
        tp = probe.target.encode()
        earlier = getattr(bpf, "tracepoint_fds", {}).get(tp)
        bpf.attach_tracepoint(tp=tp, fn_name=fn)
        if earlier is not None:  # BCC just forgot it: keep it to detach (loader.shadowed_fds)
            shadowed_fds(bpf).append(earlier)
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
    elif probe.kind == "usdt":
        places = _usdt_context(bcc, probe).enumerate_active_probes()
        if not places:
            raise Exception(f"no place of the USDT probe {probe.target} in process {probe.pid}")
        for binpath, fn_name, addr, pid in places:
            bpf.attach_uprobe(name=binpath, fn_name=fn_name, addr=addr, pid=pid)
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
    elif probe.kind == "xdp":
        attach_xdp(bcc, bpf, probe)
    elif probe.kind == "tc":
        attach_tc(bcc, bpf, probe)
    elif not _bcc_attached(bpf, probe.fn):  # lsm, autoload: BCC attached them while compiling
        raise Exception(
            f"{probe.fn} is not attached: BCC attaches it while compiling only when the C names "
            "it so (e.g. LSM_PROBE, TRACEPOINT_PROBE) and the compile is BCC's own"
        )


def _usdt_context(bcc: Any, probe: Probe) -> Any:
    """BCC's ``USDT`` context of process ``probe.pid`` with ``probe.target`` enabled for
    ``probe.fn``; UnsupportedFeature if the process has no such probe."""
    try:
        context = bcc.USDT(pid=probe.pid)
        context.enable_probe(probe=probe.target, fn_name=probe.fn)
    except Exception as exc:  # bcc's USDTException
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedFeature(
            "usdt", f"process {probe.pid} has no USDT probe {probe.target} ({first})"
        ) from None
    return context


def usdt_source(probes: Sequence[Probe]) -> str:
    """The C that BCC writes for the ``usdt`` probes among ``probes``: one function per argument
    of each, which ``bpf_usdt_readarg(n, ctx, &value)`` in the probe's C function calls. It
    depends on where the compiler put each argument (a register, the stack...), as the binary's
    ``.note.stapsdt`` note says; put it before the program's own C. Empty without usdt probes.

    Raises:
        UnsupportedFeature: a probe's process has no such USDT probe (or is gone).
    """
    bcc = require_bcc()
    return "".join(_usdt_context(bcc, p).get_text() for p in probes if p.kind == "usdt")


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
    """Detach every probe of ``bpf``, keeping the compiled module (for trying an alternative).

    The core's own attachments go first, newest first (XDP and tc programs removed, then the
    cable's namespaces deleted), then BCC's records, LSM and fentry included. Every step is
    tried even if one fails; the first failure is raised at the end.
    """
    steps: list[Callable[[], Any]] = [functools.partial(close_shadowed, bpf)]
    mine = links(bpf)
    while mine:
        steps.append(mine.pop().detach)
    for record, detach in (
        ("kprobe_fds", "detach_kprobe_event"),
        ("uprobe_fds", "detach_uprobe_event"),
        ("tracepoint_fds", "detach_tracepoint"),
        ("raw_tracepoint_fds", "detach_raw_tracepoint"),
        ("kfunc_entry_fds", "detach_kfunc"),
        ("kfunc_exit_fds", "detach_kretfunc"),
        ("lsm_fds", "detach_lsm"),
    ):
        for k in list(getattr(bpf, record, {})):
            steps.append(functools.partial(getattr(bpf, detach), k))
    for ev_type, ev_config in list(getattr(bpf, "open_perf_events", {})):
        steps.append(functools.partial(bpf.detach_perf_event, ev_type, ev_config))
    first: Exception | None = None
    for step in steps:
        try:
            step()
        except Exception as exc:  # bcc raises bare Exception
            first = first or exc
    if first is not None:
        raise first


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


def exec_alternatives(attach: str, kprobe_fn: str, tracepoint_fn: str) -> list[Alternative]:
    """The ordered ways to hook execve for ``attach``, as the core's ``Alternative`` list.

    ``kprobe_fn`` runs on the execve syscall's kernel entry (the seed's way);
    ``tracepoint_fn`` on ``syscalls:sys_enter_execve``. With ``"auto"`` the kprobe is tried first
    when the kernel has kprobes, and the tracepoint is the fallback.
    """
    check_choice(attach, "attach", EXEC_ATTACH_CHOICES)
    if replay.replaying():  # the recorded frame says what was attached; the kernel is not asked
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
    elif kind in ("uprobe", "uretprobe", "usdt"):
        left, _, right = target.rpartition(":")
        if not left or not right:
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
