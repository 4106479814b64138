"""Struct field offsets read from the running kernel's BTF, not from (possibly wrong) headers.

When the headers under ``/lib/modules/$(uname -r)/build`` come from another kernel version, C
like ``task->real_parent->tgid`` compiles but reads the wrong bytes (it returns 0 on the lab's
reference machine). The kernel describes its own types in ``/sys/kernel/btf/vmlinux``; this module
asks ``bpftool`` for that description and returns byte offsets, which the lab passes to its BPF C
as ``-D`` macros and reads with ``bpf_probe_read_kernel``. The answer is correct for the running
kernel whatever headers are installed.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

from ebpf_lab.core import replay
from ebpf_lab.core.errors import UnsupportedFeature
from ebpf_lab.core.kernelfs import BTF_VMLINUX

_TYPE_RE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$")
_MEMBER_RE = re.compile(r"^\s+'([^']*)' type_id=(\d+) bits_offset=(\d+)")


def _dump() -> str:
    """The running kernel's BTF as ``bpftool btf dump`` writes it (one ``[id] KIND 'name'`` line
    a type, its members indented below).

    Raises:
        UnsupportedFeature: no BTF, or bpftool could not read it.
    """
    if not BTF_VMLINUX.exists():
        raise UnsupportedFeature(
            "btf", f"{BTF_VMLINUX} is missing (kernel built without CONFIG_DEBUG_INFO_BTF)"
        )
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    try:
        out = subprocess.run(
            [bpftool, "btf", "dump", "file", str(BTF_VMLINUX), "format", "raw"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise UnsupportedFeature(
            "btf",
            f"could not read BTF with bpftool ({exc})",
            "`sudo apt-get install bpftool` (or rerun `sudo make lab`)",
        ) from None
    return out


@functools.lru_cache(maxsize=1)
def function_names() -> frozenset[str]:
    """The kernel functions the running kernel's BTF describes (what fentry can hook).

    Raises:
        UnsupportedFeature: no BTF, or bpftool could not read it.
    """
    return frozenset(
        m.group(3) for m in map(_TYPE_RE.match, _dump().splitlines()) if m and m.group(2) == "FUNC"
    )


@functools.lru_cache(maxsize=1)
def _composites() -> dict[int, tuple[str, str, list[tuple[str, int, int]]]]:
    """Every STRUCT/UNION in vmlinux BTF: id -> (kind, name, [(member, type_id, bit_offset)])."""
    types: dict[int, tuple[str, str, list[tuple[str, int, int]]]] = {}
    current: list[tuple[str, int, int]] | None = None
    for line in _dump().splitlines():
        if line.startswith("["):
            m = _TYPE_RE.match(line)
            current = None
            if m and m.group(2) in ("STRUCT", "UNION"):
                current = []
                types[int(m.group(1))] = (m.group(2), m.group(3), current)
        elif current is not None:
            mm = _MEMBER_RE.match(line)
            if mm:
                current.append((mm.group(1), int(mm.group(2)), int(mm.group(3))))
    return types


def _find(type_id: int, member: str, base_bits: int) -> int | None:
    types = _composites()
    for name, tid, bits in types[type_id][2]:
        if name == member:
            return base_bits + bits
        if name == "(anon)" and tid in types:  # anonymous struct/union: look inside
            found = _find(tid, member, base_bits + bits)
            if found is not None:
                return found
    return None


@functools.cache
def member_offset(struct: str, member: str) -> int:
    """Byte offset of ``struct.member`` in the running kernel, e.g. ``("task_struct", "tgid")``."""
    for tid, (kind, name, _members) in _composites().items():
        if kind == "STRUCT" and name == struct:
            bits = _find(tid, member, 0)
            if bits is not None:
                if bits % 8:
                    raise ValueError(f"{struct}.{member} is a bit field; read it another way")
                return bits // 8
    raise UnsupportedFeature("btf", f"struct {struct} has no member {member} in this kernel's BTF")


def task_offsets_cflags() -> list[str]:
    """``-D`` flags giving ``task_struct`` offsets the lessons use (real parent, tgid).

    While replaying a recording nothing is compiled, and the kernel's BTF is not read.
    """

    if replay.replaying():
        return []
    return [
        f"-DTASK_REAL_PARENT_OFF={member_offset('task_struct', 'real_parent')}",
        f"-DTASK_TGID_OFF={member_offset('task_struct', 'tgid')}",
    ]
