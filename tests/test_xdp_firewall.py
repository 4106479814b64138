"""Lesson 10 (XDP firewall) on the real kernel: exact packet counts on a private veth cable.

All traffic runs between two network namespaces the lesson creates (198.18.0.1 <-> 198.18.0.2,
a benchmarking range); nothing touches the host's interfaces. Every test checks that the
namespaces and the XDP program are gone afterwards, also after errors, Stop and interrupts.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
from conftest import needs_root, send_sigint

import ebpf_lab
from ebpf_lab.core import netns
from ebpf_lab.core.run import active_views
from ebpf_lab.lessons.l10_networking.xdp_firewall import (
    DATAGRAM_PAYLOAD,
    NETNS_PREFIX_A,
    NETNS_PREFIX_B,
    PING_PAYLOAD,
    firewall_traffic,
    xdp_firewall,
)

pytestmark = needs_root


def _ours() -> list[str]:
    pid = os.getpid()
    return [n for n in (f"{NETNS_PREFIX_A}{pid}", f"{NETNS_PREFIX_B}{pid}") if netns.exists(n)]


def _prog_loaded(prog_id: int) -> bool:
    """Whether the program with this id (ours: recorded by the run) is still in the kernel."""
    proc = subprocess.run(
        ["bpftool", "prog", "show", "id", str(prog_id)], capture_output=True, text=True
    )
    return proc.returncode == 0


def _gone_afterwards(df) -> None:
    assert _ours() == [], "the lesson's namespaces must be deleted"
    assert df.attrs["netns"] and not any(netns.exists(n) for n in df.attrs["netns"])
    deadline = time.monotonic() + 3
    while _prog_loaded(df.attrs["xdp_prog_id"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _prog_loaded(df.attrs["xdp_prog_id"]), "the XDP program must be unloaded"


def _row(df, phase, protocol):
    rows = df[(df.phase == phase) & (df.protocol == protocol)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_exact_icmp_counts_then_full_loss_while_tcp_passes(no_leaks):
    pings, conns, grams, payload = 4, 3, 2, 1500
    df = xdp_firewall(drop="icmp", pings=pings, connections=conns, datagrams=grams, payload=payload)
    assert list(df.columns) == [
        "phase",
        "dropping",
        "protocol",
        "packets",
        "passed",
        "dropped",
        "payload_bytes",
        "syns",
    ]
    assert len(df) == 8  # 2 phases x 4 protocol classes
    assert str(df["phase"].dtype) == "category" and str(df["protocol"].dtype) == "category"
    assert all(str(df[c].dtype) == "int64" for c in ("packets", "passed", "dropped", "syns"))

    icmp_off, icmp_on = _row(df, "off", "icmp"), _row(df, "on", "icmp")
    # one echo request = one packet at B's end of the cable, exactly
    assert (icmp_off.packets, icmp_off.passed, icmp_off.dropped) == (pings, pings, 0)
    assert (icmp_on.packets, icmp_on.passed, icmp_on.dropped) == (pings, 0, pings)
    assert icmp_off.payload_bytes == icmp_on.payload_bytes == pings * PING_PAYLOAD
    for phase in ("off", "on"):
        tcp, udp, other = (_row(df, phase, p) for p in ("tcp", "udp", "other"))
        assert tcp.dropped == 0 and tcp.syns == conns  # one SYN per connection
        assert tcp.payload_bytes == conns * payload  # what the clients sent, byte for byte
        assert tcp.packets >= 3 * conns  # SYN, ACK, data at least; the rest depends on timing
        assert (udp.packets, udp.passed, udp.dropped) == (grams, grams, 0)
        assert udp.payload_bytes == grams * DATAGRAM_PAYLOAD
        assert other.packets == 0  # IPv6 off, static ARP: nothing else crosses the cable
    assert df.attrs["unexpected_phases"] == []

    traffic = firewall_traffic(df).set_index(["phase", "protocol"])
    assert traffic.loc[("off", "icmp"), "answered"] == pings  # every ping answered
    assert traffic.loc[("on", "icmp"), "answered"] == 0  # 100% loss with the drop on
    assert traffic.loc[("on", "icmp"), "sent"] == pings
    for phase in ("off", "on"):
        assert traffic.loc[(phase, "tcp"), "sent"] == conns
        assert traffic.loc[(phase, "tcp"), "answered"] == conns  # TCP still passes
        assert traffic.loc[(phase, "udp"), "answered"] == grams
    ping_rows = df.attrs["pings"]
    assert [r["replied"] for r in ping_rows if r["phase"] == "off"] == [True] * pings
    assert [r["replied"] for r in ping_rows if r["phase"] == "on"] == [False] * pings

    assert df.attrs["xdp_mode"] == "generic (SKB)"
    assert df.attrs["addresses"] == ["198.18.0.1", "198.18.0.2"]
    assert df.attrs["interrupted"] is False
    _gone_afterwards(df)


def test_dropping_tcp_refuses_every_connection(no_leaks):
    df = xdp_firewall(drop="tcp", pings=2, connections=2, datagrams=1, timeout=0.3)
    tcp_on = _row(df, "on", "tcp")
    assert tcp_on.passed == 0 and tcp_on.syns == tcp_on.dropped == 2  # only the SYNs came
    assert tcp_on.payload_bytes == 0
    assert _row(df, "on", "icmp").passed == 2
    traffic = firewall_traffic(df).set_index(["phase", "protocol"])
    assert traffic.loc[("on", "tcp"), "answered"] == 0
    assert traffic.loc[("off", "tcp"), "answered"] == 2
    assert traffic.loc[("on", "icmp"), "answered"] == 2
    _gone_afterwards(df)


def test_dynamic_arp_shows_up_as_other(no_leaks):
    df = xdp_firewall(drop="udp", pings=1, connections=1, datagrams=2, static_neighbours=False)
    other = df[df.protocol == "other"]
    assert other["packets"].sum() >= 1  # the ARP request for 198.18.0.2
    assert other["dropped"].sum() == 0
    assert _row(df, "on", "udp").dropped == 2
    _gone_afterwards(df)


def _when_attached(action, delay: float = 0.5) -> threading.Thread:
    """In a thread: wait until our XDP program is attached (seen from outside, with `ip`),
    then ``delay`` seconds (the traffic is flowing by then), then ``action()``."""
    ns_b = f"{NETNS_PREFIX_B}{os.getpid()}"

    def attached() -> bool:
        try:
            return netns.exists(ns_b) and bool(netns.xdp_on(ns_b, "veth-b"))
        except Exception:
            return False

    def run():
        deadline = time.monotonic() + 120
        while not attached():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_interrupt_mid_run_tears_everything_down(no_leaks):
    timer = _when_attached(send_sigint)
    df = xdp_firewall(pings=200, ping_interval=0.05, connections=1, datagrams=1)
    timer.join()
    assert df.attrs["interrupted"] is True and df.attrs["stopped_by"] == "interrupt"
    pings = [r for r in df.attrs["pings"] if r["phase"] == "off"]
    assert 0 < len(pings) < 200
    # what arrived before the interrupt was counted, one packet per echo request sent
    assert _row(df, "off", "icmp").packets == len(pings)
    _gone_afterwards(df)


def test_stop_button_tears_everything_down(no_leaks):
    def press():
        for view in active_views():
            view.request_stop()  # what the Stop button's click handler does

    presser = _when_attached(press)
    df = xdp_firewall(pings=200, ping_interval=0.05, connections=1, datagrams=1)
    presser.join()
    assert df.attrs["stopped_by"] == "stop button"
    _gone_afterwards(df)


def test_a_failure_after_setup_still_deletes_the_namespaces(no_leaks, monkeypatch):
    """The core builds the cable, then the kernel refuses XDP: the namespaces go anyway."""
    from ebpf_lab.core import links

    seen = {}

    def refuse(bcc, fn, link):
        seen["netns"] = _ours()
        raise RuntimeError("attach refused (simulated)")

    monkeypatch.setattr(links, "_xdp_in_netns", refuse)
    with pytest.raises(ebpf_lab.UnsupportedFeature, match="simulated") as info:
        xdp_firewall(pings=1, connections=1, datagrams=1)
    assert info.value.feature == "xdp"
    assert len(seen["netns"]) == 2  # they existed while the run was being set up
    assert _ours() == []


def test_a_failure_after_attaching_removes_xdp_and_the_namespaces(no_leaks, monkeypatch):
    """An error in the lesson's own start (after the core attached XDP) still tears down."""
    from ebpf_lab.lessons.l10_networking.xdp_firewall import _Firewall

    seen = {}

    def broken(self, ctx):
        ns_b = f"{NETNS_PREFIX_B}{os.getpid()}"
        seen["prog_id"] = netns.xdp_on(ns_b, "veth-b").get("prog_id")
        raise RuntimeError("the lesson failed (simulated)")

    monkeypatch.setattr(_Firewall, "start", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        xdp_firewall(pings=1, connections=1, datagrams=1)
    assert seen["prog_id"] is not None  # XDP was on veth-b when the lesson failed
    assert _ours() == []
    assert not _prog_loaded(seen["prog_id"])


BAD = [
    {"drop": "icmpv6"},
    {"drop": None},
    {"pings": 0},
    {"pings": 10**6},
    {"connections": -1},
    {"connections": 1.5},
    {"datagrams": None},
    {"payload": 0},
    {"payload": 10**9},
    {"duration": 0},
    {"duration": float("nan")},
    {"ping_interval": 0},
    {"timeout": 100},
    {"static_neighbours": "yes"},
]


@pytest.mark.parametrize("kwargs", BAD, ids=[str(k) for k in BAD])
def test_bad_input_is_value_error_before_anything_is_created(kwargs, no_leaks, monkeypatch):
    import ebpf_lab.core.run as run

    def must_not_load(*a, **k):
        raise AssertionError("bounded_run was reached with bad input")

    monkeypatch.setattr(run, "compile_program", must_not_load)
    monkeypatch.setattr(netns, "create", must_not_load)
    with pytest.raises(ValueError) as info:
        xdp_firewall(**kwargs)
    assert str(info.value)


@pytest.mark.parametrize(
    "a,b",
    [
        ("10.0.0.1/30", "10.0.0.2/30"),  # private, but not a test range
        ("198.18.0.1/30", "198.18.0.5/30"),  # two subnets
        ("198.18.0.1/30", "198.18.0.1/30"),  # the same address
        ("198.18.0.1", "nonsense"),
    ],
)
def test_veth_pair_accepts_only_test_range_addresses(a, b):
    with pytest.raises(ValueError):
        with netns.veth_pair("ebpf-lab-never-a", "ebpf-lab-never-b", address_a=a, address_b=b):
            pass
    assert not netns.exists("ebpf-lab-never-a") and not netns.exists("ebpf-lab-never-b")


def test_veth_pair_is_private_and_deleted(no_leaks):
    pid = os.getpid()
    a, b = f"ebpf-lab-vtest-a-{pid}", f"ebpf-lab-vtest-b-{pid}"
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    with netns.veth_pair(a, b) as pair:
        assert (pair.ip_a, pair.ip_b, pair.prefix_len) == ("198.18.0.1", "198.18.0.2", 30)
        inside = subprocess.run(
            ["ip", "-n", a, "-o", "link"], capture_output=True, text=True
        ).stdout
        assert pair.dev_a in inside
        # the host's own list of links did not change
        assert subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.count(
            "veth-a"
        ) == host_links.count("veth-a")
        ipv6 = netns.run_in_netns(
            a, lambda: open("/proc/sys/net/ipv6/conf/all/disable_ipv6").read().strip()
        )
        assert ipv6 == "1"
    assert not netns.exists(a) and not netns.exists(b)


def test_exported():
    from ebpf_lab.show.plots import plot_firewall

    assert ebpf_lab.xdp_firewall is xdp_firewall
    assert ebpf_lab.plot_firewall is plot_firewall
