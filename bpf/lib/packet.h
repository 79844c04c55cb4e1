/* SPDX-License-Identifier: Apache-2.0 */
/* Header parsing for the TC programs: Ethernet + IPv4 + TCP/UDP/SCTP/ICMP. */
#pragma once

#include "common.h"
#include "drop_reasons.h"

struct pkt {
	__u32 saddr; /* network byte order */
	__u32 daddr;
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_reply; /* ICMP echo reply: the tuple is stored reversed (see ct_key) */
	__u8 icmp_type;  /* what ICMP policy rules match on */
	__u32 len;
	__u32 l4_off; /* offset of the L4 header from the start of the frame */
	__u32 ifindex; /* the host-side veth of the endpoint the packet is judged for (flow events); skb->ifindex
			* unless a pod's packet is delivered straight to another pod of the node */
};

#define PARSE_PASS (-1) /* not IP at all (ARP): let it through untouched */

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* Returns 0 when p is filled, PARSE_PASS for ARP, or a REASON_* to drop with. */
static __always_inline int parse_packet(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	p->ifindex = skb->ifindex;
	if ((void *)(eth + 1) > data_end)
		return REASON_INVALID_PACKET;
	__u16 proto = bpf_ntohs(eth->h_proto);
	if (proto == ETH_P_ARP)
		return PARSE_PASS;
	if (proto != ETH_P_IP)
		return REASON_UNSUPPORTED_L3;

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return REASON_INVALID_PACKET;
	__u32 ihl = ip->ihl;
	if (ihl < 5 || ip->version != 4)
		return REASON_INVALID_PACKET;
	if (bpf_ntohs(ip->frag_off) & 0x1FFF)
		return REASON_FRAGMENT;

	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->len = skb->len;
	p->sport = 0;
	p->dport = 0;
	p->tcp_flags = 0;
	p->icmp_reply = 0;
	p->icmp_type = 0;

	void *l4 = (void *)ip + ihl * 4;
	p->l4_off = ETH_HLEN + ihl * 4;
	switch (ip->protocol) {
	case IPPROTO_TCP_: {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return REASON_INVALID_PACKET;
		p->sport = bpf_ntohs(tcp->source);
		p->dport = bpf_ntohs(tcp->dest);
		p->tcp_flags = ((__u8 *)tcp)[13];
		break;
	}
	case IPPROTO_UDP_: {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return REASON_INVALID_PACKET;
		p->sport = bpf_ntohs(udp->source);
		p->dport = bpf_ntohs(udp->dest);
		break;
	}
	case IPPROTO_SCTP_: {
		/* SCTP common header starts with source and destination ports. */
		__u16 *ports = l4;
		if ((void *)(ports + 2) > data_end)
			return REASON_INVALID_PACKET;
		p->sport = bpf_ntohs(ports[0]);
		p->dport = bpf_ntohs(ports[1]);
		break;
	}
	case IPPROTO_ICMP_: {
		struct icmphdr *icmp = l4;
		if ((void *)(icmp + 1) > data_end)
			return REASON_INVALID_PACKET;
		p->icmp_type = icmp->type;
		/* Echo request: (id, 0); echo reply: (0, id), so a reply's tuple is the
		 * request's reversed and conntrack finds it. Other types: (type, code). */
		if (icmp->type == ICMP_ECHO_) {
			p->sport = bpf_ntohs(icmp->un.echo.id);
		} else if (icmp->type == ICMP_ECHOREPLY_) {
			p->dport = bpf_ntohs(icmp->un.echo.id);
			p->icmp_reply = 1;
		} else {
			p->sport = icmp->type;
			p->dport = icmp->code;
		}
		break;
	}
	default:
		break;
	}
	return 0;
}
