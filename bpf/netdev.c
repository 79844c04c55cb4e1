// SPDX-License-Identifier: Apache-2.0
/* TC ingress on the node's own network devices: the per-packet load balancer for traffic that does not come
 * from a local socket (NodePort from outside the node). A packet to node address:NodePort is DNATed to a
 * backend chosen once per flow (random, or Maglev consistent hashing over the 5-tuple) and then routed to
 * the pod like any other packet, so the pod's to_container program applies policy to the real client.
 * The reply is translated back by from_container (bpf/lxc.c). A connection from outside straight to a pod port
 * with ingress HTTP rules is handed to the node's L7 proxy here (this is its only TC ingress hook). Everything
 * else passes untouched: this is the host's own traffic, which Trellis does not police. */
#define __TRELLIS_MAPS__
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/packet.h"
#include "lib/events.h"
#include "lib/lb.h"
#include "lib/policy.h"
#include "lib/proxy.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* A TCP packet from outside to a pod on this node whose ingress rules send this peer and port through the L7
 * proxy: handed to the proxy (TC_ACT_OK) or refused when none listens (TC_ACT_SHOT); -1 = not an L7 flow, go on.
 * Only the destination's policy is asked; to_container still decides every flow that is not redirected. */
static __always_inline int l7_ingress(struct __sk_buff *skb, const struct pkt *p)
{
	struct ipcache_key k = { .prefixlen = 32, .addr = p->daddr };
	struct ipcache_value *dst = bpf_map_lookup_elem(&trellis_ipcache, &k);
	if (!dst || !(dst->flags & IPCACHE_F_L7_INGRESS))
		return -1;
	k.addr = p->saddr;
	struct ipcache_value *src = bpf_map_lookup_elem(&trellis_ipcache, &k);
	__u32 src_id = src ? src->identity : IDENTITY_WORLD;
	__u32 policy_id = 0, flags = 0;
	if (policy_check(dst->ep_id, src_id, p->dport, IPPROTO_TCP_, DIR_INGRESS, &policy_id, &flags) ||
	    !(flags & POLICY_F_REDIRECT))
		return -1;
	__u32 zero = 0;
	struct node_config *cfg = bpf_map_lookup_elem(&trellis_config, &zero);
	if (to_proxy(skb, p, cfg ? cfg->proxy_port : 0)) {
		if (flags & POLICY_F_VISIBILITY)
			return -1; /* visibility only: without a proxy, unobserved */
		counter_inc(COUNTER_DROPPED);
		emit_flow_lb(skb, p, dst->ep_id, src_id, dst->identity, VERDICT_DROPPED, REASON_L7_DENIED, DIR_INGRESS, 0, policy_id, 0);
		return TC_ACT_SHOT;
	}
	counter_inc(COUNTER_FORWARDED);
	if ((p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) /* no conntrack here: the SYN stands for the new flow */
		emit_flow_lb(skb, p, dst->ep_id, src_id, dst->identity, VERDICT_REDIRECTED, 0, DIR_INGRESS, 0, policy_id, 0);
	return TC_ACT_OK;
}

SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
	struct pkt p = {};
	if (parse_packet(skb, &p))
		return TC_ACT_OK;
	if (p.proto != IPPROTO_TCP_ && p.proto != IPPROTO_UDP_)
		return TC_ACT_OK;
	if (p.proto == IPPROTO_TCP_) {
		int ret = l7_ingress(skb, &p);
		if (ret >= 0)
			return ret;
	}

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
