"""The programs the doctor loads to ask the kernel what it can do, and how each one is judged.

Every program feature of :mod:`ebpf_lab.kernel.features` has a :class:`Check` here: the C it
needs and the Python that attaches it (through :mod:`ebpf_lab.core.loader` and
:mod:`ebpf_lab.core.attach`), makes it fire a known number of times from this very thread (three
``getppid()`` calls, a spinning loop, one UDP datagram) and checks the count. Map checks create
the map and write and read it back from user space. Everything is detached and closed before the
next check; XDP is tried on the ``lo`` of a throw-away network namespace, deleted afterwards.

A check ends in one of three outcomes, with the reason kept:

* ``supported``: the program loaded, attached and fired exactly as expected;
* ``unsupported``: the kernel said no (a file shows the feature is absent, the verifier refused
  the program, or the attach failed);
* ``inconclusive``: the question could not be put or answered (the probe's C did not compile,
  or the program ran but fired a wrong number of times): the kernel may well have the feature.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core import netns
from ebpf_lab.core.attach import Probe, detach_all, prog_type, try_attach, xdp_link
from ebpf_lab.core.errors import ProgramError
from ebpf_lab.core.loader import compile_program, load_function, release

#: the three outcomes of a probe
SUPPORTED, UNSUPPORTED, INCONCLUSIVE = "supported", "unsupported", "inconclusive"
#: how many times each program is made to fire (``getppid()`` calls, ``open()`` calls)
CALLS = 3
#: software ``cpu-clock`` samples per second for the perf_event check
PERF_FREQ = 1000
#: the kernel function the fentry check attaches to (in every kernel's BTF; each read() calls it)
FENTRY_FUNCTION = "vfs_read"
#: the XDP check's throw-away network namespace is ``<prefix><pid>``
NETNS_PREFIX = "ebpf-lab-doctor-"


def cflags() -> list[str]:
    """The compiler flags that make every check count only what the calling thread does."""
    return [f"-DDOCTOR_TGID={os.getpid()}", f"-DDOCTOR_TID={threading.get_native_id()}"]


class NotHere(Exception):
    """A check found, without loading anything, that the feature is absent; the text says why."""


class Refused(Exception):
    """The kernel refused to attach a loaded program; the text says what it answered."""


class Misbehaved(Exception):
    """A check loaded and attached its program, but it did not behave; the text says how."""


@dataclass(frozen=True)
class Check:
    """One feature probe: the C it needs and the Python that attaches it and checks it fired."""

    feature: str
    source: str
    run: Callable[[Any, Any], str]  # (bcc, bpf) -> detail; raises when unsupported
    what: str = ""  # what was tried, for a failure message
    instead: str = ""  # what to use when it fails
    context: bool = False  # add lockdown mode and active LSMs to a failure
    # a file check run before compiling: the reason the feature cannot work here, or None
    precheck: Callable[[], str | None] | None = None
    # KFUNC_PROBE and LSM_PROBE load and attach while BPF() is constructed: one program each
    alone: bool = False


# ---------------------------------------------------------------------------------------------
# The C. Every program counts only what this thread does (DOCTOR_TGID/DOCTOR_TID come in as -D
# macros), so other processes, and other threads of a Jupyter kernel, cannot change the counts.

_PRELUDE = r"""
#include <asm/unistd.h>

#define DOCTOR_ME() (bpf_get_current_pid_tgid() == (((u64)DOCTOR_TGID << 32) | (u64)DOCTOR_TID))

struct doctor_event {
    u64 pid_tgid;
};
"""


def counter(
    feature: str,
    fn: str,
    ctx_type: str,
    condition: str = "DOCTOR_ME()",
    ret: str = "0",
    *,
    head: str | None = None,
) -> str:
    """C for a function ``fn`` that adds 1 to ``<feature>_hits[0]`` when ``condition`` holds.

    ``head`` replaces the function's first line ``int fn(ctx_type *ctx)``, for a function that
    BCC declares itself (``KFUNC_PROBE(...)``, ``LSM_PROBE(...)``).
    """
    return f"""
BPF_ARRAY({feature}_hits, u64, 1);
{head or f"int {fn}({ctx_type} *ctx)"}
{{
    if ({condition})
        {feature}_hits.increment(0);
    return {ret};
}}
"""


# One map each (no program needs them: BCC creates every declared map when it loads the module).
C_HASH = "BPF_HASH(doctor_hash, u32, u64, 4);\n"
C_ARRAY = "BPF_ARRAY(doctor_array, u64, 4);\n"
C_PERCPU_ARRAY = "BPF_PERCPU_ARRAY(doctor_percpu, u64, 4);\n"
C_LRU_HASH = 'BPF_TABLE("lru_hash", u32, u64, doctor_lru, 4);\n'

C_PERF_BUFFER = r"""
BPF_ARRAY(perf_buffer_hits, u64, 1);
BPF_PERF_OUTPUT(doctor_perf_events);
int doctor_perf_buffer(void *ctx)
{
    if (!DOCTOR_ME())
        return 0;
    struct doctor_event e = {.pid_tgid = bpf_get_current_pid_tgid()};
    perf_buffer_hits.increment(0);
    doctor_perf_events.perf_submit(ctx, &e, sizeof(e));
    return 0;
}
"""

C_RING_BUFFER = r"""
BPF_ARRAY(ring_buffer_hits, u64, 1);
BPF_RINGBUF_OUTPUT(doctor_ring_events, 1);
int doctor_ring_buffer(void *ctx)
{
    if (!DOCTOR_ME())
        return 0;
    struct doctor_event e = {.pid_tgid = bpf_get_current_pid_tgid()};
    ring_buffer_hits.increment(0);
    doctor_ring_events.ringbuf_output(&e, sizeof(e), 0);
    return 0;
}
"""


class _Event(ctypes.Structure):
    _fields_ = [("pid_tgid", ctypes.c_uint64)]


# ---------------------------------------------------------------------------------------------
# Helpers shared by the checks


def _me() -> int:
    """This thread's ``pid_tgid`` as the kernel's ``bpf_get_current_pid_tgid()`` reports it."""
    return (os.getpid() << 32) | threading.get_native_id()


def _hits(bpf: Any, feature: str) -> int:
    return int(bpf[f"{feature}_hits".encode()][0].value)


def _getppid_calls(n: int = CALLS) -> None:
    for _ in range(n):
        os.getppid()


def _attach(bcc: Any, bpf: Any, probe: Probe) -> None:
    """Load ``probe.fn`` and attach it; an attach failure says what the kernel answered."""
    load_function(bpf, probe.fn, prog_type(bcc, probe), name="doctor")
    error = try_attach(bcc, bpf, probe)
    if error is not None:
        raise Refused(f"loaded, but attaching {probe.describe()} failed: {_errno_text(error)}")


def _expect(bpf: Any, feature: str, where: str, calls: str, before: int = 0) -> str:
    """Check ``<feature>_hits`` grew by exactly :data:`CALLS` since ``before``; return the
    "fired 3/3 ..." detail."""
    n = _hits(bpf, feature) - before
    if n != CALLS:
        raise Misbehaved(f"attached {where}, but it fired {n}/{CALLS} times for {CALLS} {calls}")
    return f"fired {n}/{CALLS} on {where} ({CALLS} {calls} by this thread)"


_STRERROR = {os.strerror(code): name for code, name in errno.errorcode.items()}


def _errno_text(message: str) -> str:
    """Name the errno in a BCC message (``"...: Invalid argument"`` -> ``"...: EINVAL (...)"``)."""
    if "Need super-user privileges" in message:
        # BCC says this for every EPERM, even when we are root
        return "EPERM (Operation not permitted) from bpf(BPF_PROG_LOAD), although running as root"
    for text, name in _STRERROR.items():
        if message.endswith(": " + text):
            return message[: -len(text)] + f"{name} ({text})"
    return message


def _explain(exc: BaseException) -> str:
    """A one-line reason for a failed check."""
    if isinstance(exc, ProgramError):
        first = str(exc).splitlines()[0]
        first = first.split(": ", 1)[1] if first.startswith("doctor: ") else first
        log = [x.strip() for x in exc.log.splitlines() if x.strip()]
        if exc.stage == "compile":
            errors = [x for x in log if "error:" in x]
            return "compile failed: " + (errors[0] if errors else first)
        text = "load failed: " + _errno_text(first)
        if log and log[-1] not in text:
            text += f" [{log[-1]}]"
        return text
    if isinstance(exc, (NotHere, Refused, Misbehaved)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _failure(check: Check, exc: BaseException) -> str:
    """The detail of a failed check: what was tried, why it failed, context, and what to use."""
    text = _explain(exc)
    if check.what and not isinstance(exc, NotHere):
        text = f"{check.what}: {text}"
    if check.context and not isinstance(exc, NotHere):  # a file check already says why
        lsms = ",".join(kernel.active_lsms()) or "unknown"
        text += f"; context: lockdown={kernel.lockdown_mode() or 'unknown'}, LSMs={lsms}"
    if check.instead:
        text += f"; {check.instead}"
    return text


# ---------------------------------------------------------------------------------------------
# The program checks


def needs_btf() -> str | None:
    """fentry and LSM programs are attached by BTF id: without the kernel's BTF they cannot be."""
    if not kernel.BTF_VMLINUX.exists():
        return (
            f"no {kernel.BTF_VMLINUX}: the kernel was built without CONFIG_DEBUG_INFO_BTF, "
            "and these programs are attached through it"
        )
    return None


def lsm_precheck() -> str | None:
    """BPF LSM programs load even when the ``bpf`` LSM is not active, but are never called."""
    why = needs_btf()
    if why:
        return why
    lsms = kernel.active_lsms()
    if lsms and "bpf" not in lsms:
        return (
            f"'bpf' is not among the active LSMs ({','.join(lsms)}), so the kernel would never "
            f"call a BPF LSM program: add it to the kernel command line, lsm={','.join(lsms)},bpf"
        )
    return None


def check_kprobe(bcc: Any, bpf: Any) -> str:
    ok, why = kernel.kprobes_available()
    if not ok:
        raise NotHere(why)
    probe = Probe("kprobe", "syscall:getppid", "doctor_kprobe")
    _attach(bcc, bpf, probe)
    _getppid_calls()
    return _expect(bpf, "kprobe", "a kprobe on the getppid syscall", "getppid() calls")


def check_tracepoint(bcc: Any, bpf: Any) -> str:
    probe = Probe("tracepoint", "syscalls:sys_enter_getppid", "doctor_tracepoint")
    _attach(bcc, bpf, probe)
    _getppid_calls()
    return _expect(bpf, "tracepoint", probe.describe(), "getppid() calls")


def check_raw_tracepoint(bcc: Any, bpf: Any) -> str:
    probe = Probe("raw_tracepoint", "sys_enter", "doctor_raw_tracepoint")
    _attach(bcc, bpf, probe)
    _getppid_calls()
    return _expect(
        bpf, "raw_tracepoint", "raw_tracepoint sys_enter (id == __NR_getppid)", "getppid() calls"
    )


def check_uprobe(bcc: Any, bpf: Any) -> str:
    probe = Probe("uprobe", "c:getppid", "doctor_uprobe", pid=os.getpid())
    _attach(bcc, bpf, probe)
    _getppid_calls()
    return _expect(bpf, "uprobe", "a uprobe on libc's getppid()", "getppid() calls")


def check_perf_event(bcc: Any, bpf: Any) -> str:
    probe = Probe(
        "perf_event",
        "software:cpu-clock",
        "doctor_perf_event",
        pid=threading.get_native_id(),
        sample_freq=PERF_FREQ,
    )
    _attach(bcc, bpf, probe)
    start = time.monotonic()
    deadline = start + 0.5
    n = 0
    while n < CALLS and time.monotonic() < deadline:
        spin_until = time.monotonic() + 0.005
        while time.monotonic() < spin_until:
            pass
        n = _hits(bpf, "perf_event")
    spun = (time.monotonic() - start) * 1000
    if n == 0:
        raise Misbehaved(
            f"attached {probe.describe()} at {PERF_FREQ} Hz, but it never fired "
            f"while this thread spun for {spun:.0f} ms"
        )
    return (
        f"fired {n} times ({probe.describe()} sampling at {PERF_FREQ} Hz while this thread "
        f"spun for {spun:.0f} ms)"
    )


def _buffer_check(bcc: Any, bpf: Any, feature: str, kind: str) -> str:
    """Shared by the perf and ring buffer checks: 3 getppid() calls must give 3 events."""
    me = _me()
    got: list[int] = []
    if kind == "perf":
        table = bpf[b"doctor_perf_events"]

        def on_perf(cpu: int, data: Any, size: int) -> None:
            got.append(ctypes.cast(data, ctypes.POINTER(_Event)).contents.pid_tgid)

        table.open_perf_buffer(on_perf, page_cnt=1)

        def poll(ms: int) -> None:
            bpf.perf_buffer_poll(timeout=ms)

        label = "the perf buffer (BPF_PERF_OUTPUT)"
    else:
        table = bpf[b"doctor_ring_events"]

        def on_ring(ctx: Any, data: Any, size: int) -> int:
            got.append(ctypes.cast(data, ctypes.POINTER(_Event)).contents.pid_tgid)
            return 0

        table.open_ring_buffer(on_ring)

        def poll(ms: int) -> None:
            bpf.ring_buffer_poll(timeout=ms)

        label = "the ring buffer (BPF_RINGBUF_OUTPUT)"
    probe = Probe("tracepoint", "syscalls:sys_enter_getppid", f"doctor_{feature}")
    _attach(bcc, bpf, probe)
    _getppid_calls()
    deadline = time.monotonic() + 1.0
    while len(got) < CALLS and time.monotonic() < deadline:
        poll(50)
    fired = _hits(bpf, feature)
    mine = sum(1 for value in got if value == me)
    if fired != CALLS or mine != CALLS or len(got) != CALLS:
        raise Misbehaved(
            f"the program on {probe.target} fired {fired}/{CALLS} times, and "
            f"{mine}/{CALLS} events from this thread arrived through {label} "
            f"({len(got)} in all)"
        )
    return f"fired {fired}/{CALLS} on {probe.target}; {mine}/{CALLS} events arrived through {label}"


def check_perf_buffer(bcc: Any, bpf: Any) -> str:
    return _buffer_check(bcc, bpf, "perf_buffer", "perf")


def check_ring_buffer(bcc: Any, bpf: Any) -> str:
    return _buffer_check(bcc, bpf, "ring_buffer", "ring")


#: the doctor's own cable for the XDP check (namespaces ``ebpf-lab-doctora-<pid>`` and
#: ``ebpf-lab-doctorb-<pid>``: a killed doctor's are reaped like a lesson's)
DOCTOR_CABLE = netns.LabCable(prefix_a=f"{NETNS_PREFIX[:-1]}a-", prefix_b=f"{NETNS_PREFIX[:-1]}b-")


def check_xdp(bcc: Any, bpf: Any) -> str:
    """Attach through the core's xdp kind (a throw-away veth cable) and send one datagram."""
    _attach(bcc, bpf, Probe("xdp", "veth-b", "doctor_xdp", cable=DOCTOR_CABLE))
    link = xdp_link(bpf)
    pair = link.pair
    rx = netns.socket_in(pair.ns_b, socket.AF_INET, socket.SOCK_DGRAM)
    tx = netns.socket_in(pair.ns_a, socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind((pair.ip_b, 0))
        rx.settimeout(1.0)
        tx.sendto(b"ebpf-lab doctor", (pair.ip_b, rx.getsockname()[1]))
        try:
            rx.recv(64)
        except socket.timeout:
            raise Misbehaved(
                f"attached to {link.device}, but the test datagram never arrived "
                "(the program should return XDP_PASS)"
            ) from None
    n = _hits(bpf, "xdp")
    if n < 1:
        raise Misbehaved(
            f"attached to {link.device} in {link.namespace}, but it never fired for the "
            "datagram that arrived"
        )
    return (
        f"fired {n}/1 for one UDP datagram, attached in {link.mode} mode to {link.device} "
        f"in the throw-away network namespace {link.namespace} (deleted with its cable)"
    )


# fentry and LSM programs were attached when BPF() was constructed, and that (capturing the
# compiler's output) read and opened files in this thread: count from a baseline.


def check_fentry(bcc: Any, bpf: Any) -> str:
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        before = _hits(bpf, "fentry")
        for _ in range(CALLS):
            os.read(fd, 1)
    finally:
        os.close(fd)
    return _expect(
        bpf, "fentry", f"fentry (KFUNC_PROBE) on {FENTRY_FUNCTION}", "read() calls", before
    )


def check_lsm(bcc: Any, bpf: Any) -> str:
    before = _hits(bpf, "lsm")
    for _ in range(CALLS):
        os.close(os.open("/dev/null", os.O_RDONLY))
    return _expect(bpf, "lsm", "LSM_PROBE(file_open)", "open() calls", before)


def map_check(feature: str, table: str, map_type: str) -> Callable[[Any, Any], str]:
    def run(bcc: Any, bpf: Any) -> str:
        import bcc.table as bt

        t = bpf[table.encode()]
        want = getattr(bt, map_type)
        if t.ttype != want:
            raise Misbehaved(f"{table} was created as map type {t.ttype}, not {map_type}")
        key = t.Key(1)
        if feature == "percpu_array":
            values = [42 + cpu for cpu in range(t.total_cpu)]
            t[key] = t.Leaf(*values)
            back = list(t[key])
            shown = f"{values[0]}..{values[-1]} (one value per CPU, {t.total_cpu} CPUs)"
        else:
            values = [42]
            t[key] = t.Leaf(42)
            back = [t[key].value]
            shown = "42"
        if back != values:
            raise Misbehaved(f"created {map_type}, but key 1 read back {back}, not {values}")
        return f"created {map_type}; user-space update + lookup of key 1 -> {shown}"

    return run


def _state(exc: BaseException) -> str:
    """The outcome a check's exception means: the kernel said no, or the question stayed open."""
    if isinstance(exc, (NotHere, Refused)):
        return UNSUPPORTED
    if isinstance(exc, ProgramError) and exc.stage != "compile":
        return UNSUPPORTED  # the verifier (or bpf() itself) refused the program
    return INCONCLUSIVE  # a compile failure, a wrong count, an error of ours


def _run_check(check: Check, bcc: Any, bpf: Any) -> tuple[str, str]:
    try:
        return SUPPORTED, check.run(bcc, bpf)
    except Exception as exc:
        return _state(exc), _failure(check, exc)
    finally:
        with contextlib.suppress(Exception):
            detach_all(bpf)


def run_group(bcc: Any, checks: list[Check], cflags: list[str]) -> dict[str, tuple[str, str]]:
    """Run ``checks``: ``{feature: (outcome, detail)}``.

    Each check's file precheck comes first (a feature the files show absent loads nothing).
    The other checks' C is compiled as one program and each check runs on it in turn; if that
    program does not build, each check is compiled and run on its own, so one broken probe cannot
    hide the others. Checks marked ``alone`` must be given one at a time.
    """
    results: dict[str, tuple[str, str]] = {}
    todo = []
    for check in checks:
        why = check.precheck() if check.precheck is not None else None
        if why:
            results[check.feature] = (UNSUPPORTED, _failure(check, NotHere(why)))
        else:
            todo.append(check)
    if not todo:
        return results
    sources: list[str] = []
    for check in todo:
        if check.source not in sources:
            sources.append(check.source)
    try:
        bpf = compile_program(_PRELUDE + "".join(sources), cflags, name="doctor")
    except ProgramError as exc:
        if len(todo) == 1:
            return {**results, todo[0].feature: (_state(exc), _failure(todo[0], exc))}
        for check in todo:
            results.update(run_group(bcc, [check], cflags))
        return results
    try:
        results.update({check.feature: _run_check(check, bcc, bpf) for check in todo})
        return results
    finally:
        release(bpf)
