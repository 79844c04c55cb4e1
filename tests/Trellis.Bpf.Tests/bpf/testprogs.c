// SPDX-License-Identifier: Apache-2.0
/* Tiny programs and maps the Trellis.Bpf binding tests load into the kernel.
 * Not part of the datapath: every map shape and attach type the binding supports, once. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_OK 0

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Plain hash: u32 -> u64, for typed update/lookup/delete/keys. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} test_hash SEC(".maps");

/* Pinned by name under the object's PinRoot: survives the object. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} test_pinned SEC(".maps");

/* Per-CPU count of record_packet runs (slot 0). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} test_percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} test_events SEC(".maps");

/* Destination ports (host order) that deny_ports refuses. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u16);
	__type(value, __u8);
} denied_ports SEC(".maps");

/* Record layout read by RingBufferTests. */
struct test_record {
	__u32 magic;
	__u32 len;
	__u32 ifindex;
	__u32 protocol;
};
#define TEST_RECORD_MAGIC 0x7e11150fu

SEC("tc")
int record_packet(struct __sk_buff *skb)
{
	__u32 zero = 0;
	__u64 *runs = bpf_map_lookup_elem(&test_percpu, &zero);
	if (runs)
		*runs += 1;

	struct test_record *r = bpf_ringbuf_reserve(&test_events, sizeof(*r), 0);
	if (r) {
		r->magic = TEST_RECORD_MAGIC;
		r->len = skb->len;
		r->ifindex = skb->ifindex;
		r->protocol = bpf_ntohs(skb->protocol);
		bpf_ringbuf_submit(r, 0);
	}
	return TC_ACT_OK;
}

/* A second tc program, to show an attachment being replaced. */
SEC("tc")
int pass_all(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

/* connect(2) from the cgroup fails with EPERM when the destination port is denied. */
SEC("cgroup/connect4")
int deny_ports(struct bpf_sock_addr *ctx)
{
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	return bpf_map_lookup_elem(&denied_ports, &port) ? 0 : 1;
}
