/* SPDX-License-Identifier: Apache-2.0 */
/* Shared constants of the Trellis datapath. Everything here is part of the
 * kernel/userspace contract: the C# mirror lives in src/Trellis.Datapath/Abi.cs
 * and tests/Trellis.Datapath.Tests/AbiLayoutTests.cs checks it against BTF. */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_ARP 0x0806

#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_SCTP_ 132

#define ICMP_ECHOREPLY_ 0
#define ICMP_ECHO_ 8

/* Reserved security identities (same numbers as Cilium's). */
#define IDENTITY_UNKNOWN 0
#define IDENTITY_HOST 1
#define IDENTITY_WORLD 2
/* First identity handed to a label set. */
#define IDENTITY_MIN_ALLOCATED 256

/* Direction of a packet relative to the endpoint whose hook sees it. */
#define DIR_INGRESS 0 /* towards the pod (TC egress of the host-side veth) */
#define DIR_EGRESS 1  /* from the pod (TC ingress of the host-side veth) */

/* Map sizes. Changing one changes the pinned map: the agent recreates it. */
#define IPCACHE_MAX 65536
#define ENDPOINTS_MAX 4096
#define POLICY_MAX 16384
#define CT_MAX 262144
