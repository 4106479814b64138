// tc_egress.bpf.c: count packets as they leave one end of the cable (tc egress) and as they
// arrive at the other end (XDP), per protocol; drop some kinds on the way out on command.
//
// Two programs, two hooks, one map:
//
// * tc_egress runs in the kernel's traffic control layer (BPF_PROG_TYPE_SCHED_CLS), attached
//   to the clsact qdisc of veth-a in the *egress* direction: every packet namespace A sends
//   through veth-a passes through it, after the network stack has built it and before the
//   device transmits it. XDP cannot do this: XDP only sees packets a device receives. Its
//   context is a struct __sk_buff, a view of the kernel's socket buffer with metadata the
//   stack has already filled in (skb->protocol, skb->len, skb->ifindex, skb->mark...). It
//   returns a tc verdict: TC_ACT_OK lets the packet go on, TC_ACT_SHOT drops it.
// * xdp_ingress runs at veth-b, the other end of the cable, on every packet it receives. Its
//   context is a struct xdp_md: only the raw bytes (data .. data_end) and the receiving
//   device; no protocol field, so it parses the Ethernet header itself. It passes everything.
//
// Both count into `counts`, keyed by hook, protocol class and verdict. With nothing dropped,
// every packet namespace A sends leaves veth-a (tc counts it) and arrives at veth-b (XDP
// counts it): the two columns must be equal, packet for packet and byte for byte.

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>    // TC_ACT_OK, TC_ACT_SHOT
#include <uapi/linux/if_ether.h>   // struct ethhdr, ETH_HLEN, ETH_P_IP
#include <uapi/linux/in.h>         // IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP
#include <uapi/linux/ip.h>         // struct iphdr

// Protocol classes: also the bit numbers of the drop mask.
enum proto_class { CLASS_ICMP = 0, CLASS_TCP = 1, CLASS_UDP = 2, CLASS_OTHER = 3 };
enum hook { TC_EGRESS = 0, XDP_INGRESS = 1 };
enum verdict_kind { PASSED = 0, DROPPED = 1 };

// bit (1 << class) set: tc_egress drops that class. User space writes it before the traffic.
BPF_ARRAY(egress_drop, u32, 1);

struct key_t {
    u32 hook;                   // enum hook
    u32 proto;                  // enum proto_class
    u32 verdict;                // enum verdict_kind
};

struct counts_t {
    u64 packets;
    u64 bytes;                  // whole frames, Ethernet header included
};
BPF_HASH(counts, struct key_t, struct counts_t, 64);

static __always_inline u32 classify(u8 ip_protocol)
{
    if (ip_protocol == IPPROTO_ICMP)
        return CLASS_ICMP;
    if (ip_protocol == IPPROTO_TCP)
        return CLASS_TCP;
    if (ip_protocol == IPPROTO_UDP)
        return CLASS_UDP;
    return CLASS_OTHER;
}

static __always_inline void count(u32 hook, u32 proto, u32 verdict, u64 bytes)
{
    struct key_t key = {.hook = hook, .proto = proto, .verdict = verdict};
    struct counts_t empty = {};
    struct counts_t *c = counts.lookup_or_try_init(&key, &empty);
    if (c) {
        __sync_fetch_and_add(&c->packets, 1);
        __sync_fetch_and_add(&c->bytes, bytes);
    }
}

int tc_egress(struct __sk_buff *skb)
{
    u32 proto = CLASS_OTHER;
    // The stack has already said what the packet is: skb->protocol (network byte order).
    if (skb->protocol == bpf_htons(ETH_P_IP)) {
        u8 ip_protocol;
        // The IPv4 header starts after the 14-byte Ethernet header; its protocol byte is at
        // offset 9. bpf_skb_load_bytes copies it out, wherever the socket buffer keeps it.
        if (bpf_skb_load_bytes(skb, ETH_HLEN + 9, &ip_protocol, 1) == 0)
            proto = classify(ip_protocol);
    }
    int zero = 0;
    u32 *mask = egress_drop.lookup(&zero);
    u32 drop = mask ? (*mask >> proto) & 1 : 0;
    count(TC_EGRESS, proto, drop ? DROPPED : PASSED, skb->len);
    return drop ? TC_ACT_SHOT : TC_ACT_OK;
}

int xdp_ingress(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    u32 proto = CLASS_OTHER;

    // No metadata here: read the Ethernet header, then the IPv4 header, checking each read
    // against data_end first (the verifier insists).
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) <= data_end && eth->h_proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) <= data_end)
            proto = classify(ip->protocol);
    }
    count(XDP_INGRESS, proto, PASSED, data_end - data);
    return XDP_PASS;
}
