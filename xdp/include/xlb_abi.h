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

#define XLB_ABI_VERSION 11

/*
 * Capacities per configuration generation. Maps hold two generations. XLB_MAX_BACKENDS and
 * XLB_RING_CAPACITY are the defaults: the agent may size xlb_backends, xlb_nexthops,
 * xlb_backend_stats and xlb_rings otherwise before the load, and then writes the sizes it chose
 * into xlb_cfg (backend_slots, ring_slots), which the program reads.
 */
#define XLB_MAX_SERVICES 16384
#define XLB_MAX_BACKENDS 65536
#define XLB_RING_CAPACITY (1u << 22)
#define XLB_MAX_FLOWS 262144
/*
 * Flows that have not yet shown a second packet (a SYN, a first datagram, a pickup) wait in
 * tables of their own, so a flood of new flows churns those and never evicts the flows in
 * xlb_flows: a flood cannot push established connections off their backends.
 */
#define XLB_MAX_NEW_FLOWS 65536
/*
 * ClientIP affinity: the clients whose backend the program remembers, per service, in an LRU
 * table; past that, the least recently seen clients lose theirs.
 */
#define XLB_MAX_AFFINITY 65536

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
#define XLB_VIP_F_ACTIVE 1 /* this node holds the VIP: it answers ARP and neighbour solicitations for it */

/*
 * vip_claims: LRU hash by VIP (an xlb_vip_key with gen 0), program-written: the last time another
 * host announced a VIP this node holds (a gratuitous ARP, an ARP reply, an unsolicited neighbour
 * advertisement with another MAC), and from which MAC and interface. agent_seen: array[1], the
 * agent's CLOCK_MONOTONIC stamp, renewed every XLB_AGENT_STAMP_MS while it runs. A node whose agent
 * has not stamped for XLB_AGENT_SILENT_NS stops answering ARP and neighbour solicitations for a VIP
 * another host has announced since: the VIP's standby took it over (see yielded in xlb.c).
 */
#define XLB_MAX_CLAIMS 4096
#define XLB_AGENT_STAMP_MS 250
#define XLB_AGENT_SILENT_NS 2000000000ULL /* eight missed stamps: a collection pause or a busy CPU is not silence */

struct xlb_claim {
	__u64 seen_ns; /* coarse monotonic clock */
	__u8 mac[6];
	__u8 pad[2];
	__u32 ifindex;
	__u32 spare;
};

/* ifmacs: hash by ifindex, the MAC of each interface the program is attached to (agent-written). */
#define XLB_MAX_IFACES 64

struct xlb_ifmac {
	__u8 mac[6];
	__u8 pad[2];
};

/*
 * VLANs: one 802.1Q or 802.1ad tag is parsed; a second (QinQ) goes to the kernel. The agent
 * writes every VLAN device of the node into two hash maps:
 * - vlan_out, by the VLAN device's ifindex (what bpf_fib_lookup answers for a route over it):
 *   the device below it and the tag to put on. A packet cannot be redirected to a VLAN device,
 *   so the program tags it and sends it out of the device below.
 * - vlan_in, by {device below, tag}: the VLAN device a tagged packet arrived on, whose MAC
 *   answers ARP and neighbour solicitations on that VLAN and whose ifindex the FIB is asked
 *   from.
 */
#define XLB_MAX_VLANS 4096

struct xlb_vlan {
	__u32 lower_ifindex;
	__be16 proto; /* ETH_P_8021Q or ETH_P_8021AD, network order */
	__be16 vid;   /* the 12-bit VLAN id, network order (priority and DEI 0) */
};

struct xlb_vlan_dev {
	__u32 ifindex;
	__u8 mac[6];
	__u8 pad[2];
};

#define XLB_SVC_F_NONE 0
/* LeastConn: the service's flows count in xlb_backend_conns (the same bit as XLB_FLOW_F_COUNTED). */
#define XLB_SVC_F_COUNT_FLOWS 1
/* ClientIP affinity: new flows of a client follow its last one (timeout in svc_opts); never stateless. */
#define XLB_SVC_F_AFFINITY 2
/* FullNAT from more source addresses than the VIP: its xlb_snat entry lists them. */
#define XLB_SVC_F_SNAT 4

/*
 * snat: array indexed by gen * (XLB_MAX_SERVICES + 1) + service id: the source addresses a
 * FullNAT service translates new flows to besides its VIP (PortMapping spec.nat.sourceAddresses),
 * read only for a service with XLB_SVC_F_SNAT. A flow keeps the number of the one it took
 * (xlb_flow.snat: 0 the VIP, i the address at i - 1), so a service's addresses keep their places
 * from one revision to the next. Each multiplies the connections a backend can take from this
 * service (one per source address and port); replies come back to it, so it is announced with
 * its VIP and moves with it.
 */
#define XLB_SNAT_ADDRS 4 /* a power of two (xlb.c masks an index with it) */

struct xlb_snat {
	__u32 count; /* addresses in addr[], at most XLB_SNAT_ADDRS */
	__u32 pad;
	__be32 addr[XLB_SNAT_ADDRS][4];
};

/* How a service reaches its backends (xlb_svc.mode). */
#define XLB_MODE_FULLNAT 0  /* source becomes VIP:nat_port, destination backend:target port */
#define XLB_MODE_DNAT 1     /* destination becomes backend:target port; client address kept */
#define XLB_MODE_DSR_L2 2   /* packet unchanged, sent to the backend's MAC (VIP on its lo) */
#define XLB_MODE_DSR_IPIP 3 /* packet unchanged, inside an outer IP header to the backend (4in4, 6in6) */

/* How a new flow picks its backend (xlb_svc.algo). */
#define XLB_ALGO_MAGLEV 0      /* consistent hash of the 5-tuple over the Maglev ring */
#define XLB_ALGO_SOURCE_HASH 1 /* consistent hash of the client address over the ring */
#define XLB_ALGO_ROUND_ROBIN 2 /* a per-CPU cursor walking the ring (weights: slot shares) */
/*
 * The fewest open flows through this node (xlb_backend_conns) per unit of weight among the ring's
 * backends; of more than XLB_LC_SCAN backends, among XLB_LC_SCAN in a row from where the flow hash
 * points. Its ring_size slots are n backend indexes, each backend once, then their n weights in
 * the same order. See xlb_least_conn() in xlb.c.
 */
#define XLB_ALGO_LEAST_CONN 3
#define XLB_LC_SCAN 16

struct xlb_svc {
	__u32 id;        /* stable service id, 1..XLB_MAX_SERVICES; indexes xlb_svc_stats */
	__u32 ring_off;  /* first slot of this service's Maglev ring within its generation */
	__u32 ring_size; /* slots of its span; 0 means the service has no usable backend */
	__u16 flags;     /* XLB_SVC_F_* */
	__u8 mode;       /* XLB_MODE_* */
	__u8 algo;       /* XLB_ALGO_* */
};

/*
 * backends: array indexed by gen * XLB_MAX_BACKENDS + backend index (index 0 unused). A backend
 * keeps its index from one revision to the next, so a flow's index stays its backend's across a
 * flip, and xlb_backend_stats (by index) counts for the same backend over time.
 */
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

/* Flow states. TCP moves through them; UDP flows stay NEW and use the UDP timeout. */
#define XLB_FLOW_NEW 0         /* TCP: SYN seen, handshake not yet complete */
#define XLB_FLOW_ESTABLISHED 1 /* TCP: a packet without SYN seen after the SYN */
#define XLB_FLOW_CLOSING 2     /* TCP: FIN or RST seen in either direction */

/* flows: the backend a client connection is bound to. Not generation-scoped. */
struct xlb_flow {
	__be32 backend[4];
	__be16 backend_port;
	__be16 nat_port;    /* source port used toward the backend (FullNAT) */
	__u32 svc_id;
	__u64 last_seen_ns; /* coarse monotonic clock (bpf_ktime_get_coarse_ns) */
	__u32 nh_slot;      /* next-hop cache slot: gen * XLB_MAX_BACKENDS + backend index */
	__u8 state;         /* XLB_FLOW_* */
	__u8 mode;          /* XLB_MODE_* of the service when the flow began */
	__u8 flags;         /* XLB_FLOW_F_* */
	__u8 snat;          /* FullNAT source: 0 the VIP, i the service's xlb_snat address i - 1 */
};
/*
 * The flow is one of its backend's open flows in xlb_backend_conns (a LeastConn service's): from
 * its record until its FIN or RST, or until it is found expired.
 */
#define XLB_FLOW_F_COUNTED XLB_SVC_F_COUNT_FLOWS
/*
 * The flow is a copy another LB node sent (flow sync): the agent writes it, the program forwards
 * by it like any flow and leaves the bit as it is. The agent never sends such a flow on, and a
 * copy never replaces a flow of this node's own.
 */
#define XLB_FLOW_F_SYNCED 0x80
/*
 * How a TCP connection ended, for its FullNAT port (see nat_port_free in xlb.c): the client's FIN,
 * the backend's FIN, the backend's FIN before the client's (so the backend holds the tuple in
 * TIME_WAIT), a RST either way.
 */
#define XLB_FLOW_F_FIN_CLIENT 0x02
#define XLB_FLOW_F_FIN_BACKEND 0x04
#define XLB_FLOW_F_TIME_WAIT 0x08
#define XLB_FLOW_F_RESET 0x10

/*
 * rnat: how to turn a backend's reply back into what the client expects: the source becomes
 * vip:vip_port and the destination client:client_port. FullNAT keys it by
 * backend -> source:nat_port (the source the flow took: the VIP or one of xlb_snat), DNAT by
 * backend -> client.
 */
struct xlb_rnat {
	__be32 vip[4];
	__be32 client[4];
	__be16 vip_port;
	__be16 client_port;
	__u32 svc_id;
	__u32 backend; /* backend index (xlb_backend_stats) */
};

/*
 * nexthops: array indexed like backends; the data plane caches its FIB answer for each
 * backend here, so a packet costs an array read instead of a FIB lookup.
 */
struct xlb_nexthop {
	__be32 addr[4];    /* the address this entry was resolved for */
	__u64 resolved_ns; /* coarse clock; resolved again after XLB_NEXTHOP_TTL_NS */
	__u32 ifindex;
	__u8 dmac[6];
	__u8 smac[6];
	__u8 onlink;       /* the address is a neighbour, not behind a gateway (L2 DSR needs it) */
	__u8 pad;
	__u16 mtu;         /* of the way there, as the FIB says (0: not known) */
	__be16 vlan_proto; /* the route leaves by a VLAN device: the tag to put on (0: none), */
	__be16 vlan_tci;   /* and ifindex is the device below it */
};

#define XLB_NEXTHOP_TTL_NS 1000000000ull

/*
 * filter: array of XLB_GENERATIONS, the first look at every IP packet. A bit set in vip[]
 * at the slot of a destination says "may be a VIP"; in rsrc[], at the slot of a source, "may
 * be a DNAT backend's reply". A clear bit is a definite no, so traffic that is not ours costs
 * one array read. The slot is xlb_filter_slot() of the address folded to 32 bits.
 */
#define XLB_FILTER_BITS 65536
#define XLB_FILTER_WORDS (XLB_FILTER_BITS / 64)

struct xlb_filter {
	__u64 vip[XLB_FILTER_WORDS];
	__u64 rsrc[XLB_FILTER_WORDS];
};

/* The filter slot of an IPv4 address, read from the packet as a __u32 (network order). */
static inline __u32 xlb_filter_slot(__u32 addr)
{
	return (addr * 0x9e3779b1u) >> 16;
}

/* An IPv6 address takes the slot of its four words xor-ed (an IPv4 address: word 0). */
static inline __u32 xlb_filter_fold6(const __u32 *addr)
{
	return addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
}

/* svc_stats: per-CPU counters, indexed by service id; backend_stats: the same, by backend index. */
/*
 * svc_opts: array by service id: what a service asks of new flows beyond its algorithm. Not
 * generation-scoped: a service keeps its id from one revision to the next.
 */
struct xlb_svc_opts {
	__u32 affinity_s; /* ClientIP affinity: seconds since a client's last new flow that its next follows it (0: none) */
	__u32 log_sample; /* its own connection-log sample, 1 in N by flow hash, instead of xlb_cfg.event_sample (0: the node's) */
	__u32 idle_s;     /* its own idle timeout of established TCP flows, or of UDP flows (0: the node's, xlb_cfg) */
	__u32 spare;
};
/*
 * backend_conns: array by backend index, one __s64 for all CPUs (mmap-able): the flows of
 * LeastConn services open through this node to the backend (XLB_FLOW_F_COUNTED). The program adds
 * and takes away with atomic adds; the agent corrects it by a recount of the flow tables.
 */
struct xlb_svc_stats {
	__u64 packets;       /* client -> backend */
	__u64 bytes;
	__u64 reply_packets; /* backend -> client through this node (NAT modes) */
	__u64 reply_bytes;
	__u64 new_flows;
};

/* config: array of one. Written by the agent; the generation flip is one u32 store. */
#define XLB_CFG_F_SHUTDOWN 1
/* Every packet looks its flow up in xlb_flows: the per-CPU flow cache is not used (see xlb.c). */
#define XLB_CFG_F_NO_FLOW_CACHE 2

struct xlb_cfg {
	__u32 active_gen;
	__u32 flags;        /* XLB_CFG_F_* */
	__u16 nat_port_min; /* FullNAT source-port range, host byte order, inclusive */
	__u16 nat_port_max;
	__be32 encap_src;   /* outer source address of IPv4 IPIP packets; 0: the VIP */
	/* Idle timeouts per flow state, seconds; an expired flow is chosen for afresh. */
	__u32 tcp_new_timeout_s;
	__u32 tcp_established_timeout_s;
	__u32 tcp_closing_timeout_s;
	__u32 udp_timeout_s;
	__be32 encap_src6[4]; /* outer source address of IPv6-in-IPv6 packets; zero: the VIP */
	/*
	 * Flow events (xlb_events): 0, none; N, those of the flows whose flow hash is a multiple of N
	 * (1: every flow). A sampled flow reports both its start and its close.
	 */
	__u32 event_sample;
	/*
	 * Slots per generation of xlb_backends (a power of two; generation g's backend i is slot
	 * g * backend_slots + i) and of xlb_rings. 0: the compiled defaults.
	 */
	__u32 backend_slots;
	__u32 ring_slots;
	/*
	 * New flows of stateless-capable services (DSR, by Maglev or source hash) that one CPU enters
	 * into the flow tables per second; past it, until the second is over, further such flows are
	 * forwarded by the consistent hash alone (XLB_STAT_FWD_UNTRACKED). 0: every flow is tracked.
	 */
	__u32 new_flow_cap;
	/*
	 * ICMP "too big" answers one CPU sends per second; past it, until the second is over, the
	 * packets they would answer are dropped (XLB_STAT_DROP_ICMP_LIMITED). 0: no limit.
	 */
	__u32 icmp_rate;
};

/*
 * A sampled flow began (its first packet was bound to a backend) or closed: a FIN or RST, either
 * way, or (no TCP flags) it was found idle past its timeout by a later packet of its tuple.
 */
#define XLB_EVENT_NEW 1
#define XLB_EVENT_CLOSED 2

/* events: one record per event in the xlb_events ring buffer. */
struct xlb_flow_event {
	__u64 time_ns;         /* coarse monotonic clock, as flows' last_seen_ns */
	struct xlb_flow_key flow; /* client -> VIP */
	__be32 backend[4];
	__be16 backend_port;
	__be16 nat_port;       /* FullNAT: the source port toward the backend */
	__u32 svc_id;
	__u8 type;             /* XLB_EVENT_* */
	__u8 mode;             /* XLB_MODE_* */
	__u8 by_backend;       /* closed by the backend's FIN or RST (else the client's) */
	__u8 tcp_flags;        /* of the packet that closed the flow */
	__u8 snat;             /* FullNAT: the source it took (xlb_flow.snat) */
	__u8 pad[3];
};

/* event_stats: per-CPU counters of flow events: XLB_EVENTS_SENT, XLB_EVENTS_LOST (ring buffer full). */
#define XLB_EVENTS_SENT 0
#define XLB_EVENTS_LOST 1
#define XLB_EVENTS_RING_BYTES (256 * 1024)

/* IPv6 extension headers (hop-by-hop, routing, destination options) skipped before L4. */
#define XLB_IPV6_EXT_MAX 4

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
	XLB_STAT_PASS_NOT_TCP_UDP,
	XLB_STAT_DROP_DSR_NOT_ONLINK,
	XLB_STAT_DROP_ENCAP_FAILED,
	XLB_STAT_FWD_EXPIRED_FLOW,
	XLB_STAT_PASS_IPV6_EXT,        /* more than XLB_IPV6_EXT_MAX extension headers, or a route to follow */
	XLB_STAT_DROP_UDP6_NO_CHECKSUM, /* IPv6 UDP must carry a checksum (RFC 8200 8.1) */
	XLB_STAT_TX_ARP_REPLY,          /* an ARP request for an active VIP, answered */
	XLB_STAT_TX_ND_ADVERT,          /* a neighbour solicitation for an active VIP, answered */
	XLB_STAT_DROP_DSR_UNRESOLVED,   /* L2 DSR: no neighbour entry (or no route) for the backend yet */
	XLB_STAT_PASS_VLAN_STACKED,     /* more than one VLAN tag (QinQ): the kernel's */
	XLB_STAT_DROP_VLAN_FAILED,      /* a VLAN tag could not be put on or taken off (no headroom) */
	XLB_STAT_FWD_UNTRACKED,         /* a new DSR flow past the CPU's new-flow cap, forwarded without state */
	XLB_STAT_TX_ICMP_TOO_BIG,       /* too big for the way to its backend (IPIP adds a header): ICMP "too big" to its client */
	XLB_STAT_PASS_TOO_BIG,          /* IPv4 without DF, too big toward a NAT backend: translated, the kernel fragments it */
	XLB_STAT_DROP_TOO_BIG,          /* IPv4 without DF, too big for DSR (nothing fragments it), or too short to quote */
	XLB_STAT_DROP_ICMP_LIMITED,     /* too big, but this CPU has sent its ICMP answers for this second (cfg icmp_rate) */
	XLB_STAT__COUNT,
};

#endif /* XLB_ABI_H */
