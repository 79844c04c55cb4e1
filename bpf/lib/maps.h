/* SPDX-License-Identifier: Apache-2.0 */
/* Map layouts: the one definition of every key and value that crosses the
 * kernel boundary. All maps are pinned by name under the agent's bpffs root,
 * so they (and the programs attached to veths) outlive an agent restart. */
#pragma once

#include "common.h"

/* ipcache: IP prefix -> security identity (longest prefix match). */
struct ipcache_key {
	__u32 prefixlen; /* LPM trie prefix length, 32 for a pod */
	__u32 addr;      /* IPv4, network byte order */
};

struct ipcache_value {
	__u32 identity;
	__u32 flags; /* IPCACHE_F_* */
	__u32 ep_id; /* local endpoints: the endpoint id (key of its policy map); 0 otherwise */
};
#define IPCACHE_F_LOCAL_ENDPOINT 1
/* A local endpoint whose ingress policy sends some keys through the L7 proxy: a client on this node is redirected
 * at its own from_container (the only TC ingress hook its packets cross, and bpf_sk_assign works only there). */
#define IPCACHE_F_L7_INGRESS 2

/* endpoints: host-side veth ifindex -> endpoint. */
struct endpoint_info {
	__u32 ep_id;
	__u32 identity;
	__u32 ipv4;  /* network byte order */
	__u32 flags; /* EP_F_* */
	/* For delivery straight into the pod (EP_F_DIRECT): its interface's MAC and the host veth's, the frame's
	 * destination and source as if the node had routed it. */
	__u8 mac[6];
	__u8 host_mac[6];
};
#define EP_F_ENFORCE_INGRESS 1
#define EP_F_ENFORCE_EGRESS 2
#define EP_F_AUDIT 4 /* policy drops of this endpoint pass and are reported as AUDIT */
#define EP_F_DENY_INGRESS 8  /* the policy map has deny entries for ingress (checked even when not enforced) */
#define EP_F_DENY_EGRESS 16
#define EP_F_REDIRECT_INGRESS 32 /* the policy map has L7 redirect entries for ingress (looked up even when not enforced) */
#define EP_F_REDIRECT_EGRESS 64
#define EP_F_DIRECT 128 /* MACs known: a pod of this node sending to it hands the packet straight to its interface */

/* config: node-wide settings, one entry at index 0. */
struct node_config {
	__u32 flags;      /* CONFIG_F_* */
	__u16 proxy_port; /* the node's L7 proxy listens on 127.0.0.1:proxy_port (network order); 0 = no proxy */
	__u16 pad;
};
#define CONFIG_F_AUDIT 1          /* policy audit mode for every endpoint */
#define CONFIG_F_NO_FLOW_EVENTS 2 /* send no flow events (to measure what they cost); counters still count */
#define CONFIG_F_SOCK_ACCEL 4     /* same-node socket acceleration: TCP between two local pods spliced socket to socket */

/* Per-endpoint policy: an LPM trie per endpoint (inner map of trellis_policy, keyed by endpoint id).
 * Key bits after prefixlen: identity (32) | direction (8) | protocol (8) | port (16, network order).
 * prefixlen 40 = any protocol and port; 48 = any port of the protocol; 48 + k = a block of ports
 * sharing their top k bits (how port ranges are stored). identity 0 = any peer. For ICMP the port
 * is the ICMP type. The datapath looks up the peer's identity and identity 0; a deny from either wins. */
struct policy_key {
	__u32 prefixlen;
	__u32 identity;
	__u8 dir; /* DIR_* */
	__u8 proto;
	__u16 dport; /* network byte order */
};
#define POLICY_KEY_FULL_PREFIX 64

struct policy_value {
	__u32 policy_id; /* agent's number for the policy that allowed it, for flow records */
	__u32 flags;     /* POLICY_F_* */
};
#define POLICY_F_DENY 1
#define POLICY_F_REDIRECT 2 /* allowed, through the node's L7 proxy (the policy has HTTP rules for this key) */
#define POLICY_F_VISIBILITY 4 /* with REDIRECT: for L7 visibility only; where no proxy can take the flow, it passes */

/* skb->mark of a packet handed to the L7 proxy: the node routes it to the local stack (ip rule fwmark
 * MARK_MAGIC_TO_PROXY/MARK_MAGIC_MASK lookup a table with a local default route), as Cilium's TPROXY does. */
#define MARK_MAGIC_TO_PROXY 0x200
#define MARK_MAGIC_MASK 0xF00
/* SO_MARK of the L7 proxy's upstream sockets: the destination's to_container knows the connection was already
 * checked by the proxy (no second redirect) and remembers it in conntrack, so replies go back to the proxy. The
 * proxy connects from the client's own address (IP_TRANSPARENT), so the ipcache gives the client's identity. */
#define MARK_MAGIC_FROM_PROXY 0xA00

/* conntrack: one entry per flow and hook direction. The tuple is the one the
 * first packet carried at that hook; replies are found by the reversed tuple
 * with the opposite direction. */
struct ct_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport; /* host byte order; ICMP echo: id in sport (request) */
	__u16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};

struct ct_entry {
	__u64 expires_ns; /* bpf_ktime_get_ns() deadline; the agent's GC removes stale entries */
	__u64 packets;
	__u64 bytes;
	__u32 src_identity;
	__u32 policy_id;
	__u8 tx_closing; /* FIN/RST seen in the original direction */
	__u8 rx_closing; /* FIN/RST seen in the reply direction */
	__u8 seen_reply;
	__u8 lb_nat; /* the flow was DNATed by the TC load balancer: replies get their source translated back */
	__u8 from_proxy; /* the L7 proxy's upstream connection: replies are handed to the proxy's socket */
	__u8 pad[3];
	/* The policy verdict of this flow's original direction, valid while trellis_policy_gen still says policy_gen
	 * (0 = none): later packets skip the policy and ipcache lookups. policy_flags: the POLICY_F_* that decide the
	 * L7 redirect (at egress including the destination's ingress rules). Only allowed verdicts are cached. */
	__u32 policy_gen;
	__u32 policy_flags;
};

/* Lifetimes (ns), as Cilium's defaults. */
#define CT_LIFETIME_TCP 21600000000000ULL
#define CT_LIFETIME_SYN 60000000000ULL
#define CT_LIFETIME_NONTCP 60000000000ULL
#define CT_LIFETIME_CLOSE 10000000000ULL

/* Flow event sent through the ring buffer for every new flow and every drop. */
struct flow_event {
	__u64 ts_ns; /* bpf_ktime_get_ns() */
	__u32 ep_id;
	__u32 ifindex;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 saddr; /* network byte order */
	__u32 daddr;
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 proto;
	__u8 verdict; /* VERDICT_* */
	__u8 reason;  /* REASON_* */
	__u8 dir;     /* DIR_* */
	__u8 tcp_flags;
	__u8 is_reply;
	__u8 pad[2];
	__u32 policy_id;
	__u32 pkt_len;
	__u32 frontend_id; /* service frontend the flow was load-balanced through (TRANSLATED events, NodePort DNAT); 0 = none */
	__u64 cgroup_id;   /* socket events: cgroup of the calling task (names the pod before it has a source address) */
};

/* Service load balancing, at the socket layer (bpf/sock.c: connect-time, for local sockets) and per packet
 * (bpf/netdev.c: DNAT/reverse-NAT at TC, for traffic from outside the node). A frontend is one (address,
 * port, protocol): a ClusterIP port, or a NodePort on one node address. Its selectable backends sit in
 * slots 0..count-1 of trellis_lb4_backends. */
struct lb4_frontend_key {
	__u32 address; /* network byte order */
	__u16 port;    /* network byte order */
	__u8 proto;
	__u8 pad;
};

struct lb4_frontend {
	__u32 id;    /* frontend id, the key prefix of its backend slots */
	__u32 count; /* active backends */
	__u32 affinity_timeout_s; /* sessionAffinity ClientIP: seconds a client keeps its backend; 0 = none */
	__u32 flags;              /* LB4_F_* */
};
#define LB4_F_EXTERNAL 1 /* reachable from outside the node: translated per packet by bpf/netdev.c (NodePort) */
#define LB4_F_MAGLEV 2   /* per-packet selection by Maglev consistent hashing (trellis_lb4_maglev) instead of random */

/* sessionAffinity ClientIP: the client is the pod, named by its network namespace cookie (the socket
 * hook runs before a source address is bound). */
struct lb4_affinity_key {
	__u64 netns_cookie;
	__u32 frontend_id;
	__u32 pad;
};

struct lb4_affinity {
	__u64 last_used_ns;
	__u32 slot;
	__u32 backend_address; /* the backend the slot held; a changed slot ends the affinity */
	__u16 backend_port;
	__u16 pad;
	__u32 pad2;
};

struct lb4_backend_key {
	__u32 frontend_id;
	__u32 slot;
};

struct lb4_backend {
	__u32 address; /* network byte order */
	__u16 port;    /* network byte order */
	__u16 pad;
};

/* Per socket (by cookie): the service address it dialled, so getpeername and UDP replies show it. */
struct lb4_revnat {
	__u32 frontend_address;
	__u32 backend_address;
	__u16 frontend_port;
	__u16 backend_port;
};

/* Per-packet NAT state of the TC load balancer (bpf/netdev.c). dir LB4_NAT_FORWARD is keyed by the client's
 * original tuple (client -> node address:NodePort) and holds the backend; LB4_NAT_REVERSE is keyed by the
 * reply's tuple (backend -> client) and holds the frontend to restore as the reply's source. */
struct lb4_nat_key {
	__u32 saddr; /* network byte order */
	__u32 daddr;
	__u16 sport; /* network byte order */
	__u16 dport;
	__u8 proto;
	__u8 dir; /* LB4_NAT_* */
	__u16 pad;
};
#define LB4_NAT_FORWARD 0
#define LB4_NAT_REVERSE 1

struct lb4_nat {
	__u32 address; /* forward: backend; reverse: frontend (network byte order) */
	__u16 port;    /* network byte order */
	__u8 closing;  /* forward: FIN/RST seen; a new SYN on the same tuple selects again */
	__u8 pad;
	__u32 frontend_id;
	__u32 ifindex; /* reverse: the node device the request came in on, where the reply goes out */
};

/* Maglev lookup table size per frontend (prime; Cilium's smallest choice is 251, its default 16381).
 * Good balance needs M well above 100 x backends. */
#define LB4_MAGLEV_M 4093

#define LB4_FRONTENDS_MAX 65536
#define LB4_BACKENDS_MAX 262144
#define LB4_AFFINITY_MAX 65536
#define LB4_NAT_MAX 262144
#define LB4_MAGLEV_MAX 4096 /* frontends using Maglev */

/* Flow events are submitted without waking the agent (a wakeup costs the sending program tens of microseconds,
 * paid inside connect() or the softirq); the agent drains the ring on a short timer and is woken only once this
 * much is waiting, so a burst never fills the 4 MiB ring unseen. */
#define EVENTS_WAKEUP_BYTES (1 << 20)

/* counters: per-CPU, indexed by COUNTER_*. */
#define COUNTER_EVENTS_LOST 0
#define COUNTER_FORWARDED 1
#define COUNTER_DROPPED 2
#define COUNTER_AUDIT 3
#define COUNTER_LB_TRANSLATED 4
#define COUNTER_LB_NO_BACKEND 5
#define COUNTER_LB_NAT 6 /* packets translated per packet at TC (NodePort DNAT and its reverse) */
#define COUNTER_MAX 8

/* Same-node socket acceleration (bpf/sock.c): established TCP sockets of local pods, keyed by their own
 * (local, remote) addresses and ports, all in network byte order. A message sent on one is moved straight to its
 * peer's receive queue (sk_msg + bpf_msg_redirect_hash), skipping TCP/IP and the TC programs. */
struct sock_key {
	__u32 local;
	__u32 remote;
	__u16 local_port;
	__u16 remote_port;
};

#ifdef __TRELLIS_MAPS__

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, IPCACHE_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ENDPOINTS_MAX);
	__type(key, __u32); /* ifindex */
	__type(value, struct endpoint_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_endpoints SEC(".maps");

/* Local endpoints by address: IPv4 (network order) -> host-side veth ifindex (the key of trellis_endpoints). A hash,
 * so from_container finds a destination on the node without another longest-prefix match. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ENDPOINTS_MAX);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_lxc SEC(".maps");

/* Sizes rather than types: clang 14 emits only forward declarations for types
 * reached through an inner map, which libbpf cannot size. */
struct policy_inner {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POLICY_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(key_size, sizeof(struct policy_key));
	__uint(value_size, sizeof(struct policy_value));
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, ENDPOINTS_MAX);
	__type(key, __u32); /* endpoint id */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct policy_inner);
} trellis_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, CT_MAX);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* 4 MiB */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_events SEC(".maps");

/* Generation of everything a policy verdict depends on (policy maps, ipcache, endpoint flags): the agent adds one
 * after each change, which makes every verdict cached in conntrack stale, so the next packet of every flow is
 * checked again. One entry; 0 = no cached verdict is ever valid. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_policy_gen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct node_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB4_FRONTENDS_MAX);
	__type(key, struct lb4_frontend_key);
	__type(value, struct lb4_frontend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_lb4_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB4_BACKENDS_MAX);
	__type(key, struct lb4_backend_key);
	__type(value, struct lb4_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB4_AFFINITY_MAX);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_lb4_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB4_NAT_MAX);
	__type(key, struct lb4_nat_key);
	__type(value, struct lb4_nat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_lb4_nat SEC(".maps");

struct lb4_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB4_MAGLEV_M);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct lb4_backend));
};

/* frontend id -> its Maglev table (an array of LB4_MAGLEV_M backends), swapped whole when backends change. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, LB4_MAGLEV_MAX);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct lb4_maglev_inner);
} trellis_lb4_maglev SEC(".maps");

/* The service translation of a socket that dialled a service (for getpeername and UDP replies): socket-local
 * storage, freed with the socket, so nothing to clean up at close and nothing evicted under connection churn. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct lb4_revnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_lb4_sockets SEC(".maps");

/* New connections (SYNs) that to_proxy handed to a TIME_WAIT socket of the proxy's (same 4-tuple as an earlier
 * connection the proxy closed first). The kernel's TIME_WAIT code then looks up a listener for the original
 * destination; proxy_lookup (sk_lookup) answers with the proxy's listener for the tuples listed here. */
struct proxy_tw_key {
	__u32 client;     /* network byte order */
	__u32 original;   /* the original destination */
	__u16 client_port; /* network byte order */
	__u16 original_port;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct proxy_tw_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_proxy_tw SEC(".maps");

/* The proxy's listening socket, registered by the proxy itself (slot 0). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_proxy_sock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trellis_sock_accel SEC(".maps");

#endif
