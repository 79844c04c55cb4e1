// SPDX-License-Identifier: Apache-2.0
/* Experiment behind bpf/sock.c's v4-mapped sockets (not part of the build): what sock_ops and sk_msg see of an IPv4
 * connection accepted by a dual-stack listener (AF_INET6 on [::], IPV6_V6ONLY 0). Each established callback and each
 * message records family, local/remote_ip4, local/remote_ip6 and the ports into `recs`, and the socket joins a
 * sockhash (hash_update = the helper's result). Build and run (root):
 *   bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h
 *   clang -O2 -g -target bpf -c sock_v4mapped.c -o v4m.o
 *   bpftool prog loadall v4m.o /sys/fs/bpf/v4m-progs pinmaps /sys/fs/bpf/v4m-maps
 *   CG=/sys/fs/cgroup/unified/v4m  # a directory in the cgroup2 mount
 *   mkdir $CG; bpftool cgroup attach $CG sock_ops pinned /sys/fs/bpf/v4m-progs/ops
 *   bpftool prog attach pinned /sys/fs/bpf/v4m-progs/msg msg_verdict pinned /sys/fs/bpf/v4m-maps/socks
 * then, in a network namespace with lo up (`nsenter --net`, not `ip netns exec`: that one hides the cgroup mount) and a
 * shell moved into $CG, a python server on ('::', port) with IPV6_V6ONLY 0 echoing one message of a client connected
 * to 127.0.0.1, and `bpftool map dump pinned /sys/fs/bpf/v4m-maps/recs`.
 * Seen on Linux 6.18, with and without disable_ipv6 in the namespace (addresses as words in host order):
 *   active established  family 2  (AF_INET)  local/remote_ip4 127.0.0.1  local/remote_ip6 0:0:0xffff:0x7f000001
 *   passive established family 10 (AF_INET6) local/remote_ip4 127.0.0.1  local/remote_ip6 0:0:0xffff:0x7f000001
 *   sk_msg client       family 2                           the same
 *   sk_msg server       family 10                          the same; hash_update 0 for both sockets
 * So the kernel fills the IPv4 fields of a mapped AF_INET6 socket (skc_rcv_saddr/skc_daddr, which its IPv4 stack sends
 * with) in both program types, and such a socket joins a sockhash and runs its sk_msg program. Reading remote_ip6[3]
 * or remote_ip4 by family in one expression is what not to do: clang loads through a computed context offset
 * (r1 += r2), which the verifier refuses ("dereference of modified ctx ptr"). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";

struct rec {
	__u32 kind; /* 1 active established, 2 passive established, 3 sk_msg */
	__u32 family;
	__u32 local_ip4, remote_ip4;
	__u32 local_ip6[4], remote_ip6[4];
	__u32 local_port, remote_port;
	__s64 hash_update;
};
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 16); __type(key, __u32); __type(value, struct rec); } recs SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u32); } next SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_SOCKHASH); __uint(max_entries, 16); __type(key, __u32); __type(value, __u64); } socks SEC(".maps");

static __always_inline struct rec *slot(void)
{
	__u32 zero = 0, *n = bpf_map_lookup_elem(&next, &zero);
	if (!n) return 0;
	__u32 i = *n; /* one connection at a time */
	*n = i + 1;
	return i < 16 ? bpf_map_lookup_elem(&recs, &i) : 0;
}

#define RECORD(r, c) do { \
	(r)->family = (c)->family; (r)->local_ip4 = (c)->local_ip4; (r)->remote_ip4 = (c)->remote_ip4; \
	(r)->local_ip6[0] = (c)->local_ip6[0]; (r)->local_ip6[1] = (c)->local_ip6[1]; \
	(r)->local_ip6[2] = (c)->local_ip6[2]; (r)->local_ip6[3] = (c)->local_ip6[3]; \
	(r)->remote_ip6[0] = (c)->remote_ip6[0]; (r)->remote_ip6[1] = (c)->remote_ip6[1]; \
	(r)->remote_ip6[2] = (c)->remote_ip6[2]; (r)->remote_ip6[3] = (c)->remote_ip6[3]; \
	(r)->local_port = (c)->local_port; (r)->remote_port = (c)->remote_port; } while (0)

SEC("sockops")
int ops(struct bpf_sock_ops *s)
{
	if (s->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && s->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) return 1;
	struct rec *r = slot();
	if (!r) return 1;
	r->kind = s->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB ? 1 : 2;
	RECORD(r, s);
	__u32 key = r->kind;
	r->hash_update = bpf_sock_hash_update(s, &socks, &key, BPF_ANY);
	return 1;
}

SEC("sk_msg")
int msg(struct sk_msg_md *m)
{
	struct rec *r = slot();
	if (!r) return SK_PASS;
	r->kind = 3;
	RECORD(r, m);
	return SK_PASS;
}
