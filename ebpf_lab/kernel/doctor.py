"""What this kernel can really do, found by loading tiny BPF programs and creating tiny maps.

Reading ``/boot/config-*`` says what the kernel was *built* with; it does not say what a program
may do today (lockdown, a security module or a missing mount can still say no). So
:func:`doctor` asks the kernel itself: for each feature it loads a minimal program, attaches it,
makes it fire a known number of times from this very thread (three ``getppid()`` calls, a
spinning loop, one UDP datagram) and checks the count. Maps are created and written and read
back from user space. Everything is detached and closed before the next check; XDP is tried on
the ``lo`` of a throw-away network namespace, which is deleted afterwards.

The answer is cached for the life of the process: call ``doctor(refresh=True)`` to probe again,
and :func:`supports` to ask about one feature. From a shell: ``sudo python -m ebpf_lab doctor``.
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

import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core import leftovers, netns
from ebpf_lab.core.attach import Probe, detach_all, prog_type, try_attach
from ebpf_lab.core.errors import ROOT_HINT, BccMissing, ProgramError
from ebpf_lab.core.guards import check_choice, require_bcc
from ebpf_lab.core.loader import capture_stderr_fd, compile_program, load_function, release
from ebpf_lab.kernel import platforms

#: the rows of :func:`doctor`, in order
FEATURES: tuple[str, ...] = (
    "root",
    "bcc",
    "btf",
    "kernel_headers",
    "tracefs",
    "kprobe",
    "tracepoint",
    "raw_tracepoint",
    "uprobe",
    "perf_event",
    "xdp",
    "fentry",
    "lsm",
    "hash_map",
    "array_map",
    "percpu_array",
    "lru_hash",
    "perf_buffer",
    "ring_buffer",
)

#: how many times each program is made to fire (``getppid()`` calls, ``open()`` calls)
CALLS = 3
#: software ``cpu-clock`` samples per second for the perf_event check
PERF_FREQ = 1000
#: the kernel function the fentry check attaches to (in every kernel's BTF; each read() calls it)
FENTRY_FUNCTION = "vfs_read"
#: the XDP check's throw-away network namespace is ``<prefix><pid>``
NETNS_PREFIX = "ebpf-lab-doctor-"

_TRACEPOINTS_INSTEAD = "use tracepoints instead (syscalls:sys_enter_*, or a raw_tracepoint)"

_CACHE: pd.DataFrame | None = None
_LOCK = threading.Lock()


class _NotHere(Exception):
    """A check found, without loading anything, that the feature is absent; the text says why."""


class _Failed(Exception):
    """A check loaded and attached its program, but it did not behave; the text says how."""


@dataclass(frozen=True)
class _Check:
    """One feature probe: the C it needs and the Python that attaches it and checks it fired."""

    feature: str
    source: str
    run: Callable[[Any, Any], str]  # (bcc, bpf) -> detail; raises when unsupported
    what: str = ""  # what was tried, for a failure message
    instead: str = ""  # what to use when it fails
    context: bool = False  # add lockdown mode and active LSMs to a failure
    # a file check run before compiling: the reason the feature cannot work here, or None
    precheck: Callable[[], str | None] | None = None


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


def _counter(
    feature: str, fn: str, ctx_type: str, condition: str = "DOCTOR_ME()", ret: str = "0"
) -> str:
    """C for a function ``fn`` that adds 1 to ``<feature>_hits[0]`` when ``condition`` holds."""
    return f"""
BPF_ARRAY({feature}_hits, u64, 1);
int {fn}({ctx_type} *ctx)
{{
    if ({condition})
        {feature}_hits.increment(0);
    return {ret};
}}
"""


# One map each (no program needs them: BCC creates every declared map when it loads the module).
_C_HASH = "BPF_HASH(doctor_hash, u32, u64, 4);\n"
_C_ARRAY = "BPF_ARRAY(doctor_array, u64, 4);\n"
_C_PERCPU_ARRAY = "BPF_PERCPU_ARRAY(doctor_percpu, u64, 4);\n"
_C_LRU_HASH = 'BPF_TABLE("lru_hash", u32, u64, doctor_lru, 4);\n'

_C_PERF_BUFFER = r"""
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

_C_RING_BUFFER = r"""
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
        raise _Failed(f"loaded, but attaching {probe.describe()} failed: {_errno_text(error)}")


def _expect(bpf: Any, feature: str, where: str, calls: str, before: int = 0) -> str:
    """Check ``<feature>_hits`` grew by exactly :data:`CALLS` since ``before``; return the
    "fired 3/3 ..." detail."""
    n = _hits(bpf, feature) - before
    if n != CALLS:
        raise _Failed(f"attached {where}, but it fired {n}/{CALLS} times for {CALLS} {calls}")
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
    if isinstance(exc, (_Failed, _NotHere)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _failure(check: _Check, exc: BaseException) -> str:
    """The detail of a failed check: what was tried, why it failed, context, and what to use."""
    text = _explain(exc)
    if check.what and not isinstance(exc, _NotHere):
        text = f"{check.what}: {text}"
    if check.context and not isinstance(exc, _NotHere):  # a file check already says why
        lsms = ",".join(kernel.active_lsms()) or "unknown"
        text += f"; context: lockdown={kernel.lockdown_mode() or 'unknown'}, LSMs={lsms}"
    if check.instead:
        text += f"; {check.instead}"
    return text


# ---------------------------------------------------------------------------------------------
# The program checks


def _needs_btf() -> str | None:
    """fentry and LSM programs are attached by BTF id: without the kernel's BTF they cannot be."""
    if not kernel.BTF_VMLINUX.exists():
        return (
            f"no {kernel.BTF_VMLINUX}: the kernel was built without CONFIG_DEBUG_INFO_BTF, "
            "and these programs are attached through it"
        )
    return None


def _lsm_precheck() -> str | None:
    """BPF LSM programs load even when the ``bpf`` LSM is not active, but are never called."""
    why = _needs_btf()
    if why:
        return why
    lsms = kernel.active_lsms()
    if lsms and "bpf" not in lsms:
        return (
            f"'bpf' is not among the active LSMs ({','.join(lsms)}), so the kernel would never "
            f"call a BPF LSM program: add it to the kernel command line, lsm={','.join(lsms)},bpf"
        )
    return None


def _check_kprobe(bcc: Any, bpf: Any) -> str:
    ok, why = kernel.kprobes_available()
    if not ok:
        raise _NotHere(why)
    probe = Probe("kprobe", "syscall:getppid", "doctor_kprobe")
    _attach(bcc, bpf, probe)
    _getppid_calls()
    return _expect(bpf, "kprobe", "a kprobe on the getppid syscall", "getppid() calls")


def _check_tracepoint(bcc: Any, bpf: Any) -> str:
    probe = Probe("tracepoint", "syscalls:sys_enter_getppid", "doctor_tracepoint")
    _attach(bcc, bpf, probe)
    _getppid_calls()
    return _expect(bpf, "tracepoint", probe.describe(), "getppid() calls")


def _check_raw_tracepoint(bcc: Any, bpf: Any) -> str:
    probe = Probe("raw_tracepoint", "sys_enter", "doctor_raw_tracepoint")
    _attach(bcc, bpf, probe)
    _getppid_calls()
    return _expect(
        bpf, "raw_tracepoint", "raw_tracepoint sys_enter (id == __NR_getppid)", "getppid() calls"
    )


def _check_uprobe(bcc: Any, bpf: Any) -> str:
    probe = Probe("uprobe", "c:getppid", "doctor_uprobe", pid=os.getpid())
    _attach(bcc, bpf, probe)
    _getppid_calls()
    return _expect(bpf, "uprobe", "a uprobe on libc's getppid()", "getppid() calls")


def _check_perf_event(bcc: Any, bpf: Any) -> str:
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
        raise _Failed(
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
        raise _Failed(
            f"the program on {probe.target} fired {fired}/{CALLS} times, and "
            f"{mine}/{CALLS} events from this thread arrived through {label} "
            f"({len(got)} in all)"
        )
    return f"fired {fired}/{CALLS} on {probe.target}; {mine}/{CALLS} events arrived through {label}"


def _check_perf_buffer(bcc: Any, bpf: Any) -> str:
    return _buffer_check(bcc, bpf, "perf_buffer", "perf")


def _check_ring_buffer(bcc: Any, bpf: Any) -> str:
    return _buffer_check(bcc, bpf, "ring_buffer", "ring")


def _xdp_in_netns(bcc: Any, fn: Any, flags: int) -> None:
    """Inside the namespace: attach to lo, send one datagram to ourselves, always detach."""
    with capture_stderr_fd() as cap:
        try:
            bcc.BPF.attach_xdp(b"lo", fn, flags)
            error = None
        except Exception as exc:
            error = exc
    if error is not None:
        lines = [x.strip() for x in cap.text.splitlines() if x.strip()]
        raise _Failed(
            f"loaded, but attaching to lo failed: {_errno_text(str(error))}"
            + (f" ({lines[-1]})" if lines else "")
        )
    try:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with rx, tx:
            rx.bind(("127.0.0.1", 0))
            rx.settimeout(1.0)
            tx.sendto(b"ebpf-lab doctor", rx.getsockname())
            try:
                rx.recv(64)
            except socket.timeout:
                raise _Failed(
                    "attached to lo, but the test datagram never arrived "
                    "(the program should return XDP_PASS)"
                ) from None
    finally:
        with capture_stderr_fd():
            bcc.BPF.remove_xdp(b"lo", flags)


def _check_xdp(bcc: Any, bpf: Any) -> str:
    fn = load_function(bpf, "doctor_xdp", bcc.BPF.XDP, name="doctor")
    flags = int(bcc.BPF.XDP_FLAGS_SKB_MODE)
    name = f"{NETNS_PREFIX}{os.getpid()}"
    netns.delete(name)  # ours from an earlier process with this pid; we hold the doctor lock
    with netns.temporary_netns(name) as ns:
        netns.run_in_netns(ns, _xdp_in_netns, bcc, fn, flags, timeout=10.0)
    n = _hits(bpf, "xdp")
    if n < 1:
        raise _Failed(
            f"attached to lo in network namespace {name}, but it never fired for the "
            "datagram that arrived"
        )
    return (
        f"fired {n}/1 for one UDP datagram, attached in generic (SKB) mode to lo in the "
        f"throw-away network namespace {name} (deleted)"
    )


# fentry and LSM programs were attached when BPF() was constructed, and that (capturing the
# compiler's output) read and opened files in this thread: count from a baseline.


def _check_fentry(bcc: Any, bpf: Any) -> str:
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


def _check_lsm(bcc: Any, bpf: Any) -> str:
    before = _hits(bpf, "lsm")
    for _ in range(CALLS):
        os.close(os.open("/dev/null", os.O_RDONLY))
    return _expect(bpf, "lsm", "LSM_PROBE(file_open)", "open() calls", before)


def _map_check(feature: str, table: str, map_type: str) -> Callable[[Any, Any], str]:
    def run(bcc: Any, bpf: Any) -> str:
        import bcc.table as bt

        t = bpf[table.encode()]
        want = getattr(bt, map_type)
        if t.ttype != want:
            raise _Failed(f"{table} was created as map type {t.ttype}, not {map_type}")
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
            raise _Failed(f"created {map_type}, but key 1 read back {back}, not {values}")
        return f"created {map_type}; user-space update + lookup of key 1 -> {shown}"

    return run


def _checks() -> tuple[list[_Check], list[_Check]]:
    """The checks compiled together in one program, and those needing a program of their own."""
    me = "DOCTOR_ME()"
    shared = [
        _Check(
            "kprobe",
            _counter("kprobe", "doctor_kprobe", "void"),
            _check_kprobe,
            what="kprobe on the getppid syscall",
            instead="use the syscalls:sys_enter_* tracepoints instead "
            "(the lessons' attach='tracepoint')",
            context=True,  # lockdown=confidentiality refuses kprobes
        ),
        _Check(
            "tracepoint",
            _counter("tracepoint", "doctor_tracepoint", "void"),
            _check_tracepoint,
            what="tracepoint syscalls:sys_enter_getppid",
            instead="use a raw_tracepoint or a kprobe",
        ),
        _Check(
            "raw_tracepoint",
            _counter(
                "raw_tracepoint",
                "doctor_raw_tracepoint",
                "struct bpf_raw_tracepoint_args",
                f"{me} && ctx->args[1] == __NR_getppid",
            ),
            _check_raw_tracepoint,
            what="raw_tracepoint sys_enter",
            instead="use a tracepoint",
        ),
        _Check(
            "uprobe",
            _counter("uprobe", "doctor_uprobe", "void"),
            _check_uprobe,
            what="uprobe on libc getppid()",
        ),
        _Check(
            "perf_event",
            _counter("perf_event", "doctor_perf_event", "void"),
            _check_perf_event,
            what="perf event software:cpu-clock",
        ),
        _Check(
            "xdp",
            _counter("xdp", "doctor_xdp", "struct xdp_md", "1", "XDP_PASS"),
            _check_xdp,
            what="XDP on lo in a throw-away network namespace",
        ),
        _Check(
            "hash_map",
            _C_HASH,
            _map_check("hash_map", "doctor_hash", "BPF_MAP_TYPE_HASH"),
            what="BPF_HASH",
        ),
        _Check(
            "array_map",
            _C_ARRAY,
            _map_check("array_map", "doctor_array", "BPF_MAP_TYPE_ARRAY"),
            what="BPF_ARRAY",
        ),
        _Check(
            "percpu_array",
            _C_PERCPU_ARRAY,
            _map_check("percpu_array", "doctor_percpu", "BPF_MAP_TYPE_PERCPU_ARRAY"),
            what="BPF_PERCPU_ARRAY",
        ),
        _Check(
            "lru_hash",
            _C_LRU_HASH,
            _map_check("lru_hash", "doctor_lru", "BPF_MAP_TYPE_LRU_HASH"),
            what='BPF_TABLE("lru_hash", ...)',
        ),
        _Check(
            "perf_buffer",
            _C_PERF_BUFFER,
            _check_perf_buffer,
            what="BPF_PERF_OUTPUT on syscalls:sys_enter_getppid",
            instead="use the ring buffer (BPF_RINGBUF_OUTPUT) or poll a map",
        ),
        _Check(
            "ring_buffer",
            _C_RING_BUFFER,
            _check_ring_buffer,
            what="BPF_RINGBUF_OUTPUT on syscalls:sys_enter_getppid",
            instead="use the perf buffer (BPF_PERF_OUTPUT) instead (ring buffers need 5.8+)",
        ),
    ]
    # KFUNC_PROBE and LSM_PROBE load and attach while BPF() is constructed: one program each.
    alone = [
        _Check(
            "fentry",
            f"BPF_ARRAY(fentry_hits, u64, 1);\nKFUNC_PROBE({FENTRY_FUNCTION})\n"
            "{\n    if (DOCTOR_ME())\n        fentry_hits.increment(0);\n    return 0;\n}\n",
            _check_fentry,
            what=f"fentry (KFUNC_PROBE) on {FENTRY_FUNCTION}",
            instead=_TRACEPOINTS_INSTEAD,
            context=True,
            precheck=_needs_btf,
        ),
        _Check(
            "lsm",
            "BPF_ARRAY(lsm_hits, u64, 1);\nLSM_PROBE(file_open, struct file *file)\n"
            "{\n    if (DOCTOR_ME())\n        lsm_hits.increment(0);\n    return 0;\n}\n",
            _check_lsm,
            what="LSM_PROBE(file_open)",
            instead="BPF LSM programs can deny; to observe the same events without denying, "
            "use tracepoints (e.g. syscalls:sys_enter_openat)",
            context=True,
            precheck=_lsm_precheck,
        ),
    ]
    return shared, alone


def _run_check(check: _Check, bcc: Any, bpf: Any) -> tuple[bool, str]:
    try:
        return True, check.run(bcc, bpf)
    except Exception as exc:
        return False, _failure(check, exc)
    finally:
        with contextlib.suppress(Exception):
            detach_all(bpf)


def _run_group(bcc: Any, checks: list[_Check], cflags: list[str]) -> dict[str, tuple[bool, str]]:
    """Compile the checks' C as one program and run each check; if that program does not build,
    compile and run each check on its own, so one missing feature cannot hide the others."""
    if len(checks) == 1 and checks[0].precheck is not None:
        why = checks[0].precheck()
        if why:
            return {checks[0].feature: (False, _failure(checks[0], _NotHere(why)))}
    sources: list[str] = []
    for check in checks:
        if check.source not in sources:
            sources.append(check.source)
    try:
        bpf = compile_program(_PRELUDE + "".join(sources), cflags, name="doctor")
    except ProgramError as exc:
        if len(checks) == 1:
            return {checks[0].feature: (False, _failure(checks[0], exc))}
        results: dict[str, tuple[bool, str]] = {}
        for check in checks:
            results.update(_run_group(bcc, [check], cflags))
        return results
    try:
        return {check.feature: _run_check(check, bcc, bpf) for check in checks}
    finally:
        release(bpf)


# ---------------------------------------------------------------------------------------------
# The rows that need no program


def _root() -> tuple[bool, str]:
    euid = os.geteuid()
    if euid == 0:
        return True, "running as root (euid 0)"
    return False, f"running as euid {euid}. {ROOT_HINT}"


def _btf(bcc: Any) -> tuple[bool, str]:
    path = kernel.BTF_VMLINUX
    try:
        size = path.stat().st_size
    except OSError:
        return False, (
            f"no {path}: the kernel was built without CONFIG_DEBUG_INFO_BTF; "
            "fentry/LSM programs and the lab's BTF offsets need it"
        )
    if bcc is None:
        return True, f"{path} present ({size / 1e6:.1f} MB); not parsed (needs bcc)"
    from bcc.libbcc import lib

    if not lib.bpf_has_kernel_btf():
        return False, f"{path} exists ({size / 1e6:.1f} MB) but libbpf could not parse it"
    return True, f"{path} ({size / 1e6:.1f} MB) parsed by libbpf"


def _bcc_row(bcc: Any, platform: platforms.PlatformReport) -> tuple[bool, str]:
    """BCC's version, the LLVM it compiles with, and any known problem of this combination."""
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
    return not platform.errors, text


def _headers() -> tuple[bool, str]:
    status = kernel.header_status()
    return status.state != "missing", status.detail


def _tracefs() -> tuple[bool, str]:
    root = kernel.tracefs_root()
    if root is None:
        return False, (
            "not mounted (no /sys/kernel/tracing/trace_pipe): `sudo mount -t tracefs tracefs "
            "/sys/kernel/tracing` or rerun `sudo make lab`"
        )
    id_file = root / "events" / "syscalls" / "sys_enter_getppid" / "id"
    try:
        tp_id = id_file.read_text().strip()
    except OSError:
        return True, (
            f"mounted at {root}, but it has no syscall tracepoints "
            "(kernel built without CONFIG_FTRACE_SYSCALLS)"
        )
    return True, f"mounted at {root}; read syscalls:sys_enter_getppid's id ({tp_id})"


def _probe() -> pd.DataFrame:
    """Run every check now and build the table (no caching here)."""
    started = time.monotonic()
    results: dict[str, tuple[bool, str]] = {"root": _root()}
    is_root = results["root"][0]
    platform: platforms.PlatformReport | None = None
    try:
        bcc: Any = require_bcc()
        platform = platforms.check(bcc)
        results["bcc"] = _bcc_row(bcc, platform)
    except BccMissing as exc:
        bcc = None
        results["bcc"] = False, str(exc)
    results["btf"] = _btf(bcc)
    results["kernel_headers"] = _headers()
    blockers = []
    if not is_root:
        blockers.append("needs root: start the lab with `sudo make lab`")
    if bcc is None:
        blockers.append("needs bcc: `sudo apt-get install python3-bpfcc`, then use the lab's venv")
    elif platform is not None and platform.errors:
        blockers.append(f"needs a BCC that compiles programs here: {platform.errors[0].fix}")
    results["tracefs"] = _tracefs() if is_root else (False, blockers[0])
    if blockers:
        for feature in FEATURES:
            results.setdefault(feature, (False, "; ".join(blockers)))
    else:
        cflags = [f"-DDOCTOR_TGID={os.getpid()}", f"-DDOCTOR_TID={threading.get_native_id()}"]
        shared, alone = _checks()
        results.update(_run_group(bcc, shared, cflags))
        for check in alone:
            results.update(_run_group(bcc, [check], cflags))
    frame = pd.DataFrame(
        {
            "feature": list(FEATURES),
            "supported": pd.Series([results[f][0] for f in FEATURES], dtype=bool),
            "detail": [results[f][1] for f in FEATURES],
        }
    )
    frame.attrs.update(
        {
            "kernel": kernel.release(),
            "elapsed": round(time.monotonic() - started, 3),
            "pid": os.getpid(),
            "probed_at": pd.Timestamp.now(),
            "system": platform.system if platform else None,
            "bcc_version": platform.bcc_version if platform else None,
            "llvm_version": platform.llvm_version if platform else None,
        }
    )
    return frame


def doctor(refresh: bool = False) -> pd.DataFrame:
    """What this kernel can really do for eBPF, one row per feature, probed by loading programs.

    Each program feature is decided by loading and attaching a minimal program and making it
    fire from this thread: a ``syscalls:sys_enter_getppid`` tracepoint must count exactly the
    three ``os.getppid()`` calls made while it is attached, a cpu-clock perf event must sample a
    spinning loop, an XDP program must see a UDP datagram sent over ``lo`` in a throw-away
    network namespace, and so on. Map features create the map and write and read it back from
    user space. Nothing stays loaded afterwards. It takes two or three seconds (mostly
    clang compiling three small programs).

    Args:
        refresh: probe again instead of returning the answer cached by an earlier call in this
            process (the kernel does not change, but a mount or a module might).

    Returns:
        A DataFrame with columns ``feature`` (see :data:`FEATURES`), ``supported`` (bool) and
        ``detail`` (what was used and what happened, or why not and what to use instead).
        ``df.attrs`` has ``kernel``, ``elapsed`` (seconds), ``pid`` and ``probed_at``.
        Without root or without bcc it does not raise: the rows it cannot probe say what to run.

    Example::

        df = ebpf_lab.doctor()
        df[~df.supported]          # what this kernel cannot do, and why
    """
    global _CACHE
    with _LOCK:
        if _CACHE is None or refresh:
            if os.geteuid() == 0:
                # what killed runs left (a doctor's netns, a hello's tracefs instance) goes first
                leftovers.reap()
            _CACHE = _probe()
        return _CACHE.copy()  # callers may add columns; the cache stays as probed


#: what each feature means, in plain words, for the setup-check notebook
MEANINGS: dict[str, str] = {
    "root": "The lab runs as root: loading BPF programs needs CAP_BPF and CAP_PERFMON.",
    "bcc": "BCC's Python bindings: compiles C to BPF with the clang/LLVM built into libbcc "
    "and loads it from Python. Some BCC + LLVM + distribution combinations cannot compile.",
    "btf": "The kernel describes its own types (BTF), so the lab can find struct offsets "
    "without matching header files.",
    "kernel_headers": "Header files for this kernel version, used by BCC to compile. "
    "Fallback headers from another version compile but give wrong struct layouts.",
    "tracefs": "The tracing file system: lists tracepoints and carries bpf_trace_printk lines.",
    "kprobe": "Dynamic hooks on (almost) any kernel function. Powerful, but unstable across "
    "versions and compiled out of some kernels.",
    "tracepoint": "Static, stable hooks placed by kernel developers, e.g. on every syscall.",
    "raw_tracepoint": "Tracepoints without argument formatting: faster, raw arguments.",
    "uprobe": "Hooks on functions in user-space programs and libraries (e.g. libc).",
    "perf_event": "Programs run by perf events, e.g. a CPU sampled N times a second.",
    "xdp": "eXpress Data Path: programs that see (and may drop) packets as they arrive.",
    "fentry": "BTF-based function entry hooks: kprobes' faster successor.",
    "lsm": "BPF programs on Linux Security Module hooks: can deny an operation.",
    "hash_map": "Key/value hash table shared by programs and user space.",
    "array_map": "Fixed-size array indexed by number.",
    "percpu_array": "An array with one value per CPU: no contention between CPUs.",
    "lru_hash": "A hash table that evicts the least recently used entry when full.",
    "perf_buffer": "Per-CPU rings that carry events to user space (BPF_PERF_OUTPUT).",
    "ring_buffer": "One ring shared by all CPUs carrying events to user space (Linux 5.8+).",
}


def explain(frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The doctor's table with a ``meaning`` column: what each feature is, in plain words."""
    frame = doctor() if frame is None else frame.copy()
    frame.insert(1, "meaning", frame["feature"].map(MEANINGS))
    return frame


def supports(feature: str) -> bool:
    """Whether the kernel supports ``feature`` (a :data:`FEATURES` name), from the cached doctor.

    Example::

        attach = "kprobe" if ebpf_lab.supports("kprobe") else "tracepoint"
    """
    check_choice(feature, "feature", FEATURES)
    frame = doctor()
    return bool(frame.loc[frame["feature"] == feature, "supported"].iloc[0])


__all__ = ["CALLS", "FEATURES", "MEANINGS", "doctor", "explain", "supports"]
