"""The feature table: every eBPF feature the lab cares about, what it means, how it is probed.

One :class:`Feature` per row of :func:`ebpf_lab.doctor`, in the doctor's order: its name, what it
means for a learner, its probe (a fact read from the system, or a :class:`~ebpf_lab.kernel.probes.
Check` that loads a tiny program and makes it fire) and the features it depends on. The doctor's
rows, their meanings, :func:`supports` and the lessons' needs (by name, see
:func:`feature_names`) all come from this table.

Each feature is probed on its own and its :class:`Outcome` is cached for the life of the process,
as in cilium/ebpf's ``features`` package. An outcome is one of three:

* ``supported``: the probe worked here, now (the program fired exactly as expected);
* ``unsupported``: the kernel said no, or a feature it depends on is missing from the kernel;
* ``inconclusive``: the question could not be answered (not root, no working BCC, the probe's C
  did not compile, the program fired a wrong number of times). Inconclusive outcomes are not
  cached: the next question probes again.

Example::

    from ebpf_lab.kernel import features
    features.probe("uprobe")      # probes root, bcc and uprobe, nothing else
    features.supports("uprobe")   # True / False, from the cache
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.errors import ROOT_HINT, BccMissing
from ebpf_lab.core.guards import check_choice, require_bcc
from ebpf_lab.kernel import platforms, probes
from ebpf_lab.kernel.probes import INCONCLUSIVE, SUPPORTED, UNSUPPORTED, Check

#: the three outcomes, in the order a reader meets them
OUTCOMES = (SUPPORTED, UNSUPPORTED, INCONCLUSIVE)


@dataclass(frozen=True)
class Outcome:
    """What probing one feature found.

    Attributes:
        feature: the feature's name.
        state: ``"supported"``, ``"unsupported"`` or ``"inconclusive"``.
        reason: what was tried and what happened, or why not and what to use instead.
    """

    feature: str
    state: str
    reason: str

    @property
    def supported(self) -> bool:
        """True only for ``"supported"``: an inconclusive feature is not relied on."""
        return self.state == SUPPORTED


@dataclass(frozen=True)
class Feature:
    """One row of the table.

    Attributes:
        name: the feature's name (a doctor row, a lesson need, an ``ebpf_lab.supports`` key).
        meaning: what it is, in plain words, for a learner.
        probe: a :class:`~ebpf_lab.kernel.probes.Check` (a program to load and make fire), or a
            function that reads the system and returns ``(state, reason)``.
        depends: features that must be supported before this one can be probed.
        needed_as: what a feature depending on this one says while this one is not supported.
        missing_makes: the outcome of those dependents then: ``"inconclusive"`` when this one
            is about the lab's setup (root, BCC: the kernel was not asked), ``"unsupported"``
            when it is about the kernel (no BTF: fentry cannot work either).
    """

    name: str
    meaning: str
    probe: Check | Callable[[], tuple[str, str]]
    depends: tuple[str, ...] = ()
    needed_as: str = ""
    missing_makes: str = INCONCLUSIVE


# ---------------------------------------------------------------------------------------------
# The facts: rows read from the system, no program loaded

_STATE: dict[str, Any] = {"bcc": None, "platform": None}  # what the bcc row found, for the rest


def _yes(ok: bool) -> str:
    return SUPPORTED if ok else UNSUPPORTED


def _root() -> tuple[str, str]:
    euid = os.geteuid()
    if euid == 0:
        return SUPPORTED, "running as root (euid 0)"
    return UNSUPPORTED, f"running as euid {euid}. {ROOT_HINT}"


def _bcc() -> tuple[str, str]:
    """BCC's version, the LLVM it compiles with, and any known problem of this combination."""
    try:
        bcc: Any = require_bcc()
    except BccMissing as exc:
        _STATE.update(bcc=None, platform=None)
        return UNSUPPORTED, str(exc)
    platform = platforms.check(bcc)
    _STATE.update(bcc=bcc, platform=platform)
    return _yes(not platform.errors), bcc_detail(bcc, platform)


def bcc_detail(bcc: Any, platform: platforms.PlatformReport) -> str:
    """The bcc row's text: versions, where BCC comes from, and known problems of the pair."""
    llvm = (
        f"LLVM {platform.llvm_version} ({platform.llvm_source})"
        if platform.llvm_version
        else f"LLVM unknown: {platform.llvm_source}"
    )
    text = f"bcc {platform.bcc_version or '?'} with {llvm}, from {bcc.__file__}; {platform.system}"
    for problem in platform.errors:
        text += f"; ERROR: {problem}"
    for problem in platform.warnings:
        text += f"; WARNING: {problem}"
    return text


def _bcc_needed_as() -> str:
    platform = _STATE["platform"]
    if platform is not None and platform.errors:
        return f"needs a BCC that compiles programs here: {platform.errors[0].fix}"
    return "needs bcc: `sudo apt-get install python3-bpfcc`, then use the lab's venv"


def _btf() -> tuple[str, str]:
    path = kernel.BTF_VMLINUX
    try:
        size = path.stat().st_size
    except OSError:
        return UNSUPPORTED, (
            f"no {path}: the kernel was built without CONFIG_DEBUG_INFO_BTF; "
            "fentry/LSM programs and the lab's BTF offsets need it"
        )
    try:
        require_bcc()
    except BccMissing:
        return SUPPORTED, f"{path} present ({size / 1e6:.1f} MB); not parsed (needs bcc)"
    from bcc.libbcc import lib

    if not lib.bpf_has_kernel_btf():
        return UNSUPPORTED, f"{path} exists ({size / 1e6:.1f} MB) but libbpf could not parse it"
    return SUPPORTED, f"{path} ({size / 1e6:.1f} MB) parsed by libbpf"


def _headers() -> tuple[str, str]:
    status = kernel.header_status()
    return _yes(status.state != "missing"), status.detail


def _tracefs() -> tuple[str, str]:
    root = kernel.tracefs_root()
    if root is None:
        return UNSUPPORTED, (
            "not mounted (no /sys/kernel/tracing/trace_pipe): `sudo mount -t tracefs tracefs "
            "/sys/kernel/tracing` or rerun `sudo make lab`"
        )
    id_file = root / "events" / "syscalls" / "sys_enter_getppid" / "id"
    try:
        tp_id = id_file.read_text().strip()
    except OSError:
        return SUPPORTED, (
            f"mounted at {root}, but it has no syscall tracepoints "
            "(kernel built without CONFIG_FTRACE_SYSCALLS)"
        )
    return SUPPORTED, f"mounted at {root}; read syscalls:sys_enter_getppid's id ({tp_id})"


# ---------------------------------------------------------------------------------------------
# The table

_PROGRAM = ("root", "bcc")  # what every program probe needs
_ME = "DOCTOR_ME()"
_TRACEPOINTS_INSTEAD = "use tracepoints instead (syscalls:sys_enter_*, or a raw_tracepoint)"


def _program(name: str, meaning: str, source: str, run: Any, **check: Any) -> Feature:
    depends = (*_PROGRAM, *check.pop("depends", ()))
    return Feature(name, meaning, Check(name, source, run, **check), depends)


def _counter(name: str, meaning: str, run: Any, what: str, *c: str, **check: Any) -> Feature:
    """A program probe whose C counts its own hits: :func:`~ebpf_lab.kernel.probes.counter`'s
    ``doctor_<name>`` (``c``: its context type, condition, return value; ``head=``)."""
    source = probes.counter(name, f"doctor_{name}", *(c or ("void",)), head=check.pop("head", None))
    return _program(name, meaning, source, run, what=what, **check)


def _map(name: str, meaning: str, source: str, table: str, map_type: str, what: str) -> Feature:
    return _program(name, meaning, source, probes.map_check(name, table, map_type), what=what)


TABLE: tuple[Feature, ...] = (
    Feature(
        "root",
        "The lab runs as root: loading BPF programs needs CAP_BPF and CAP_PERFMON.",
        _root,
        needed_as="needs root: start the lab with `sudo make lab`",
    ),
    Feature(
        "bcc",
        "BCC's Python bindings: compiles C to BPF with the clang/LLVM built into libbcc "
        "and loads it from Python. Some BCC + LLVM + distribution combinations cannot compile.",
        _bcc,
    ),
    Feature(
        "btf",
        "The kernel describes its own types (BTF), so the lab can find struct offsets "
        "without matching header files.",
        _btf,
        needed_as="needs the kernel's BTF",
        missing_makes=UNSUPPORTED,
    ),
    Feature(
        "kernel_headers",
        "Header files for this kernel version, used by BCC to compile. "
        "Fallback headers from another version compile but give wrong struct layouts.",
        _headers,
    ),
    Feature(
        "tracefs",
        "The tracing file system: lists tracepoints and carries bpf_trace_printk lines.",
        _tracefs,
        depends=("root",),
    ),
    _counter(
        "kprobe",
        "Dynamic hooks on (almost) any kernel function. Powerful, but unstable across "
        "versions and compiled out of some kernels.",
        probes.check_kprobe,
        "kprobe on the getppid syscall",
        instead="use the syscalls:sys_enter_* tracepoints instead "
        "(the lessons' attach='tracepoint')",
        context=True,  # lockdown=confidentiality refuses kprobes
    ),
    _counter(
        "tracepoint",
        "Static, stable hooks placed by kernel developers, e.g. on every syscall.",
        probes.check_tracepoint,
        "tracepoint syscalls:sys_enter_getppid",
        instead="use a raw_tracepoint or a kprobe",
    ),
    _counter(
        "raw_tracepoint",
        "Tracepoints without argument formatting: faster, raw arguments.",
        probes.check_raw_tracepoint,
        "raw_tracepoint sys_enter",
        "struct bpf_raw_tracepoint_args",
        f"{_ME} && ctx->args[1] == __NR_getppid",
        instead="use a tracepoint",
    ),
    _counter(
        "uprobe",
        "Hooks on functions in user-space programs and libraries (e.g. libc).",
        probes.check_uprobe,
        "uprobe on libc getppid()",
    ),
    _counter(
        "perf_event",
        "Programs run by perf events, e.g. a CPU sampled N times a second.",
        probes.check_perf_event,
        "perf event software:cpu-clock",
    ),
    _counter(
        "xdp",
        "eXpress Data Path: programs that see (and may drop) packets as they arrive.",
        probes.check_xdp,
        "XDP on lo in a throw-away network namespace",
        "struct xdp_md",
        "1",
        "XDP_PASS",
    ),
    _counter(
        "fentry",
        "BTF-based function entry hooks: kprobes' faster successor.",
        probes.check_fentry,
        f"fentry (KFUNC_PROBE) on {probes.FENTRY_FUNCTION}",
        head=f"KFUNC_PROBE({probes.FENTRY_FUNCTION})",
        instead=_TRACEPOINTS_INSTEAD,
        context=True,
        precheck=probes.needs_btf,
        alone=True,
        depends=("btf",),
    ),
    _counter(
        "lsm",
        "BPF programs on Linux Security Module hooks: can deny an operation.",
        probes.check_lsm,
        "LSM_PROBE(file_open)",
        head="LSM_PROBE(file_open, struct file *file)",
        instead="BPF LSM programs can deny; to observe the same events without denying, "
        "use tracepoints (e.g. syscalls:sys_enter_openat)",
        context=True,
        precheck=probes.lsm_precheck,
        alone=True,
        depends=("btf",),
    ),
    _map(
        "hash_map",
        "Key/value hash table shared by programs and user space.",
        probes.C_HASH,
        "doctor_hash",
        "BPF_MAP_TYPE_HASH",
        "BPF_HASH",
    ),
    _map(
        "array_map",
        "Fixed-size array indexed by number.",
        probes.C_ARRAY,
        "doctor_array",
        "BPF_MAP_TYPE_ARRAY",
        "BPF_ARRAY",
    ),
    _map(
        "percpu_array",
        "An array with one value per CPU: no contention between CPUs.",
        probes.C_PERCPU_ARRAY,
        "doctor_percpu",
        "BPF_MAP_TYPE_PERCPU_ARRAY",
        "BPF_PERCPU_ARRAY",
    ),
    _map(
        "lru_hash",
        "A hash table that evicts the least recently used entry when full.",
        probes.C_LRU_HASH,
        "doctor_lru",
        "BPF_MAP_TYPE_LRU_HASH",
        'BPF_TABLE("lru_hash", ...)',
    ),
    _program(
        "perf_buffer",
        "Per-CPU rings that carry events to user space (BPF_PERF_OUTPUT).",
        probes.C_PERF_BUFFER,
        probes.check_perf_buffer,
        what="BPF_PERF_OUTPUT on syscalls:sys_enter_getppid",
        instead="use the ring buffer (BPF_RINGBUF_OUTPUT) or poll a map",
    ),
    _program(
        "ring_buffer",
        "One ring shared by all CPUs carrying events to user space (Linux 5.8+).",
        probes.C_RING_BUFFER,
        probes.check_ring_buffer,
        what="BPF_RINGBUF_OUTPUT on syscalls:sys_enter_getppid",
        instead="use the perf buffer (BPF_PERF_OUTPUT) instead (ring buffers need 5.8+)",
    ),
)

_BY_NAME = {f.name: f for f in TABLE}


def feature_names() -> tuple[str, ...]:
    """Every feature's name, in the doctor's row order (what a lesson may list as a need)."""
    return tuple(_BY_NAME)


def feature(name: str) -> Feature:
    """The table's row for ``name``; a ValueError lists the known names."""
    check_choice(name, "feature", feature_names())
    return _BY_NAME[name]


# ---------------------------------------------------------------------------------------------
# Probing, one feature at a time, cached

_CACHE: dict[str, Outcome] = {}
_LOCK = threading.RLock()


def _with_dependencies(names: Iterable[str]) -> list[str]:
    """``names`` and everything they depend on, in table order (dependencies come first)."""
    wanted: set[str] = set()
    stack = [feature(n).name for n in names]
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(_BY_NAME[name].depends)
    return [f.name for f in TABLE if f.name in wanted]


def _blocked(f: Feature, found: dict[str, Outcome]) -> Outcome | None:
    """The outcome of ``f`` when a feature it depends on is not supported, else None."""
    missing = [_BY_NAME[d] for d in f.depends if not found[d].supported]
    if not missing:
        return None
    texts = []
    for dep in missing:
        text = _bcc_needed_as() if dep.name == "bcc" else dep.needed_as or f"needs {dep.name}"
        if dep.missing_makes == UNSUPPORTED:
            text += f": {found[dep.name].reason}"
        texts.append(text)
    state = UNSUPPORTED if any(d.missing_makes == UNSUPPORTED for d in missing) else INCONCLUSIVE
    return Outcome(f.name, state, "; ".join(dict.fromkeys(texts)))


def probe(*names: str, refresh: bool = False) -> dict[str, Outcome]:
    """Probe ``names`` (default: every feature) and what they depend on; ``{name: Outcome}``.

    A feature probed before is answered from the cache unless ``refresh``; only the features
    asked for and their dependencies are probed (``probe("uprobe")`` loads one program). Program
    probes asked for together are compiled as one program where they can be, so the whole table
    takes a few seconds.

    Raises:
        ValueError: an unknown feature name (before anything is probed).
    """
    order = _with_dependencies(names or feature_names())
    with _LOCK:
        if refresh:
            for name in order:
                _CACHE.pop(name, None)
        found = {n: _CACHE[n] for n in order if n in _CACHE}
        group: list[Check] = []
        for name in order:
            if name in found:
                continue
            f = _BY_NAME[name]
            outcome = _blocked(f, found)
            if outcome is None and not isinstance(f.probe, Check):
                outcome = Outcome(name, *f.probe())
            if outcome is not None:
                found[name] = outcome
            else:
                group.append(f.probe)  # type: ignore[arg-type]
        if group:
            bcc = require_bcc()
            flags = probes.cflags()
            shared = [c for c in group if not c.alone]
            results = probes.run_group(bcc, shared, flags) if shared else {}
            for check in group:
                if check.alone:
                    results.update(probes.run_group(bcc, [check], flags))
            for name, (state, reason) in results.items():
                found[name] = Outcome(name, state, reason)
        for name, outcome in found.items():
            if outcome.state != INCONCLUSIVE:
                _CACHE[name] = outcome
        return {n: found[n] for n in order}


def supports(name: str) -> bool:
    """Whether the kernel supports feature ``name``, probing it (and only it) if not yet known.

    An inconclusive outcome counts as not supported. Example::

        attach = "kprobe" if ebpf_lab.supports("kprobe") else "tracepoint"
    """
    return probe(name)[name].supported


def platform_report() -> platforms.PlatformReport | None:
    """What the last probe of the ``bcc`` feature found about BCC, LLVM and the system."""
    return _STATE["platform"]


__all__ = [
    "INCONCLUSIVE",
    "OUTCOMES",
    "SUPPORTED",
    "UNSUPPORTED",
    "TABLE",
    "Feature",
    "Outcome",
    "feature",
    "feature_names",
    "platform_report",
    "probe",
    "supports",
]
