// SPDX-License-Identifier: Apache-2.0
/* Socket-level service load balancing (kube-proxy replacement), attached to the cgroup that holds the
 * node's pods. A connect() to a service address is rewritten once, at connect time, to a backend, so
 * the connection's packets carry the backend address from the start: no per-packet NAT, and the TC
 * programs apply policy to the backend's identity. getpeername() and UDP replies are translated back
 * so the application keeps seeing the service address. */
#define __TRELLIS_MAPS__
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/drop_reasons.h"
#include "lib/events.h"
#include "lib/policy.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SYS_REJECT 0
#define SYS_PROCEED 1

#define AF_INET_ 2
#define AF_INET6_ 10

/* A socket event: the client is named by its cgroup (the agent knows each pod's), since an unbound socket
 * has no source address yet. TRANSLATED carries the backend chosen; DROPPED the service address dialled. */
static __always_inline void report(struct bpf_sock_addr *ctx, __u32 addr, __u16 port, __u32 frontend_id, __u8 verdict,
				   __u8 reason)
{
	if (!events_enabled())
		return;
	struct flow_event *e = bpf_ringbuf_reserve(&trellis_events, sizeof(*e), 0);
	if (!e) {
		counter_inc(COUNTER_EVENTS_LOST);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->daddr = addr;
	e->dport = bpf_ntohs(port);
	e->proto = ctx->protocol;
	e->verdict = verdict;
	e->reason = reason;
	e->dir = DIR_EGRESS;
	e->frontend_id = frontend_id;
	e->cgroup_id = bpf_get_current_cgroup_id();
	bpf_ringbuf_submit(e, events_submit_flags());
}

static __always_inline void report_no_backend(struct bpf_sock_addr *ctx, __u32 frontend_id)
{
	report(ctx, ctx->user_ip4, (__u16)ctx->user_port, frontend_id, VERDICT_DROPPED, REASON_NO_SERVICE_BACKEND);
}

/* Picks a backend for a service address; returns SYS_REJECT when the service has none. */
static __always_inline int translate(struct bpf_sock_addr *ctx)
{
	struct lb4_frontend_key fk = {
		.address = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
	};
	struct lb4_frontend *fe = bpf_map_lookup_elem(&trellis_lb4_frontends, &fk);
	if (!fe)
		return SYS_PROCEED; /* not a service address */
	if (fe->count == 0) {
		counter_inc(COUNTER_LB_NO_BACKEND);
		report_no_backend(ctx, fe->id);
		return SYS_REJECT; /* connect() fails at once (EPERM) instead of timing out */
	}
	struct lb4_backend_key bk = { .frontend_id = fe->id, .slot = bpf_get_prandom_u32() % fe->count };
	struct lb4_affinity_key ak = {};
	struct lb4_affinity *aff = 0;
	__u64 now = bpf_ktime_get_ns();
	if (fe->affinity_timeout_s) {
		ak.netns_cookie = bpf_get_netns_cookie(ctx);
		ak.frontend_id = fe->id;
		aff = bpf_map_lookup_elem(&trellis_lb4_affinity, &ak);
		if (aff && aff->slot < fe->count && now - aff->last_used_ns < (__u64)fe->affinity_timeout_s * 1000000000ULL)
			bk.slot = aff->slot;
		else
			aff = 0;
	}
	struct lb4_backend *be = bpf_map_lookup_elem(&trellis_lb4_backends, &bk);
	if (!be) {
		counter_inc(COUNTER_LB_NO_BACKEND);
		report_no_backend(ctx, fe->id);
		return SYS_REJECT;
	}
	if (fe->affinity_timeout_s) {
		/* Keep the client on this backend (refreshing its timeout). If the remembered slot now holds
		 * another pod (the backend set changed), the client simply stays with that pod from now on. */
		struct lb4_affinity a = {
			.last_used_ns = now,
			.slot = bk.slot,
			.backend_address = be->address,
			.backend_port = be->port,
		};
		bpf_map_update_elem(&trellis_lb4_affinity, &ak, &a, BPF_ANY);
	}
	struct lb4_revnat rn = {
		.frontend_address = ctx->user_ip4,
		.frontend_port = (__u16)ctx->user_port,
		.backend_address = be->address,
		.backend_port = be->port,
	};
	struct lb4_revnat *old = bpf_sk_storage_get(&trellis_lb4_sockets, ctx->sk, 0, 0);
	/* One event per connection, not per datagram: an unconnected UDP socket sending to the same backend
	 * again is not news. */
	if (!old || old->frontend_address != rn.frontend_address || old->frontend_port != rn.frontend_port ||
	    old->backend_address != rn.backend_address || old->backend_port != rn.backend_port) {
		struct lb4_revnat *slot = old ? old : bpf_sk_storage_get(&trellis_lb4_sockets, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (slot)
			*slot = rn;
		report(ctx, be->address, be->port, fe->id, VERDICT_TRANSLATED, REASON_NONE);
	}
	ctx->user_ip4 = be->address;
	ctx->user_port = be->port;
	counter_inc(COUNTER_LB_TRANSLATED);
	return SYS_PROCEED;
}

/* Shows the service address instead of the backend's, for the socket that dialled it. */
static __always_inline int reverse(struct bpf_sock_addr *ctx)
{
	struct lb4_revnat *rn = bpf_sk_storage_get(&trellis_lb4_sockets, ctx->sk, 0, 0);
	if (rn && rn->backend_address == ctx->user_ip4 && rn->backend_port == (__u16)ctx->user_port) {
		ctx->user_ip4 = rn->frontend_address;
		ctx->user_port = rn->frontend_port;
	}
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	return translate(ctx);
}

SEC("cgroup/sendmsg4")
int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return translate(ctx);
}

SEC("cgroup/recvmsg4")
int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	return reverse(ctx);
}

SEC("cgroup/getpeername4")
int sock4_getpeername(struct bpf_sock_addr *ctx)
{
	return reverse(ctx);
}

/* --- same-node socket acceleration --- */

static __always_inline struct ipcache_value *local_endpoint(__u32 addr)
{
	struct ipcache_key k = { .prefixlen = 32, .addr = addr };
	struct ipcache_value *v = bpf_map_lookup_elem(&trellis_ipcache, &k);
	return v && (v->flags & IPCACHE_F_LOCAL_ENDPOINT) ? v : 0;
}

/* Whether the connection from client to server:port needs the L7 proxy on either side (then it must not be spliced:
 * the proxy is its other end). Other policy verdicts were given by the TC programs on the handshake. */
static __always_inline int needs_proxy(struct ipcache_value *client, struct ipcache_value *server, __u16 port)
{
	__u32 policy_id, flags;
	if (!policy_check(client->ep_id, server->identity, port, IPPROTO_TCP_, DIR_EGRESS, &policy_id, &flags) &&
	    (flags & POLICY_F_REDIRECT))
		return 1;
	if (!policy_check(server->ep_id, client->identity, port, IPPROTO_TCP_, DIR_INGRESS, &policy_id, &flags) &&
	    (flags & POLICY_F_REDIRECT))
		return 1;
	return 0;
}

/* Whether a TCP socket speaks IPv4: an AF_INET socket, or an AF_INET6 one whose both ends are IPv4-mapped
 * (::ffff:a.b.c.d), as a server listening on [::] (iperf3, Go, Java, .NET) accepts IPv4 clients; its packets are IPv4
 * on the wire. For both the kernel keeps the IPv4 addresses in local_ip4/remote_ip4 (skc_rcv_saddr/skc_daddr, which
 * the IPv4 stack sends with; for a mapped socket they equal word 3 of local_ip6/remote_ip6). Reading word 3 instead
 * would not do: clang merges the two loads into one through a computed context offset, which the verifier refuses. */
static __always_inline int speaks_ipv4(struct bpf_sock_ops *skops)
{
	if (skops->family == AF_INET_)
		return 1;
	return skops->family == AF_INET6_ &&
	       !skops->local_ip6[0] && !skops->local_ip6[1] && skops->local_ip6[2] == bpf_htonl(0x0000ffff) &&
	       !skops->remote_ip6[0] && !skops->remote_ip6[1] && skops->remote_ip6[2] == bpf_htonl(0x0000ffff);
}

/* On the node's pod cgroup: an established TCP socket between two pods of this node (both ends local endpoints)
 * whose connection needs no L7 proxy joins trellis_sock_accel, keyed by its IPv4 ends whatever its family, so the
 * client's AF_INET socket and a dual-stack server's AF_INET6 one find each other. The handshake (and later FIN/RST)
 * crossed the TC programs as usual: policy decided it and a flow event reported it. The agent removes a pod's sockets
 * from the map whenever its policy changes, so their data goes back through TC, which checks every packet. */
SEC("sockops")
int sock_accel_ops(struct bpf_sock_ops *skops)
{
	__u32 zero = 0;
	struct node_config *cfg = bpf_map_lookup_elem(&trellis_config, &zero);
	if (!cfg || !(cfg->flags & CONFIG_F_SOCK_ACCEL))
		return 1;
	int active = skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB;
	if (!active && skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (!speaks_ipv4(skops))
		return 1;
	struct ipcache_value *local = local_endpoint(skops->local_ip4);
	if (!local)
		return 1;
	struct ipcache_value *remote = local_endpoint(skops->remote_ip4);
	if (!remote)
		return 1;
	__u16 local_port = (__u16)skops->local_port;       /* host order */
	__u16 remote_port = bpf_ntohs(skops->remote_port >> 16); /* network order in the upper half on little endian */
	if (active ? needs_proxy(local, remote, remote_port) : needs_proxy(remote, local, local_port))
		return 1;
	struct sock_key k = {
		.local = skops->local_ip4,
		.remote = skops->remote_ip4,
		.local_port = bpf_htons(local_port),
		.remote_port = bpf_htons(remote_port),
	};
	bpf_sock_hash_update(skops, &trellis_sock_accel, &k, BPF_NOEXIST);
	return 1;
}

/* Attached to trellis_sock_accel: a message sent on a spliced socket goes straight into its peer's receive queue.
 * No peer in the map (it closed, or the agent took it out after a policy change) = the normal path through TCP/IP
 * and TC. */
SEC("sk_msg")
int sock_accel_msg(struct sk_msg_md *msg)
{
	/* Only sockets that speak IPv4 are in the map (AF_INET, or AF_INET6 with IPv4-mapped ends): remote_ip4/local_ip4
	 * hold their IPv4 addresses whatever the family, the same fields sock_accel_ops keyed them by. */
	struct sock_key peer = {
		.local = msg->remote_ip4,
		.remote = msg->local_ip4,
		.local_port = (__u16)(msg->remote_port >> 16),
		.remote_port = bpf_htons((__u16)msg->local_port),
	};
	/* Without a peer in the map the helper sets no target and says SK_DROP; passing then takes the normal path
	 * (returning its SK_DROP would discard the data). */
	bpf_msg_redirect_hash(msg, &trellis_sock_accel, &peer, BPF_F_INGRESS);
	return SK_PASS;
}
