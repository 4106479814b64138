"""bpftool, the kernel's own BPF inspector, read through its JSON output (``bpftool -j``).

Each ``*_records`` function turns what one bpftool subcommand printed into plain rows (one dict a
row, always the same keys), read defensively: bpftool's JSON field names differ between versions,
so a field that is missing becomes ``None`` (or 0 for counters that bpftool leaves out when they
are zero) instead of an error. Lessons turn these rows into frames with their schemas.

:func:`run` never raises because a subcommand failed (bpftool missing, a kernel that refuses under
lockdown, a bpftool built without a disassembler): its :class:`Answer` says ``ok=False`` and why,
so a frame can say so.

:func:`bpf_stats` turns on the kernel's per-program run-time statistics (``run_cnt``,
``run_time_ns``) for a block and puts the ``kernel.bpf_stats_enabled`` sysctl back as it was on
every way out.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ebpf_lab.core.attach import _prog_id
from ebpf_lab.core.errors import UnsupportedFeature

#: the sysctl that makes the kernel count each program's runs and the time they took
STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
#: where bpftool is looked for when it is not on PATH (Debian installs it in /usr/sbin)
BPFTOOL_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
#: the bpf() system call's number, per machine (for BPF_ENABLE_STATS)
_BPF_SYSCALL = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "armv7l": 386, "ppc64le": 361}
_BPF_ENABLE_STATS = 32
_BPF_STATS_RUN_TIME = 0


@dataclass(frozen=True)
class Answer:
    """What one bpftool command gave.

    Attributes:
        command: the command line, as run (``("bpftool", "-j", "prog", "show", "id", "7")``).
        ok: True when bpftool exited 0 and printed JSON without an ``"error"``.
        data: the parsed JSON (``None`` when not ok).
        error: why it failed, in bpftool's words when it gave any (``""`` when ok).
    """

    command: tuple[str, ...]
    ok: bool
    data: Any
    error: str

    @property
    def command_line(self) -> str:
        """The command as one line of text, for a frame or a message."""
        return " ".join(self.command)


def bpftool_path() -> str | None:
    """Where bpftool is (PATH first, then the sbin folders), or None when it is not installed."""
    found = shutil.which("bpftool")
    if found:
        return found
    for folder in BPFTOOL_DIRS:
        candidate = Path(folder) / "bpftool"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def run(*args: str | int, timeout: float = 60.0) -> Answer:
    """Run ``bpftool -j <args>`` and parse its JSON.

    Example: ``run("prog", "show", "id", 7)``. Arguments are passed as a list (no shell).

    Returns:
        An :class:`Answer`; ``ok=False`` with the reason when bpftool is missing, exits with an
        error, prints ``{"error": ...}``, prints no JSON or takes longer than ``timeout`` seconds.
    """
    words = [str(a) for a in args]
    path = bpftool_path()
    command = ("bpftool", "-j", *words)
    if path is None:
        return Answer(
            command, False, None, "bpftool is not installed (Debian: apt install bpftool)"
        )
    try:
        done = subprocess.run(
            [path, "-j", *words], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return Answer(command, False, None, f"bpftool took longer than {timeout:g} s")
    except OSError as exc:
        return Answer(command, False, None, f"bpftool could not be run: {exc}")
    data: Any = None
    with contextlib.suppress(ValueError):
        data = json.loads(done.stdout) if done.stdout.strip() else None
    if isinstance(data, dict) and "error" in data:
        return Answer(command, False, None, str(data["error"]))
    if done.returncode != 0 or data is None:
        reason = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        return Answer(command, False, None, reason.splitlines()[-1])
    return Answer(command, True, data, "")


def version() -> str | None:
    """bpftool's version (``"7.1.0"``), or None when it is not installed or does not say."""
    answer = run("version")
    if not answer.ok or not isinstance(answer.data, dict):
        return None
    return str(answer.data.get("version") or "") or None


def _as_list(data: Any) -> list[Any]:
    """bpftool prints one object for ``show id N`` and a list for ``show``: always a list."""
    if data is None:
        return []
    return list(data) if isinstance(data, list) else [data]


def _int(value: Any, default: int | None = None) -> int | None:
    """An integer field, or ``default`` when it is missing or not a number."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value, 0)
    return default


def prog_records(data: Any) -> list[dict[str, Any]]:
    """Rows from ``bpftool -j prog show [id N]``: one per program.

    Keys: ``id``, ``name``, ``type``, ``tag``, ``run_cnt``, ``run_time_ns`` (0 when bpftool
    leaves them out: it prints them only once the program has run with statistics on),
    ``ns_per_run`` (``run_time_ns / run_cnt``, None before the first counted run),
    ``bytes_xlated``, ``bytes_jited``, ``map_ids`` (a list), ``btf_id``, ``loaded_at``
    (seconds since the epoch), ``verified_insns`` (newer bpftool only).
    """
    rows = []
    for prog in _as_list(data):
        if not isinstance(prog, dict):
            continue
        run_cnt = _int(prog.get("run_cnt"), 0) or 0
        run_time = _int(prog.get("run_time_ns"), 0) or 0
        rows.append(
            {
                "id": _int(prog.get("id")),
                "name": prog.get("name") or "",
                "type": str(prog.get("type", "")),
                "tag": prog.get("tag") or "",
                "run_cnt": run_cnt,
                "run_time_ns": run_time,
                "ns_per_run": run_time / run_cnt if run_cnt else None,
                "bytes_xlated": _int(prog.get("bytes_xlated")),
                "bytes_jited": _int(prog.get("bytes_jited")),
                "map_ids": [int(m) for m in prog.get("map_ids") or []],
                "btf_id": _int(prog.get("btf_id")),
                "loaded_at": _int(prog.get("loaded_at")),
                "verified_insns": _int(prog.get("verified_insns")),
            }
        )
    return rows


def xlated_records(data: Any) -> list[dict[str, Any]]:
    """Rows from ``bpftool -j prog dump xlated id N``: one per instruction, as the verifier left it.

    Keys: ``insn`` (its offset in 8-byte slots, what ``goto pc+N`` counts: a 64-bit load, opcode
    ``(18)``, takes two), ``disasm`` (the instruction, e.g. ``(85) call ...``), ``src``
    (the C line it came from, when the program has line info; None otherwise), ``proto`` (the
    function's prototype, on its first instruction).
    """
    rows = []
    # older bpftool wraps a multi-function program as [{"name": ..., "insns": [...]}, ...]
    insns: list[Any] = []
    for item in _as_list(data):
        if isinstance(item, dict) and isinstance(item.get("insns"), list):
            insns.extend(item["insns"])
        else:
            insns.append(item)
    offset = 0
    for insn in insns:
        if not isinstance(insn, dict):
            continue
        disasm = str(insn.get("disasm", ""))
        rows.append(
            {"insn": offset, "disasm": disasm, "src": insn.get("src"), "proto": insn.get("proto")}
        )
        # a 64-bit load (opcode 0x18: a constant or a map's address) takes two 8-byte slots
        offset += 2 if disasm.startswith("(18)") else 1
    return rows


def jited_records(data: Any) -> list[dict[str, Any]]:
    """Rows from ``bpftool -j prog dump jited id N``: one per machine instruction.

    Keys: ``function`` (for a program with several functions), ``pc`` (the offset, as bpftool
    prints it), ``operation``, ``operands``. bpftool built without a disassembler (no libbfd or
    LLVM) refuses this subcommand: :func:`run` says so.
    """
    rows = []
    for item in _as_list(data):
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("insns"), list):  # {"name": "...", "insns": [...]}
            function, insns = item.get("name"), item["insns"]
        else:
            function, insns = None, [item]
        for insn in insns:
            if isinstance(insn, dict):
                rows.append(
                    {
                        "function": function,
                        "pc": str(insn.get("pc", "")),
                        "operation": str(insn.get("operation", "")),
                        "operands": str(insn.get("operands", "")),
                    }
                )
    return rows


def _from_bytes(value: Any) -> Any:
    """bpftool's raw ``["0x01", "0x00", ...]`` as a number (this machine's byte order) when it has
    at most 8 bytes, else as one hex string."""
    if not isinstance(value, list) or not all(isinstance(b, str) for b in value):
        return value
    raw = bytes(int(b, 16) for b in value)
    if 0 < len(raw) <= 8:
        return int.from_bytes(raw, sys.byteorder)
    return raw.hex()


def map_records(data: Any) -> list[dict[str, Any]]:
    """Rows from ``bpftool -j map dump id N``: one per entry.

    Keys: ``key`` and ``value``: bpftool's ``formatted`` values when the map has BTF (numbers, or
    dicts for structs), else the raw bytes read as a number (or hex text past 8 bytes). A per-CPU
    map's ``value`` is a list with one value per CPU.
    """
    rows = []
    for entry in _as_list(data):
        if not isinstance(entry, dict):
            continue
        formatted = entry.get("formatted") if isinstance(entry.get("formatted"), dict) else {}
        key = formatted.get("key", _from_bytes(entry.get("key")))
        if "value" in formatted:
            value = formatted["value"]
        elif "values" in formatted or "values" in entry:  # per-CPU: [{"cpu": 0, "value": ...}]
            per_cpu = formatted.get("values", entry.get("values")) or []
            value = [_from_bytes(v.get("value")) if isinstance(v, dict) else v for v in per_cpu]
        else:
            value = _from_bytes(entry.get("value"))
        rows.append({"key": key, "value": value})
    return rows


def btf_records(data: Any) -> list[dict[str, Any]]:
    """Rows from ``bpftool -j btf dump id N``: one per type.

    Keys: ``id``, ``kind`` (``INT``, ``STRUCT``, ``FUNC``...), ``name`` (``"(anon)"`` for
    anonymous types), ``size``, ``type_id`` (what a typedef, pointer or function refers to),
    ``vlen`` (members or parameters), ``members`` (their names, comma-separated).
    """
    types = data.get("types") if isinstance(data, dict) else data
    rows = []
    for t in _as_list(types):
        if not isinstance(t, dict):
            continue
        members = t.get("members") or t.get("params") or []
        rows.append(
            {
                "id": _int(t.get("id")),
                "kind": str(t.get("kind", "")),
                "name": str(t.get("name", "")),
                "size": _int(t.get("size")),
                "type_id": _int(t.get("type_id", t.get("ret_type_id"))),
                "vlen": _int(t.get("vlen")),
                "members": ", ".join(
                    str(m.get("name", "")) for m in members if isinstance(m, dict)
                ),
            }
        )
    return rows


def feature_records(data: Any) -> list[dict[str, Any]]:
    """Rows from ``bpftool -j feature probe kernel``: one per fact probed.

    Keys: ``section`` (``system_config``, ``program_types``, ``map_types``, ``helpers``...),
    ``feature`` and ``value`` as text (``"True"``, ``"y"``, a number, or ``None`` when not set).
    A list (e.g. the helpers a program type may call) gives one row per item, value ``"True"``.
    """
    rows: list[dict[str, Any]] = []
    if not isinstance(data, dict):
        return rows
    for section, facts in data.items():
        if isinstance(facts, dict):
            for feature, value in facts.items():
                if isinstance(value, list):
                    rows.extend(
                        {"section": section, "feature": f"{feature}: {item}", "value": "True"}
                        for item in value
                    )
                else:
                    rows.append(
                        {
                            "section": section,
                            "feature": feature,
                            "value": None if value is None else str(value),
                        }
                    )
        else:
            rows.append(
                {"section": "", "feature": section, "value": None if facts is None else str(facts)}
            )
    return rows


def net_records(data: Any) -> list[dict[str, Any]]:
    """Rows from ``bpftool -j net``: one per program attached to a network device.

    Keys: ``kind`` (``xdp``, ``tc``, ``flow_dissector``, ``netfilter``...), ``devname``,
    ``ifindex``, ``id`` (the program's), ``name``, ``attach`` (XDP mode, or tc direction). An
    empty list means no BPF program is attached to this network namespace's devices.
    """
    rows = []
    for group in _as_list(data):
        if not isinstance(group, dict):
            continue
        for kind, entries in group.items():
            for entry in _as_list(entries):
                if not isinstance(entry, dict):
                    continue
                progs = entry.get("multi_attachments") or [entry]
                for prog in progs:
                    rows.append(
                        {
                            "kind": kind,
                            "devname": entry.get("devname"),
                            "ifindex": _int(entry.get("ifindex")),
                            "id": _int(prog.get("id")),
                            "name": prog.get("name"),
                            "attach": prog.get("mode", entry.get("kind", entry.get("attach_type"))),
                        }
                    )
    return rows


def stats_sysctl() -> int | None:
    """``kernel.bpf_stats_enabled`` now (0 or 1), or None when this kernel has no such sysctl."""
    try:
        return int(STATS_SYSCTL.read_text().strip())
    except (OSError, ValueError):
        return None


def _enable_stats_fd() -> int | None:
    """Ask the kernel for run-time statistics through ``bpf(BPF_ENABLE_STATS)``: on while the
    returned fd is open, counted per holder (Linux 5.8+), so another process turning the sysctl
    off cannot stop them. None when this kernel or machine does not have it."""
    number = _BPF_SYSCALL.get(platform.machine())
    if number is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    attr = (ctypes.c_uint32 * 30)()  # union bpf_attr, zeroed; enable_stats.type is its first word
    attr[0] = _BPF_STATS_RUN_TIME
    fd = libc.syscall(number, _BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
    return fd if fd >= 0 else None


@contextlib.contextmanager
def bpf_stats() -> Iterator[int | None]:
    """Turn on the kernel's per-program statistics for the block; yields the sysctl's old value.

    Sets ``kernel.bpf_stats_enabled`` to 1 and writes the previous value back on every exit path
    (an exception, a Ctrl-C). While the block runs it also holds a ``BPF_ENABLE_STATS`` fd where
    the kernel has one, so a concurrent process that turns the sysctl off does not stop the
    counting half-way.

    Raises:
        PermissionError: not root.
        UnsupportedFeature: the kernel has no ``bpf_stats_enabled`` sysctl (before Linux 5.1).
    """
    before = stats_sysctl()
    if before is None:
        raise UnsupportedFeature(
            "bpf_stats", f"{STATS_SYSCTL} is missing: this kernel cannot count program run time"
        )
    if os.geteuid() != 0:
        raise PermissionError("turning on kernel.bpf_stats_enabled needs root")
    fd = None
    try:
        STATS_SYSCTL.write_text("1\n")
        fd = _enable_stats_fd()
        yield before
    finally:
        if fd is not None:
            os.close(fd)
        STATS_SYSCTL.write_text(f"{before}\n")


def prog_ids(bpf: Any, functions: Sequence[str]) -> dict[str, int]:
    """``{function: kernel program id}`` for the functions a BCC object has loaded.

    The id comes from ``/proc/self/fdinfo/<fd>`` of the program's file descriptor: it is the
    lab's own program, whatever else is loaded with the same name.

    Raises:
        KeyError: ``bpf`` has not loaded one of ``functions``.
    """
    found = {}
    for name in functions:
        fn = bpf.funcs[name.encode()]
        prog_id = _prog_id(fn.fd)
        if prog_id is None:
            raise KeyError(f"no program id for {name!r} (fd {fn.fd})")
        found[name] = prog_id
    return found
