"""Lesson 10 (networking): checkable exercises."""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from ebpf_lab.classroom.checks import Right, Wrong, exercise, prediction
from ebpf_lab.lessons.l10_networking.xdp_firewall import FRAME

PLAN = {
    "pings": 5,
    "connections": 3,
    "datagrams": 3,
    "payload": 1000,
    "ping_payload": 56,
    "datagram_payload": 64,
}


def recorded_firewall(tcp_packets: int = 18, **tcp: int) -> pd.DataFrame:
    """A frame of :func:`ebpf_lab.xdp_firewall`'s schema (drop="icmp") for :data:`PLAN`.

    ``tcp_packets`` sets the TCP packet count (which varies between honest runs); keywords
    ``syns``, ``payload_bytes``, ``dropped`` override the TCP row of phase "on" (a wrong run).
    """
    p = PLAN
    rows = []
    for phase, dropping in (("off", "nothing"), ("on", "icmp")):
        icmp_dropped = p["pings"] if phase == "on" else 0
        tcp_row = {
            "syns": p["connections"],
            "payload_bytes": p["connections"] * p["payload"],
            "dropped": 0,
        }
        if phase == "on":
            tcp_row.update(tcp)
        rows += [
            (
                phase,
                dropping,
                "icmp",
                p["pings"],
                p["pings"] - icmp_dropped,
                icmp_dropped,
                p["pings"] * p["ping_payload"],
                0,
            ),
            (
                phase,
                dropping,
                "tcp",
                tcp_packets,
                tcp_packets - tcp_row["dropped"],
                tcp_row["dropped"],
                tcp_row["payload_bytes"],
                tcp_row["syns"],
            ),
            (
                phase,
                dropping,
                "udp",
                p["datagrams"],
                p["datagrams"],
                0,
                p["datagrams"] * p["datagram_payload"],
                0,
            ),
            (phase, dropping, "other", 0, 0, 0, 0, 0),
        ]
    df = FRAME.frame([dict(zip(FRAME.columns, row)) for row in rows])
    df.attrs.update({"drop": "icmp", "plan": dict(p)})
    return df


#: frames from honest runs: only the TCP packet count differs (retransmits, ACK timing)
HONEST = [recorded_firewall(18), recorded_firewall(16), recorded_firewall(23)]
#: frames where something that CAN be compared exactly is off, and what a test should notice
BROKEN = [
    (recorded_firewall(18, syns=2), "a lost connection (2 SYNs for 3 connections)"),
    (recorded_firewall(18, syns=4), "a retried connection attempt (4 SYNs for 3 connections)"),
    (recorded_firewall(18, payload_bytes=2000), "missing payload (2000 of 3000 bytes)"),
    (recorded_firewall(18, dropped=1), "a TCP packet dropped by an ICMP-only rule"),
]


def _as_test(answer: Any) -> Callable[[pd.DataFrame], Any]:
    if not callable(answer):
        raise Wrong(
            "give a function that takes the frame and returns True when the exact TCP numbers "
            "match df.attrs['plan'], e.g. def tcp_exact(df): ..."
        )
    return answer


@exercise(
    "10.5",
    title="Which TCP numbers a test can compare exactly",
    asks="a function tcp_exact(df) -> bool for an xdp_firewall() frame: True when every TCP "
    "number that can be exact matches df.attrs['plan'] in both phases, False otherwise",
)
def tcp_exact_numbers(answer: Any) -> Right:
    test = _as_test(answer)
    for df in HONEST:
        try:
            verdict = test(df.copy())
        except Exception as exc:
            raise Wrong(f"your function raised {type(exc).__name__}: {exc}") from None
        if not bool(verdict):
            n = int(df.loc[df.protocol == "tcp", "packets"].iloc[0])
            raise Wrong(
                f"your function rejected an honest run with {n} TCP packets: the packet count "
                "depends on ACK timing and retransmits, so a test cannot demand an exact number"
            )
    for df, what in BROKEN:
        try:
            verdict = test(df.copy())
        except Exception as exc:
            raise Wrong(f"your function raised {type(exc).__name__}: {exc}") from None
        if bool(verdict):
            raise Wrong(
                f"your function accepted a run with {what}: one SYN per connection, the bytes "
                "each connection sent, and no TCP drop while only ICMP is dropped are exact"
            )
    return Right(
        "right: SYNs (one per connection), payload bytes (what the clients sent) and TCP drops "
        "(none under an ICMP rule) are exact; the packet count is not"
    )


#: the run exercise 10.7 asks about: ``ebpf_lab.tc_egress(pings=3, datagrams=4, drop="udp")``
EGRESS_RUN = {"pings": 3, "datagrams": 4, "drop": "udp"}
#: the numbers a prediction gives per protocol (columns of the run's frame)
EGRESS_COLUMNS = ("tc_egress", "tc_dropped", "xdp_ingress", "delivered")


def egress_plan_truth(pings: int, datagrams: int) -> dict[str, dict[str, int]]:
    """What a ``tc_egress(pings, datagrams, drop="udp")`` run must show, from its plan: tc counts
    every packet before its verdict and drops the UDP ones; XDP sees and B answers the rest."""
    return {
        "icmp": {"tc_egress": pings, "tc_dropped": 0, "xdp_ingress": pings, "delivered": pings},
        "udp": {"tc_egress": datagrams, "tc_dropped": datagrams, "xdp_ingress": 0, "delivered": 0},
    }


#: a question to think about for each number a prediction gets wrong
_EGRESS_HINTS = {
    ("udp", "tc_egress"): "does the tc program count a packet before or after it decides to "
    "drop it?",
    ("udp", "tc_dropped"): "which protocol does drop='udp' put in the drop mask?",
    ("udp", "xdp_ingress"): "can a packet dropped before it leaves veth-a arrive at veth-b?",
    ("udp", "delivered"): "what can B's socket receive when nothing arrives at veth-b?",
    ("icmp", "tc_egress"): "do the echo requests leave through veth-a too?",
    ("icmp", "tc_dropped"): "is ICMP in the drop mask?",
    ("icmp", "xdp_ingress"): "what happens at veth-b to the packets tc let through?",
    ("icmp", "delivered"): "B's kernel answers every echo request that arrives: do the replies "
    "pass either program?",
}


@exercise(
    "10.7",
    title="Dropped on the way out: what does the other end see?",
    asks="a dict predicting ebpf_lab.tc_egress(pings=3, datagrams=4, drop='udp') before the "
    "check runs it: {'icmp': {'tc_egress': n, 'tc_dropped': n, 'xdp_ingress': n, "
    "'delivered': n}, 'udp': {...the same four...}, 'sendto_raises': True or False}",
    needs_kernel=True,
)
def egress_drop_prediction(answer: Any) -> Right:
    if not isinstance(answer, dict) or set(answer) != {"icmp", "udp", "sendto_raises"}:
        raise Wrong(
            "give a dict with keys 'icmp', 'udp' (each a dict of tc_egress, tc_dropped, "
            "xdp_ingress, delivered) and 'sendto_raises' (True or False)"
        )
    rows = {
        protocol: prediction(answer[protocol], EGRESS_COLUMNS, f"{protocol} packets at each point")
        for protocol in ("icmp", "udp")
    }
    if not isinstance(answer["sendto_raises"], bool):
        raise Wrong("answer['sendto_raises'] must be True or False")
    from ebpf_lab.lessons.l10_networking.tc_egress import tc_egress

    df = tc_egress(**EGRESS_RUN, live=False).set_index("protocol")
    measured = {
        protocol: {column: int(df.loc[protocol, column]) for column in EGRESS_COLUMNS}
        for protocol in ("icmp", "udp")
    }
    raised = int(df.loc["udp", "sent"]) != EGRESS_RUN["datagrams"]
    if measured != egress_plan_truth(EGRESS_RUN["pings"], EGRESS_RUN["datagrams"]) or raised:
        raise Wrong(
            f"the run did not show what its plan implies ({measured}, UDP sent "
            f"{int(df.loc['udp', 'sent'])} of {EGRESS_RUN['datagrams']}): a packet was lost on "
            "the way. Run the check again",
            measured=measured,
        )
    for protocol, row in rows.items():
        for column in EGRESS_COLUMNS:
            if row[column] != measured[protocol][column]:
                raise Wrong(
                    f"{protocol} {column}: you said {row[column]}, the run shows "
                    f"{measured[protocol][column]}. Think again: "
                    f"{_EGRESS_HINTS[(protocol, column)]}",
                    measured=measured,
                )
    if answer["sendto_raises"]:
        raise Wrong(
            "sendto does not raise: a UDP socket is not told that a packet was dropped after it "
            "left the socket (the kernel only reports it with IP_RECVERR set), and UDP promises "
            "no delivery anyway; the workload sent all its datagrams",
            measured=measured,
        )
    return Right(
        f"right, as the run shows: tc counts before its verdict, so the "
        f"{EGRESS_RUN['datagrams']} datagrams are counted and dropped at veth-a; XDP at veth-b "
        "never sees them and B receives nothing, while sendto reported success; the "
        f"{EGRESS_RUN['pings']} pings pass both hooks and are answered",
        measured=measured,
        frame=df,
    )
