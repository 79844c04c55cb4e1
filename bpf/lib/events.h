/* SPDX-License-Identifier: Apache-2.0 */
/* Flow events to the agent through the ring buffer, and datapath counters. */
#pragma once

#include "maps.h"
#include "packet.h"

static __always_inline void counter_inc(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&trellis_counters, &idx);
	if (c)
		*c += 1; /* per-CPU: no atomics needed */
}

/* Whether flow events are on (trellis config --flow-events); counters count either way. */
static __always_inline int events_enabled(void)
{
	__u32 zero = 0;
	struct node_config *cfg = bpf_map_lookup_elem(&trellis_config, &zero);
	return !cfg || !(cfg->flags & CONFIG_F_NO_FLOW_EVENTS);
}

static __always_inline __u64 events_submit_flags(void)
{
	return bpf_ringbuf_query(&trellis_events, BPF_RB_AVAIL_DATA) > EVENTS_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void emit_flow_lb(struct __sk_buff *skb, const struct pkt *p, __u32 ep_id, __u32 src_id,
					 __u32 dst_id, __u8 verdict, __u8 reason, __u8 dir, __u8 is_reply, __u32 policy_id,
					 __u32 frontend_id)
{
	if (!events_enabled())
		return;
	struct flow_event *e = bpf_ringbuf_reserve(&trellis_events, sizeof(*e), 0);
	if (!e) {
		/* Never silent: the agent reports this counter as lost events. */
		counter_inc(COUNTER_EVENTS_LOST);
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->ep_id = ep_id;
	e->ifindex = p->ifindex;
	e->src_identity = src_id;
	e->dst_identity = dst_id;
	e->saddr = p->saddr;
	e->daddr = p->daddr;
	e->sport = p->sport;
	e->dport = p->dport;
	e->proto = p->proto;
	e->verdict = verdict;
	e->reason = reason;
	e->dir = dir;
	e->tcp_flags = p->tcp_flags;
	e->is_reply = is_reply;
	e->pad[0] = 0;
	e->pad[1] = 0;
	e->policy_id = policy_id;
	e->pkt_len = p->len;
	e->frontend_id = frontend_id;
	e->cgroup_id = 0;
	bpf_ringbuf_submit(e, events_submit_flags());
}

static __always_inline void emit_flow(struct __sk_buff *skb, const struct pkt *p, __u32 ep_id, __u32 src_id,
				      __u32 dst_id, __u8 verdict, __u8 reason, __u8 dir, __u8 is_reply, __u32 policy_id)
{
	emit_flow_lb(skb, p, ep_id, src_id, dst_id, verdict, reason, dir, is_reply, policy_id, 0);
}
