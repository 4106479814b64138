#!/usr/bin/env python3
"""The kernel matrix: run the lab's tests (or any command) inside VMs booted with real
distribution kernels, so that what the lab says is checked on the kernels learners run.

    sudo make test-kernels                     host suite + portable subset on 6.1 and 6.12
    sudo make test-kernels KERNELS=6.1         one kernel (``host`` names the machine's own)
    sudo make vm-run KERNEL=6.12 CMD='...'     any shell command as root in the repo, in that VM

How a VM is made (existing tools only):

- kernels come from Debian's archive: the image package a metapackage depends on
  (``linux-image-amd64`` = Debian 12's 6.1, ``linux-image-6.12-amd64``) and the matching
  ``linux-headers-<version>`` + ``-common`` packages, fetched with ``apt-get download`` and
  unpacked with ``dpkg -x`` into a cache outside the repository (``$EBPF_LAB_KERNEL_CACHE``,
  default ``/var/lib/ebpf-lab/kernels``); ``depmod -b`` indexes the modules, and the
  ``build``/``source`` links beside the modules point at the unpacked headers, so BCC inside the
  VM compiles against headers that match the kernel. The first run downloads, later runs reuse.
- virtme-ng (PyPI, ``vng``) boots the kernel with this machine's filesystem shared read-only
  (9p). The checkout is shared writable (``--rwdir``), ``~/.cache`` (the lab's helper cache) is a
  throw-away overlay, so nothing the VM does changes the host beyond the checkout and the cache.
- acceleration: KVM where a guest really boots with it (probed once per host kernel, kept in the
  cache), else TCG emulation (``--disable-kvm``), which is much slower: a boot ~10 s, a BCC
  compile 10-25 s. The table says which was used.
- the command's output and exit status come back through a shared state directory (the serial
  console carries kernel messages; virtio script ports are not found by every virtme-ng build).
  A VM that does not finish in time is killed and reported with its console's last lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
CACHE = Path(os.environ.get("EBPF_LAB_KERNEL_CACHE", "/var/lib/ebpf-lab/kernels"))

#: kernel name -> Debian metapackage whose first dependency is the versioned image
KERNELS = {
    "6.1": "linux-image-amd64",  # Debian 12's own kernel
    "6.12": "linux-image-6.12-amd64",  # Debian 12's backported 6.12
}
#: the default matrix: the machine's own kernel first, then the VMs
DEFAULT = ["host", "6.1", "6.12"]
#: the portable part of the suite (tests/conftest.py marks it)
MARKER = "matrix"
#: host packages the matrix needs (Debian names)
APT_PACKAGES = ["qemu-system-x86", "busybox-static", "kmod"]
VIRTME_NG = "virtme-ng>=1.40,<2"

#: the reliability cycles in a VM: 8 kernel-facing lessons x 4 endings (normal, exception,
#: Ctrl-C, Stop), each run checked for leaks (tests/test_reliability.py)
LEAK_CHECK = {
    "EBPF_LAB_CYCLES": "32",
    "EBPF_LAB_CYCLE_CASES": "hello,exec_counts,exec_events_perf,exec_events_ring,"
    "map_counts_hash,size_histogram_write,exec_watch,xdp_firewall",
}

VM_CPUS = 2
VM_MEMORY = "4G"
BOOT_TIMEOUT_S = 60  # a KVM probe that has not finished a trivial command by then hangs


class MatrixError(RuntimeError):
    """Something the matrix needs is missing or broke; the message says what to do."""


def say(msg: str) -> None:
    print(f"[kernels] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, text=True, capture_output=True, **kw)


# ------------------------------------------------------------------------------ host setup


def _have_pkg(name: str) -> bool:
    out = run(["dpkg-query", "-W", "-f=${Status}", name]).stdout
    return "install ok installed" in out


def setup_host() -> None:
    """Install qemu, busybox, kmod (apt) and virtme-ng (into .venv) when missing."""
    if os.geteuid() != 0:
        raise MatrixError("run as root: sudo make test-kernels (VMs, apt and eBPF need root)")
    if not (VENV / "bin" / "python").exists():
        raise MatrixError("no .venv yet: run sudo make setup first")
    missing = [p for p in APT_PACKAGES if not _have_pkg(p)]
    if missing:
        say(f"installing {' '.join(missing)} (apt)")
        if run(["apt-get", "update", "-q"]).returncode != 0:
            raise MatrixError("apt-get update failed: check the package mirror")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        res = run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)
        if res.returncode != 0:
            raise MatrixError(f"apt-get install {' '.join(missing)} failed:\n{res.stderr[-2000:]}")
    else:
        say(f"ok: apt packages present: {' '.join(APT_PACKAGES)}")
    if not (VENV / "bin" / "vng").exists():
        say(f"installing {VIRTME_NG} into .venv (pip)")
        res = run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", VIRTME_NG])
        if res.returncode != 0:
            raise MatrixError(f"pip install {VIRTME_NG} failed:\n{res.stderr[-2000:]}")
    else:
        say("ok: virtme-ng in .venv")


# ------------------------------------------------------------------------------ kernels


@dataclasses.dataclass
class Kernel:
    """One unpacked Debian kernel in the cache."""

    name: str  # "6.1"
    release: str  # "6.1.0-56-amd64", what `uname -r` prints in the VM
    root: Path  # the dpkg -x root: boot/, lib/modules/, usr/src/

    @property
    def image(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def config(self) -> Path:
        return self.root / "boot" / f"config-{self.release}"


def parse_depends(text: str, prefix: str) -> str | None:
    """The first ``Depends:`` of ``apt-cache depends`` output that starts with ``prefix``."""
    for line in text.splitlines():
        m = re.match(r"\s*\|?Depends:\s*(\S+)", line)
        if m and m.group(1).startswith(prefix):
            return m.group(1)
    return None


def resolve(name: str) -> tuple[str, str]:
    """(image package, kernel release) for a matrix name, from the archive's metapackage."""
    if name not in KERNELS:
        known = ", ".join(["host", *KERNELS])
        raise MatrixError(f"unknown kernel {name!r}: the known ones are {known}")
    meta = KERNELS[name]
    res = run(["apt-cache", "depends", meta])
    image = parse_depends(res.stdout, "linux-image-") if res.returncode == 0 else None
    if image is None:
        run(["apt-get", "update", "-q"])
        res = run(["apt-cache", "depends", meta])
        image = parse_depends(res.stdout, "linux-image-") if res.returncode == 0 else None
    if image is None:
        raise MatrixError(
            f"kernel {name}: the package archive has no {meta} (apt-cache depends {meta} found no "
            "linux-image-* dependency); add Debian 12's main + security archives to apt's sources"
        )
    return image, image.removeprefix("linux-image-")


def _download(packages: list[str], into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    res = run(["apt-get", "download", *packages], cwd=into)
    if res.returncode != 0:
        raise MatrixError(
            f"could not download {' '.join(packages)} from the package archive:\n"
            f"{res.stderr.strip()[-1500:]}"
        )


def fetch_kernel(name: str) -> Kernel:
    """The kernel ``name`` unpacked in the cache (downloading and unpacking it the first time)."""
    image_pkg, release = resolve(name)
    kdir = CACHE / release
    root = kdir / "root"
    kernel = Kernel(name, release, root)
    stamp = kdir / ".ready"
    if stamp.exists() and kernel.image.exists():
        say(f"ok: kernel {name} = {release} in {kdir}")
        return kernel
    say(f"kernel {name}: downloading {image_pkg} and its headers into {kdir}")
    headers = f"linux-headers-{release}"
    deps = run(["apt-cache", "depends", headers])
    common = parse_depends(deps.stdout, "linux-headers-")
    if deps.returncode != 0 or common is None:
        raise MatrixError(f"kernel {name}: the archive has no {headers} (apt-cache depends failed)")
    debs = kdir / "debs"
    shutil.rmtree(kdir, ignore_errors=True)
    _download([image_pkg, headers, common], debs)
    for deb in sorted(debs.glob("*.deb")):
        res = run(["dpkg", "-x", str(deb), str(root)])
        if res.returncode != 0:
            raise MatrixError(f"dpkg -x {deb.name} failed: {res.stderr.strip()}")
    shutil.rmtree(debs)
    mods = root / "lib" / "modules" / release
    src = root / "usr" / "src"
    # BCC reads /lib/modules/$(uname -r)/{build,source}; the packages point them at /usr/src,
    # which in the VM is the host's: point them at the unpacked headers instead.
    for link, target in (("build", src / headers), ("source", src / common)):
        (mods / link).unlink(missing_ok=True)
        (mods / link).symlink_to(target)
    res = run(["depmod", "-b", str(root), release])
    if res.returncode != 0:
        raise MatrixError(f"depmod -b {root} {release} failed: {res.stderr.strip()}")
    if not kernel.image.exists():
        raise MatrixError(f"{image_pkg} has no {kernel.image.name}")
    stamp.write_text(f"{image_pkg}\n")
    return kernel


def kernel_config(path: Path) -> dict[str, str]:
    """CONFIG_* values of a kernel config file (plain or .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[str, str] = {}
    with opener(path, "rt") as f:
        for line in f:
            m = re.match(r"(CONFIG_\w+)=(.*)", line.strip())
            if m:
                out[m.group(1)] = m.group(2).strip('"')
    return out


def boot_args(config: dict[str, str]) -> list[str]:
    """Extra kernel arguments: ``lsm=`` with ``bpf`` added when the kernel has BPF LSM built in
    but does not enable it by default (CONFIG_LSM without ``bpf``)."""
    if config.get("CONFIG_BPF_LSM") != "y":
        return []
    lsms = [x for x in config.get("CONFIG_LSM", "").split(",") if x]
    if "bpf" in lsms:
        return []
    return ["lsm=" + ",".join([*lsms, "bpf"])]


# ------------------------------------------------------------------------------ VMs


_GUEST = """#!/bin/sh
# written by scripts/kernels.py: runs in the VM as root
cd {repo} || exit 97
export HOME=/root PYTHONUNBUFFERED=1 PATH={venv}/bin:/usr/sbin:/usr/bin:/sbin:/bin {env}
( {cmd}
) >{state}/out 2>&1 </dev/null
echo $? >{state}/rc
"""


def _vng_cmd(
    kernel: Kernel, accel: str, state: Path, append: list[str], cpus: int, memory: str
) -> list[str]:
    cmd = [str(VENV / "bin" / "vng"), "--verbose", "--force-9p"]
    if accel == "tcg":
        cmd.append("--disable-kvm")
    cmd += ["--run", str(kernel.image), "--cpus", str(cpus), "--memory", memory]
    cmd += ["--rwdir", str(REPO), "--rwdir", str(state)]
    # what the lab and Jupyter write in the home directory goes to throw-away overlays
    for sub in (".cache", ".ipython", ".jupyter", ".local"):
        (Path.home() / sub).mkdir(parents=True, exist_ok=True)
        cmd += ["--overlay-rwdir", str(Path.home() / sub)]
    cmd += ["--cwd", str(REPO)]
    # the VM's /boot is the kernel's own (its config-<release> is what tools and tests read)
    cmd += ["--rodir", f"/boot={kernel.root / 'boot'}"]
    for arg in append:
        cmd += ["--append", arg]
    cmd += ["--exec", f"sh {state}/guest.sh"]
    return cmd


@dataclasses.dataclass
class VmResult:
    rc: int  # the command's status; 124 = timed out, 125 = the VM ended without a status
    seconds: float
    accel: str
    console_tail: str


def vm_run(
    kernel: Kernel,
    command: str,
    *,
    timeout: float,
    accel: str | None = None,
    env: dict[str, str] | None = None,
    echo: bool = True,
    cpus: int = VM_CPUS,
    memory: str = VM_MEMORY,
) -> VmResult:
    """Run ``command`` (shell) as root in the repo inside a VM booted with ``kernel``.

    Its output is printed as it comes (``echo``); the VM is killed after ``timeout`` seconds.
    """
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("vng", "virtme-ng")):
        if not shutil.which(tool, path=f"{VENV / 'bin'}:{os.environ.get('PATH', '')}"):
            raise MatrixError(f"{tool} not found: install {package} (sudo make vm-setup does)")
    accel = accel or choose_accel(kernel)
    state = Path(tempfile.mkdtemp(prefix="ebpf-lab-vm-"))
    try:
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
        guest = _GUEST.format(
            repo=shlex.quote(str(REPO)),
            venv=shlex.quote(str(VENV)),
            env=f"\nexport {exports}" if exports else "",
            cmd=command,
            state=shlex.quote(str(state)),
        )
        (state / "guest.sh").write_text(guest)
        append = boot_args(kernel_config(kernel.config))
        cmd = _vng_cmd(kernel, accel, state, append, cpus, memory)
        console = (state / "console.log").open("w")
        penv = dict(os.environ, PATH=f"{VENV / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=penv, start_new_session=True,
        )  # fmt: skip
        out_path, shown = state / "out", 0
        timed_out = False
        while True:
            try:
                proc.wait(timeout=0.5)
                done = True
            except subprocess.TimeoutExpired:
                done = False
            if echo and out_path.exists():
                with out_path.open("rb") as f:
                    f.seek(shown)
                    chunk = f.read()
                shown += len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            if done:
                break
            if time.monotonic() - start > timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
        console.close()
        seconds = time.monotonic() - start
        tail = "\n".join((state / "console.log").read_text(errors="replace").splitlines()[-40:])
        rc_file = state / "rc"
        if timed_out:
            rc = 124
        elif rc_file.exists() and rc_file.read_text().strip().isdigit():
            rc = int(rc_file.read_text().strip())
        else:
            rc = 125
        return VmResult(rc, seconds, accel, tail)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def choose_accel(kernel: Kernel) -> str:
    """``kvm`` where a guest boots with it on this host, else ``tcg`` (``$EBPF_LAB_VM_ACCEL``
    forces one). The probe (a trivial command under KVM, killed after a minute) runs once per
    host kernel; its answer is kept in the cache."""
    forced = os.environ.get("EBPF_LAB_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    key = CACHE / f".accel-{os.uname().release}"
    if key.exists():
        return key.read_text().strip()
    say("probing KVM (a guest that hangs after the boot loader is killed after a minute)")
    res = vm_run(kernel, "true", timeout=BOOT_TIMEOUT_S, accel="kvm", echo=False)
    accel = "kvm" if res.rc == 0 else "tcg"
    say(f"KVM {'works' if accel == 'kvm' else 'does not boot a guest here'}: using {accel}")
    key.write_text(accel + "\n")
    return accel


# ------------------------------------------------------------------------------ the matrix


@dataclasses.dataclass
class Row:
    kernel: str
    release: str
    where: str  # "host" or "VM (tcg)"
    passed: int
    failed: int
    skipped: int
    minutes: float
    rc: int

    @property
    def ok(self) -> bool:
        return self.rc == 0 or (self.rc == 5 and self.failed == 0)


def junit_counts(path: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) from a pytest junit XML report (errors count as failed)."""
    if not path.exists():
        return 0, 0, 0
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tests = failed = skipped = 0
    for s in suites:
        tests += int(s.get("tests", 0))
        failed += int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped += int(s.get("skipped", 0))
    return tests - failed - skipped, failed, skipped


def format_table(rows: list[Row]) -> str:
    head = ["kernel", "release", "where", "passed", "failed", "skipped", "minutes"]
    body = [
        [r.kernel, r.release, r.where, str(r.passed), str(r.failed), str(r.skipped),
         f"{r.minutes:.1f}"]
        for r in rows
    ]  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(b) for b in body)])


def _pytest_args(extra: str) -> str:
    return f"-m {MARKER} -p no:cacheprovider {extra}".strip()


def matrix(names: list[str], pytest_args: str, timeout_min: float) -> int:
    rows: list[Row] = []
    results = REPO / "test-artifacts" / "kernels"
    results.mkdir(parents=True, exist_ok=True)
    for name in names:
        xml = results / f"{name}.xml"
        xml.unlink(missing_ok=True)
        if name == "host":
            say(f"host kernel {os.uname().release}: the whole suite")
            start = time.monotonic()
            cmd = [str(VENV / "bin" / "python"), "-m", "pytest", f"--junitxml={xml}"]
            rc = subprocess.call(cmd + shlex.split(pytest_args), cwd=REPO)
            minutes = (time.monotonic() - start) / 60
            rows.append(Row("host", os.uname().release, "host", *junit_counts(xml), minutes, rc))
            continue
        kernel = fetch_kernel(name)
        say(f"kernel {name} ({kernel.release}) in a VM: pytest -m {MARKER}")
        args = _pytest_args(f"--junitxml={xml} {pytest_args}")
        res = vm_run(
            kernel,
            f"python -m pytest {args}",
            timeout=timeout_min * 60,
            env={"CI": os.environ.get("CI", ""), "EBPF_LAB_VM": name, **LEAK_CHECK},
        )
        counts = junit_counts(xml)
        rows.append(
            Row(name, kernel.release, f"VM ({res.accel})", *counts, res.seconds / 60, res.rc)
        )
        if res.rc in (124, 125):
            why = "timed out and was killed" if res.rc == 124 else "ended without a status"
            say(f"the VM for {name} {why}; its console's last lines:\n{res.console_tail}")
    print()
    print(format_table(rows))
    total = [sum(getattr(r, f) for r in rows) for f in ("passed", "failed", "skipped")]
    print(f"\nmatrix: {total[0]} passed, {total[1]} failed, {total[2]} skipped")
    (results / "table.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    return 0 if all(r.ok for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("setup", help="install qemu, busybox, kmod, virtme-ng")
    f = sub.add_parser("fetch", help="download and unpack kernels into the cache")
    f.add_argument("kernels", nargs="*", default=list(KERNELS))
    m = sub.add_parser("matrix", help="run the tests on each kernel and print a table")
    m.add_argument("kernels", nargs="*", default=DEFAULT)
    m.add_argument("--pytest-args", default="")
    m.add_argument("--timeout-min", type=float, default=75)
    r = sub.add_parser("run", help="run a shell command as root in the repo inside a VM")
    r.add_argument("kernel")
    r.add_argument("command")
    r.add_argument("--timeout-min", type=float, default=60)
    a = p.parse_args(argv)
    try:
        if a.what == "setup":
            setup_host()
        elif a.what == "fetch":
            for name in a.kernels:
                fetch_kernel(name)
        elif a.what == "matrix":
            names = [n for k in a.kernels for n in k.replace(",", " ").split()] or DEFAULT
            for n in names:
                if n != "host":
                    resolve(n)  # an unknown name fails before anything runs
            return matrix(names, a.pytest_args, a.timeout_min)
        elif a.what == "run":
            if a.kernel == "host":
                raise MatrixError("vm-run needs a VM kernel: " + ", ".join(KERNELS))
            kernel = fetch_kernel(a.kernel)
            res = vm_run(kernel, a.command, timeout=a.timeout_min * 60)
            say(f"{kernel.release} ({res.accel}): exit {res.rc} after {res.seconds:.0f} s")
            if res.rc in (124, 125):
                print(res.console_tail, file=sys.stderr)
            return res.rc
    except MatrixError as exc:
        print(f"[kernels] ERROR: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
