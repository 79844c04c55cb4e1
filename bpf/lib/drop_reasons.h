/* SPDX-License-Identifier: Apache-2.0 */
/* Verdicts and drop reasons: a cross-language contract, never renumbered.
 * Mirrored once in src/Trellis.Datapath/Abi.cs (Verdict, DropReason). */
#pragma once

#define VERDICT_FORWARDED 1
#define VERDICT_DROPPED 2
#define VERDICT_AUDIT 3
#define VERDICT_REDIRECTED 4
#define VERDICT_ERROR 5
#define VERDICT_TRANSLATED 6 /* a socket was load-balanced to a backend (trace event, not a packet verdict) */

#define REASON_NONE 0
#define REASON_POLICY_DENIED 1      /* no rule allows the flow */
#define REASON_INVALID_SOURCE 2     /* source IP is not the endpoint's own (spoofing) */
#define REASON_INVALID_PACKET 3     /* truncated or malformed headers */
#define REASON_UNSUPPORTED_L3 4     /* not IPv4 (IPv6 is not supported yet) */
#define REASON_NO_IDENTITY 5        /* endpoint not known to the datapath */
#define REASON_POLICY_DENY_RULE 6   /* an explicit deny rule matched */
#define REASON_CT_MAP_FULL 7        /* conntrack entry could not be created */
#define REASON_FRAGMENT 8           /* non-first IPv4 fragment: fragment tracking is not implemented */
#define REASON_NO_SERVICE_BACKEND 9 /* a service address was dialled and the service has no backend */
#define REASON_L7_DENIED 10         /* the node's L7 proxy denied the request (set by the proxy, issue 6) */
#define REASON_AUTH_REQUIRED 11     /* mutual authentication has not completed for this identity pair (issue 9) */
