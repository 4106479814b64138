"""Distribution, BCC and LLVM combinations that are known not to work, and what to do instead.

BCC compiles every program with the clang/LLVM it was built with (``libbcc.so`` links
``libclang-cpp`` and ``libLLVM``; the ``clang`` on ``$PATH`` is never used), so what matters is
BCC's version and the LLVM inside it. Two combinations are known to fail in clang, with an error
that does not say why:

- Ubuntu 22.04's ``python3-bpfcc`` 0.18 fails to compile programs ("Failed to compile BPF
  module"): iovisor/bcc#3993 (0.18 from apt fails on 22.04, 0.24/0.25 built from source work),
  iovisor/bcc#4758 (the tools of ``bpfcc-tools 0.18.0+ds-2`` on jammy), Launchpad bug 1969626.
  Fix: Ubuntu 24.04's BCC, or BCC 0.25 or newer.
- BCC older than 0.27 with clang/LLVM 15 or newer: the Learning eBPF repository's README
  (lizrice/learning-ebpf, "If you're using Clang 15 or later ... you'll need BCC version 0.27.0
  or later").

:func:`platform_problems` is the pure rule (os-release text and two version strings in, problems
with their fixes out); :func:`check` reads this machine's facts and applies it. The doctor shows
the result in its ``bcc`` row, and ``scripts/setup.sh`` runs this file right after installing
bcc (``python3 -I ebpf_lab/kernel/platforms.py``: standard library and bcc only, so it runs
before the lab's venv exists).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OS_RELEASE = Path("/etc/os-release")

#: the first BCC that compiles programs on Ubuntu 22.04 (iovisor/bcc#3993, Launchpad 1969626)
UBUNTU_2204_MIN_BCC = (0, 25)
#: BCC older than this fails with LLVM :data:`NEW_LLVM` or newer (lizrice/learning-ebpf README)
BCC_FOR_NEW_LLVM = (0, 27)
NEW_LLVM = 15

BCC_RELEASES = "https://github.com/iovisor/bcc/releases"


@dataclass(frozen=True)
class PlatformProblem:
    """A combination that does not work (``severity="error"``) or is known to break
    (``"warning"``), what happens, how to fix it, and where it was reported."""

    severity: str
    problem: str
    fix: str
    see: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.problem}. Fix: {self.fix}"
        if self.see:
            text += f" (see {', '.join(self.see)})"
        return text


@dataclass(frozen=True)
class PlatformReport:
    """This machine's distribution, BCC and BCC's LLVM, and the problems of the combination."""

    system: str
    bcc_version: str | None
    llvm_version: str | None
    llvm_source: str
    problems: list[PlatformProblem] = field(default_factory=list)

    @property
    def errors(self) -> list[PlatformProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[PlatformProblem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def summary(self) -> str:
        """``"Debian GNU/Linux 12 (bookworm), BCC 0.26.0, LLVM 14 (...)"``."""
        llvm = f"LLVM {self.llvm_version}" if self.llvm_version else "LLVM unknown"
        return f"{self.system}, BCC {self.bcc_version or 'unknown'}, {llvm} ({self.llvm_source})"


def parse_os_release(text: str) -> dict[str, str]:
    """``/etc/os-release`` as a dict (``ID``, ``VERSION_ID``, ``PRETTY_NAME``...), unquoted."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def system_name(os_release: str) -> str:
    """A distribution's name as people say it, from os-release text."""
    info = parse_os_release(os_release)
    return (
        info.get("PRETTY_NAME")
        or " ".join(x for x in (info.get("NAME"), info.get("VERSION_ID")) if x)
        or "unknown distribution"
    )


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """The leading numbers of a version: ``"0.18.0+ds-2"`` -> ``(0, 18, 0)``, ``"1:14.0.6-12"``
    (a Debian epoch) -> ``(14, 0, 6)``, ``"16"`` -> ``(16,)``; None when there are none."""
    if not text:
        return None
    text = text.strip()
    text = re.sub(r"^\d+:", "", text)  # Debian epoch
    m = re.match(r"v?(\d+(?:\.\d+)*)", text)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def platform_problems(
    os_release: str, bcc_version: str | None, llvm_version: str | None
) -> list[PlatformProblem]:
    """The known problems of a distribution + BCC + LLVM combination, each with its fix.

    Pure: give it the text of ``/etc/os-release``, BCC's version (``bcc.__version__`` or the
    package version, e.g. ``"0.18.0+ds-2"``) and the major or full version of the LLVM that BCC
    was built with (``"14"``, ``"16.0.6"``). A version that is unknown (None) decides nothing.

    Returns:
        The problems, errors first: an ``"error"`` means programs will not compile; a
        ``"warning"`` means they are known to fail in clang on some programs.

    Example::

        >>> [p.severity for p in platform_problems(
        ...     'ID=ubuntu\\nVERSION_ID="22.04"\\n', "0.18.0+ds-2", "14")]
        ['error']
    """
    info = parse_os_release(os_release)
    bcc = version_tuple(bcc_version)
    llvm = version_tuple(llvm_version)
    problems: list[PlatformProblem] = []
    if (
        info.get("ID") == "ubuntu"
        and info.get("VERSION_ID") == "22.04"
        and bcc is not None
        and bcc[:2] < UBUNTU_2204_MIN_BCC
    ):
        problems.append(
            PlatformProblem(
                "error",
                f"Ubuntu 22.04's BCC {bcc_version} (python3-bpfcc) cannot compile BPF programs: "
                "BCC stops in clang with 'Failed to compile BPF module'",
                "use Ubuntu 24.04 and its python3-bpfcc, or replace BCC here with BCC 0.25 or "
                f"newer built from source ({BCC_RELEASES}), then rerun `sudo make setup`",
                ("iovisor/bcc#3993", "iovisor/bcc#4758", "Launchpad bug 1969626"),
            )
        )
    if bcc is not None and llvm is not None and bcc[:2] < BCC_FOR_NEW_LLVM and llvm[0] >= NEW_LLVM:
        problems.append(
            PlatformProblem(
                "warning",
                f"BCC {bcc_version} is built with LLVM {llvm_version}: BCC older than 0.27 is "
                "known to fail in clang with clang/LLVM 15 or newer",
                "install BCC 0.27 or newer (a distribution's python3-bpfcc built with the same "
                f"LLVM, or {BCC_RELEASES}), or a BCC built with LLVM 14 or older",
                ("lizrice/learning-ebpf README: Clang 15 or later needs BCC 0.27.0 or later",),
            )
        )
    return problems


# ---------------------------------------------------------------------------------------------
# This machine's facts

_LLVM_LIB = re.compile(r"lib(?:LLVM|clang-cpp)(?:-|\.so\.)(\d+(?:\.\d+)*)")


def _llvm_from_names(text: str) -> tuple[str, str] | None:
    """The LLVM major version in library names (``libLLVM-14.so.1``, ``libLLVM.so.19.1``,
    ``libclang-cpp.so.14``; libLLVM's wins) and the names it came from."""
    found: dict[str, str] = {}  # library name -> major version
    for line in text.splitlines():
        for m in _LLVM_LIB.finditer(line):
            name = Path(line[m.start() :].split()[0]).name
            found.setdefault(name, m.group(1).split(".")[0])
    if not found:
        return None
    llvm = [v for name, v in found.items() if name.startswith("libLLVM")]
    major = llvm[0] if llvm else next(iter(found.values()))
    return major, " and ".join(found)


def _libbcc_path() -> str | None:
    """The ``libbcc.so`` this process has loaded (``import bcc`` loads it), from /proc/self/maps."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1]
        if re.search(r"/libbcc\.so(\.|$)", path):
            return path
    return None


def bcc_llvm_version() -> tuple[str | None, str]:
    """The major version of the LLVM that this process's BCC compiles with, and how it was found.

    Import bcc first. The answer comes from the libraries ``libbcc.so`` links (``ldd``), or,
    failing that, from the LLVM libraries mapped into this process. A BCC with LLVM linked in
    statically shows neither: then the version is None.
    """
    libbcc = _libbcc_path()
    if libbcc is not None:
        try:
            out = subprocess.run(
                ["ldd", libbcc], capture_output=True, text=True, timeout=20, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        found = _llvm_from_names(out)
        if found:
            return found[0], f"{Path(libbcc).name} links {found[1]}"
    try:
        found = _llvm_from_names(Path("/proc/self/maps").read_text())
    except OSError:
        found = None
    if found:
        return found[0], f"{found[1]} loaded in this process"
    if libbcc is None:
        return None, "libbcc.so is not loaded (import bcc first)"
    return None, f"{Path(libbcc).name} links no shared LLVM (a static build?)"


def bcc_version(bcc: Any = None) -> str | None:
    """BCC's version: ``bcc.__version__``, or the ``python3-bpfcc`` package's version."""
    if bcc is not None and getattr(bcc, "__version__", None):
        return str(bcc.__version__)
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "python3-bpfcc"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def read_os_release() -> str:
    """The text of ``/etc/os-release`` (or ``/usr/lib/os-release``), "" when there is none."""
    for path in (OS_RELEASE, Path("/usr/lib/os-release")):
        try:
            return path.read_text(errors="replace")
        except OSError:
            continue
    return ""


def check(bcc: Any = None) -> PlatformReport:
    """This machine's distribution, BCC version and BCC's LLVM, and their known problems.

    Args:
        bcc: the imported ``bcc`` module; when None it is imported here (and if that fails, the
            package version and LLVM are reported as far as they can be found).
    """
    if bcc is None:
        try:
            import bcc as bcc_module
        except Exception:  # any import failure: report what can be found without it
            bcc_module = None
        bcc = bcc_module
    os_release = read_os_release()
    version = bcc_version(bcc)
    llvm, source = bcc_llvm_version()
    return PlatformReport(
        system=system_name(os_release),
        bcc_version=version,
        llvm_version=llvm,
        llvm_source=source,
        problems=platform_problems(os_release, version, llvm),
    )


def main(argv: list[str] | None = None) -> int:
    """For ``scripts/setup.sh``: print the platform and its problems; 1 when programs cannot
    compile here, else 0. ``--prefix TEXT`` starts every line with TEXT."""
    args = list(sys.argv[1:] if argv is None else argv)
    prefix = ""
    if args[:1] == ["--prefix"] and len(args) >= 2:
        prefix = args[1]
    report = check()
    print(f"{prefix}ok: {report.summary}" if not report.errors else f"{prefix}{report.summary}")
    for problem in report.warnings:
        print(f"{prefix}WARNING: {problem}", file=sys.stderr)
    for problem in report.errors:
        print(f"{prefix}ERROR: {problem}", file=sys.stderr)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
