"""Solution to exercise 10.5: the TCP numbers of an xdp_firewall() frame a test can compare.

Check with: ebpf_lab.check("10.5", answer)
"""


def tcp_exact(df):
    plan = df.attrs["plan"]
    tcp = df[df.protocol == "tcp"]
    return bool(
        (tcp.syns == plan["connections"]).all()
        and (tcp.payload_bytes == plan["connections"] * plan["payload"]).all()
        and (tcp.dropped == 0).all()
    )


answer = tcp_exact
