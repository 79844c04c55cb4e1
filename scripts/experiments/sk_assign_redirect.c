// SPDX-License-Identifier: Apache-2.0
/* Experiment behind docs/l7-proxy.md (not part of the build): a TC ingress program that hands TCP packets to port
 * 9999 to a local socket with bpf_sk_assign — the established one for the tuple, else the listener on
 * 127.0.0.1:15001 — and marks them 0x200 for the local-delivery policy route. Build against the kernel's BTF:
 *   bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h
 *   clang -O2 -g -target bpf -c sk_assign_redirect.c -o ska.o
 * then attach it on the node side of a veth (tc filter add dev V ingress bpf da obj ska.o sec tc) and add
 *   ip rule add fwmark 0x200/0xf00 lookup 2004; ip route add local 0.0.0.0/0 dev lo table 2004 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
char LICENSE[] SEC("license") = "GPL";
SEC("tc")
int redirect(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(0x0800)) return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != 6) return 0;
	struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
	if ((void *)(tcp + 1) > end || tcp->dest != bpf_htons(9999)) return 0;
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	/* established first (the proxy's accepted socket), then the listener */
	t.ipv4.saddr = ip->saddr; t.ipv4.daddr = ip->daddr; t.ipv4.sport = tcp->source; t.ipv4.dport = tcp->dest;
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk && sk->state != BPF_TCP_LISTEN) goto assign;
	if (sk) bpf_sk_release(sk);
	__builtin_memset(&t, 0, sizeof(t));
	t.ipv4.daddr = bpf_htonl(0x7f000001); t.ipv4.dport = bpf_htons(15001);
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk) return 2;
assign:;
	long r = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	skb->mark = 0x200;
	bpf_printk("assign %ld", r);
	return r ? 2 : 0;
}
