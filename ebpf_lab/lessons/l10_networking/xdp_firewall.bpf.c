// xdp_firewall.bpf.c: count packets per protocol as they arrive, and drop one kind on command.
//
// XDP ("eXpress Data Path") runs a program on every packet an interface receives, before the
// kernel's network stack has looked at it. The program sees the raw bytes of the frame
// (ctx->data .. ctx->data_end) and returns a verdict: XDP_PASS hands the packet on to the stack,
// XDP_DROP throws it away on the spot.
//
// The lab attaches this program to one end of a veth pair inside a throw-away network namespace
// (in generic/SKB mode: it runs on the kernel's socket buffer, which every driver supports).
//
// Headers are parsed from the packet bytes with the uapi structs (struct ethhdr, iphdr, tcphdr,
// udphdr): these describe wire formats, which never change, so they are right whatever kernel
// the header files came from. The verifier insists that every read is checked against
// data_end first: a program that might read past the end of the packet does not load.
//
// User space steers the program through one map, `config`: which phase of the demonstration
// this is, and which protocols to drop. It flips that while the program runs; the very next
// packet sees the change.

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>   // struct ethhdr, ETH_P_IP
#include <uapi/linux/in.h>         // IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP
#include <uapi/linux/ip.h>         // struct iphdr
#include <uapi/linux/tcp.h>        // struct tcphdr
#include <uapi/linux/udp.h>        // struct udphdr

#define MAX_PHASES 8

// Protocol classes: also the bit numbers of config.drop_mask.
enum proto_class { CLASS_ICMP = 0, CLASS_TCP = 1, CLASS_UDP = 2, CLASS_OTHER = 3 };

enum verdict_kind { PASSED = 0, DROPPED = 1 };

struct config_t {
    u32 phase;                  // which phase packets are counted under (0 .. MAX_PHASES-1)
    u32 drop_mask;              // bit (1 << class) set: drop that class
};
BPF_ARRAY(config, struct config_t, 1);

struct key_t {
    u32 phase;
    u32 proto;                  // enum proto_class
    u32 verdict;                // enum verdict_kind
};

struct counts_t {
    u64 packets;
    u64 payload_bytes;          // bytes after the L4 header (ICMP/TCP/UDP), from the IP header
    u64 syns;                   // TCP segments with SYN set and ACK clear: connection attempts
};
BPF_HASH(counts, struct key_t, struct counts_t, 256);

int xdp_firewall(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    u32 proto = CLASS_OTHER;
    u64 payload = 0;
    u64 syn = 0;

    // Ethernet: 14 bytes. Anything that is not IPv4 (ARP, IPv6, VLAN tags...) is "other".
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        goto verdict;
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        goto verdict;

    // IPv4: ihl is the header length in 4-byte words (5 .. 15, options make it longer).
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        goto verdict;
    u32 ip_len = ip->ihl * 4;
    if (ip_len < sizeof(*ip))
        goto verdict;
    u32 total = bpf_ntohs(ip->tot_len);         // IP header + everything after it
    void *l4 = (void *)ip + ip_len;
    // A fragment other than the first carries no ICMP/TCP/UDP header: its bytes after the IP
    // header are the middle of the payload. Count its packet, read no header from it.
    int later_fragment = (ip->frag_off & bpf_htons(0x1FFF)) != 0;

    if (ip->protocol == IPPROTO_ICMP) {
        proto = CLASS_ICMP;
        // 8 bytes of ICMP header (type, code, checksum, id, sequence), then the payload
        if (!later_fragment && total >= ip_len + 8)
            payload = total - ip_len - 8;
    } else if (ip->protocol == IPPROTO_TCP) {
        proto = CLASS_TCP;
        struct tcphdr *tcp = l4;
        if (later_fragment)
            goto verdict;
        if ((void *)(tcp + 1) > data_end)
            goto verdict;
        u32 tcp_len = tcp->doff * 4;            // TCP header length, options included
        if (total >= ip_len + tcp_len)
            payload = total - ip_len - tcp_len;
        syn = tcp->syn && !tcp->ack;
    } else if (ip->protocol == IPPROTO_UDP) {
        proto = CLASS_UDP;
        struct udphdr *udp = l4;
        if (later_fragment)
            goto verdict;
        if ((void *)(udp + 1) > data_end)
            goto verdict;
        u32 udp_len = bpf_ntohs(udp->len);      // UDP header (8 bytes) + payload
        if (udp_len >= sizeof(*udp))
            payload = udp_len - sizeof(*udp);
    }

verdict:;
    int zero = 0;
    struct config_t *cfg = config.lookup(&zero);
    u32 phase = 0, drop = 0;
    if (cfg) {
        phase = cfg->phase;
        drop = (cfg->drop_mask >> proto) & 1;
    }
    if (phase >= MAX_PHASES)
        phase = MAX_PHASES - 1;

    struct key_t key = {.phase = phase, .proto = proto, .verdict = drop ? DROPPED : PASSED};
    struct counts_t empty = {};
    struct counts_t *c = counts.lookup_or_try_init(&key, &empty);
    if (c) {
        __sync_fetch_and_add(&c->packets, 1);
        __sync_fetch_and_add(&c->payload_bytes, payload);
        __sync_fetch_and_add(&c->syns, syn);
    }
    return drop ? XDP_DROP : XDP_PASS;
}
