// SPDX-License-Identifier: Apache-2.0
/* TC ingress on the node's own network devices: the per-packet load balancer for traffic that does not come
 * from a local socket (NodePort from outside the node). A packet to node address:NodePort is DNATed to a
 * backend chosen once per flow (random, or Maglev consistent hashing over the 5-tuple) and then routed to
 * the pod like any other packet, so the pod's to_container program applies policy to the real client.
 * The reply is translated back by from_container (bpf/lxc.c). Everything else passes untouched: this is the
 * host's own traffic, which Trellis does not police. */
#define __TRELLIS_MAPS__
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/packet.h"
#include "lib/events.h"
#include "lib/lb.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
	struct pkt p = {};
	if (parse_packet(skb, &p))
		return TC_ACT_OK;
	if (p.proto != IPPROTO_TCP_ && p.proto != IPPROTO_UDP_)
		return TC_ACT_OK;

	struct lb4_frontend_key fk = { .address = p.daddr, .port = bpf_htons(p.dport), .proto = p.proto };
	struct lb4_frontend *fe = bpf_map_lookup_elem(&trellis_lb4_frontends, &fk);
	if (!fe || !(fe->flags & LB4_F_EXTERNAL))
		return TC_ACT_OK;

	struct lb4_nat_key fwd_key = {
		.saddr = p.saddr,
		.daddr = p.daddr,
		.sport = bpf_htons(p.sport),
		.dport = bpf_htons(p.dport),
		.proto = p.proto,
		.dir = LB4_NAT_FORWARD,
	};
	struct lb4_backend be;
	struct lb4_nat *fwd = bpf_map_lookup_elem(&trellis_lb4_nat, &fwd_key);
	int syn = p.proto == IPPROTO_TCP_ && (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	int closing = (p.tcp_flags & (TCP_FIN | TCP_RST)) != 0;
	if (fwd && !(syn && fwd->closing)) {
		/* An existing flow keeps its backend, even one that left the service since (terminating). */
		be.address = fwd->address;
		be.port = fwd->port;
		if (closing)
			fwd->closing = 1;
	} else {
		if (lb4_select(&p, fe, &be)) {
			/* No backend: the packet goes on to the node's own stack untranslated, where nothing listens
			 * on a NodePort, so the client is refused at once (TCP RST, ICMP port unreachable). */
			counter_inc(COUNTER_LB_NO_BACKEND);
			emit_flow_lb(skb, &p, 0, 0, IDENTITY_HOST, VERDICT_DROPPED, REASON_NO_SERVICE_BACKEND, DIR_INGRESS, 0, 0,
				     fe->id);
			return TC_ACT_OK;
		}
		struct lb4_nat f = { .address = be.address, .port = be.port, .closing = closing, .frontend_id = fe->id };
		struct lb4_nat_key rev_key = {
			.saddr = be.address,
			.daddr = p.saddr,
			.sport = be.port,
			.dport = bpf_htons(p.sport),
			.proto = p.proto,
			.dir = LB4_NAT_REVERSE,
		};
		struct lb4_nat r = { .address = p.daddr, .port = bpf_htons(p.dport), .frontend_id = fe->id, .ifindex = skb->ifindex };
		/* Reverse first: the reply can never arrive before its translation is known. */
		if (bpf_map_update_elem(&trellis_lb4_nat, &rev_key, &r, BPF_ANY) ||
		    bpf_map_update_elem(&trellis_lb4_nat, &fwd_key, &f, BPF_ANY)) {
			counter_inc(COUNTER_DROPPED);
			emit_flow_lb(skb, &p, 0, 0, IDENTITY_HOST, VERDICT_DROPPED, REASON_CT_MAP_FULL, DIR_INGRESS, 0, 0, fe->id);
			return TC_ACT_SHOT;
		}
	}
	if (lb4_rewrite(skb, &p, 1, p.daddr, be.address, bpf_htons(p.dport), be.port)) {
		counter_inc(COUNTER_DROPPED);
		emit_flow_lb(skb, &p, 0, 0, IDENTITY_HOST, VERDICT_DROPPED, REASON_INVALID_PACKET, DIR_INGRESS, 0, 0, fe->id);
		return TC_ACT_SHOT;
	}
	counter_inc(COUNTER_LB_NAT);
	return TC_ACT_OK;
}
