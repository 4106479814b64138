"""Lesson 10: an XDP firewall on a veth pair: count packets per protocol, drop one kind on command.

The lab builds a private two-host network for each run (:func:`ebpf_lab.core.netns.veth_pair`): two
network namespaces joined by a veth pair, addresses from the benchmark range 198.18.0.0/15,
IPv6 off and static neighbour entries, so the only packets on the cable are the ones this lesson
sends. Nothing is routed to or from the host's interfaces.

``xdp_firewall.bpf.c`` is attached in generic (SKB) mode to the *server* end of the cable
(``veth-b`` in namespace B) and sees every packet that arrives there. It counts packets per
protocol class (ICMP, TCP, UDP, other) and verdict, and drops the classes named in a map that user
space flips while it runs. The known workload runs the same traffic twice, once per phase:

* phase ``off``: nothing is dropped;
* phase ``on``: one protocol (``drop="icmp"`` by default) is dropped.

and in each phase, from namespace A to namespace B: ``connections`` TCP connections that each send
``payload`` bytes to an echo server, ``datagrams`` UDP datagrams of 64 bytes to an echo server, and
``pings`` ICMP echo requests with 56 bytes of payload (sent from a raw socket, as ``ping`` does).

The lesson asks the core for an ``xdp`` probe (:mod:`ebpf_lab.core.attach`): the core builds the
cable, attaches the program, and on every exit path (Stop and interrupts included) removes it and
deletes both namespaces. The lesson only sends traffic over the cable and reads the counters.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import struct
import threading
import time
from typing import Any

import pandas as pd

from ebpf_lab.core import netns
from ebpf_lab.core.attach import one_probe, xdp_link
from ebpf_lab.core.guards import check_choice, check_duration, check_positive_int, require_bcc
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Collector, RunContext, bounded_run, stop_requested
from ebpf_lab.show.frames import Schema

#: protocol classes the program counts, in the order of its ``enum proto_class``
PROTOCOLS = ("icmp", "tcp", "udp", "other")
#: what ``drop=`` may name
DROP_CHOICES = ("icmp", "tcp", "udp")
#: the two phases of a run
PHASES = ("off", "on")
_PHASE = pd.CategoricalDtype(list(PHASES), ordered=True)
_PROTOCOL = pd.CategoricalDtype(list(PROTOCOLS), ordered=True)
#: the frame :func:`xdp_firewall` returns: one row per phase and protocol class
FRAME = Schema(
    phase=_PHASE,
    dropping="category",
    protocol=_PROTOCOL,
    packets="int64",
    passed="int64",
    dropped="int64",
    payload_bytes="int64",
    syns="int64",
)
#: frame columns
COLUMNS = FRAME.columns
#: what :func:`firewall_traffic` returns: the workload, per phase and protocol
TRAFFIC = Schema(
    phase=_PHASE,
    protocol=_PROTOCOL,
    unit=None,
    sent="int64",
    answered="int64",
    payload_bytes="int64",
)
#: bytes of payload in each echo request (as ``ping`` sends) and in each UDP datagram
PING_PAYLOAD = 56
DATAGRAM_PAYLOAD = 64
#: limits of one run
MAX_PINGS = 1000
MAX_CONNECTIONS = 200
MAX_DATAGRAMS = 1000
MAX_PAYLOAD = 1_000_000
#: the lab's namespaces are ``<prefix><pid>``, so a killed run's leftovers can be recognised
#: (:data:`ebpf_lab.core.leftovers.NETNS_RE`) and removed at the next run
NETNS_PREFIX_A = netns.LabCable.prefix_a
NETNS_PREFIX_B = netns.LabCable.prefix_b
#: how long to wait after each phase's traffic, so its last TCP ACKs are counted in that phase
SETTLE = 0.05
#: the program's counter map holds phases 0 .. MAX_PHASES-1
_MAX_PHASES = 8
_ICMP_ECHO_REQUEST = 8
_ICMP_ECHO_REPLY = 0


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int) -> bytes:
    payload = bytes(range(PING_PAYLOAD))
    header = struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    csum = _checksum(header + payload)
    return struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, csum, ident, seq) + payload


class _EchoServers:
    """A TCP and a UDP echo server in namespace B, each in a thread, until :meth:`stop`."""

    def __init__(self, pair: netns.VethPair, timeout: float) -> None:
        self.timeout = timeout
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.tcp = netns.socket_in(pair.ns_b, socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.udp = netns.socket_in(pair.ns_b, socket.AF_INET, socket.SOCK_DGRAM)
        except BaseException:
            self.tcp.close()
            raise
        try:
            self.tcp.bind((pair.ip_b, 0))
            self.tcp.listen(16)
            self.tcp.settimeout(0.1)
            self.udp.bind((pair.ip_b, 0))
            self.udp.settimeout(0.1)
        except BaseException:
            self.stop()
            raise
        self.tcp_port = self.tcp.getsockname()[1]
        self.udp_port = self.udp.getsockname()[1]
        for target, name in ((self._serve_tcp, "tcp"), (self._serve_udp, "udp")):
            thread = threading.Thread(target=target, name=f"ebpf-lab-echo-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve_tcp(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _addr = self.tcp.accept()
            except (socket.timeout, OSError):
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(self.timeout)
                chunks = []
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
                conn.sendall(b"".join(chunks))

    def _serve_udp(self) -> None:
        while not self.stopping.is_set():
            try:
                data, addr = self.udp.recvfrom(65536)
            except (socket.timeout, OSError):
                continue
            with contextlib.suppress(OSError):
                self.udp.sendto(data, addr)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(2.0)
        for sock in (self.tcp, self.udp):
            sock.close()


class _Firewall(Collector):
    """Runs the echo servers on the cable the core built, drives the phases, reads the counters."""

    def __init__(
        self,
        drop: str,
        pings: int,
        connections: int,
        datagrams: int,
        payload: int,
        ping_interval: float,
        timeout: float,
        static_neighbours: bool,
    ) -> None:
        self.drop = drop
        self.pings = pings
        self.connections = connections
        self.datagrams = datagrams
        self.payload = payload
        self.ping_interval = ping_interval
        self.timeout = timeout
        self.static_neighbours = static_neighbours
        self.pair: netns.VethPair | None = None
        self.servers: _EchoServers | None = None
        self.ctx: RunContext | None = None
        self.phases_started: list[tuple[int, str, str]] = []  # (index, phase, dropping)
        self.traffic: list[dict[str, Any]] = []
        self.ping_rows: list[dict[str, Any]] = []

    # ------------------------------------------------------------ start / close

    def start(self, ctx: RunContext) -> None:
        """The core has built the cable and attached XDP to B's end: start the echo servers."""
        self.ctx = ctx
        link = xdp_link(ctx.bpf)
        self.pair = link.pair
        self.set_phase(0, 0)
        self.servers = _EchoServers(self.pair, self.timeout)
        ctx.attrs.update({**link.attrs(), "static_neighbours": self.static_neighbours})

    def close(self, ctx: RunContext | None) -> None:
        """Stop the echo servers (the core then removes XDP and deletes the cable)."""
        if self.servers is not None:
            self.servers.stop()

    # ------------------------------------------------------------ the workload

    def set_phase(self, index: int, drop_mask: int) -> None:
        """Tell the program which phase this is and which protocol classes to drop."""
        assert self.ctx is not None
        table = self.ctx.table("config")
        table[table.Key(0)] = table.Leaf(index, drop_mask)

    def run_phases(self) -> None:
        """The known workload: the same traffic once per phase, flipping the map in between."""
        for index, phase in enumerate(PHASES):
            if stop_requested():
                return
            dropping = "nothing" if phase == "off" else self.drop
            mask = 0 if phase == "off" else 1 << PROTOCOLS.index(self.drop)
            self.set_phase(index, mask)
            self.phases_started.append((index, phase, dropping))
            self._tcp(phase)
            self._udp(phase)
            self._ping(phase)
            time.sleep(SETTLE)

    def _record(
        self, phase: str, protocol: str, unit: str, sent: int, answered: int, payload: int
    ) -> None:
        self.traffic.append(
            {
                "phase": phase,
                "protocol": protocol,
                "unit": unit,
                "sent": sent,
                "answered": answered,
                "payload_bytes": payload,
            }
        )

    def _tcp(self, phase: str) -> None:
        assert self.pair is not None and self.servers is not None
        data = bytes(i % 251 for i in range(self.payload))
        attempted = completed = sent_bytes = 0
        for _ in range(self.connections):
            if stop_requested():
                break
            attempted += 1
            sock = netns.socket_in(self.pair.ns_a, socket.AF_INET, socket.SOCK_STREAM)
            with sock:
                sock.settimeout(self.timeout)
                try:
                    sock.connect((self.pair.ip_b, self.servers.tcp_port))
                except OSError:
                    continue  # e.g. timed out: the SYN was dropped
                try:
                    sock.sendall(data)
                    sent_bytes += len(data)
                    sock.shutdown(socket.SHUT_WR)
                    back = bytearray()
                    while chunk := sock.recv(65536):
                        back += chunk
                except OSError:
                    continue
                completed += bytes(back) == data
        self._record(phase, "tcp", "connections", attempted, completed, sent_bytes)

    def _udp(self, phase: str) -> None:
        assert self.pair is not None and self.servers is not None
        sent = answered = 0
        sock = netns.socket_in(self.pair.ns_a, socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.settimeout(self.timeout)
            for i in range(self.datagrams):
                if stop_requested():
                    break
                data = bytes([i % 256]) * DATAGRAM_PAYLOAD
                sock.sendto(data, (self.pair.ip_b, self.servers.udp_port))
                sent += 1
                try:
                    answered += sock.recv(65536) == data
                except OSError:
                    pass
        self._record(phase, "udp", "datagrams", sent, answered, sent * DATAGRAM_PAYLOAD)

    def _ping(self, phase: str) -> None:
        """``ping -c N -i interval -W timeout``: echo requests from a raw socket in namespace A."""
        assert self.pair is not None
        ident = (os.getpid() + len(self.phases_started)) & 0xFFFF
        sent_at, rtt = send_pings(self.pair, self.pings, self.ping_interval, self.timeout, ident)
        wall0 = time.time() - time.monotonic()
        answered = 0
        for seq, t in sorted(sent_at.items()):
            r = rtt.get(seq)
            ok = r is not None and r <= self.timeout
            answered += ok
            self.ping_rows.append(
                {
                    "phase": phase,
                    "seq": seq,
                    "time": pd.Timestamp(round((wall0 + t) * 1e9), unit="ns"),
                    "replied": ok,
                    "rtt_ms": r * 1000 if ok else math.nan,
                }
            )
        sent = len(sent_at)
        self._record(phase, "icmp", "echo requests", sent, answered, sent * PING_PAYLOAD)

    # ------------------------------------------------------------ the frame

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        counts: dict[tuple[int, int, int], tuple[int, int, int]] = {}
        for k, v in ctx.table("counts").items():
            counts[(k.phase, k.proto, k.verdict)] = (v.packets, v.payload_bytes, v.syns)
        rows = []
        for index, phase, dropping in self.phases_started:
            for p, protocol in enumerate(PROTOCOLS):
                passed = counts.get((index, p, 0), (0, 0, 0))
                dropped = counts.get((index, p, 1), (0, 0, 0))
                rows.append(
                    {
                        "phase": phase,
                        "dropping": dropping,
                        "protocol": protocol,
                        "packets": passed[0] + dropped[0],
                        "passed": passed[0],
                        "dropped": dropped[0],
                        "payload_bytes": passed[1] + dropped[1],
                        "syns": passed[2] + dropped[2],
                    }
                )
        started = {index for index, _, _ in self.phases_started}
        ctx.attrs["unexpected_phases"] = sorted({k[0] for k in counts} - started)
        df = FRAME.frame(rows)
        ctx.attrs["traffic"] = list(self.traffic)
        ctx.attrs["pings"] = list(self.ping_rows)
        return df


def send_pings(
    pair: netns.VethPair, count: int, interval: float, timeout: float, ident: int
) -> tuple[dict[int, float], dict[int, float]]:
    """``ping -c count -i interval -W timeout`` from namespace A to B over ``pair``: echo
    requests with id ``ident`` from a raw socket, each replied to within ``timeout`` seconds.

    Stops sending early when the run is stopped. Returns ``(sent_at, rtt)``: by sequence
    number, when each request was sent (``time.monotonic()``) and, for those answered, the
    round trip in seconds.
    """
    sock = netns.socket_in(pair.ns_a, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sent_at: dict[int, float] = {}
    rtt: dict[int, float] = {}
    with sock:
        sock.setblocking(False)
        start = time.monotonic()
        for seq in range(count):
            if stop_requested():
                break
            _wait_replies(sock, ident, sent_at, rtt, start + seq * interval)
            sent_at[seq] = time.monotonic()
            sock.sendto(_echo_request(ident, seq), (pair.ip_b, 0))
        if sent_at:
            last = max(sent_at.values())
            _wait_replies(sock, ident, sent_at, rtt, last + timeout, early=True)
    return sent_at, rtt


def _wait_replies(
    sock: socket.socket,
    ident: int,
    sent_at: dict[int, float],
    rtt: dict[int, float],
    until: float,
    early: bool = False,
) -> None:
    """Collect echo replies (ours: our id, a sequence number we sent) until ``until``
    (``time.monotonic()``); with ``early``, stop as soon as every request has its reply."""
    while True:
        if early and len(rtt) == len(sent_at):
            return
        left = until - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return
        now = time.monotonic()
        try:
            packet = sock.recv(65536)
        except BlockingIOError:
            continue
        ihl = (packet[0] & 0x0F) * 4  # a raw socket hands us the IP header too
        if len(packet) < ihl + 8:
            continue
        kind, _code, _csum, rid, seq = struct.unpack("!BBHHH", packet[ihl : ihl + 8])
        if kind == _ICMP_ECHO_REPLY and rid == ident and seq in sent_at and seq not in rtt:
            rtt[seq] = now - sent_at[seq]


def _check_number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
        raise ValueError(
            f"{name} must be a number of seconds in ({low:g}, {high:g}], got {value!r}"
        )
    return float(value)


def xdp_firewall(
    drop: str = "icmp",
    pings: int = 5,
    connections: int = 3,
    datagrams: int = 3,
    payload: int = 1000,
    duration: float = 0.5,
    *,
    ping_interval: float = 0.1,
    timeout: float = 0.5,
    static_neighbours: bool = True,
    live: bool | None = None,
) -> pd.DataFrame:
    """Count packets per protocol with XDP on a private veth cable, then drop one protocol.

    The run builds two network namespaces joined by a veth pair (198.18.0.1 in A, 198.18.0.2 in B),
    attaches ``xdp_firewall.bpf.c`` in generic (SKB) mode to B's end, and sends the same
    traffic from A to B twice: in phase ``off`` nothing is dropped, in phase ``on`` the program
    drops every ``drop`` packet (user space flips a map between the phases; the program is not
    reloaded). Afterwards XDP is removed and both namespaces are deleted, also after an error,
    Stop or an interrupt.

    Per phase the traffic is: ``connections`` TCP connections to an echo server, each sending
    ``payload`` bytes; ``datagrams`` UDP datagrams of 64 bytes to an echo server; ``pings`` ICMP
    echo requests (56 bytes of payload) sent ``ping_interval`` seconds apart, each waited for up to
    ``timeout`` seconds.

    Args:
        drop: the protocol dropped in phase ``on``: ``"icmp"``, ``"tcp"`` or ``"udp"``.
        pings: echo requests per phase (1 .. 1000).
        connections: TCP connections per phase (1 .. 200).
        datagrams: UDP datagrams per phase (1 .. 1000).
        payload: bytes each TCP connection sends (1 .. 1,000,000).
        duration: the least time to stay attached, in seconds; the run lasts until the
            traffic is done.
        ping_interval: seconds between echo requests (0 < x <= 10).
        timeout: how long a ping, connect or datagram waits for its answer (0 < x <= 10).
        static_neighbours: pre-fill the ARP tables, so no ARP packets cross the cable (with
            False, ARP requests and replies appear as ``other``).
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        One row per phase and protocol class (``icmp``, ``tcp``, ``udp``, ``other``):
        ``phase`` (``off``/``on``), ``dropping`` (what that phase drops), ``protocol``,
        ``packets`` (arrived at B's end of the cable), ``passed``, ``dropped``,
        ``payload_bytes`` (bytes after the ICMP/TCP/UDP header) and ``syns`` (TCP connection
        attempts: SYN without ACK). What the workload did is in ``df.attrs["traffic"]``
        (per phase and protocol: ``sent``, ``answered``, ``payload_bytes``) and
        ``df.attrs["pings"]`` (one record per echo request: ``replied``, ``rtt_ms``); also
        ``netns``, ``addresses``, ``xdp_mode``, ``xdp_prog_id``.

        Exact by construction: ICMP and UDP packets (one packet per echo request or datagram),
        TCP ``syns`` and ``payload_bytes``. TCP ``packets`` are not: how many ACKs a connection
        needs depends on timing (delayed ACKs, segmentation).

    Raises:
        ValueError: bad arguments (before anything is created or loaded).
        PermissionError: not root.
        UnsupportedFeature: XDP could not be attached.
    """
    check_choice(drop, "drop", DROP_CHOICES)
    check_positive_int(pings, "pings", MAX_PINGS)
    check_positive_int(connections, "connections", MAX_CONNECTIONS)
    check_positive_int(datagrams, "datagrams", MAX_DATAGRAMS)
    check_positive_int(payload, "payload", MAX_PAYLOAD)
    if pings is None or connections is None or datagrams is None or payload is None:
        raise ValueError("pings, connections, datagrams and payload must be whole numbers >= 1")
    duration = check_duration(duration)
    ping_interval = _check_number(ping_interval, "ping_interval", 0, 10)
    timeout = _check_number(timeout, "timeout", 0, 10)
    if not isinstance(static_neighbours, bool):
        raise ValueError(f"static_neighbours must be True or False, got {static_neighbours!r}")
    require_bcc()
    collector = _Firewall(
        drop, pings, connections, datagrams, payload, ping_interval, timeout, static_neighbours
    )
    cable = netns.LabCable(static_neighbours=static_neighbours)
    return bounded_run(
        name="xdp_firewall",
        source=program_source("xdp_firewall"),
        alternatives=one_probe(
            "xdp",
            "veth-b",
            "xdp_firewall",
            label="xdp (generic/SKB mode) on a veth in a lab namespace",
            cable=cable,
        ),
        collector=collector,
        duration=duration,
        workload=collector.run_phases,
        cflags=[f"-DMAX_PHASES={_MAX_PHASES}"],
        live=live,
        attrs={
            "drop": drop,
            "plan": {
                "pings": pings,
                "connections": connections,
                "datagrams": datagrams,
                "payload": payload,
                "ping_payload": PING_PAYLOAD,
                "datagram_payload": DATAGRAM_PAYLOAD,
            },
        },
    )


def firewall_traffic(df: pd.DataFrame) -> pd.DataFrame:
    """What the workload of an :func:`xdp_firewall` run did, per phase and protocol, as a frame.

    Columns: ``phase``, ``protocol``, ``unit`` (echo requests, connections, datagrams), ``sent``,
    ``answered`` (replies, completed echoes) and ``payload_bytes`` (what was sent).
    """
    if "traffic" not in df.attrs:
        raise ValueError("firewall_traffic needs the frame returned by xdp_firewall()")
    out = TRAFFIC.frame(df.attrs["traffic"])
    return out.sort_values(["phase", "protocol"]).reset_index(drop=True)
