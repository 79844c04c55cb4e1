// SPDX-License-Identifier: Apache-2.0
/* TC programs on the host side of every pod veth.
 *   tc ingress of the host veth = packets leaving the pod  -> from_container (pod egress)
 *   tc egress  of the host veth = packets entering the pod -> to_container   (pod ingress)
 * Each looks the endpoint up by ifindex, the peer's identity in the ipcache,
 * tracks the connection and, for packets in the original direction, asks the
 * endpoint's policy map. New flows and drops are reported through the ring buffer. */
#define __TRELLIS_MAPS__
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/packet.h"
#include "lib/conntrack.h"
#include "lib/policy.h"
#include "lib/events.h"
#include "lib/lb.h"
#include "lib/proxy.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

static __always_inline struct ipcache_value *ipcache_lookup(__u32 addr)
{
	struct ipcache_key k = { .prefixlen = 32, .addr = addr };
	return bpf_map_lookup_elem(&trellis_ipcache, &k);
}

static __always_inline __u32 ipcache_identity(__u32 addr)
{
	struct ipcache_value *v = ipcache_lookup(addr);
	return v ? v->identity : IDENTITY_WORLD;
}

static __always_inline int drop_policy(struct __sk_buff *skb, const struct pkt *p, __u32 ep_id, __u32 src_id,
				       __u32 dst_id, __u8 reason, __u8 dir, __u32 policy_id, __u32 frontend_id)
{
	counter_inc(COUNTER_DROPPED);
	emit_flow_lb(skb, p, ep_id, src_id, dst_id, VERDICT_DROPPED, reason, dir, 0, policy_id, frontend_id);
	return TC_ACT_SHOT;
}

static __always_inline int drop(struct __sk_buff *skb, const struct pkt *p, __u32 ep_id, __u32 src_id,
				__u32 dst_id, __u8 reason, __u8 dir)
{
	return drop_policy(skb, p, ep_id, src_id, dst_id, reason, dir, 0, 0);
}

/* The frontend a new inbound flow was DNATed from by bpf/netdev.c, or 0. Once per flow, not per packet. */
static __always_inline __u32 nat_frontend(const struct pkt *p)
{
	if (p->proto != IPPROTO_TCP_ && p->proto != IPPROTO_UDP_)
		return 0;
	struct lb4_nat_key k = {
		.saddr = p->daddr,
		.daddr = p->saddr,
		.sport = bpf_htons(p->dport),
		.dport = bpf_htons(p->sport),
		.proto = p->proto,
		.dir = LB4_NAT_REVERSE,
	};
	struct lb4_nat *n = bpf_map_lookup_elem(&trellis_lb4_nat, &k);
	return n ? n->frontend_id : 0;
}

/* A reply of a DNATed flow leaves the pod: its source becomes the address and port the client dialled. */
static __always_inline int reverse_nat(struct __sk_buff *skb, const struct pkt *p)
{
	struct lb4_nat_key k = {
		.saddr = p->saddr,
		.daddr = p->daddr,
		.sport = bpf_htons(p->sport),
		.dport = bpf_htons(p->dport),
		.proto = p->proto,
		.dir = LB4_NAT_REVERSE,
	};
	struct lb4_nat *n = bpf_map_lookup_elem(&trellis_lb4_nat, &k);
	if (!n)
		return TC_ACT_OK; /* evicted: the client sees the backend's address and resets; nothing better to do */
	if (lb4_rewrite(skb, p, 0, p->saddr, n->address, bpf_htons(p->sport), n->port))
		return TC_ACT_SHOT;
	counter_inc(COUNTER_LB_NAT);
	/* The reply now comes from a node address: the stack would drop it as a martian (a local source arriving
	 * from outside), so hand it straight to the device the request came in on; the kernel resolves the next
	 * hop (bpf_redirect_neigh), as Cilium's NodePort path does. */
	if (!n->ifindex)
		return TC_ACT_OK;
	return bpf_redirect_neigh(n->ifindex, 0, 0, 0);
}

static __always_inline int audit_mode(const struct endpoint_info *ep)
{
	__u32 zero = 0;
	struct node_config *cfg;

	if (ep->flags & EP_F_AUDIT)
		return 1;
	cfg = bpf_map_lookup_elem(&trellis_config, &zero);
	return cfg && (cfg->flags & CONFIG_F_AUDIT);
}

/* The identities of both ends (and the destination's ipcache entry at egress). Looked up only where needed: not for
 * replies nor for packets whose flow has a valid cached verdict. */
struct peers {
	__u32 src_id, dst_id, remote_id;
	struct ipcache_value *dst;
};

static __always_inline void resolve_peers(const struct pkt *p, const struct endpoint_info *ep, __u8 dir, struct peers *r)
{
	if (dir == DIR_EGRESS) {
		r->src_id = ep->identity;
		r->dst = ipcache_lookup(p->daddr);
		r->dst_id = r->dst ? r->dst->identity : IDENTITY_WORLD;
		r->remote_id = r->dst_id;
	} else {
		r->src_id = ipcache_identity(p->saddr);
		r->dst_id = ep->identity;
		r->remote_id = r->src_id;
	}
}

static __always_inline __u32 current_policy_gen(void)
{
	__u32 zero = 0;
	__u32 *gen = bpf_map_lookup_elem(&trellis_policy_gen, &zero);
	return gen ? *gen : 0;
}

/* Judges a parsed packet for endpoint ep in direction dir and returns the TC verdict. *plain says the packet passes
 * and needs nothing more from the node's stack (not handed to the L7 proxy, no reverse NAT): it may then be
 * delivered straight to a destination pod on the node. */
static __always_inline int handle_ep(struct __sk_buff *skb, struct pkt *p, struct endpoint_info *ep, __u8 dir, int *plain)
{
	*plain = 0;
	if (dir == DIR_EGRESS && p->saddr != ep->ipv4)
		return drop(skb, p, ep->ep_id, IDENTITY_UNKNOWN, ipcache_identity(p->daddr), REASON_INVALID_SOURCE, dir);

	struct peers id = {};
	struct ct_entry *ct;
	enum ct_result ctr = ct_lookup(p, dir, &ct);
	if (ctr == CT_REPLY) {
		if (ct->from_proxy && dir == DIR_EGRESS) {
			/* The server answers the proxy's upstream connection, which is bound to the client's address:
			 * deliver it to the proxy's socket, not to the client. */
			if (to_proxy(skb, p, 0)) {
				resolve_peers(p, ep, dir, &id);
				return drop(skb, p, ep->ep_id, id.src_id, id.dst_id, REASON_L7_DENIED, dir);
			}
			counter_inc(COUNTER_FORWARDED);
			return TC_ACT_OK;
		}
		counter_inc(COUNTER_FORWARDED);
		*plain = !ct->lb_nat || dir != DIR_EGRESS;
		if (ct->lb_nat && dir == DIR_EGRESS)
			return reverse_nat(skb, p);
		return TC_ACT_OK;
	}

	__u32 enforce, has_deny; /* has_deny: deny or redirect entries, looked up even when the direction is not enforced */
	if (dir == DIR_EGRESS) {
		enforce = ep->flags & EP_F_ENFORCE_EGRESS;
		has_deny = ep->flags & (EP_F_DENY_EGRESS | EP_F_REDIRECT_EGRESS);
	} else {
		enforce = ep->flags & EP_F_ENFORCE_INGRESS;
		has_deny = ep->flags & (EP_F_DENY_INGRESS | EP_F_REDIRECT_INGRESS);
	}

	/* Original direction, new or established: policy applies to every packet, so removing a rule cuts flows it
	 * used to allow. An established flow whose allowed verdict was cached under the current generation (nothing
	 * it depends on changed since) reuses it without looking anything up. */
	__u32 gen = current_policy_gen();
	int cached = ctr == CT_ESTABLISHED && gen && ct->policy_gen == gen;
	if (!cached)
		resolve_peers(p, ep, dir, &id);

	/* A new flow the TC load balancer DNATed (NodePort): its replies need their source translated back, and
	 * its flow records name the service. Looked up once per flow, not per packet. */
	__u32 frontend_id = ctr == CT_NEW && dir == DIR_INGRESS ? nat_frontend(p) : 0;

	__u32 policy_id = 0, policy_flags = 0;
	__u8 verdict = VERDICT_FORWARDED;
	int reason = 0;
	if (cached) {
		policy_id = ct->policy_id;
		policy_flags = ct->policy_flags;
	} else if (enforce || has_deny) {
		__u16 port = p->proto == IPPROTO_ICMP_ ? p->icmp_type : p->dport;
		reason = policy_check(ep->ep_id, id.remote_id, port, p->proto, dir, &policy_id, &policy_flags);
		/* Not enforced: only a deny rule drops (the lookup was for deny or L7 redirect entries). */
		if (!enforce && reason == REASON_POLICY_DENIED)
			reason = 0;
		if (reason) {
			if (!audit_mode(ep))
				return drop_policy(skb, p, ep->ep_id, id.src_id, id.dst_id, reason, dir, policy_id, frontend_id);
			/* Audit: the would-be drop passes and is reported once per flow. */
			verdict = VERDICT_AUDIT;
		}
	}

	/* HTTP rules: the connection goes through the node's L7 proxy, for every packet of the original direction
	 * (the stack would otherwise route it to the destination). bpf_sk_assign works only at TC ingress, so a pod
	 * client is redirected here, at its from_container, for its own egress rules and for the ingress rules of a
	 * destination on this node (policy_flags then become the destination's: what the cache keeps). The proxy
	 * checks both sides; its upstream connection (marked) passes the destination's to_container with the normal
	 * L4 check. */
	__u8 from_proxy = 0;
	if (verdict == VERDICT_FORWARDED && p->proto == IPPROTO_TCP_) {
		__u32 redirect = 0;
		if (dir == DIR_EGRESS) {
			if (!cached && !(policy_flags & POLICY_F_REDIRECT) && id.dst && (id.dst->flags & IPCACHE_F_L7_INGRESS)) {
				__u32 dst_policy = 0, dst_flags = 0;
				if (!policy_check(id.dst->ep_id, id.src_id, p->dport, IPPROTO_TCP_, DIR_INGRESS, &dst_policy, &dst_flags) &&
				    (dst_flags & POLICY_F_REDIRECT)) {
					policy_flags = dst_flags;
					policy_id = dst_policy;
				}
			}
			redirect = policy_flags;
		} else if ((skb->mark & MARK_MAGIC_MASK) == MARK_MAGIC_FROM_PROXY) {
			from_proxy = 1;
		} else if ((policy_flags & (POLICY_F_REDIRECT | POLICY_F_VISIBILITY)) == POLICY_F_REDIRECT) {
			/* Not from a pod on this node (the host, or outside): there is no TC ingress hook left to
			 * redirect from, so the flow is refused rather than let through unchecked. */
			if (cached)
				resolve_peers(p, ep, dir, &id);
			return drop_policy(skb, p, ep->ep_id, id.src_id, id.dst_id, REASON_L7_DENIED, dir, policy_id, frontend_id);
		}
		if (redirect & POLICY_F_REDIRECT) {
			__u32 zero = 0;
			struct node_config *cfg = bpf_map_lookup_elem(&trellis_config, &zero);
			if (!to_proxy(skb, p, cfg ? cfg->proxy_port : 0)) {
				verdict = VERDICT_REDIRECTED;
			} else if (!(redirect & POLICY_F_VISIBILITY)) { /* visibility only: without a proxy, unobserved */
				if (cached)
					resolve_peers(p, ep, dir, &id);
				return drop_policy(skb, p, ep->ep_id, id.src_id, id.dst_id, REASON_L7_DENIED, dir, policy_id, frontend_id);
			}
		}
	}

	counter_inc(verdict == VERDICT_AUDIT ? COUNTER_AUDIT : COUNTER_FORWARDED);
	/* Audit verdicts are not cached: they stay checked (and would be reported) until the policy allows them. */
	__u32 cache_gen = verdict == VERDICT_AUDIT ? 0 : gen;
	if (ctr == CT_NEW) {
		/* A full LRU evicts, so a failure here is rare; the packet still passes. */
		ct_create(p, dir, id.src_id, policy_id, frontend_id != 0, from_proxy, cache_gen, policy_flags);
		emit_flow_lb(skb, p, ep->ep_id, id.src_id, id.dst_id, verdict, reason, dir, 0, policy_id, frontend_id);
	} else if (!cached && cache_gen) {
		ct->policy_id = policy_id;
		ct->policy_flags = policy_flags;
		ct->policy_gen = cache_gen;
	}
	*plain = verdict != VERDICT_REDIRECTED;
	return TC_ACT_OK;
}


/* Parses the packet and judges it for the endpoint on this veth. */
static __always_inline int handle(struct __sk_buff *skb, struct pkt *p, __u8 dir, int *plain)
{
	__u32 ifindex = skb->ifindex;
	struct endpoint_info *ep = bpf_map_lookup_elem(&trellis_endpoints, &ifindex);
	int ret = parse_packet(skb, p);

	*plain = 0;
	if (ret == PARSE_PASS)
		return TC_ACT_OK;
	if (!ep) {
		/* A veth with our program but no endpoint: fail closed. */
		return drop(skb, p, 0, 0, 0, REASON_NO_IDENTITY, dir);
	}
	if (ret)
		return drop(skb, p, ep->ep_id, 0, 0, ret, dir);
	return handle_ep(skb, p, ep, dir, plain);
}

/* A pod's packet to another pod of this node, allowed by the sender's egress policy: the destination's ingress
 * policy is applied here too (as its to_container would), and the packet goes straight into the destination pod's
 * interface (bpf_redirect_peer), skipping the node's routing, forwarding and the veth's backlog queue, as Cilium's
 * BPF host routing does. Anything unusual (no MACs, TTL about to expire, L7 proxy) takes the node's stack. */
static __always_inline int deliver_local(struct __sk_buff *skb, struct pkt *p)
{
	__u32 *ifindex = bpf_map_lookup_elem(&trellis_lxc, &p->daddr);
	if (!ifindex)
		return TC_ACT_OK;
	__u32 dst_ifindex = *ifindex;
	struct endpoint_info *dst = bpf_map_lookup_elem(&trellis_endpoints, &dst_ifindex);
	if (!dst || !(dst->flags & EP_F_DIRECT))
		return TC_ACT_OK;
	__u8 ttl;
	if (bpf_skb_load_bytes(skb, IP_TTL_OFF, &ttl, 1) || ttl <= 1)
		return TC_ACT_OK; /* the stack answers with ICMP time exceeded */

	p->ifindex = dst_ifindex;
	int plain;
	int ret = handle_ep(skb, p, dst, DIR_INGRESS, &plain);
	if (ret != TC_ACT_OK || !plain)
		return ret;

	/* Routed: one hop less to live, and the frame now comes from the destination's gateway. */
	__u16 old_ttl = bpf_htons((__u16)ttl << 8), new_ttl = bpf_htons((__u16)(ttl - 1) << 8);
	__u8 next = ttl - 1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ttl, new_ttl, 2) ||
	    bpf_skb_store_bytes(skb, IP_TTL_OFF, &next, 1, 0) ||
	    bpf_skb_store_bytes(skb, 0, dst->mac, 6, 0) || bpf_skb_store_bytes(skb, 6, dst->host_mac, 6, 0))
		return TC_ACT_SHOT;
	return bpf_redirect_peer(dst_ifindex, 0);
}

/* Attached to the node's network namespace (sk_lookup runs in the kernel's listener lookups): a SYN on a tuple the
 * proxy still holds in TIME_WAIT (see to_proxy) gets the proxy's listener instead of "no listener". */
SEC("sk_lookup")
int proxy_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP_ || ctx->family != 2 /* AF_INET */)
		return SK_PASS;
	struct proxy_tw_key k = {
		.client = ctx->remote_ip4,
		.original = ctx->local_ip4,
		.client_port = ctx->remote_port,
		.original_port = bpf_htons(ctx->local_port),
	};
	if (!bpf_map_lookup_elem(&trellis_proxy_tw, &k))
		return SK_PASS;
	bpf_map_delete_elem(&trellis_proxy_tw, &k);
	__u32 zero = 0;
	struct bpf_sock *sk = bpf_map_lookup_elem(&trellis_proxy_sock, &zero);
	if (!sk)
		return SK_PASS;
	bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return SK_PASS;
}

SEC("tc")
int from_container(struct __sk_buff *skb)
{
	struct pkt p = {};
	int plain;
	int ret = handle(skb, &p, DIR_EGRESS, &plain);
	if (ret != TC_ACT_OK || !plain)
		return ret;
	return deliver_local(skb, &p);
}

SEC("tc")
int to_container(struct __sk_buff *skb)
{
	struct pkt p = {};
	int plain;
	return handle(skb, &p, DIR_INGRESS, &plain);
}
