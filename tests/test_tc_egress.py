"""Lesson 10 (tc egress beside XDP ingress) on the real kernel: the same packets counted leaving
veth-a by a tc program and arriving at veth-b by XDP, exactly; nothing left afterwards.

All traffic runs between the two network namespaces of the lab's private cable (198.18.0.1 <->
198.18.0.2, a benchmarking range). Every test checks that the namespaces (with the clsact qdisc
and the tc filter on veth-a inside) are gone and both programs unloaded afterwards.
"""

from __future__ import annotations

import errno
import subprocess
import threading
import time

import pytest
from conftest import needs_root, send_sigint

import ebpf_lab
from ebpf_lab.core import netns
from ebpf_lab.core.attach import Probe
from ebpf_lab.lessons.l10_networking.tc_egress import (
    DATAGRAM_FRAME_BYTES,
    PING_FRAME_BYTES,
    _EgressCounter,
    plot_tc_egress,
    tc_egress,
)

pytestmark = needs_root

COLUMNS = [
    "protocol",
    "sent",
    "tc_egress",
    "tc_dropped",
    "xdp_ingress",
    "delivered",
    "egress_bytes",
    "ingress_bytes",
]


def _names() -> tuple[str, str]:
    return netns.LabCable().names()


def _ours() -> list[str]:
    return [n for n in _names() if netns.exists(n)]


def _prog_loaded(prog_id: int) -> bool:
    proc = subprocess.run(
        ["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True, text=True
    )
    return proc.returncode == 0


def _unloaded(*prog_ids: int) -> None:
    deadline = time.monotonic() + 3
    while any(_prog_loaded(i) for i in prog_ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for prog_id in prog_ids:
        assert not _prog_loaded(prog_id), f"program {prog_id} must be unloaded"


def _gone_afterwards(df) -> None:
    assert _ours() == [], "the cable's namespaces (and the tc filter in them) must be deleted"
    _unloaded(df.attrs["tc_prog_id"], df.attrs["xdp_prog_id"])


def _row(df, protocol: str) -> dict:
    rows = df[df.protocol == protocol]
    assert len(rows) == 1
    return {k: (v if k == "protocol" else int(v)) for k, v in rows.iloc[0].items()}


def _watch_while_attached(monkeypatch) -> dict:
    """Record what ``tc`` and ``ip`` show on the cable once the core has attached both."""
    seen: dict = {}
    start = _EgressCounter.start

    def watching(self, ctx):
        ns_a, ns_b = _names()
        seen["egress"] = netns.tc_on(ns_a, "veth-a", "egress")
        seen["ingress"] = netns.tc_on(ns_a, "veth-a", "ingress")
        seen["xdp"] = netns.xdp_on(ns_b, "veth-b")
        start(self, ctx)

    monkeypatch.setattr(_EgressCounter, "start", watching)
    return seen


def test_egress_at_veth_a_equals_ingress_at_veth_b_exactly(no_leaks, monkeypatch):
    seen = _watch_while_attached(monkeypatch)
    pings, grams = 4, 3
    df = tc_egress(pings=pings, datagrams=grams)
    assert list(df.columns) == COLUMNS
    assert str(df["protocol"].dtype) == "category"
    assert all(str(df[c].dtype) == "int64" for c in COLUMNS[1:])
    assert _row(df, "icmp") == {
        "protocol": "icmp", "sent": pings, "tc_egress": pings, "tc_dropped": 0,
        "xdp_ingress": pings, "delivered": pings,
        "egress_bytes": pings * PING_FRAME_BYTES, "ingress_bytes": pings * PING_FRAME_BYTES,
    }  # fmt: skip
    assert _row(df, "udp") == {
        "protocol": "udp", "sent": grams, "tc_egress": grams, "tc_dropped": 0,
        "xdp_ingress": grams, "delivered": grams,
        "egress_bytes": grams * DATAGRAM_FRAME_BYTES,
        "ingress_bytes": grams * DATAGRAM_FRAME_BYTES,
    }  # fmt: skip
    for protocol in ("tcp", "other"):  # IPv6 off, static ARP: nothing else crosses the cable
        assert {k: v for k, v in _row(df, protocol).items() if k != "protocol"} == dict.fromkeys(
            COLUMNS[1:], 0
        )
    assert (PING_FRAME_BYTES, DATAGRAM_FRAME_BYTES) == (98, 106)

    # while attached, tc listed exactly our program on veth-a egress (none on ingress), in
    # direct-action mode, and ip listed our XDP program on veth-b
    assert seen["egress"] == [
        {"name": "tc_egress", "prog_id": df.attrs["tc_prog_id"], "direct_action": True}
    ]
    assert seen["ingress"] == []
    assert seen["xdp"]["prog_id"] == df.attrs["xdp_prog_id"]
    assert df.attrs["tc_prog_id"] != df.attrs["xdp_prog_id"]
    assert df.attrs["tc_direction"] == "egress"
    assert df.attrs["tc_device"] == f"veth-a in {_names()[0]}"
    assert df.attrs["xdp_device"] == f"veth-b in {_names()[1]}"
    assert df.attrs["addresses"] == ["198.18.0.1", "198.18.0.2"]
    assert df.attrs["drop"] is None and df.attrs["interrupted"] is False
    assert df.attrs["plan"] == {
        "pings": pings, "datagrams": grams, "ping_frame_bytes": 98, "datagram_frame_bytes": 106,
    }  # fmt: skip
    _gone_afterwards(df)


def test_dropping_udp_on_egress_hides_it_from_xdp(no_leaks):
    df = tc_egress(pings=2, datagrams=3, drop="udp", timeout=0.2)
    udp, icmp = _row(df, "udp"), _row(df, "icmp")
    # counted by tc before its verdict, dropped there, never on the cable
    assert (udp["sent"], udp["tc_egress"], udp["tc_dropped"]) == (3, 3, 3)
    assert (udp["xdp_ingress"], udp["delivered"], udp["ingress_bytes"]) == (0, 0, 0)
    assert udp["egress_bytes"] == 3 * DATAGRAM_FRAME_BYTES
    assert (icmp["tc_egress"], icmp["tc_dropped"], icmp["xdp_ingress"], icmp["delivered"]) == (
        2, 0, 2, 2,
    )  # fmt: skip
    assert df.attrs["drop"] == "udp"
    _gone_afterwards(df)


def test_an_exception_in_the_workload_removes_tc_xdp_and_the_namespaces(no_leaks, monkeypatch):
    seen = {}

    def broken(self):
        ns_a, ns_b = _names()
        seen["tc"] = [f["prog_id"] for f in netns.tc_on(ns_a, "veth-a", "egress")]
        seen["xdp"] = netns.xdp_on(ns_b, "veth-b").get("prog_id")
        raise RuntimeError("the workload failed (simulated)")

    monkeypatch.setattr(_EgressCounter, "_ping", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        tc_egress(pings=1, datagrams=1)
    assert len(seen["tc"]) == 1 and seen["xdp"] is not None  # both were attached
    assert _ours() == []
    _unloaded(seen["tc"][0], seen["xdp"])


def test_a_refused_tc_attach_still_deletes_the_namespaces(no_leaks, monkeypatch):
    """The core builds the cable, then the kernel refuses the filter: everything goes anyway."""
    seen = {}
    real = netns.tc_attach

    def refuse(ns, dev, direction, prog_fd, name):
        seen["netns"] = _ours()
        real(ns, dev, direction, prog_fd, name)  # the qdisc and the filter are there...
        raise OSError(errno.EPERM, "filter refused (simulated)")  # ...and then it fails

    monkeypatch.setattr(netns, "tc_attach", refuse)
    with pytest.raises(ebpf_lab.UnsupportedFeature, match="simulated") as info:
        tc_egress(pings=1, datagrams=1)
    assert info.value.feature == "tc"
    assert len(seen["netns"]) == 2  # they existed while the run was being set up
    assert _ours() == []


def test_interrupt_mid_run_counts_what_was_sent_and_tears_down(no_leaks):
    ns_a = _names()[0]

    def interrupt_once_attached():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if netns.exists(ns_a) and netns.tc_on(ns_a, "veth-a", "egress"):
                    break
            except Exception:
                pass
            time.sleep(0.05)
        time.sleep(0.5)
        send_sigint()

    timer = threading.Thread(target=interrupt_once_attached, daemon=True)
    timer.start()
    df = tc_egress(pings=1000, datagrams=1)
    timer.join()
    assert df.attrs["interrupted"] is True and df.attrs["stopped_by"] == "interrupt"
    icmp = _row(df, "icmp")
    assert 0 < icmp["sent"] < 1000
    # what was sent before the interrupt left veth-a and arrived at veth-b, one for one
    assert icmp["tc_egress"] == icmp["xdp_ingress"] == icmp["sent"]
    _gone_afterwards(df)


BAD = [
    {"drop": "tcp"},  # the traffic has no TCP to drop
    {"drop": "UDP"},
    {"pings": 0},
    {"pings": 10**6},
    {"pings": 1.5},
    {"datagrams": -1},
    {"datagrams": None},
    {"duration": 0},
    {"duration": float("nan")},
    {"timeout": 0},
    {"timeout": 11},
]


@pytest.mark.parametrize("kwargs", BAD, ids=[str(k) for k in BAD])
def test_bad_input_is_refused_before_anything_is_created(
    kwargs, refused_before_loading, monkeypatch
):
    def must_not_create(*a, **k):
        raise AssertionError("a namespace was created with bad input")

    monkeypatch.setattr(netns, "create", must_not_create)
    refused_before_loading(tc_egress, kwargs)


@pytest.mark.parametrize(
    "target", ["veth-a", "veth-a:sideways", "eth0:egress", "veth-c:ingress", ":egress"]
)
def test_a_tc_probe_names_an_end_of_the_cable_and_a_direction(target):
    with pytest.raises(ValueError, match="veth-a:egress"):
        Probe("tc", target, "tc_egress")


def test_tc_probes_take_the_lab_cable_and_load_as_sched_cls():
    probe = Probe("tc", "veth-b:ingress", "tc_egress")
    assert probe.cable == netns.LabCable()

    class BPF:
        SCHED_CLS = 3

    class bcc:  # noqa: N801  (stands in for the bcc module)
        pass

    bcc.BPF = BPF
    from ebpf_lab.core.attach import prog_type

    assert prog_type(bcc, probe) == 3


def test_plot_and_export():
    import matplotlib

    matplotlib.use("Agg")
    from ebpf_lab.lessons.l10_networking.tc_egress import FRAME

    df = FRAME.frame(
        [
            {"protocol": p, "sent": 2, "tc_egress": 2, "tc_dropped": 0, "xdp_ingress": 2,
             "delivered": 2, "egress_bytes": 196, "ingress_bytes": 196}
            for p in ("icmp", "tcp", "udp", "other")
        ]
    )  # fmt: skip
    ax = plot_tc_egress(df)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["icmp", "tcp", "udp", "other"]
    assert len(ax.patches) == 12  # passed, dropped, arrived: one bar each per protocol
    with pytest.raises(ValueError, match="tc_egress frame"):
        plot_tc_egress(df.drop(columns=["xdp_ingress"]))
    assert ebpf_lab.tc_egress is tc_egress
    assert "tc_egress" in ebpf_lab.__all__


def test_a_killed_run_leaves_its_tc_filter_only_until_the_next_run_reaps_it(no_leaks):
    """SIGKILL mid-run (Restart kernel, the OOM killer) cannot remove the tc filter: it stays on
    veth-a inside the run's namespace, holding its program, until the next run's reaper deletes
    the namespaces (they carry the dead pid); then the program is gone too."""
    import signal
    import sys

    from conftest import REPO

    from ebpf_lab.core import leftovers

    code = "import ebpf_lab\nebpf_lab.tc_egress(duration=1800, pings=1, datagrams=1, live=False)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    names = netns.LabCable().names(proc.pid)
    try:

        def attached() -> list:
            assert proc.poll() is None, f"the run ended early: {proc.stderr.read().decode()}"
            try:
                return netns.tc_on(names[0], "veth-a", "egress")
            except RuntimeError:  # the namespace or the device is not there yet
                return []

        deadline = time.monotonic() + 600
        while not (shown := attached()):
            assert time.monotonic() < deadline, "the run never attached its tc program"
            time.sleep(0.05)
        prog = shown[0]["prog_id"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

        removed = leftovers.reap(warn=False)

        # another process's run (a concurrent test) may have reaped some of them first
        mine = removed[removed.pid == proc.pid]
        assert set(mine["name"]) <= set(names) and mine["removed"].all()
        assert not any(netns.exists(n) for n in names)
        _unloaded(prog)  # the filter went with veth-a's namespace, and the program with it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stderr.close()
        leftovers.reap(warn=False)
