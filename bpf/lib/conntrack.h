/* SPDX-License-Identifier: Apache-2.0 */
/* Connection tracking: replies of an allowed flow pass without a policy lookup. */
#pragma once

#include "maps.h"
#include "packet.h"

enum ct_result { CT_NEW = 0, CT_ESTABLISHED = 1, CT_REPLY = 2 };

static __always_inline __u64 ct_lifetime(const struct pkt *p, const struct ct_entry *e)
{
	if (p->proto != IPPROTO_TCP_)
		return CT_LIFETIME_NONTCP;
	if (e->tx_closing && e->rx_closing)
		return CT_LIFETIME_CLOSE;
	if (p->tcp_flags & TCP_RST)
		return CT_LIFETIME_CLOSE;
	if (!e->seen_reply)
		return CT_LIFETIME_SYN;
	return CT_LIFETIME_TCP;
}

static __always_inline void ct_fill_key(struct ct_key *k, const struct pkt *p, __u8 dir)
{
	k->saddr = p->saddr;
	k->daddr = p->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->dir = dir;
	k->pad = 0;
}

static __always_inline void ct_fill_reverse_key(struct ct_key *k, const struct pkt *p, __u8 dir)
{
	k->saddr = p->daddr;
	k->daddr = p->saddr;
	k->sport = p->dport;
	k->dport = p->sport;
	k->proto = p->proto;
	k->dir = dir == DIR_INGRESS ? DIR_EGRESS : DIR_INGRESS;
	k->pad = 0;
}

/* The deadline moves only when it grew by more than this or shrank (a state change): writing it on every packet
 * would bounce the entry's cache line between the CPUs of both ends. */
#define CT_EXPIRY_SLACK_NS 1000000000ULL

static __always_inline void ct_touch(struct ct_entry *e, __u64 now, const struct pkt *p)
{
	__u64 deadline = now + ct_lifetime(p, e);
	if (deadline < e->expires_ns || deadline - e->expires_ns > CT_EXPIRY_SLACK_NS)
		e->expires_ns = deadline;
}

/* Looks the packet up; on a hit updates counters, closing state and expiry. */
static __always_inline enum ct_result ct_lookup(const struct pkt *p, __u8 dir, struct ct_entry **out)
{
	struct ct_key k;
	struct ct_entry *e;
	__u64 now = bpf_ktime_get_ns();
	int closing = (p->tcp_flags & (TCP_FIN | TCP_RST)) != 0;

	if (!p->icmp_reply) {
		ct_fill_key(&k, p, dir);
		e = bpf_map_lookup_elem(&trellis_ct, &k);
		if (e) {
			__sync_fetch_and_add(&e->packets, 1);
			__sync_fetch_and_add(&e->bytes, p->len);
			if (closing)
				e->tx_closing = 1;
			ct_touch(e, now, p);
			*out = e;
			return CT_ESTABLISHED;
		}
	}
	ct_fill_reverse_key(&k, p, dir);
	e = bpf_map_lookup_elem(&trellis_ct, &k);
	if (e) {
		if (!e->seen_reply)
			e->seen_reply = 1;
		if (closing)
			e->rx_closing = 1;
		ct_touch(e, now, p);
		*out = e;
		return CT_REPLY;
	}
	*out = 0;
	return CT_NEW;
}

/* Returns 0, or REASON_CT_MAP_FULL when the entry could not be stored. */
static __always_inline int ct_create(const struct pkt *p, __u8 dir, __u32 src_identity, __u32 policy_id, __u8 lb_nat,
				     __u8 from_proxy, __u32 policy_gen, __u32 policy_flags)
{
	struct ct_key k;
	struct ct_entry e = {};

	ct_fill_key(&k, p, dir);
	e.packets = 1;
	e.bytes = p->len;
	e.src_identity = src_identity;
	e.policy_id = policy_id;
	e.lb_nat = lb_nat;
	e.from_proxy = from_proxy;
	e.policy_gen = policy_gen;
	e.policy_flags = policy_flags;
	e.tx_closing = (p->tcp_flags & (TCP_FIN | TCP_RST)) != 0;
	e.expires_ns = bpf_ktime_get_ns() + ct_lifetime(p, &e);
	if (bpf_map_update_elem(&trellis_ct, &k, &e, BPF_ANY))
		return REASON_CT_MAP_FULL;
	return 0;
}
