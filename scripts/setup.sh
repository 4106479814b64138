#!/usr/bin/env bash
# ebpf-lab setup: everything the lab needs on a Debian/Ubuntu machine, safe to rerun.
#
#   sudo bash scripts/setup.sh
#
# Steps (each says "ok" when there was nothing to do, so a second run changes nothing):
#   1. apt packages: python3-bpfcc (bcc), bpftool, python3-venv, iproute2; gcc + libc6-dev (the
#      lab's C workload helpers, ebpf_lab/workloads/c); bpftrace (the one-liners beside the
#      lessons); clang + libbpf-dev (the CO-RE chapter's libbpf loader); chromium (browser test)
#   2. kernel headers for `uname -r`, or the distribution's generic headers linked in with a warning
#   3. tracefs, debugfs and securityfs mounted
#   4. .venv (from /usr/bin/python3 with --system-site-packages so it sees bcc), pip install -e .[test]
#   5. the Jupyter kernelspec "ebpf-lab" inside .venv
# Never installs PyPI's "bcc": that is an unrelated project.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
SYS_PY=/usr/bin/python3
KREL="$(uname -r)"
CHANGED=0

say() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] WARNING: %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
changed() { CHANGED=1; say "$*"; }

[ "$(id -u)" -eq 0 ] || die "run as root: sudo make lab (or sudo make test). eBPF needs root."

# ---------------------------------------------------------------- 1. apt packages
APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        apt-get update -q >/dev/null || die "apt-get update failed; check the package mirror"
        APT_UPDATED=1
    fi
}
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
apt_install() {
    local missing=()
    for p in "$@"; do have_pkg "$p" || missing+=("$p"); done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "ok: apt packages present: $*"
        return 0
    fi
    apt_update_once
    changed "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        >/dev/null || die "apt-get install ${missing[*]} failed"
}
command -v apt-get >/dev/null || die "this setup needs apt (Debian/Ubuntu); on other systems install bcc's Python bindings, bpftool and kernel headers by hand"
# BCC: Debian/Ubuntu's python3-bpfcc, unless a BCC built from source already imports (the fix
# for a distribution whose BCC cannot compile, see ebpf_lab/kernel/platforms.py below)
BCC_PKG=(python3-bpfcc)
if ! have_pkg python3-bpfcc && [ -x "$SYS_PY" ] && "$SYS_PY" -c 'import bcc' 2>/dev/null; then
    say "ok: bcc imports in $SYS_PY without python3-bpfcc (a BCC installed from source)"
    BCC_PKG=()
fi
apt_install "${BCC_PKG[@]}" bpftool python3-venv python3-pip iproute2 procps strace
# the C workload helpers (ebpf_lab/workloads/c/*.c, e.g. lesson 08's fast read loop) are built
# with gcc on first use (ebpf_lab/workloads/native.py); lesson 07's probe_loop.c defines a USDT
# probe with <sys/sdt.h>, from systemtap-sdt-dev
apt_install gcc libc6-dev systemtap-sdt-dev
# bpftrace runs the one-liners the lessons compare with (ebpf_lab/core/external.py); clang
# (-target bpf) and libbpf-dev build the CO-RE chapter's object and its libbpf loader
apt_install bpftrace clang libbpf-dev
# tests/test_browser.py drives Debian's Chromium with Playwright (Playwright's own browser
# download is never used: executable_path=/usr/bin/chromium)
apt_install chromium
[ -x "$SYS_PY" ] || die "$SYS_PY not found after installing python3"
"$SYS_PY" -c 'import bcc' 2>/dev/null || die "bcc does not import in $SYS_PY: apt-get install --reinstall python3-bpfcc"
# combinations of distribution, BCC and BCC's LLVM that are known to fail in clang (Ubuntu 22.04's
# BCC 0.18; BCC < 0.27 with LLVM >= 15): the same rule the doctor applies, ebpf_lab/kernel/platforms.py,
# run with the system python (-I: stdlib + bcc only). It prints the fix; warnings go to stderr.
"$SYS_PY" -I "$REPO/ebpf_lab/kernel/platforms.py" --prefix "[setup] " \
    || die "BCC on this system cannot compile the lab's programs: see the ERROR above for the fix"

# ---------------------------------------------------------------- 2. kernel headers
MODDIR="/lib/modules/$KREL"
if [ -e "$MODDIR/build" ]; then
    target="$(readlink -f "$MODDIR/build")"
    case "$target" in
        */linux-headers-"$KREL"* | "$MODDIR"/*) say "ok: headers for $KREL at $target" ;;
        *) say "ok: headers at $target (linked for $KREL; struct layouts may differ, see doctor)" ;;
    esac
else
    # matching headers from the archive, when it has them
    if ! have_pkg "linux-headers-$KREL"; then
        apt_update_once
        if apt-cache show "linux-headers-$KREL" >/dev/null 2>&1; then
            changed "installing linux-headers-$KREL"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "linux-headers-$KREL" >/dev/null \
                || die "apt-get install linux-headers-$KREL failed"
        fi
    fi
    if [ ! -e "$MODDIR/build" ]; then
        arch="$(dpkg --print-architecture)"
        apt_install "linux-headers-$arch"
        hdr="$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n 1)"
        [ -n "$hdr" ] || die "no /usr/src/linux-headers-*-$arch after installing linux-headers-$arch"
        common="${hdr%-"$arch"}-common"
        [ -d "$common" ] || common="$hdr"
        mkdir -p "$MODDIR"
        ln -sfn "$hdr" "$MODDIR/build"
        [ -e "$MODDIR/source" ] || ln -sfn "$common" "$MODDIR/source"
        changed "linked $hdr as $MODDIR/build"
        warn "no headers for kernel $KREL exist; using $(basename "$hdr") instead."
        warn "helper-only programs compile, but struct field reads through these headers are WRONG."
        warn "the lab never reads struct fields through them (it uses the kernel's BTF instead)."
    fi
fi

# ---------------------------------------------------------------- 3. pseudo file systems
mount_fs() { # type, mountpoint
    if mountpoint -q "$2" 2>/dev/null; then
        say "ok: $1 mounted at $2"
    elif [ -d "$2" ]; then
        mount -t "$1" "$1" "$2" || die "mount -t $1 $1 $2 failed"
        changed "mounted $1 at $2"
    else
        warn "$2 does not exist: $1 not mounted"
    fi
}
mount_fs debugfs /sys/kernel/debug
mount_fs tracefs /sys/kernel/tracing
mount_fs securityfs /sys/kernel/security
# BCC reads /sys/kernel/debug/tracing: on kernels that do not automount tracefs under debugfs
# mount it there too.
if [ -d /sys/kernel/debug/tracing ] && [ ! -e /sys/kernel/debug/tracing/trace_pipe ]; then
    mount -t tracefs tracefs /sys/kernel/debug/tracing || die "mounting tracefs under debugfs failed"
    changed "mounted tracefs at /sys/kernel/debug/tracing"
fi

# ---------------------------------------------------------------- 4. venv
venv_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import bcc' 2>/dev/null
}
if venv_ok; then
    say "ok: venv $VENV sees bcc"
else
    rm -rf "$VENV"
    "$SYS_PY" -m venv --system-site-packages "$VENV" || die "creating $VENV failed"
    changed "created $VENV (system site packages, so bcc is visible)"
fi
# The stamp records what was installed (pyproject.toml + the interpreter): while it matches and the
# packages import, pip is not run at all, so a rerun changes nothing (not even the stamp's mtime).
STAMP="$VENV/.ebpf-lab-installed"
PIPLOG="$VENV/pip-install.log"
want="$(cat "$REPO/pyproject.toml" "$SYS_PY" 2>/dev/null | sha256sum | cut -c1-16)"
pip_quiet() { # what, pip args...: pip's chatter goes to $PIPLOG; its tail is shown on failure
    local what="$1"
    shift
    printf '\n==> %s: pip %s\n' "$(date -u +%FT%TZ)" "$*" >>"$PIPLOG"
    if ! "$VENV/bin/python" -m pip "$@" >>"$PIPLOG" 2>&1; then
        warn "$what failed; the last lines of $PIPLOG:"
        tail -n 40 "$PIPLOG" >&2
        die "$what failed (full log: $PIPLOG)"
    fi
}
# Any distribution called "bcc" that is not Debian's (python3-bpfcc, in /usr/lib/python3/dist-packages)
# is PyPI's unrelated project; prints where each one is.
foreign_bcc() {
    "$VENV/bin/python" - <<'PY'
import importlib.metadata as md

for d in md.distributions():
    where = str(d.locate_file(""))
    if (d.metadata["Name"] or "").lower() == "bcc" and where != "/usr/lib/python3/dist-packages":
        print(where)
PY
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] \
    && "$VENV/bin/python" -c 'import ebpf_lab, pandas, pyarrow, jupyterlab, jupyter_ui_poll, playwright' 2>/dev/null; then
    say "ok: python packages installed"
else
    changed "pip install -e .[test] into $VENV (a few minutes the first time; log: $PIPLOG)"
    : >"$PIPLOG"
    pip_quiet "pip upgrade" install --upgrade pip
    pip_quiet "pip install -e .[test]" install -e "$REPO[test]"
    echo "$want" >"$STAMP"
fi
bad="$(foreign_bcc)"
[ -z "$bad" ] || die "PyPI's unrelated 'bcc' is installed ($bad); remove it: $VENV/bin/python -m pip uninstall bcc (or /usr/bin/python3 -m pip uninstall bcc)"

# ---------------------------------------------------------------- 5. kernelspec
KS="$VENV/share/jupyter/kernels/ebpf-lab"
spec="$(cat <<JSON
{
 "argv": ["$VENV/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
 "display_name": "Python 3 (ebpf-lab)",
 "language": "python",
 "metadata": {"debugger": true}
}
JSON
)"
if [ -f "$KS/kernel.json" ] && [ "$(cat "$KS/kernel.json")" = "$spec" ]; then
    say "ok: Jupyter kernelspec ebpf-lab"
else
    mkdir -p "$KS"
    printf '%s\n' "$spec" >"$KS/kernel.json"
    changed "registered Jupyter kernelspec ebpf-lab ($KS)"
fi

if [ "$CHANGED" -eq 0 ]; then
    say "nothing to do: everything was already in place"
else
    say "done"
fi
