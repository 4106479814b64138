"""The kernel matrix's own logic (scripts/kernels.py): pure code, no root, no VM.

The VMs themselves are exercised by `make test-kernels`, which runs the suite in them.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("kernels", REPO / "scripts" / "kernels.py")
kernels = importlib.util.module_from_spec(spec)
sys.modules["kernels"] = kernels  # dataclasses look their module up
spec.loader.exec_module(kernels)

APT_DEPENDS_61 = """\
linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
"""
APT_DEPENDS_HEADERS = """\
linux-headers-6.12.117+deb12-amd64
  Depends: linux-base
  Depends: linux-headers-6.12.117+deb12-common
 |Depends: linux-image-6.12.117+deb12-amd64
  Depends: linux-image-6.12.117+deb12-amd64-unsigned
  Depends: linux-kbuild-6.12.117+deb12
"""


def test_the_image_package_is_the_metapackages_dependency():
    assert kernels.parse_depends(APT_DEPENDS_61, "linux-image-") == "linux-image-6.1.0-56-amd64"
    assert (
        kernels.parse_depends(APT_DEPENDS_HEADERS, "linux-headers-")
        == "linux-headers-6.12.117+deb12-common"
    )
    assert kernels.parse_depends(APT_DEPENDS_HEADERS, "linux-image-") == (
        "linux-image-6.12.117+deb12-amd64"  # the alternative ("|Depends") counts too
    )
    assert kernels.parse_depends("linux-image-amd64\n", "linux-image-") is None


@pytest.mark.parametrize(
    "config, args",
    [
        ({"CONFIG_BPF_LSM": "y", "CONFIG_LSM": "landlock,lockdown,yama,apparmor,bpf"}, []),
        (
            {"CONFIG_BPF_LSM": "y", "CONFIG_LSM": "landlock,lockdown,yama,apparmor"},
            ["lsm=landlock,lockdown,yama,apparmor,bpf"],
        ),
        ({"CONFIG_LSM": "landlock,lockdown"}, []),  # no BPF LSM built in: nothing to enable
    ],
)
def test_bpf_lsm_is_enabled_at_boot_only_where_built_in_but_off(config, args):
    assert kernels.boot_args(config) == args


def test_kernel_config_reads_plain_and_gzip(tmp_path):
    import gzip

    text = 'CONFIG_BPF_LSM=y\n# CONFIG_KPROBES is not set\nCONFIG_LSM="a,b"\n'
    (tmp_path / "config").write_text(text)
    with gzip.open(tmp_path / "config.gz", "wt") as f:
        f.write(text)
    for name in ("config", "config.gz"):
        cfg = kernels.kernel_config(tmp_path / name)
        assert cfg == {"CONFIG_BPF_LSM": "y", "CONFIG_LSM": "a,b"}


def test_junit_counts_and_table(tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        textwrap.dedent(
            """\
            <testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="20">
            </testsuite></testsuites>"""
        )
    )
    assert kernels.junit_counts(xml) == (14, 3, 3)
    assert kernels.junit_counts(tmp_path / "missing.xml") == (0, 0, 0)
    rows = [
        kernels.Row("host", "6.18.4", "host", 770, 0, 2, 11.04, 0),
        kernels.Row("6.1", "6.1.0-56-amd64", "VM (tcg)", 160, 1, 3, 30.0, 1),
    ]
    table = kernels.format_table(rows).splitlines()
    assert table[0].split("|")[1:-1] == [
        f" {h.ljust(w)} "
        for h, w in zip(
            ["kernel", "release", "where", "passed", "failed", "skipped", "minutes"],
            [6, 14, 8, 6, 6, 7, 7],
        )
    ]
    assert "| 6.1    | 6.1.0-56-amd64 | VM (tcg) | 160    | 1      | 3       | 30.0    |" in table
    assert [r.ok for r in rows] == [True, False]


def _kernels_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "kernels.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_unknown_kernel_lists_the_known_ones_before_anything_runs():
    res = _kernels_cli("run", "5.10", "true")
    assert res.returncode == 2
    assert "unknown kernel '5.10': the known ones are host, 6.1, 6.12" in res.stderr


def test_vm_run_refuses_the_host():
    res = _kernels_cli("run", "host", "true")
    assert res.returncode == 2 and "vm-run needs a VM kernel: 6.1, 6.12" in res.stderr


def test_the_matrix_subset_is_marked(pytestconfig):
    """`pytest -m matrix` selects the files and notebooks tests/conftest.py names."""
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "matrix", "--collect-only", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    ids = [line for line in res.stdout.splitlines() if "::" in line]
    files = {i.split("::")[0] for i in ids}
    assert files >= {
        "tests/test_doctor.py",
        "tests/test_seed_lessons.py",
        "tests/test_attach_points.py",
        "tests/test_exec_watch.py",
        "tests/test_notebooks.py",
        "tests/test_leftovers.py",
        "tests/test_reliability.py",
        "tests/test_core.py",
        "tests/test_xdp_firewall.py",
        "tests/test_tc_egress.py",
        "tests/test_helper_calls.py",
        "tests/test_magic.py",
        "tests/test_seed_scripts.py",
        "tests/test_bpftool.py",
        "tests/test_bpftrace.py",
        "tests/test_core_libbpf.py",
    }
    notebooks = sorted(i.split("[")[1].rstrip("]") for i in ids if "test_notebooks" in i)
    assert notebooks == [
        "00-setup-check",
        "01-hello",
        "02-maps-exec-per-uid",
        "03-perf-buffer",
        "10-networking",
        "11-security",
        "13-bpftool",
        "15-core-libbpf",
    ]
