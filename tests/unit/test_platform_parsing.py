"""Known-broken distribution + BCC + LLVM combinations, from recorded ``/etc/os-release`` texts.

Pure unit tests: no root, no kernel, no bcc needed. Ubuntu's packages cannot be installed on the
lab's Debian machines, so their os-release files and package versions are recorded here. The real
path on the machine running the tests (the doctor's table shows its BCC and LLVM) is checked in
``tests/test_doctor.py``; ``setup.sh``'s use of it in ``tests/test_platforms.py``.
"""

from __future__ import annotations

import pytest

from ebpf_lab.kernel import platforms
from ebpf_lab.kernel.platforms import (
    parse_os_release,
    platform_problems,
    system_name,
    version_tuple,
)

UBUNTU_2204 = """\
PRETTY_NAME="Ubuntu 22.04.2 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.2 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
UBUNTU_CODENAME=jammy
"""

UBUNTU_2404 = """\
PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
"""

DEBIAN_12 = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"""


def test_os_release_is_parsed_with_quotes_removed():
    info = parse_os_release(UBUNTU_2204 + "# a comment\n\nBROKEN LINE\nX='single'\n")
    assert info["ID"] == "ubuntu"
    assert info["VERSION_ID"] == "22.04"
    assert info["PRETTY_NAME"] == "Ubuntu 22.04.2 LTS"
    assert info["X"] == "single"
    assert system_name(DEBIAN_12) == "Debian GNU/Linux 12 (bookworm)"
    assert system_name('NAME="Foo"\nVERSION_ID=3\n') == "Foo 3"
    assert system_name("") == "unknown distribution"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.18.0+ds-2", (0, 18, 0)),
        ("0.26.0", (0, 26, 0)),
        ("0.26.0+ds-1", (0, 26, 0)),
        ("1:14.0.6-12", (14, 0, 6)),
        ("v0.29.1", (0, 29, 1)),
        ("16", (16,)),
        ("", None),
        (None, None),
        ("unknown", None),
    ],
)
def test_version_tuple(text, expected):
    assert version_tuple(text) == expected


def test_ubuntu_2204_with_its_bcc_018_is_an_error_naming_the_fix():
    (problem,) = platform_problems(UBUNTU_2204, "0.18.0+ds-2", "14")
    assert problem.severity == "error"
    text = str(problem)
    assert "Ubuntu 22.04" in text and "0.18.0+ds-2" in text
    assert "Ubuntu 24.04" in problem.fix and "BCC 0.25 or newer" in problem.fix
    assert "iovisor/bcc#3993" in text and "iovisor/bcc#4758" in text
    assert "Launchpad bug 1969626" in text


@pytest.mark.parametrize("bcc", ["0.25.0", "0.26.0", "0.29.1"])
def test_ubuntu_2204_with_a_newer_bcc_is_fine(bcc):
    assert platform_problems(UBUNTU_2204, bcc, "14") == []


def test_debian_12_with_bcc_026_and_llvm_14_is_fine():
    assert platform_problems(DEBIAN_12, "0.26.0", "14") == []
    assert platform_problems(DEBIAN_12, "0.26.0+ds-1", "14.0.6") == []


@pytest.mark.parametrize("os_release", [DEBIAN_12, UBUNTU_2404, ""])
def test_bcc_026_with_llvm_16_is_the_warning(os_release):
    (problem,) = platform_problems(os_release, "0.26.0", "16")
    assert problem.severity == "warning"
    assert "LLVM 16" in problem.problem and "0.27" in problem.problem
    assert "BCC 0.27 or newer" in problem.fix
    assert any("learning-ebpf" in ref for ref in problem.see)


@pytest.mark.parametrize(("bcc", "llvm"), [("0.27.0", "16"), ("0.30.0", "18"), ("0.26.0", "14")])
def test_bcc_027_or_llvm_14_is_fine(bcc, llvm):
    assert platform_problems(DEBIAN_12, bcc, llvm) == []


def test_both_problems_errors_first():
    problems = platform_problems(UBUNTU_2204, "0.18.0", "15")
    assert [p.severity for p in problems] == ["error", "warning"]


@pytest.mark.parametrize(("bcc", "llvm"), [(None, "16"), ("0.18.0", None), (None, None)])
def test_unknown_versions_decide_nothing_they_cannot(bcc, llvm):
    problems = platform_problems(UBUNTU_2404, bcc, llvm)
    assert problems == []


def test_llvm_major_from_library_names():
    ldd = (
        "\tlibclang-cpp.so.14 => /lib/x86_64-linux-gnu/libclang-cpp.so.14 (0x00007f)\n"
        "\tlibLLVM-14.so.1 => /lib/x86_64-linux-gnu/libLLVM-14.so.1 (0x00007f)\n"
    )
    assert platforms._llvm_from_names(ldd) == ("14", "libclang-cpp.so.14 and libLLVM-14.so.1")
    assert platforms._llvm_from_names("\tlibLLVM.so.19.1 => /usr/lib/libLLVM.so.19.1\n")[0] == "19"
    assert platforms._llvm_from_names("libc.so.6 => /lib/libc.so.6\n") is None
