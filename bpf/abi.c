// SPDX-License-Identifier: Apache-2.0
/* Never loaded: one variable of every struct that crosses the kernel boundary,
 * so this object's BTF describes them all and the C# layout test can compare
 * its mirrors (tests/Trellis.Datapath.Tests/AbiLayoutTests.cs). */
#include "lib/common.h"
#include "lib/maps.h"

struct ipcache_key abi_ipcache_key;
struct ipcache_value abi_ipcache_value;
struct endpoint_info abi_endpoint_info;
struct policy_key abi_policy_key;
struct policy_value abi_policy_value;
struct ct_key abi_ct_key;
struct ct_entry abi_ct_entry;
struct flow_event abi_flow_event;
struct node_config abi_node_config;
struct lb4_frontend_key abi_lb4_frontend_key;
struct lb4_frontend abi_lb4_frontend;
struct lb4_backend_key abi_lb4_backend_key;
struct lb4_backend abi_lb4_backend;
struct lb4_revnat abi_lb4_revnat;
struct lb4_affinity_key abi_lb4_affinity_key;
struct lb4_affinity abi_lb4_affinity;
struct lb4_nat_key abi_lb4_nat_key;
struct lb4_nat abi_lb4_nat;
struct sock_key abi_sock_key;

char LICENSE[] SEC("license") = "Dual BSD/GPL";
