"""What a killed run leaves in the kernel, and the reaper that removes it at the next run.

Most of what a run creates dies with its process, however it ends: BPF programs, maps, perf
events and BPF links are file descriptors, and the kernel frees them once the last one closes.
A process killed with SIGKILL (Jupyter's "Restart kernel" on a busy kernel, the OOM killer,
``kill -9``) closes them too. Some objects, though, have a *name* in a file system, and the name
keeps them alive until someone removes it. The lab removes its own on every normal exit path,
Stop and Ctrl-C included; a killed process cannot. These are the kinds (:data:`KINDS`):

- **tracefs instances** ``instances/ebpf_lab_<pid>_<n>`` (:mod:`ebpf_lab.core.tracefs`; ``hello``,
  ``helper_calls``, ``transfer``): a trace buffer per CPU, kept for good.
- **network namespaces** ``/run/netns/ebpf-lab-<role>-<pid>`` (:mod:`ebpf_lab.core.netns`):
  ``xdp_firewall``'s two (``fwa``, ``fwb``) with the veth cable between them and the XDP program
  attached to its end, and the doctor's XDP check (``doctor``). Deleting a namespace takes the
  cable, and with it the attached XDP program, away.

Each name carries the pid of the process that made it, so :func:`reap` can tell an object whose
owner is gone (no such process, or a zombie that has already closed everything) from one a live
process is using: it removes only the former, only objects named as the lab's, and says what it
removed once, as a :class:`LeftoverWarning`. Every bounded run calls it before it loads
anything (:func:`ebpf_lab.core.run.bounded_run`), so whatever a killed run left is gone by the
end of the next run's start.

What it does not do: a pid that the system has since given to another process still counts as
alive (the leftover stays until that process ends), and a process in another pid namespace
sharing this tracefs (a container) cannot be seen; the kernel itself refuses to remove a tracefs
instance whose ``trace_pipe`` someone holds open (EBUSY), so a reader's instance is never lost.

Example (as root)::

    from ebpf_lab.core import leftovers

    removed = leftovers.reap()  # a frame: kind, name, pid, removed, error
"""

from __future__ import annotations

import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core import netns
from ebpf_lab.core.tracefs import INSTANCE_PREFIX

#: tracefs instance names the lab makes: ``ebpf_lab_<pid>_<n>``
INSTANCE_RE = re.compile(re.escape(INSTANCE_PREFIX) + r"(?P<pid>\d+)_\d+$")
#: network namespace names the lab makes: ``ebpf-lab-<role>-<pid>`` (``fwa``, ``fwb``, ``doctor``)
NETNS_RE = re.compile(r"ebpf-lab-[a-z][a-z0-9]*-(?P<pid>\d+)$")
#: the frame :func:`reap` returns
COLUMNS = ["kind", "name", "pid", "removed", "error"]

_LOCK = threading.Lock()
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


class LeftoverWarning(UserWarning):
    """Objects a killed run had left in the kernel were found (and, as root, removed)."""


@dataclass(frozen=True)
class Kind:
    """One kind of named kernel object the lab makes, which outlives a killed process.

    Attributes
    ----------
    name, plural : str
        How messages call one object, and several (``"tracefs instance"``).
    freed : str
        What removing them frees, for the message.
    find : callable
        ``find() -> [(name, owner_pid), ...]``: every object of this kind named as the lab's.
    remove : callable
        ``remove(name)`` removes one; raises OSError or RuntimeError when it cannot, and
        FileNotFoundError when it is already gone.
    by_hand : callable
        ``by_hand(name)``: the shell command that removes one, for messages.
    """

    name: str
    plural: str
    freed: str
    find: Callable[[], list[tuple[str, int]]]
    remove: Callable[[str], None]
    by_hand: Callable[[str], str]


def _instances_dir() -> Path | None:
    root = kernel.tracefs_root()
    return None if root is None else root / "instances"


def find_instances() -> list[tuple[str, int]]:
    """Tracefs instances named ``ebpf_lab_<pid>_<n>``, with their owner's pid."""
    directory = _instances_dir()
    if directory is None:
        return []
    try:
        names = os.listdir(directory)
    except OSError:  # not root (tracefs is mode 700), or no instances/ directory
        return []
    return [(n, int(m["pid"])) for n in sorted(names) if (m := INSTANCE_RE.match(n))]


def remove_instance(name: str) -> None:
    """Remove tracefs instance ``name`` (``rmdir``: its buffers and enabled events go with it).

    Nothing is written into the instance first: the kernel refuses the ``rmdir`` with EBUSY
    while any process holds one of its files open, so an instance in use is left as it is.
    """
    directory = _instances_dir()
    if directory is None or not INSTANCE_RE.match(name):
        raise ValueError(f"{name!r} is not a tracefs instance of the lab")
    os.rmdir(directory / name)


def find_netns() -> list[tuple[str, int]]:
    """Network namespaces named ``ebpf-lab-<role>-<pid>``, with their owner's pid."""
    return [(n, int(m["pid"])) for n in netns.list_netns() if (m := NETNS_RE.match(n))]


def remove_netns(name: str) -> None:
    """Delete network namespace ``name`` (``ip netns del``), and the veth and XDP inside it."""
    if not NETNS_RE.match(name):
        raise ValueError(f"{name!r} is not a network namespace of the lab")
    if not netns.exists(name):
        raise FileNotFoundError(name)
    try:
        netns.delete(name)
    except RuntimeError:
        if not netns.exists(name):  # deleted meanwhile (by another process's reaper)
            raise FileNotFoundError(name) from None
        raise


#: every kind of named kernel object the lab makes; :func:`reap` goes through them in order
KINDS: tuple[Kind, ...] = (
    Kind(
        "tracefs instance",
        "tracefs instances",
        "trace buffers, one per CPU",
        find_instances,
        remove_instance,
        lambda name: f"sudo rmdir {_instances_dir() or '/sys/kernel/tracing/instances'}/{name}",
    ),
    Kind(
        "network namespace",
        "network namespaces",
        "with what was in them: a veth cable, XDP and TC programs",
        find_netns,
        remove_netns,
        lambda name: f"sudo ip netns del {name}",
    ),
)


def owner_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a zombie has closed all its files).

    A pid this process cannot see (another pid namespace) counts as gone; one given to a new
    process since counts as alive.
    """
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # there, but unreadable: leave its objects alone
    state = stat.rpartition(")")[2].split()[:1]  # "pid (comm) S ...": comm may hold ')'
    return state not in (["Z"], ["X"])


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def _message(rows: Sequence[dict[str, object]]) -> str:
    """One sentence per (owner, outcome): what was removed, or found and left, and why."""
    kinds = {k.name: k for k in KINDS}
    groups: dict[tuple[object, object], list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault((row["pid"], row["removed"]), []).append(row)
    parts = []
    for (pid, removed), group in groups.items():
        what = []
        for kind in KINDS:
            names = [str(r["name"]) for r in group if r["kind"] == kind.name]
            if names:
                noun = kind.name if len(names) == 1 else kind.plural
                what.append(f"{len(names)} {noun} ({', '.join(names)}; {kind.freed})")
        text = " and ".join(what)
        them = "it" if len(group) == 1 else "them"
        if removed:
            parts.append(
                f"removed {text} left by process {pid}, which was killed mid-run (Restart "
                f"kernel, kill -9, the OOM killer) before it could remove {them}"
            )
        else:
            errors = "; ".join(sorted({str(r["error"]) for r in group}))
            commands = ", ".join(
                f"`{kinds[str(r['kind'])].by_hand(str(r['name']))}`" for r in group
            )
            parts.append(
                f"found {text} left by process {pid}, which no longer runs, but could not "
                f"remove {them} ({errors}): {commands}"
            )
    return "ebpf_lab: " + "; ".join(parts) + "."


def reap(*, warn: bool = True) -> pd.DataFrame:
    """Remove the kernel objects that lab processes which no longer run left behind.

    Goes through :data:`KINDS` (tracefs instances, network namespaces), finds the objects
    named as the lab's whose owner (the pid in the name) no longer runs, and removes them.
    Objects of live processes (another notebook's run, a concurrent test) and objects not
    named as the lab's are never touched. Every bounded run calls this before it loads
    anything; call it yourself (or let ``ebpf_lab.doctor()`` call it) to tidy up now.

    Parameters
    ----------
    warn : bool
        Say what was found once, as a :class:`LeftoverWarning` (nothing is said when nothing
        was found).

    Returns
    -------
    pandas.DataFrame
        One row per object found: ``kind`` (``"tracefs instance"``, ``"network namespace"``),
        ``name``, ``pid`` (its dead owner), ``removed`` (False when removal failed, e.g. not
        root) and ``error`` (why not, else ``""``). Empty when the machine is clean.
    """
    rows: list[dict[str, object]] = []
    is_root = os.geteuid() == 0
    with _LOCK:
        for kind in KINDS:
            for name, pid in kind.find():
                if owner_alive(pid):
                    continue
                error = ""
                if not is_root:
                    error = "only root can remove it"
                else:
                    try:
                        kind.remove(name)
                    except FileNotFoundError:
                        continue  # another process's reaper was first
                    except (OSError, RuntimeError) as exc:
                        error = str(exc)
                rows.append(
                    {"kind": kind.name, "name": name, "pid": pid, "removed": not error,
                     "error": error}
                )  # fmt: skip
    if rows and warn:
        warnings.warn(_message(rows), LeftoverWarning, stacklevel=_caller_stacklevel())
    df = pd.DataFrame(rows, columns=COLUMNS)
    kinds = [k.name for k in KINDS]
    return df.astype(
        {
            "kind": pd.CategoricalDtype(kinds),
            "name": "string",
            "pid": "int64",
            "removed": "bool",
            "error": "string",
        }
    )
