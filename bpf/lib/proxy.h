/* SPDX-License-Identifier: Apache-2.0 */
/* Handing a packet to the node's L7 proxy (bpf_sk_assign; works only at TC ingress). */
#pragma once

#include "maps.h"
#include "packet.h"

/* Hands a packet to the node's L7 proxy: to the proxy's socket for this tuple if it has one (a redirected client
 * connection, or a reply on the proxy's upstream connection), else to its listener on 127.0.0.1:proxy_port (when
 * non-zero), which then accepts with the original destination as its local address (bpf_sk_assign, TPROXY-like).
 * The mark routes the packet to the local stack. No socket = -1: the caller refuses the flow (fail closed). */
static __always_inline int to_proxy(struct __sk_buff *skb, const struct pkt *p, __u16 proxy_port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	t.ipv4.saddr = p->saddr;
	t.ipv4.daddr = p->daddr;
	t.ipv4.sport = bpf_htons(p->sport);
	t.ipv4.dport = bpf_htons(p->dport);
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk && sk->state == BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		sk = 0;
	}
	/* A new connection on the 4-tuple of one the proxy closed first meets its TIME_WAIT socket. The listener cannot
	 * take it (the kernel refuses a request socket whose tuple a TIME_WAIT socket still holds), but the TIME_WAIT
	 * code can: for a valid new SYN it looks up a listener for the original destination and retires the TIME_WAIT
	 * socket. proxy_lookup (sk_lookup) answers that lookup with the proxy's listener for the tuples listed here. */
	if (sk && sk->state == BPF_TCP_TIME_WAIT && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		struct proxy_tw_key k = {
			.client = p->saddr,
			.original = p->daddr,
			.client_port = bpf_htons(p->sport),
			.original_port = bpf_htons(p->dport),
		};
		__u8 one = 1;
		bpf_map_update_elem(&trellis_proxy_tw, &k, &one, BPF_ANY);
	}
	if (!sk) {
		if (!proxy_port)
			return -1;
		__builtin_memset(&t, 0, sizeof(t));
		t.ipv4.daddr = bpf_htonl(0x7f000001); /* 127.0.0.1 */
		t.ipv4.dport = proxy_port;
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return -1;
	}
	long err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err)
		return -1;
	skb->mark = (skb->mark & ~MARK_MAGIC_MASK) | MARK_MAGIC_TO_PROXY;
	return 0;
}
