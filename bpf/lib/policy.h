/* SPDX-License-Identifier: Apache-2.0 */
/* Policy lookup in the endpoint's own map, most specific key first. */
#pragma once

#include "maps.h"

/* Decides a packet in the original direction. Returns 0 (allowed), REASON_POLICY_DENIED (no rule
 * allows it) or REASON_POLICY_DENY_RULE; *policy_id names the rule's policy where there is one, *flags are the
 * allowing entry's POLICY_F_* (e.g. POLICY_F_REDIRECT). */
static __always_inline int policy_check(__u32 ep_id, __u32 identity, __u16 port, __u8 proto, __u8 dir, __u32 *policy_id,
					__u32 *flags)
{
	void *inner = bpf_map_lookup_elem(&trellis_policy, &ep_id);
	struct policy_value *peer, *any;

	*policy_id = 0;
	*flags = 0;
	if (!inner)
		return REASON_POLICY_DENIED;
	struct policy_key k = {
		.prefixlen = POLICY_KEY_FULL_PREFIX,
		.identity = identity,
		.dir = dir,
		.proto = proto,
		.dport = bpf_htons(port),
	};
	peer = bpf_map_lookup_elem(inner, &k);
	k.identity = 0;
	any = bpf_map_lookup_elem(inner, &k);
	if (peer && (peer->flags & POLICY_F_DENY)) {
		*policy_id = peer->policy_id;
		return REASON_POLICY_DENY_RULE;
	}
	if (any && (any->flags & POLICY_F_DENY)) {
		*policy_id = any->policy_id;
		return REASON_POLICY_DENY_RULE;
	}
	if (peer) {
		*policy_id = peer->policy_id;
		*flags = peer->flags;
		return 0;
	}
	if (any) {
		*policy_id = any->policy_id;
		*flags = any->flags;
		return 0;
	}
	return REASON_POLICY_DENIED;
}
