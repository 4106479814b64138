#!/usr/bin/env bash
# ebpf-lab: start JupyterLab (from .venv, as root, in notebooks/) for a class.
#
#   sudo make lab                   # = sudo bash scripts/setup.sh, then sudo bash scripts/lab.sh
#   sudo make lab PORT=9999         # or: sudo PORT=9999 bash scripts/lab.sh
#
# Environment:
#   PORT=8888            port to listen on (fails if taken: the printed URL must be the real one)
#   LAB_HOST=127.0.0.1   address to bind; anything but loopback also needs LAB_ALLOW_REMOTE=1
#   LAB_ALLOW_REMOTE=1   opt-in to bind a non-loopback address (read the warning it prints)
#
# The kernel runs as root (eBPF needs it), so the server is a root shell for whoever holds the
# token. Hence: loopback only by default (use `ssh -L 8888:127.0.0.1:8888 vm` from a laptop),
# a fresh random token every start, passed in the environment (JUPYTER_TOKEN) rather than on the
# command line (/proc/PID/cmdline is world-readable), and umask 077 so the runtime files jupyter
# writes with the token in them (jpserver-PID.json, jpserver-PID-open.html) are readable by root only.
# Ctrl-C stops the server at once (ServerApp.answer_yes: no "Shut down this Jupyter server?" prompt).
set -euo pipefail
umask 077

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
NOTEBOOKS="$REPO/notebooks"
PORT="${PORT:-8888}"
LAB_HOST="${LAB_HOST:-127.0.0.1}"
LAB_ALLOW_REMOTE="${LAB_ALLOW_REMOTE:-0}"

say() { printf '[lab] %s\n' "$*"; }
die() { printf '[lab] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root: sudo make lab. The notebooks load eBPF programs, which needs root."
[ -x "$VENV/bin/jupyter-lab" ] || die "JupyterLab is not installed in $VENV: run sudo make setup (or sudo make lab)"
case "$PORT" in
    '' | *[!0-9]*) die "PORT must be a number, got '$PORT'" ;;
esac
[ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || die "PORT must be in 1..65535, got $PORT"

is_loopback() {
    case "$1" in
        127.* | localhost | ::1 | '[::1]') return 0 ;;
        *) return 1 ;;
    esac
}
url_host() { # an IPv6 address goes in brackets in a URL
    case "$1" in
        \[*) printf '%s' "$1" ;;
        *:*) printf '[%s]' "$1" ;;
        *) printf '%s' "$1" ;;
    esac
}

if is_loopback "$LAB_HOST"; then
    SHOW_HOST="$LAB_HOST"
elif [ "$LAB_ALLOW_REMOTE" != 1 ]; then
    die "refusing to bind LAB_HOST=$LAB_HOST without LAB_ALLOW_REMOTE=1.
[lab] This JupyterLab runs as root: anyone who can reach $LAB_HOST:$PORT and has the token gets a
[lab] root shell on this machine. Prefer an SSH tunnel from your laptop:
[lab]     ssh -L $PORT:127.0.0.1:$PORT <this-vm>      then open the URL printed here.
[lab] To bind it anyway: sudo make lab LAB_HOST=$LAB_HOST LAB_ALLOW_REMOTE=1"
else
    SHOW_HOST="$LAB_HOST"
    case "$LAB_HOST" in
        0.0.0.0 | :: | '[::]' | '*' | '')
            SHOW_HOST="$(hostname -I 2>/dev/null | awk '{print $1}')"
            SHOW_HOST="${SHOW_HOST:-$(hostname)}"
            ;;
    esac
    cat >&2 <<EOF
[lab] ************************************************************************************
[lab] WARNING: binding $LAB_HOST (LAB_ALLOW_REMOTE=1). This JupyterLab runs as ROOT.
[lab] Anyone who can reach port $PORT and has the token below has a root shell on this
[lab] machine. Share the token only with people you would give root, over a private
[lab] network, and stop the server (Ctrl-C) when the class is over.
[lab] ************************************************************************************
EOF
fi

mkdir -p "$NOTEBOOKS"
JUPYTER_TOKEN="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(24))')"
export JUPYTER_TOKEN

say "JupyterLab (running as root) in $NOTEBOOKS"
say "open:  http://$(url_host "$SHOW_HOST"):$PORT/lab?token=$JUPYTER_TOKEN"
say "stop:  Ctrl-C (once: there is no confirmation prompt)"

cd "$NOTEBOOKS"
exec "$VENV/bin/jupyter-lab" \
    --ServerApp.ip="$LAB_HOST" \
    --ServerApp.port="$PORT" \
    --ServerApp.port_retries=0 \
    --ServerApp.root_dir="$NOTEBOOKS" \
    --ServerApp.answer_yes=True \
    --no-browser \
    --allow-root
