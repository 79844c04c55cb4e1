/* SPDX-License-Identifier: Apache-2.0 */
/* Per-packet service translation for the TC load balancer: backend selection (random or Maglev),
 * NAT state, and the header rewrites with their checksum updates. */
#pragma once

#include "maps.h"
#include "packet.h"

#define IP_TTL_OFF (ETH_HLEN + 8)
#define IP_CSUM_OFF (ETH_HLEN + 10)
#define IP_SADDR_OFF (ETH_HLEN + 12)
#define IP_DADDR_OFF (ETH_HLEN + 16)

static __always_inline __u32 l4_csum_off(const struct pkt *p)
{
	return p->l4_off + (p->proto == IPPROTO_TCP_ ? 16 : 6);
}

/* Rewrites the destination (dnat) or the source (!dnat) address and port of a TCP/UDP packet.
 * Ports are in network byte order. Returns 0 or a negative errno from the helpers. */
static __always_inline int lb4_rewrite(struct __sk_buff *skb, const struct pkt *p, int dnat, __u32 old_addr,
				       __u32 new_addr, __u16 old_port, __u16 new_port)
{
	__u32 addr_off = dnat ? IP_DADDR_OFF : IP_SADDR_OFF;
	__u32 port_off = p->l4_off + (dnat ? 2 : 0);
	__u32 csum_off = l4_csum_off(p);
	/* A UDP checksum of 0 means "none" and must stay so. */
	__u64 l4_flags = p->proto == IPPROTO_UDP_ ? BPF_F_MARK_MANGLED_0 : 0;
	int ret;

	ret = bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, l4_flags | BPF_F_PSEUDO_HDR | 4);
	if (ret)
		return ret;
	ret = bpf_l4_csum_replace(skb, csum_off, old_port, new_port, l4_flags | 2);
	if (ret)
		return ret;
	ret = bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, 4);
	if (ret)
		return ret;
	ret = bpf_skb_store_bytes(skb, addr_off, &new_addr, 4, 0);
	if (ret)
		return ret;
	return bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0);
}

/* A 5-tuple hash for Maglev (murmur3's finalizer over the mixed words): the same flow always lands on the
 * same table entry, on every node. */
static __always_inline __u32 lb4_hash(const struct pkt *p)
{
	__u32 h = p->saddr * 0x9E3779B1u;
	h ^= p->daddr + 0x7F4A7C15u + (h << 6) + (h >> 2);
	h ^= (((__u32)p->sport << 16) | p->dport) + 0x7F4A7C15u + (h << 6) + (h >> 2);
	h ^= p->proto + 0x7F4A7C15u + (h << 6) + (h >> 2);
	h ^= h >> 16;
	h *= 0x85EBCA6Bu;
	h ^= h >> 13;
	h *= 0xC2B2AE35u;
	h ^= h >> 16;
	return h;
}

/* Picks a backend for a new flow to the frontend; returns 0 and fills *out, or -1 when there is none. */
static __always_inline int lb4_select(const struct pkt *p, const struct lb4_frontend *fe, struct lb4_backend *out)
{
	struct lb4_backend *be;
	if (fe->count == 0)
		return -1;
	if (fe->flags & LB4_F_MAGLEV) {
		void *table = bpf_map_lookup_elem(&trellis_lb4_maglev, &fe->id);
		if (!table)
			return -1;
		__u32 idx = lb4_hash(p) % LB4_MAGLEV_M;
		be = bpf_map_lookup_elem(table, &idx);
	} else {
		struct lb4_backend_key bk = { .frontend_id = fe->id, .slot = bpf_get_prandom_u32() % fe->count };
		be = bpf_map_lookup_elem(&trellis_lb4_backends, &bk);
	}
	if (!be || be->address == 0)
		return -1;
	*out = *be;
	return 0;
}
