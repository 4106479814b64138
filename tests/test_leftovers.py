"""Nothing a killed run leaves in the kernel outlives the next run (``ebpf_lab.core.leftovers``).

For each kind of named kernel object the lab makes (:data:`ebpf_lab.core.leftovers.KINDS`), a lesson
runs in a subprocess with a long duration; once the object exists the runner is SIGKILLed (what
Jupyter's "Restart kernel" and the OOM killer do), the object is checked to be still there, and
the next run of *another* lesson in this process must leave the machine clean and say so once.
A second runner of the same lesson stays alive throughout: its objects must be left alone. A run
whose objects are all file descriptors (``exec_events``) must leave nothing at all.

The naming rules and the owner check are pure code and run without root.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO, needs_root
from kernel_state import global_prog_ids

from ebpf_lab.core import leftovers, netns, tracefs
from ebpf_lab.kernel.probes import DOCTOR_CABLE
from ebpf_lab.lessons.l10_networking.xdp_firewall import NETNS_PREFIX_A, NETNS_PREFIX_B

#: what each runner subprocess runs: the lesson with a long duration and a workload
RUNNERS = {
    "hello": (
        "import ebpf_lab\n"
        "from ebpf_lab import workload\n"
        "ebpf_lab.hello(duration=1800, workload=lambda: workload.execs({65534: 2}), live=False)\n"
    ),
    "xdp_firewall": (
        "import ebpf_lab\n"
        "ebpf_lab.xdp_firewall(duration=1800, pings=2, connections=1, datagrams=2, live=False)\n"
    ),
    "exec_events": (
        "import ebpf_lab\n"
        "from ebpf_lab import workload\n"
        "ebpf_lab.exec_events(duration=1800, workload=lambda: workload.execs({65534: 2}),"
        " live=False)\n"
    ),
}
#: how long a runner may take to import, compile and attach: seconds here, minutes in an
#: emulated VM of the kernel matrix (a runner that ends early fails the wait at once); the
#: runs last long enough that the survivor is still running when the test stops it
START_TIMEOUT = 900.0


# ------------------------------------------------------------------------------ pure code


def test_lab_names_carry_their_owner_pid():
    pid = 4242
    names = [f"{NETNS_PREFIX_A}{pid}", f"{NETNS_PREFIX_B}{pid}", *DOCTOR_CABLE.names(pid)]
    for name in names:
        m = leftovers.NETNS_RE.match(name)
        assert m and int(m["pid"]) == pid, f"{name} is a lab namespace the reaper must know"
    instance = f"{tracefs.INSTANCE_PREFIX}{pid}_7"
    m = leftovers.INSTANCE_RE.match(instance)
    assert m and int(m["pid"]) == pid


@pytest.mark.parametrize(
    "name",
    ["ebpf-lab-demo", "ebpf-lab-never-a", "ebpf-lab-4242", "ebpf-lab-fwa-42x", "my-fwa-4242"],
)
def test_other_netns_names_are_not_the_labs(name):
    assert not leftovers.NETNS_RE.match(name)


@pytest.mark.parametrize("name", ["ebpf_lab_4242", "ebpf_lab_x_4242_0", "foo_4242_0", "ebpf_lab_"])
def test_other_instance_names_are_not_the_labs(name):
    assert not leftovers.INSTANCE_RE.match(name)


def test_owner_alive_live_dead_and_zombie():
    assert leftovers.owner_alive(os.getpid())
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert not leftovers.owner_alive(done.pid)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        _wait_for(lambda: _state(zombie.pid) == "Z", 30, "the child to become a zombie")
        assert not leftovers.owner_alive(zombie.pid), "a zombie has closed all its files"
    finally:
        zombie.wait()
    assert not leftovers.owner_alive(0)


def test_message_names_the_objects_and_the_owner():
    rows = [
        {"kind": "network namespace", "name": "ebpf-lab-fwa-9", "pid": 9, "removed": True,
         "error": ""},
        {"kind": "network namespace", "name": "ebpf-lab-fwb-9", "pid": 9, "removed": True,
         "error": ""},
        {"kind": "tracefs instance", "name": "ebpf_lab_8_0", "pid": 8, "removed": False,
         "error": "only root can remove it"},
    ]  # fmt: skip
    text = leftovers._message(rows)
    assert "removed 2 network namespaces (ebpf-lab-fwa-9, ebpf-lab-fwb-9" in text
    assert "left by process 9, which was killed mid-run" in text
    assert "found 1 tracefs instance (ebpf_lab_8_0" in text
    assert "only root can remove it" in text and "sudo rmdir" in text


# ------------------------------------------------------------------------------ helpers


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def _wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class Runner:
    """A lesson running in a subprocess (as this user: root), started by :func:`runners`."""

    def __init__(self, lesson: str) -> None:
        self.lesson = lesson
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUNNERS[lesson]],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def wait_until(self, condition: Callable[[], object], what: str) -> None:
        """Poll until ``condition()`` holds; fail at once (with its output) if the runner ends."""

        def ready() -> object:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.lesson} runner ended early:\n{self.output()}")
            return condition()

        _wait_for(ready, START_TIMEOUT, f"{what} (runner {self.pid})")

    def kill(self) -> None:
        """SIGKILL, and reap the process (a zombie would still count as its objects' owner)."""
        self.proc.kill()
        self.proc.wait(30)

    def interrupt(self) -> None:
        """Ctrl-C: the run ends as interrupted and removes its own objects; wait for it to exit."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.log.close()


@contextlib.contextmanager
def runners(lesson: str, n: int) -> Iterator[list[Runner]]:
    started = []
    try:
        for _ in range(n):
            started.append(Runner(lesson))
        yield started
    finally:
        for r in started:
            r.close()
        leftovers.reap(warn=False)  # whatever a failed test left


def _instances_of(pid: int) -> list[str]:
    return [name for name, owner in leftovers.find_instances() if owner == pid]


def _netns_of(pid: int) -> list[str]:
    return [name for name, owner in leftovers.find_netns() if owner == pid]


def _xdp_prog(pid: int) -> int | None:
    """The id of the XDP program on ``veth-b`` in runner ``pid``'s namespace B, once attached."""
    try:
        return netns.xdp_on(f"{NETNS_PREFIX_B}{pid}", "veth-b").get("prog_id")
    except (RuntimeError, ValueError):  # the namespace or the device is not there yet
        return None


def _prog_ids_of(pid: int) -> set[int]:
    """BPF programs process ``pid`` holds open (from its ``/proc/<pid>/fdinfo``)."""
    ids = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
                    if line.startswith("prog_id:"):
                        ids.add(int(line.split()[1]))
    return ids


def _perf_events_of(pid: int) -> int:
    n = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                n += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[perf_event]"
    return n


def _next_run_of_another_lesson() -> list[str]:
    """Run exec_counts here; return the LeftoverWarnings it gave (as text)."""
    import ebpf_lab

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = ebpf_lab.exec_counts(duration=0.3, interval=0.3, live=False)
    assert df.attrs["stopped_by"] is None
    return [str(w.message) for w in caught if issubclass(w.category, leftovers.LeftoverWarning)]


def _wait_unloaded(prog_ids: set[int], timeout: float = 10.0) -> None:
    """The kernel frees programs a moment after their last reference goes."""
    _wait_for(lambda: not (prog_ids & global_prog_ids()), timeout, f"programs {prog_ids} freed")


# ------------------------------------------------------------------------------ the kinds


@needs_root
def test_killed_hello_leaves_its_tracefs_instance_until_the_next_run(no_leaks):
    with runners("hello", 2) as (survivor, victim):
        for r in (survivor, victim):
            r.wait_until(lambda r=r: _instances_of(r.pid), "its tracefs instance")
        left = _instances_of(victim.pid)
        kept = _instances_of(survivor.pid)
        victim.kill()
        assert _instances_of(victim.pid) == left, "the killed run's instance stays until reaped"

        said = _next_run_of_another_lesson()

        assert _instances_of(victim.pid) == [], "the next run removes the killed run's instance"
        assert _instances_of(survivor.pid) == kept, "a live run's instance is left alone"
        assert len(said) == 1, said
        assert f"by process {victim.pid}" in said[0] and all(n in said[0] for n in left)
        assert "1 tracefs instance" in said[0] and str(survivor.pid) not in said[0]
        assert not any(str(victim.pid) in s for s in _next_run_of_another_lesson()), "said once"

        survivor.interrupt()
        assert _instances_of(survivor.pid) == [], "an interrupted run removes its own instance"


@needs_root
def test_killed_xdp_firewall_leaves_namespaces_and_xdp_until_the_next_run(no_leaks):
    with runners("xdp_firewall", 2) as (survivor, victim):
        for r in (survivor, victim):
            r.wait_until(lambda r=r: _xdp_prog(r.pid), "its XDP program on veth-b")
        left = _netns_of(victim.pid)
        kept = _netns_of(survivor.pid)
        prog = _xdp_prog(victim.pid)
        assert prog is not None and len(left) == 2 and len(kept) == 2
        victim.kill()
        assert _netns_of(victim.pid) == left, "the killed run's namespaces stay until reaped"
        assert _xdp_prog(victim.pid) == prog, "and its XDP program stays attached in them"

        said = _next_run_of_another_lesson()

        assert _netns_of(victim.pid) == [], "the next run deletes the killed run's namespaces"
        _wait_unloaded({prog})  # the veth went with its namespace, and the XDP program with it
        assert _netns_of(survivor.pid) == kept, "a live run's namespaces are left alone"
        assert _xdp_prog(survivor.pid) is not None, "a live run's XDP program is left alone"
        assert len(said) == 1, said
        assert f"by process {victim.pid}" in said[0] and all(n in said[0] for n in left)
        assert "2 network namespaces" in said[0] and str(survivor.pid) not in said[0]
        assert not any(str(victim.pid) in s for s in _next_run_of_another_lesson()), "said once"

        survivor.interrupt()
        assert _netns_of(survivor.pid) == [], "an interrupted run deletes its own namespaces"


@needs_root
def test_killed_exec_events_leaves_nothing(no_leaks):
    with runners("exec_events", 1) as (victim,):
        victim.wait_until(
            lambda: _prog_ids_of(victim.pid) and _perf_events_of(victim.pid), "it to attach"
        )
        progs = _prog_ids_of(victim.pid)
        victim.kill()
        _wait_unloaded(progs)  # programs, maps, perf events: file descriptors, closed on exit
        assert _instances_of(victim.pid) == [] and _netns_of(victim.pid) == []
        assert not any(str(victim.pid) in s for s in _next_run_of_another_lesson())


@needs_root
def test_reap_returns_a_frame_of_what_it_removed(no_leaks):
    with runners("hello", 1) as (victim,):
        victim.wait_until(lambda: _instances_of(victim.pid), "its tracefs instance")
        left = _instances_of(victim.pid)
        victim.kill()
        with pytest.warns(leftovers.LeftoverWarning, match=f"by process {victim.pid}"):
            df = leftovers.reap()
    mine = df[df["pid"] == victim.pid]
    assert list(mine["name"]) == left
    assert list(mine["kind"]) == ["tracefs instance"] * len(left)
    assert mine["removed"].all() and (mine["error"] == "").all()
    assert list(df.columns) == leftovers.COLUMNS
    assert str(df["kind"].dtype) == "category" and df["pid"].dtype == "int64"
    empty = leftovers.reap()
    assert victim.pid not in set(empty["pid"])


@needs_root
def test_objects_not_named_as_the_labs_are_left_alone(no_leaks):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    root = tracefs.require_tracefs() / "instances"
    instance = root / f"ebpf_lab_keep_{gone.pid}_0"
    namespace = f"ebpf-lab-{gone.pid}"
    os.mkdir(instance)
    try:
        netns.create(namespace)
        try:
            df = leftovers.reap(warn=False)
            assert instance.exists() and netns.exists(namespace)
            assert not {instance.name, namespace} & set(df["name"])
        finally:
            netns.delete(namespace)
    finally:
        os.rmdir(instance)
