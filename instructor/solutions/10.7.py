"""Solution to exercise 10.7: what ebpf_lab.tc_egress(pings=3, datagrams=4, drop="udp") shows.

Check with: ebpf_lab.check("10.7", answer) (the check runs that call and compares)

tc counts each packet before it returns its verdict, so the 4 datagrams are counted at veth-a
and dropped there (TC_ACT_SHOT); they never reach the cable, so XDP at veth-b sees none and B's
socket receives none. sendto() still returns normally: a UDP socket is not told about a drop
below it unless IP_RECVERR is set. The 3 echo requests pass both hooks and B answers them; the
replies travel B -> A, where neither program looks.
"""

answer = {
    "icmp": {"tc_egress": 3, "tc_dropped": 0, "xdp_ingress": 3, "delivered": 3},
    "udp": {"tc_egress": 4, "tc_dropped": 4, "xdp_ingress": 0, "delivered": 0},
    "sendto_raises": False,
}
