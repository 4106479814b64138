"""Lesson 10: tc egress beside XDP ingress: count the same packets leaving one end of the cable
and arriving at the other, exactly.

The run asks the core for two probes on one private cable (:class:`ebpf_lab.core.netns.LabCable`:
two network namespaces joined by a veth pair, IPv6 off, static neighbour entries, so the cable
carries only what this lesson sends):

* ``tc_egress`` (``BPF_PROG_TYPE_SCHED_CLS``) on ``veth-a``'s ``clsact`` qdisc, direction
  *egress*: every packet namespace A sends through its end of the cable;
* ``xdp_ingress`` (XDP, generic/SKB mode) on ``veth-b``: every packet that arrives at B's end.

Namespace A then sends ``pings`` ICMP echo requests and ``datagrams`` UDP datagrams to B. The
answers travel the other way (out of ``veth-b``, into ``veth-a``), where neither program looks,
so with nothing dropped both programs count the same packets and bytes. With ``drop=`` the tc
program drops one protocol on its way out (``TC_ACT_SHOT``): XDP never sees those packets.

The core attaches both, and on every exit path (errors, Stop and interrupts included) removes
them and deletes the namespaces; the lesson only sends traffic and reads the counters.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import pandas as pd

from ebpf_lab.core import netns
from ebpf_lab.core.attach import Probe, tc_link, xdp_link
from ebpf_lab.core.guards import check_choice, check_duration, check_positive_int, require_bcc
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Alternative, Collector, RunContext, bounded_run, stop_requested
from ebpf_lab.lessons.l10_networking.xdp_firewall import (
    DATAGRAM_PAYLOAD,
    PING_PAYLOAD,
    _check_number,
    send_pings,
)
from ebpf_lab.show.frames import Schema, require_columns
from ebpf_lab.show.plots import PROJECTOR_STYLE

#: protocol classes the programs count, in the order of their ``enum proto_class``
PROTOCOLS = ("icmp", "tcp", "udp", "other")
#: what ``drop=`` may name (the traffic has ICMP and UDP)
DROP_CHOICES = ("icmp", "udp")
#: the frame :func:`tc_egress` returns: one row per protocol class
FRAME = Schema(
    protocol=pd.CategoricalDtype(list(PROTOCOLS), ordered=True),
    sent="int64",
    tc_egress="int64",
    tc_dropped="int64",
    xdp_ingress="int64",
    delivered="int64",
    egress_bytes="int64",
    ingress_bytes="int64",
)
#: frame columns
COLUMNS = FRAME.columns
#: bytes of one frame on the cable: Ethernet (14) + IPv4 (20) + ICMP or UDP header (8) + payload
PING_FRAME_BYTES = 14 + 20 + 8 + PING_PAYLOAD
DATAGRAM_FRAME_BYTES = 14 + 20 + 8 + DATAGRAM_PAYLOAD
#: limits of one run
MAX_PINGS = 1000
MAX_DATAGRAMS = 1000
#: seconds between echo requests
PING_INTERVAL = 0.01
#: how long to wait after the traffic, so the last packets are counted
SETTLE = 0.05


class _EgressCounter(Collector):
    """Sends the known traffic over the cable the core built, then reads both programs' counts."""

    def __init__(self, pings: int, datagrams: int, drop: str | None, timeout: float) -> None:
        self.pings = pings
        self.datagrams = datagrams
        self.drop = drop
        self.timeout = timeout
        self.pair: netns.VethPair | None = None
        self.sent = {"icmp": 0, "udp": 0}
        self.delivered = {"icmp": 0, "udp": 0}

    def start(self, ctx: RunContext) -> None:
        """Both programs are attached: set the drop mask, note where they are."""
        tc, xdp = tc_link(ctx.bpf, "egress"), xdp_link(ctx.bpf)
        self.pair = tc.pair
        table = ctx.table("egress_drop")
        mask = 0 if self.drop is None else 1 << PROTOCOLS.index(self.drop)
        table[table.Key(0)] = table.Leaf(mask)
        ctx.attrs.update({**xdp.attrs(), **tc.attrs()})

    def traffic(self) -> None:
        """The known workload: UDP datagrams to a receiver in B, then echo requests to B."""
        if self.pair is None:  # replaying a recording: no cable was built, nothing to send
            return
        self._udp()
        self._ping()
        time.sleep(SETTLE)

    def _udp(self) -> None:
        assert self.pair is not None
        rx = netns.socket_in(self.pair.ns_b, socket.AF_INET, socket.SOCK_DGRAM)
        tx = netns.socket_in(self.pair.ns_a, socket.AF_INET, socket.SOCK_DGRAM)
        with rx, tx:
            rx.bind((self.pair.ip_b, 0))
            rx.settimeout(self.timeout)
            port = rx.getsockname()[1]
            for i in range(self.datagrams):
                if stop_requested():
                    break
                data = bytes([i % 256]) * DATAGRAM_PAYLOAD
                tx.sendto(data, (self.pair.ip_b, port))  # no error even when tc drops it
                self.sent["udp"] += 1
                try:
                    self.delivered["udp"] += rx.recv(65536) == data
                except OSError:
                    pass  # not arrived within the timeout

    def _ping(self) -> None:
        assert self.pair is not None
        ident = (os.getpid() + 0x7C) & 0xFFFF
        sent_at, rtt = send_pings(self.pair, self.pings, PING_INTERVAL, self.timeout, ident)
        self.sent["icmp"] = len(sent_at)
        self.delivered["icmp"] = sum(r <= self.timeout for r in rtt.values())

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        counts: dict[tuple[int, int, int], tuple[int, int]] = {}
        for k, v in ctx.table("counts").items():
            counts[(k.hook, k.proto, k.verdict)] = (v.packets, v.bytes)
        rows = []
        for p, protocol in enumerate(PROTOCOLS):
            tc_pass, tc_drop, xdp = (
                counts.get(k, (0, 0)) for k in ((0, p, 0), (0, p, 1), (1, p, 0))
            )
            rows.append(
                {
                    "protocol": protocol,
                    "sent": self.sent.get(protocol, 0),
                    "tc_egress": tc_pass[0] + tc_drop[0],
                    "tc_dropped": tc_drop[0],
                    "xdp_ingress": xdp[0],
                    "delivered": self.delivered.get(protocol, 0),
                    "egress_bytes": tc_pass[1] + tc_drop[1],
                    "ingress_bytes": xdp[1],
                }
            )
        return FRAME.frame(rows)


def tc_egress(
    pings: int = 5,
    datagrams: int = 5,
    duration: float = 0.5,
    *,
    drop: str | None = None,
    timeout: float = 0.5,
    live: bool | None = None,
) -> pd.DataFrame:
    """Count packets leaving ``veth-a`` with a tc egress program, and the same packets arriving
    at ``veth-b`` with XDP.

    The run builds the lab's private cable (namespace A 198.18.0.1 ``veth-a`` <-> ``veth-b``
    198.18.0.2 namespace B), attaches ``tc_egress.bpf.c``'s ``tc_egress`` to ``veth-a``'s
    ``clsact`` qdisc in the egress direction and its ``xdp_ingress`` to ``veth-b`` (generic
    mode), then sends from A to B: ``datagrams`` UDP datagrams of 64 bytes (B's socket receives
    them) and ``pings`` ICMP echo requests with 56 bytes of payload (B's kernel answers them).
    Afterwards both programs are removed and the namespaces deleted, also after an error, Stop
    or an interrupt.

    Args:
        pings: echo requests to send (1 .. 1000).
        datagrams: UDP datagrams to send (1 .. 1000).
        duration: the least time to stay attached, in seconds; the run lasts until the traffic
            is done.
        drop: ``None`` (default), ``"icmp"`` or ``"udp"``: the protocol the tc program drops on
            its way out (``TC_ACT_SHOT``).
        timeout: how long a datagram or echo request waits for its arrival or answer (0 < x <= 10).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per protocol class (``icmp``, ``tcp``, ``udp``, ``other``): ``sent`` (by the
        workload), ``tc_egress`` (packets the tc program saw leave ``veth-a``), ``tc_dropped``
        (of those, dropped by it), ``xdp_ingress`` (packets XDP saw arrive at ``veth-b``),
        ``delivered`` (UDP: datagrams B's socket received; ICMP: echo requests answered),
        ``egress_bytes`` and ``ingress_bytes`` (whole frames, Ethernet header included).
        With nothing dropped, ``tc_egress == xdp_ingress == sent`` for ICMP and UDP and the byte
        columns are equal; ``tcp`` and ``other`` are 0. ``df.attrs`` has ``netns``,
        ``addresses``, ``tc_device``, ``tc_direction``, ``tc_prog_id``, ``xdp_device``,
        ``xdp_prog_id``, ``drop`` and ``plan``.

    Raises:
        ValueError: bad arguments (before anything is created or loaded).
        PermissionError: not root.
        UnsupportedFeature: tc or XDP could not be attached.
    """
    check_positive_int(pings, "pings", MAX_PINGS)
    check_positive_int(datagrams, "datagrams", MAX_DATAGRAMS)
    if pings is None or datagrams is None:
        raise ValueError(
            f"pings and datagrams must be whole numbers >= 1, got pings={pings!r}, "
            f"datagrams={datagrams!r}"
        )
    if drop is not None:
        check_choice(drop, "drop", DROP_CHOICES)
    duration = check_duration(duration)
    timeout = _check_number(timeout, "timeout", 0, 10)
    require_bcc()
    collector = _EgressCounter(pings, datagrams, drop, timeout)
    cable = netns.LabCable()
    return bounded_run(
        name="tc_egress",
        source=program_source("tc_egress"),
        alternatives=[
            Alternative(
                "tc egress on veth-a, xdp (generic/SKB mode) on veth-b, in lab namespaces",
                [
                    Probe("tc", "veth-a:egress", "tc_egress", cable=cable),
                    Probe("xdp", "veth-b", "xdp_ingress", cable=cable),
                ],
            )
        ],
        collector=collector,
        duration=duration,
        workload=collector.traffic,
        live=live,
        attrs={
            "drop": drop,
            "plan": {
                "pings": pings,
                "datagrams": datagrams,
                "ping_frame_bytes": PING_FRAME_BYTES,
                "datagram_frame_bytes": DATAGRAM_FRAME_BYTES,
            },
        },
    )


def plot_tc_egress(df: pd.DataFrame, ax: Any = None) -> Any:
    """Bars of a :func:`tc_egress` frame: per protocol, packets leaving ``veth-a`` (tc egress,
    dropped ones hatched) beside packets arriving at ``veth-b`` (XDP). Returns the Axes."""
    import matplotlib.pyplot as plt

    require_columns(
        df, {"protocol", "tc_egress", "tc_dropped", "xdp_ingress"}, "plot_tc_egress", "a tc_egress"
    )
    rows = df.sort_values("protocol")
    names = [str(p) for p in rows["protocol"]]
    x = range(len(names))
    with plt.rc_context(PROJECTOR_STYLE):
        if ax is None:
            _fig, ax = plt.subplots(figsize=(9, 4.5), layout="constrained")
        left = [i - 0.2 for i in x]
        right = [i + 0.2 for i in x]
        passed = rows["tc_egress"] - rows["tc_dropped"]
        ax.bar(left, passed, width=0.4, color="tab:blue", label="passed tc egress (veth-a)")
        ax.bar(left, rows["tc_dropped"], width=0.4, bottom=passed, color="tab:red",
               hatch="//", label="dropped by tc (TC_ACT_SHOT)")  # fmt: skip
        ax.bar(right, rows["xdp_ingress"], width=0.4, color="tab:green",
               label="arrived at veth-b (XDP)")  # fmt: skip
        for xs, values in ((left, rows["tc_egress"]), (right, rows["xdp_ingress"])):
            for xi, v in zip(xs, values):
                ax.annotate(f"{v}", (xi, v), ha="center", va="bottom")
        ax.set_xticks(list(x), names)
        ax.set_xlabel("protocol")
        ax.set_ylabel("packets")
        top = max(int(rows[["tc_egress", "xdp_ingress"]].to_numpy().max()), 1)
        ax.set_ylim(0, top * 1.25)
        ax.set_title(f"tc egress vs XDP ingress (dropping {df.attrs.get('drop') or 'nothing'})")
        ax.legend(loc="upper right")
        ax.grid(True, axis="y", alpha=0.3)
    return ax
