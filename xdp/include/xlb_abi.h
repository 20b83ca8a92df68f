/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The ABI between the XLB agent (C#, lib/Xlb.DataPlane/Abi.cs) and the XDP program.
 * Every struct here has a C# twin with the same layout; tests compile _Static_asserts
 * generated from the C# side against this header, and the agent compares key/value sizes
 * with the loaded object's BTF at start-up. Change both sides together and bump
 * XLB_ABI_VERSION.
 *
 * Addresses are stored as four big-endian 32-bit words; IPv4 uses word 0, the rest is zero.
 * All key structs are fully padded with explicit fields: hash keys compare padding bytes.
 */
#ifndef XLB_ABI_H
#define XLB_ABI_H

#include <linux/types.h>

#define XLB_ABI_VERSION 1

/* Capacities per configuration generation. Maps hold two generations. */
#define XLB_MAX_SERVICES 16384
#define XLB_MAX_BACKENDS 65536
#define XLB_RING_CAPACITY (1u << 22)
#define XLB_MAX_FLOWS 262144

#define XLB_GENERATIONS 2

#define XLB_FAMILY_V4 4
#define XLB_FAMILY_V6 6

/* services: what a client addresses, in one generation. */
struct xlb_svc_key {
	__be32 vip[4];
	__be16 port;
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family; /* XLB_FAMILY_* */
	__u8 gen;    /* configuration generation, 0 or 1 */
	__u8 pad[3];
};

/* vips: the addresses this node serves, in one generation (value: XLB_VIP_F_*). */
struct xlb_vip_key {
	__be32 addr[4];
	__u8 family;
	__u8 gen;
	__u8 pad[2];
};

#define XLB_VIP_F_NONE 0

#define XLB_SVC_F_NONE 0

struct xlb_svc {
	__u32 id;        /* stable service id, >= 1; 0 marks an empty slot */
	__u32 ring_off;  /* first slot of this service's Maglev ring within its generation */
	__u32 ring_size; /* prime; 0 means the service has no usable backend */
	__u32 flags;     /* XLB_SVC_F_* */
};

/* backends: array indexed by gen * XLB_MAX_BACKENDS + backend index (index 0 unused). */
#define XLB_BE_F_DRAINING 1

struct xlb_backend {
	__be32 addr[4];
	__be16 port; /* the target port */
	__u8 family;
	__u8 flags;  /* XLB_BE_F_* */
};

/* rings: array indexed by gen * XLB_RING_CAPACITY + ring_off + slot; value = backend index. */

/*
 * One direction of a connection as it arrives at the load balancer. Used as the key of
 * both the flow table (client -> VIP) and the reverse-NAT table (backend -> VIP:nat port).
 */
struct xlb_flow_key {
	__be32 saddr[4];
	__be32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;
	__u8 pad[2];
};

/* flows: the backend a client connection is bound to. Not generation-scoped. */
struct xlb_flow {
	__be32 backend[4];
	__be16 backend_port;
	__be16 nat_port; /* source port used toward the backend (FullNAT) */
	__u32 svc_id;
	__u64 last_seen_ns;
};

/* rnat: how to turn a backend's reply back into what the client expects. */
struct xlb_rnat {
	__be32 client[4];
	__be16 client_port;
	__be16 vip_port;
	__u32 pad;
};

/* config: array of one. Written by the agent; the generation flip is one u32 store. */
#define XLB_CFG_F_SHUTDOWN 1

struct xlb_cfg {
	__u32 active_gen;
	__u32 flags;         /* XLB_CFG_F_* */
	__u16 nat_port_min;  /* FullNAT source-port range, host byte order, inclusive */
	__u16 nat_port_max;
	__u32 pad;
};

/* stats: per-CPU packet counters, one per reason. C# mirrors this enum (XlbStat). */
enum xlb_stat {
	XLB_STAT_PASS_NON_IP = 0,
	XLB_STAT_PASS_NOT_VIP,
	XLB_STAT_PASS_TRUNCATED,
	XLB_STAT_PASS_FRAGMENT,
	XLB_STAT_PASS_TTL_EXPIRED,
	XLB_STAT_PASS_FIB_NO_NEIGH,
	XLB_STAT_PASS_FIB_FAILED,
	XLB_STAT_DROP_TRUNCATED_L4,
	XLB_STAT_DROP_NO_BACKEND,
	XLB_STAT_DROP_NAT_PORTS_BUSY,
	XLB_STAT_DROP_NO_CONFIG,
	XLB_STAT_FWD_NEW_FLOW,
	XLB_STAT_FWD_ESTABLISHED,
	XLB_STAT_FWD_REPLY,
	XLB_STAT_TX,
	XLB_STAT_REDIRECT,
	XLB_STAT_TX_RST_SHUTDOWN,
	XLB_STAT_DROP_SHUTDOWN_UNSUPPORTED,
	XLB_STAT__COUNT,
};

#endif /* XLB_ABI_H */
