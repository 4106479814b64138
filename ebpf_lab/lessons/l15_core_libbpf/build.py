"""Lesson 15's build: ``exec_core.bpf.c`` and its loader, compiled the libbpf way on first use.

Four steps, as in libbpf-bootstrap, each a command you could type:

1. ``bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h``: the running
   kernel's types as C (no kernel headers);
2. ``clang -target bpf -g -O2 -c exec_core.bpf.c -o exec_core.bpf.o``: one BPF object, its
   field reads recorded as CO-RE relocations in its BTF (``-g``);
3. ``bpftool gen skeleton exec_core.bpf.o name exec_core_bpf > exec_core.skel.h``: C that embeds
   the object and names its programs and maps;
4. ``gcc exec_loader.c -lbpf -o exec_loader``: the loader, which libbpf links into.

The result, a directory holding ``exec_core.bpf.o`` and ``exec_loader``, goes into the lab's
build cache (:func:`ebpf_lab.workloads.native.cached_build`), keyed by the two sources, the
flags and the tools' versions, **not** by the kernel: that is CO-RE's point. The object built
on one kernel (``vmlinux.h`` from that kernel's BTF) loads unchanged on another, where libbpf
relocates its field reads; ``built_on.txt`` beside it says which kernel it was built on
(:func:`built_on`). In the lab's VMs, which see the host's cache, the object the host built
is the one that runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ebpf_lab.core.errors import HelperBuildError
from ebpf_lab.core.kernelfs import BTF_VMLINUX
from ebpf_lab.workloads import native

HERE = Path(__file__).resolve().parent
BPF_SOURCE = HERE / "exec_core.bpf.c"
LOADER_SOURCE = HERE / "exec_loader.c"
#: clang's flags for the BPF object (part of the cache key)
BPF_CFLAGS = ("-target", "bpf", "-g", "-O2", "-Wall")
#: the C compiler's flags for the loader (part of the cache key)
LOADER_CFLAGS = ("-O2", "-Wall")
LIBBPF_VERSION_H = Path("/usr/include/bpf/libbpf_version.h")
#: the name of the cached build (``<cache>/exec_core-<key>/``)
NAME = "exec_core"

INSTALL_HINT = (
    "install clang, libbpf's headers and bpftool: `sudo apt-get install clang libbpf-dev "
    "bpftool gcc` (or `sudo make setup`, which installs them)"
)


def tools() -> dict[str, str]:
    """The paths of the tools the build needs: ``clang``, ``bpftool``, ``cc``.

    Raises:
        HelperBuildError: one is missing, or libbpf's headers are (the message says what to
            install).
    """
    found = {
        "clang": shutil.which("clang"),
        "bpftool": shutil.which("bpftool") or shutil.which("/usr/sbin/bpftool"),
        "cc": native.compiler(),
    }
    missing = [name for name, path in found.items() if path is None]
    if not LIBBPF_VERSION_H.is_file():
        missing.append(f"libbpf's headers ({LIBBPF_VERSION_H.parent})")
    if not BTF_VMLINUX.is_file():
        missing.append(f"the kernel's BTF ({BTF_VMLINUX}: CONFIG_DEBUG_INFO_BTF)")
    if missing:
        raise HelperBuildError(
            f"lesson 15 builds its libbpf loader, but {', '.join(missing)} is missing: "
            f"{INSTALL_HINT}"
        )
    return {name: str(path) for name, path in found.items()}


def _version(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    return out.stdout + out.stderr


def btf_identity() -> str:
    """A short hash of the running kernel's BTF (``/sys/kernel/btf/vmlinux``)."""
    return hashlib.sha256(BTF_VMLINUX.read_bytes()).hexdigest()[:16]


#: the file beside the object that names the kernel it was built on
BUILT_ON = "built_on.txt"


def built_on(directory: Path) -> dict[str, str]:
    """Which kernel a build's ``vmlinux.h`` came from: ``{"release": ..., "btf": ...}``."""
    release, btf = (directory / BUILT_ON).read_text().split()
    return {"release": release, "btf": btf}


def build_key(found: dict[str, str]) -> str:
    """The cache key: sources, flags, tool and libbpf versions (not the kernel: CO-RE)."""
    return native.cache_key(
        BPF_SOURCE.read_bytes(),
        LOADER_SOURCE.read_bytes(),
        " ".join(BPF_CFLAGS),
        " ".join(LOADER_CFLAGS),
        _version([found["clang"], "--version"]),
        _version([found["bpftool"], "version"]),
        _version([found["cc"], "--version"]),
        LIBBPF_VERSION_H.read_bytes(),
    )


def build() -> Path:
    """The directory holding ``exec_core.bpf.o`` and ``exec_loader``, built if not cached.

    Raises:
        HelperBuildError: a tool is missing (what to install), or a step failed (its log).
        PermissionError: the cache directory is not a private directory of this user.
    """
    found = tools()

    def make(scratch: Path) -> Path:
        out = scratch / "out"
        out.mkdir()
        (out / BUILT_ON).write_text(f"{os.uname().release} {btf_identity()}\n")
        native.run_step(
            [found["bpftool"], "btf", "dump", "file", BTF_VMLINUX, "format", "c"],
            "generating vmlinux.h from the kernel's BTF",
            INSTALL_HINT,
            stdout=scratch / "vmlinux.h",
        )
        obj = out / "exec_core.bpf.o"
        native.run_step(
            [found["clang"], *BPF_CFLAGS, "-I", scratch, "-c", BPF_SOURCE, "-o", obj],
            "compiling exec_core.bpf.c with clang",
            INSTALL_HINT,
        )
        native.run_step(
            [found["bpftool"], "gen", "skeleton", obj, "name", "exec_core_bpf"],
            "generating the skeleton with bpftool",
            INSTALL_HINT,
            stdout=scratch / "exec_core.skel.h",
        )
        native.run_step(
            [found["cc"], *LOADER_CFLAGS, "-I", scratch, "-o", out / "exec_loader"]
            + [LOADER_SOURCE, "-lbpf"],
            "compiling exec_loader.c against libbpf",
            INSTALL_HINT,
        )
        return out

    return native.cached_build(NAME, build_key(found), make)
