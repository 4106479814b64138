"""scripts/lab.sh, started the way the README says (`PORT=... bash scripts/lab.sh`).

The server runs as root, so these tests check what keeps it from being a root shell for others:
loopback only, a token that is required and never on the command line, runtime files that only
root can read, a refusal to bind wider without an explicit opt-in; and that Ctrl-C stops it at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from labserver import LAB_SH, REPO, STOP_TIMEOUT, VENV, Lab, free_port, lab_env, runtime_dir

PROMPT = "Shut down this Jupyter server"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="scripts/lab.sh runs JupyterLab as root (the lab loads eBPF): run as root",
)


def listening_addresses(pid: int) -> set[str]:
    """host:port of every TCP socket in LISTEN state that process `pid` holds (via /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hexaddr, hexport = local.split(":")
            raw = bytes.fromhex(hexaddr)
            # /proc/net/tcp* prints the address as 32-bit words in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            family = socket.AF_INET if width == 8 else socket.AF_INET6
            found.add(f"{socket.inet_ntop(family, raw)}:{int(hexport, 16)}")
    return found


def files_holding(secret: str, since: float) -> list[Path]:
    """Files changed since ``since`` that contain ``secret``: in the repository (notebooks,
    checkpoints, .venv), the temporary directories, /run, and root's Jupyter/IPython dirs."""
    roots = [REPO, Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path("/run"), runtime_dir()]
    home = Path(os.path.expanduser("~"))
    roots += [home / ".jupyter", home / ".local" / "share" / "jupyter", home / ".ipython"]
    needle = secret.encode()
    found = []
    for root in roots:
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                    if not stat.S_ISREG(st.st_mode) or st.st_mtime < since or st.st_size > 2**22:
                        continue
                    if needle in path.read_bytes():
                        found.append(path)
                except OSError:
                    continue
    return found


@pytest.fixture(scope="module")
def venv_ready() -> None:
    if not (VENV / "bin" / "jupyter-lab").exists():
        pytest.fail("no JupyterLab in .venv: run `sudo make setup` first")


def test_lab_loopback_token_and_clean_ctrl_c(venv_ready) -> None:
    port = free_port()
    started = time.time() - 1
    lab = Lab(port)
    try:
        lab.wait_ready()
        token = lab.token()
        pid = lab.proc.pid  # lab.sh exec's jupyter-lab: the same process
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert "jupyter-lab" in cmdline, cmdline

        # the token is secret: not on the (world-readable) command line
        assert token not in cmdline
        assert len(token) >= 32

        # listening on loopback only: no 0.0.0.0, no ::
        addrs = listening_addresses(pid)
        assert f"127.0.0.1:{port}" in addrs, addrs
        assert all(a.startswith("127.0.0.1:") for a in addrs), addrs
        if shutil.which("ss"):
            ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
            mine = [line for line in ss.splitlines() if f"pid={pid}," in line]
            assert mine, ss
            for line in mine:
                local = line.split()[3]
                assert local.startswith("127.0.0.1:"), line

        # the API needs the token: kernels, files, and terminals (a root shell) alike
        for api in ("/api/kernels", "/api/contents", "/api/terminals", "/api/sessions"):
            assert lab.get(api) == 403, api
            assert lab.get(api, token="0" * len(token)) == 403, api
        assert lab.get("/api/kernels", token=token) == 200

        # the token is in no file that anyone but root can read, wherever jupyter writes
        anywhere = files_holding(token, since=started)
        assert f"jpserver-{pid}.json" in {f.name for f in anywhere}  # the search does find it
        for f in anywhere:
            mode = stat.S_IMODE(f.stat().st_mode)
            assert mode & 0o077 == 0, f"{f} holds the token and is mode {oct(mode)}"

        # jupyter's runtime files that hold the token are root's alone
        rdir = runtime_dir()
        holders = [f for f in rdir.iterdir() if f.is_file() and token.encode() in f.read_bytes()]
        names = {f.name for f in holders}
        assert f"jpserver-{pid}.json" in names, (rdir, sorted(p.name for p in rdir.iterdir()))
        for f in holders:
            mode = stat.S_IMODE(f.stat().st_mode)
            assert mode & 0o077 == 0, f"{f} is mode {oct(mode)}: readable by others"
        info = json.loads((rdir / f"jpserver-{pid}.json").read_text())
        assert info["port"] == port
        assert Path(info["root_dir"]) == REPO / "notebooks"

        # Ctrl-C (SIGINT to the foreground process group) stops it, no y/n prompt
        t0 = time.monotonic()
        os.killpg(pid, signal.SIGINT)
        try:
            rc = lab.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_TIMEOUT}s after SIGINT:\n{lab.output}")
        elapsed = time.monotonic() - t0
        lab._reader.join(5)
        assert PROMPT not in lab.output
        assert rc == 0, f"exit code {rc} after SIGINT:\n{lab.output}"
        assert elapsed < STOP_TIMEOUT
        # a clean shutdown removes the files with the token
        assert not (rdir / f"jpserver-{pid}.json").exists()
        assert not (rdir / f"jpserver-{pid}-open.html").exists()
    finally:
        lab.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_lab_refuses_non_loopback_without_opt_in(venv_ready, host: str) -> None:
    out = subprocess.run(
        ["bash", str(LAB_SH)],
        cwd=REPO,
        env=lab_env(PORT=str(free_port()), LAB_HOST=host),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "LAB_ALLOW_REMOTE=1" in out.stderr
    assert "root" in out.stderr
    assert "token=" not in out.stdout + out.stderr  # refused before any token was made


def test_lab_opt_in_warns_loudly(venv_ready) -> None:
    """LAB_ALLOW_REMOTE=1 prints the warning. The port is taken so nothing ever gets bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = subprocess.run(
            ["bash", str(LAB_SH)],
            cwd=REPO,
            env=lab_env(PORT=str(port), LAB_HOST="0.0.0.0", LAB_ALLOW_REMOTE="1"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert "WARNING" in out.stderr and "ROOT" in out.stderr, out.stderr
    # port_retries=0: a taken port is an error, not a silent move to another port
    assert out.returncode != 0, out.stdout + out.stderr


def test_lab_refuses_bad_port(venv_ready) -> None:
    out = subprocess.run(
        ["bash", str(LAB_SH)],
        cwd=REPO,
        env=lab_env(PORT="88a"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "PORT" in out.stderr
