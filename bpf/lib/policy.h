/* SPDX-License-Identifier: Apache-2.0 */
/* Policy lookup in the endpoint's own map, most specific key first. */
#pragma once

#include "maps.h"

static __always_inline struct policy_value *policy_try(void *inner, __u32 identity, __u16 dport, __u8 proto, __u8 dir)
{
	struct policy_key k = { .identity = identity, .dport = dport, .proto = proto, .dir = dir };
	return bpf_map_lookup_elem(inner, &k);
}

/* Returns the matching entry or NULL (no rule allows the flow). */
static __always_inline struct policy_value *policy_lookup(__u32 ep_id, __u32 identity, __u16 dport, __u8 proto, __u8 dir)
{
	void *inner = bpf_map_lookup_elem(&trellis_policy, &ep_id);
	struct policy_value *v;

	if (!inner)
		return 0;
	/* ICMP carries no port: rules name it by protocol only. */
	if (proto == IPPROTO_ICMP_)
		dport = 0;
	if (dport) {
		v = policy_try(inner, identity, dport, proto, dir);
		if (v)
			return v;
	}
	v = policy_try(inner, identity, 0, proto, dir);
	if (v)
		return v;
	v = policy_try(inner, identity, 0, 0, dir);
	if (v)
		return v;
	if (dport) {
		v = policy_try(inner, 0, dport, proto, dir);
		if (v)
			return v;
	}
	v = policy_try(inner, 0, 0, proto, dir);
	if (v)
		return v;
	return policy_try(inner, 0, 0, 0, dir);
}
