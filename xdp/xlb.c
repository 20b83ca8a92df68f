// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * XLB XDP program: an L4 load balancer for TCP and UDP over IPv4 and IPv6.
 *
 * A packet to a VIP service is bound to a backend (the flow table first, then the service's
 * ring) and leaves in the service's mode:
 *   FullNAT   source VIP:nat_port, destination backend:target port. The backend's replies
 *             come back to VIP:nat_port and are translated back (reverse-NAT table).
 *   DNAT      destination backend:target port, the client's address kept. The backend routes
 *             its replies through this node, which puts VIP:port back as their source.
 *   DSR L2    unchanged, to the backend's MAC on a shared link. The backend holds the VIP on
 *             its loopback and answers the client directly.
 *   DSR IPIP  unchanged, inside an outer IP header addressed to the backend (IPv4 in IPv4,
 *             IPv6 in IPv6).
 * Everything else is XDP_PASS; for traffic that is not ours that costs one array read (the
 * filter). Next hops come from bpf_fib_lookup and are cached per backend for a second.
 *
 * The stack is full. The main frame takes 480 bytes, and a called function's frame counts on top
 * of it: each function the forwarding path calls may have 32 bytes. The ICMP answer uses all of
 * them; LeastConn's and affinity's choices keep their state in per-CPU scratch maps (16 and 8). A new local on the forwarding path, or a bigger frame in a called function, fails
 * the load ("combined stack size ... Too large"). Room comes from per-CPU scratch maps (as
 * xlb_affine() and xlb_least_conn() do), from passing words instead of structs, or from moving a struct's work out
 * of line where the main frame is shallow.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "include/xlb_abi.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
/*
 * FullNAT ports a new flow tries (alloc_nat_port), spread over the range by its hash. With the
 * range filled to a share f, a SYN finds none with probability f^tries, and its client waits a
 * second to send it again: at 16 tries that stays under 1 % up to three quarters of the range
 * (at 8, under half of it). A search that finds nothing costs every try (a SYN flood that holds
 * the ports makes each SYN do so), which is why it stops there.
 */
#define NAT_PORT_TRIES 16
/* How long a connection that ended keeps its NAT port (nat_port_free): without TIME_WAIT on its backend, with it. */
#define NAT_PORT_CLOSED_NS (2ULL * NS_PER_S)
#define NAT_PORT_TIME_WAIT_NS (65ULL * NS_PER_S)
/* How long a handshake that never completed keeps its NAT port, quiet (nat_port_free). */
#define NAT_PORT_HALF_OPEN_NS (2ULL * NS_PER_S)
#define NS_PER_S 1000000000ull

/* VIP services of both generations. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_SERVICES * XLB_GENERATIONS);
	__type(key, struct xlb_svc_key);
	__type(value, struct xlb_svc);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_services SEC(".maps");

/* VIP addresses of both generations. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_SERVICES * XLB_GENERATIONS);
	__type(key, struct xlb_vip_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_vips SEC(".maps");

/* Backends of both generations, indexed gen * backend_slots + index (sized by the agent). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_MAX_BACKENDS * XLB_GENERATIONS);
	__type(key, __u32);
	__type(value, struct xlb_backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_backends SEC(".maps");

/* Maglev rings of both generations: slot -> backend index. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_RING_CAPACITY * XLB_GENERATIONS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_rings SEC(".maps");

/* Connection table: client -> VIP tuple to its backend; survives generation flips. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XLB_MAX_FLOWS);
	__type(key, struct xlb_flow_key);
	__type(value, struct xlb_flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_flows SEC(".maps");

/* Reverse NAT: backend -> VIP:nat_port tuple to the client it stands for. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XLB_MAX_FLOWS);
	__type(key, struct xlb_flow_key);
	__type(value, struct xlb_rnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_rnat SEC(".maps");

/*
 * New flows wait here until their second packet: the client's ACK that completes a handshake,
 * a second datagram. A flood of SYNs or of one-off datagrams churns only these tables, and
 * xlb_flows and xlb_rnat keep the flows that have shown they are real.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XLB_MAX_NEW_FLOWS);
	__type(key, struct xlb_flow_key);
	__type(value, struct xlb_flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_flows_new SEC(".maps");

/* The reverse translations of the flows in xlb_flows_new. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XLB_MAX_NEW_FLOWS);
	__type(key, struct xlb_flow_key);
	__type(value, struct xlb_rnat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_rnat_new SEC(".maps");

/* Global configuration, including the active generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xlb_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_config SEC(".maps");

/* Packet counters per reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XLB_STAT__COUNT);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_stats SEC(".maps");

/* Next hops of backends, indexed like xlb_backends: a cache of FIB answers. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_MAX_BACKENDS * XLB_GENERATIONS);
	__type(key, __u32);
	__type(value, struct xlb_nexthop);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_nexthops SEC(".maps");

/* One filter per generation: may this address be ours? */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_GENERATIONS);
	__type(key, __u32);
	__type(value, struct xlb_filter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_filter SEC(".maps");

/* Per-service counters, by service id. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XLB_MAX_SERVICES + 1);
	__type(key, __u32);
	__type(value, struct xlb_svc_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_svc_stats SEC(".maps");

/* Per-backend counters, by backend index (the same in both generations). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XLB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct xlb_svc_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_backend_stats SEC(".maps");

/* Each service's affinity timeout and connection-log sample, by service id; see xlb_affine() and flow_event(). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_MAX_SERVICES + 1);
	__type(key, __u32);
	__type(value, struct xlb_svc_opts);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_svc_opts SEC(".maps");

/* FullNAT source addresses beyond the VIP, by generation and service id; see xlb_abi.h. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_GENERATIONS * (XLB_MAX_SERVICES + 1));
	__type(key, __u32);
	__type(value, struct xlb_snat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_snat SEC(".maps");

/* A client of a service, and the ring position its last new flow took. */
struct affinity_key {
	__u32 svc_id;
	__u8 family;
	__u8 pad[3];
	__be32 addr[4];
};

struct affinity {
	__u32 pos;
	__u32 pad;
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XLB_MAX_AFFINITY);
	__type(key, struct affinity_key);
	__type(value, struct affinity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_affinity SEC(".maps");

/*
 * xlb_affine()'s key and value, per CPU: it is called where the forwarding path's frame leaves 32
 * bytes of the 512-byte stack, too few for them.
 */
struct affinity_scratch {
	struct affinity_key k;
	struct affinity v;
	__u32 key;     /* a map key */
	__u32 n;       /* the ring's size */
	__u32 timeout; /* seconds */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct affinity_scratch);
} xlb_affinity_scratch SEC(".maps");

/* LeastConn: each backend's open flows through this node, by backend index (see xlb_least_conn). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XLB_MAX_BACKENDS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __s64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_backend_conns SEC(".maps");

/* Sampled flow events (xlb_flow_event) for the agent's connection log. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, XLB_EVENTS_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_events SEC(".maps");

/* Flow events sent and lost, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_event_stats SEC(".maps");

/* MACs of the interfaces the program runs on, by ifindex: the source of ARP replies. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct xlb_ifmac);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_ifmacs SEC(".maps");

/* This node's MACs (its interfaces' and VLAN devices'): its own announcements are no claims. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_IFACES + XLB_MAX_VLANS);
	__type(key, struct xlb_ifmac);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_own_macs SEC(".maps");

/* Announcements of our VIPs by other hosts, and the agent's last sign of life (see xlb_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XLB_MAX_CLAIMS);
	__type(key, struct xlb_vip_key);
	__type(value, struct xlb_claim);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_vip_claims SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_agent_seen SEC(".maps");

/* VLAN devices by ifindex: the device below and the tag (see xlb_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_VLANS);
	__type(key, __u32);
	__type(value, struct xlb_vlan);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_vlan_out SEC(".maps");

/* VLAN devices by the device below and the tag: ifindex and MAC. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_VLANS);
	__type(key, struct xlb_vlan);
	__type(value, struct xlb_vlan_dev);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_vlan_in SEC(".maps");

/*
 * Round-robin cursors, per CPU and service id. Each CPU walks the ring on its own: no
 * cross-CPU cache line is written per new flow, at the price that the spread is even per CPU
 * rather than globally (with RSS spreading flows over CPUs, the sum is even as well).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XLB_MAX_SERVICES + 1);
	__type(key, __u32);
	__type(value, __u32);
} xlb_rr SEC(".maps");

/* The coarse clock as last read on this CPU, and the jiffies it was read at (see coarse_now). */
struct coarse_clock {
	__u64 jiffies;
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct coarse_clock);
} xlb_clock SEC(".maps");

/*
 * CLOCK_MONOTONIC at tick resolution, as bpf_ktime_get_coarse_ns() gives it, without a helper
 * call per packet: the coarse clock only moves at a tick, when jiffies moves too, so it is read
 * once per jiffy per CPU. bpf_jiffies64() is inlined by the verifier (a load), while a helper
 * call costs about 20 ns on these machines. A tick that has advanced jiffies but not yet the
 * clock leaves the time one tick behind until the next: idle timeouts are in seconds.
 */
static __always_inline __u64 coarse_now(void)
{
	__u32 zero = 0;
	struct coarse_clock *c = bpf_map_lookup_elem(&xlb_clock, &zero);
	__u64 j = bpf_jiffies64();

	if (!c)
		return bpf_ktime_get_coarse_ns();
	if (c->jiffies != j) {
		c->ns = bpf_ktime_get_coarse_ns();
		c->jiffies = j;
	}
	return c->ns;
}

/*
 * Per CPU and per limited kind of work (XLB_RATE_*): how much of it was done in the second begun
 * at start_ns. A fixed window per CPU: no atomics, and a burst at a second's start is what the
 * limit allows anyway.
 */
#define XLB_RATE_NEW_FLOWS 0 /* new flows of stateless-capable services entered into the flow tables */
#define XLB_RATE_ICMP 1      /* ICMP "too big" answers sent */

struct rate_window {
	__u64 start_ns;
	__u32 count;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct rate_window);
} xlb_rates SEC(".maps");

/* Has this CPU done limit of this kind of work this second? When it has not and take is set, the caller's is counted. */
static __always_inline int rate_spent(__u32 kind, __u32 limit, __u64 now, int take)
{
	struct rate_window *w = bpf_map_lookup_elem(&xlb_rates, &kind);

	if (!w)
		return 0;
	if (now - w->start_ns >= NS_PER_S) {
		w->start_ns = now;
		w->count = 0;
	}
	if (w->count >= limit)
		return 1;
	w->count += take;
	return 0;
}

/* Has this CPU entered cfg->new_flow_cap new flows of stateless-capable services into the flow tables this second? */
static __always_inline int cap_spent(const struct xlb_cfg *cfg, __u64 now, int take)
{
	return rate_spent(XLB_RATE_NEW_FLOWS, cfg->new_flow_cap, now, take);
}

static __always_inline void count(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&xlb_stats, &reason);

	if (c)
		*c += 1;
}

static __always_inline int verdict(int action, __u32 reason)
{
	count(reason);
	return action;
}

static __always_inline void add_counts(struct xlb_svc_stats *s, __u64 bytes, int reply, int new_flow)
{
	if (!s)
		return;
	if (reply) {
		s->reply_packets += 1;
		s->reply_bytes += bytes;
	} else {
		s->packets += 1;
		s->bytes += bytes;
	}
	s->new_flows += new_flow;
}

/* One packet of service `id` and backend index `backend`, each direction counted apart. */
static __always_inline void svc_count(__u32 id, __u32 backend, __u64 bytes, int reply, int new_flow)
{
	add_counts(bpf_map_lookup_elem(&xlb_svc_stats, &id), bytes, reply, new_flow);
	add_counts(bpf_map_lookup_elem(&xlb_backend_stats, &backend), bytes, reply, new_flow);
}

/* Backend slots per generation (a power of two), as the agent sized the maps. */
static __always_inline __u32 backend_slots(const struct xlb_cfg *cfg)
{
	return cfg->backend_slots ? cfg->backend_slots : XLB_MAX_BACKENDS;
}

/* Ring slots per generation, as the agent sized xlb_rings. */
static __always_inline __u32 ring_slots(const struct xlb_cfg *cfg)
{
	return cfg->ring_slots ? cfg->ring_slots : XLB_RING_CAPACITY;
}

/* The backend index of a flow (its next-hop slot without the generation). */
static __always_inline __u32 flow_backend(const struct xlb_cfg *cfg, const struct xlb_flow *f)
{
	return f->nh_slot & (backend_slots(cfg) - 1);
}

/* A counted flow (XLB_FLOW_F_COUNTED) opens (+1) or closes (-1) on its backend (see xlb_least_conn). */
static __always_inline void conns_add(const struct xlb_cfg *cfg, const struct xlb_flow *f, __s64 n)
{
	__u32 backend = flow_backend(cfg, f);
	__s64 *c;

	if (!(f->flags & XLB_FLOW_F_COUNTED))
		return;
	c = bpf_map_lookup_elem(&xlb_backend_conns, &backend);
	if (c)
		__sync_fetch_and_add(c, n);
}

/* One's-complement checksum arithmetic (RFC 1624), on values in network byte order. */
static __always_inline __u16 csum_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)c;
}

static __always_inline __u32 csum_add(__u32 c, __u32 v)
{
	c += v;
	return c + (c < v);
}

/*
 * Incremental updates (RFC 1624) summed in one 64-bit register and folded once: each field's
 * change is its old value complemented plus its new value, 32-bit words and 16-bit ports alike
 * (a 32-bit word is the one's-complement sum of its halves). For the checksum itself, replaced
 * by ~csum_fold64(~old + changes).
 */
static __always_inline __u64 csum_change4(__u64 c, __be32 from, __be32 to)
{
	return c + (__u32)~from + to;
}

static __always_inline __u64 csum_change2(__u64 c, __be16 from, __be16 to)
{
	return c + (__u16)~from + to;
}

static __always_inline __u16 csum_fold64(__u64 c)
{
	c = (c & 0xffffffff) + (c >> 32);
	c = (c & 0xffffffff) + (c >> 32);
	return csum_fold((__u32)c);
}

static __always_inline void csum_replace2(__u16 *sum, __be16 from, __be16 to)
{
	__u32 c = (__u16)~*sum;

	c = csum_add(c, (__u16)~from);
	c = csum_add(c, to);
	*sum = ~csum_fold(c);
}

/* Sum of 16-bit words for a fresh checksum; n is a compile-time constant. */
static __always_inline __u32 csum_words(const __u16 *w, int n, __u32 sum)
{
#pragma unroll
	for (int i = 0; i < n; i++)
		sum += w[i];
	return sum;
}

/* The 4 bytes a VLAN tag adds after the MACs: its TCI, then the EtherType it carries. */
struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

#define VLAN_HLEN 4
#define VLAN_VID_MASK 0x0fff

static __always_inline int is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* Parsed view of a TCP/UDP packet over IPv4 or IPv6. */
struct pkt {
	struct ethhdr *eth;
	void *l3;      /* struct iphdr or struct ipv6hdr, by family */
	__u16 *l4_sum; /* TCP or UDP checksum field */
	__be16 *sport;
	__be16 *dport;
	__u32 len;     /* frame length, for the byte counters */
	__be16 vlan_proto; /* the VLAN tag it came with (0: none) */
	__be16 vlan_vid;
	__u16 l3_len;  /* IP header(s) and payload: IPv4 tot_len, IPv6 40 + payload_len */
	__u8 family;   /* XLB_FAMILY_* */
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 tcp_flags;
	__u8 udp_nosum; /* IPv4 UDP sent without a checksum */
	__u8 l4_direct; /* the L4 header follows the fixed IP header (no options or extensions) */
};

static __always_inline __u32 mix(__u32 h, __u32 v)
{
	h ^= v;
	h *= 0x9e3779b1u;
	return h ^ (h >> 16);
}

static __always_inline __u32 flow_hash(const struct xlb_flow_key *k)
{
	__u32 h = 0x5bd1e995u;

	h = mix(h, k->saddr[0]);
	h = mix(h, k->saddr[1]);
	h = mix(h, k->saddr[2]);
	h = mix(h, k->saddr[3]);
	h = mix(h, ((__u32)k->sport << 16) | k->dport);
	h = mix(h, k->proto);
	return h;
}

static __always_inline __u32 source_hash(const struct xlb_flow_key *k)
{
	__u32 h = 0x5bd1e995u;

	h = mix(h, k->saddr[0]);
	h = mix(h, k->saddr[1]);
	h = mix(h, k->saddr[2]);
	return mix(h, k->saddr[3]);
}

static __always_inline int filter_has(const __u64 *bits, __u32 folded)
{
	__u32 slot = xlb_filter_slot(folded);

	return (bits[slot >> 6] >> (slot & 63)) & 1;
}

static __always_inline void addr_copy(__be32 *to, const __be32 *from)
{
	to[0] = from[0];
	to[1] = from[1];
	to[2] = from[2];
	to[3] = from[3];
}

static __always_inline int addr_eq(const __be32 *a, const __be32 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

/* Rewrite addresses and ports of an IPv4 packet, keeping IP and L4 checksums valid. */
static __always_inline void rewrite4(struct pkt *p, __be32 saddr, __be16 sport, __be32 daddr,
				     __be16 dport)
{
	struct iphdr *ip = p->l3;
	/* The addresses' change, in both checksums (the L4 one covers them in its pseudo-header). */
	__u64 addrs = csum_change4(csum_change4(0, ip->saddr, saddr), ip->daddr, daddr);

	if (!p->udp_nosum) {
		__u64 c = (__u16)~*p->l4_sum + addrs;

		c = csum_change2(csum_change2(c, *p->sport, sport), *p->dport, dport);
		*p->l4_sum = ~csum_fold64(c);
		/* A UDP checksum that computes to zero is sent as all ones (RFC 768). */
		if (p->proto == IPPROTO_UDP && *p->l4_sum == 0)
			*p->l4_sum = 0xffff;
	}
	ip->check = ~csum_fold64((__u16)~ip->check + addrs);
	ip->saddr = saddr;
	ip->daddr = daddr;
	*p->sport = sport;
	*p->dport = dport;
}

/* The same for IPv6: no IP checksum, and the L4 checksum always present. */
static __always_inline void rewrite6(struct pkt *p, const __be32 *saddr, __be16 sport,
				     const __be32 *daddr, __be16 dport)
{
	struct ipv6hdr *ip6 = p->l3;
	__be32 s[4], d[4];
	__u64 c;
	int i;

	/* The new addresses may be the packet's own fields: take copies first. */
	addr_copy(s, saddr);
	addr_copy(d, daddr);
	c = (__u16)~*p->l4_sum;
#pragma unroll
	for (i = 0; i < 4; i++) {
		c = csum_change4(c, ip6->saddr.in6_u.u6_addr32[i], s[i]);
		c = csum_change4(c, ip6->daddr.in6_u.u6_addr32[i], d[i]);
	}
	c = csum_change2(csum_change2(c, *p->sport, sport), *p->dport, dport);
	*p->l4_sum = ~csum_fold64(c);
	if (p->proto == IPPROTO_UDP && *p->l4_sum == 0)
		*p->l4_sum = 0xffff;
	addr_copy(ip6->saddr.in6_u.u6_addr32, s);
	addr_copy(ip6->daddr.in6_u.u6_addr32, d);
	*p->sport = sport;
	*p->dport = dport;
}

static __always_inline void rewrite(struct pkt *p, const __be32 *saddr, __be16 sport,
				    const __be32 *daddr, __be16 dport)
{
	if (p->family == XLB_FAMILY_V4)
		rewrite4(p, saddr[0], sport, daddr[0], dport);
	else
		rewrite6(p, saddr, sport, daddr, dport);
}

/* Would forwarding this packet take its TTL (hop limit) to zero? */
static __always_inline int hops_spent(const struct pkt *p)
{
	if (p->family == XLB_FAMILY_V4)
		return ((struct iphdr *)p->l3)->ttl <= 1;
	return ((struct ipv6hdr *)p->l3)->hop_limit <= 1;
}

static __always_inline void hop_decrement(struct pkt *p)
{
	if (p->family == XLB_FAMILY_V4) {
		struct iphdr *ip = p->l3;

		/* 0x0100 is one step of the TTL byte in the TTL/protocol word. */
		csum_replace2(&ip->check, bpf_htons((__u16)ip->ttl << 8),
			      bpf_htons((__u16)(ip->ttl - 1) << 8));
		ip->ttl--;
	} else {
		((struct ipv6hdr *)p->l3)->hop_limit--;
	}
}

/* Asks the FIB how to reach dst; 0 and *nh filled, or the pass reason. */
static __always_inline __u32 fib_resolve(struct xdp_md *ctx, const struct pkt *p, const __be32 *dst,
					 __u16 tot_len, struct xlb_nexthop *nh)
{
	struct bpf_fib_lookup fib = {};
	struct xlb_vlan_dev *in;
	struct xlb_vlan *out;
	long rc;

	fib.l4_protocol = p->proto;
	/* 0: no MTU check by the FIB; the MTU comes back (mtu_result) and the caller checks. */
	fib.tot_len = tot_len;
	fib.ifindex = ctx->ingress_ifindex;
	/* A tagged packet arrived on its VLAN device, when the node has one for the tag. */
	if (p->vlan_proto) {
		/*
		 * The key goes in fib's destination words, written below: inlined into every caller,
		 * 8 more bytes of stack here take the program over the 512-byte limit.
		 */
		struct xlb_vlan *tag = (void *)fib.ipv6_dst;

		tag->lower_ifindex = ctx->ingress_ifindex;
		tag->proto = p->vlan_proto;
		tag->vid = p->vlan_vid;
		in = bpf_map_lookup_elem(&xlb_vlan_in, tag);
		if (in)
			fib.ifindex = in->ifindex;
	}
	if (p->family == XLB_FAMILY_V4) {
		const struct iphdr *ip = p->l3;

		fib.family = AF_INET;
		fib.tos = ip->tos;
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = dst[0];
	} else {
		const struct ipv6hdr *ip6 = p->l3;

		fib.family = AF_INET6;
		fib.flowinfo = *(const __be32 *)ip6 & bpf_htonl(0x0fffffff);
		addr_copy(fib.ipv6_src, ip6->saddr.in6_u.u6_addr32);
		addr_copy(fib.ipv6_dst, dst);
	}

	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return XLB_STAT_PASS_FIB_NO_NEIGH;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return XLB_STAT_PASS_FIB_FAILED;
	nh->ifindex = fib.ifindex;
	nh->mtu = fib.mtu_result;
	/* On success the FIB leaves the gateway in the destination when there is one. */
	if (p->family == XLB_FAMILY_V4)
		nh->onlink = fib.ipv4_dst == dst[0];
	else
		nh->onlink = addr_eq(fib.ipv6_dst, dst);
	__builtin_memcpy(nh->dmac, fib.dmac, ETH_ALEN);
	__builtin_memcpy(nh->smac, fib.smac, ETH_ALEN);
	/* Out by a VLAN device: by the device below it, tagged (the tag is put on in emit). */
	out = bpf_map_lookup_elem(&xlb_vlan_out, &fib.ifindex);
	nh->vlan_proto = out ? out->proto : 0;
	nh->vlan_tci = out ? out->vid : 0;
	if (out)
		nh->ifindex = out->lower_ifindex;
	/* Last: in the cache, the address is what makes an entry count. */
	addr_copy(nh->addr, dst);
	return 0;
}

/* A cached FIB answer that still holds for dst: resolved for it, and less than XLB_NEXTHOP_TTL_NS ago. */
static __always_inline int nexthop_fresh(const struct xlb_nexthop *nh, const __be32 *dst, __u64 now)
{
	return nh->ifindex && addr_eq(nh->addr, dst) && now - nh->resolved_ns < XLB_NEXTHOP_TTL_NS;
}

/*
 * The next hop toward a backend, from the cache slot of the backend's index, resolved again
 * when the slot holds another address or is older than XLB_NEXTHOP_TTL_NS. Two CPUs may
 * refresh a slot at once; both write the same answer.
 */
static __always_inline struct xlb_nexthop *backend_nexthop(struct xdp_md *ctx, const struct pkt *p,
							   __u32 slot, const __be32 *dst, __u64 now,
							   __u32 *reason)
{
	struct xlb_nexthop *nh = bpf_map_lookup_elem(&xlb_nexthops, &slot);

	if (!nh) {
		*reason = XLB_STAT_PASS_FIB_FAILED;
		return 0;
	}
	if (nexthop_fresh(nh, dst, now))
		return nh;
	/* Written in place, as a copy would be, field by field once the FIB has answered. */
	*reason = fib_resolve(ctx, p, dst, 0, nh);
	if (*reason)
		return 0;
	nh->resolved_ns = now;
	return nh;
}

/*
 * Next hops toward clients, for replies: a per-CPU direct-mapped cache of FIB answers, so a
 * reply does not ask the FIB (and the VLAN map) on every packet. An entry holds everything the
 * FIB lookup was given (addresses, ingress device and tag, TOS or flow label, protocol), so a
 * hit is the answer the FIB would give, the MTU included (the FIB is asked without a length, and
 * the reply's is checked against the MTU); it is asked again after XLB_NEXTHOP_TTL_NS and when
 * another client takes the slot. Per CPU: no other writer, so an entry is never half written
 * while read.
 */
#define REPLY_NH_SLOTS 4096

struct reply_nh {
	__be32 src[4];   /* the destination (the client) is nh.addr */
	__u32 ingress;
	__be16 vlan_proto;
	__be16 vlan_vid;
	__be32 tos_flow; /* IPv4 TOS, or the IPv6 traffic class and flow label */
	__u8 proto;
	__u8 family;
	__u16 pad;
	struct xlb_nexthop nh;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REPLY_NH_SLOTS);
	__type(key, __u32);
	__type(value, struct reply_nh);
} xlb_reply_nh SEC(".maps");

static __always_inline struct xlb_nexthop *reply_nexthop(struct xdp_md *ctx, const struct pkt *p,
							 const __be32 *dst, __u64 now, __u32 *reason)
{
	__be32 src[4] = {}, tos_flow;
	struct reply_nh *e;
	__u32 slot;

	if (p->family == XLB_FAMILY_V4) {
		const struct iphdr *ip = p->l3;

		src[0] = ip->saddr;
		tos_flow = ip->tos;
	} else {
		const struct ipv6hdr *ip6 = p->l3;

		addr_copy(src, ip6->saddr.in6_u.u6_addr32);
		tos_flow = *(const __be32 *)ip6 & bpf_htonl(0x0fffffff);
	}
	slot = mix(mix(mix(mix(mix(0x5bd1e995u, dst[0]), dst[1]), dst[2]), dst[3]), src[0] ^ src[3]) &
	       (REPLY_NH_SLOTS - 1);
	e = bpf_map_lookup_elem(&xlb_reply_nh, &slot);
	if (!e) {
		*reason = XLB_STAT_PASS_FIB_FAILED;
		return 0;
	}
	if (nexthop_fresh(&e->nh, dst, now) && addr_eq(e->src, src) &&
	    e->ingress == ctx->ingress_ifindex && e->vlan_proto == p->vlan_proto &&
	    e->vlan_vid == p->vlan_vid && e->tos_flow == tos_flow && e->proto == p->proto &&
	    e->family == p->family)
		return &e->nh;
	/* Not valid until the FIB has answered and the key is written. */
	e->nh.ifindex = 0;
	*reason = fib_resolve(ctx, p, dst, 0, &e->nh);
	if (*reason)
		return 0;
	addr_copy(e->src, src);
	e->ingress = ctx->ingress_ifindex;
	e->vlan_proto = p->vlan_proto;
	e->vlan_vid = p->vlan_vid;
	e->tos_flow = tos_flow;
	e->proto = p->proto;
	e->family = p->family;
	e->nh.resolved_ns = now;
	return &e->nh;
}

/*
 * Sends the frame to the next hop: its MACs, and the VLAN tag the next hop's device wants. A
 * frame that came tagged (`tagged`) and leaves untagged loses its 4 bytes after the MACs; one
 * that came untagged and leaves tagged gains them; the EtherType after them stays in place.
 * The MACs are written afresh either way, so nothing else moves. Packet pointers are void
 * after this.
 */
static __always_inline int emit(struct xdp_md *ctx, int tagged, const struct xlb_nexthop *nh)
{
	int tag = nh->vlan_proto != 0;
	struct ethhdr *eth;
	void *end;

	if (tag != tagged && bpf_xdp_adjust_head(ctx, tagged ? VLAN_HLEN : -VLAN_HLEN))
		return verdict(XDP_DROP, XLB_STAT_DROP_VLAN_FAILED);
	eth = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if ((void *)(eth + 1) + VLAN_HLEN > end)
		return verdict(XDP_DROP, XLB_STAT_DROP_VLAN_FAILED);
	__builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);
	if (tag) {
		eth->h_proto = nh->vlan_proto;
		((struct vlan_tag *)(eth + 1))->tci = nh->vlan_tci;
	}
	if (nh->ifindex == ctx->ingress_ifindex)
		return verdict(XDP_TX, XLB_STAT_TX);
	count(XLB_STAT_REDIRECT);
	return bpf_redirect(nh->ifindex, 0);
}

/*
 * DSR over IPIP: the packet as it came, inside an outer IP header of its own family to the
 * backend, which decapsulates it and answers the client from the VIP itself.
 */
/* Bytes of the packet, from its IP header, that an ICMP "too big" quotes (a multiple of 4). */
#define XLB_ICMP_QUOTE 512

/* Is the packet, with overhead bytes of encapsulation, longer than the way to nh takes? */
static __always_inline int too_long(const struct pkt *p, __u32 overhead, const struct xlb_nexthop *nh)
{
	return nh->mtu && p->l3_len + overhead > nh->mtu;
}

/* May the packet be fragmented on its way (IPv4 without DF)? */
static __always_inline int fragmentable(const struct pkt *p)
{
	return p->family == XLB_FAMILY_V4 && !(((const struct iphdr *)p->l3)->frag_off & bpf_htons(IP_DF));
}

/*
 * What too_big_answer needs of the packet, in one word: a call's frame adds to the program's
 * stack (512 bytes in all, most of it the main frame's), so the answer takes no struct pkt and
 * keeps this in a register across its helper calls.
 */
#define SHAPE_L3_LEN(s) ((__u32)(s) & 0xffff)
#define SHAPE_VLAN(s) ((__be16)((s) >> 16))
#define SHAPE_V4(s) (((s) >> 32) == XLB_FAMILY_V4)
#define SHAPE_L2(s) (SHAPE_VLAN(s) ? sizeof(struct ethhdr) + VLAN_HLEN : sizeof(struct ethhdr))
#define SHAPE_ADD(s) ((SHAPE_V4(s) ? sizeof(struct iphdr) : sizeof(struct ipv6hdr)) + 8)

/*
 * The packet is too big for the way on (to its backend; for a reply, to the client) and must not
 * be fragmented: it becomes an ICMP "fragmentation needed" (IPv4) or "packet too big" (IPv6) to
 * its sender, from the address it was sent to, with the MTU the sender must keep to, quoting the
 * packet's first XLB_ICMP_QUOTE bytes from its IP header (as it was sent, before translation),
 * and goes back out of the interface it came in on. Path MTU discovery then works through the
 * balancer: without it a full-size packet would be dropped at the link (IPIP adds 20 or 40 bytes).
 * An answer is smaller than the packet it answers, but its sender may be forged: each CPU sends
 * at most icmp_rate (cfg->icmp_rate) answers a second (as the kernel limits its own ICMP), and drops the
 * packets past that.
 */
static __noinline int too_big_answer(struct xdp_md *ctx, __u32 icmp_rate, __u64 shape, __u32 mtu, __u64 now)
{
	__be16 vlan_proto;
	__u32 l2, add;
	int v4;
	__u8 *old, *icmp;
	void *data, *end;
	__u32 sum;
	__s64 quoted;

	if (SHAPE_L3_LEN(shape) < XLB_ICMP_QUOTE)
		return verdict(XDP_DROP, XLB_STAT_DROP_TOO_BIG);
	if (icmp_rate && rate_spent(XLB_RATE_ICMP, icmp_rate, now, 1))
		return verdict(XDP_DROP, XLB_STAT_DROP_ICMP_LIMITED);
	add = SHAPE_ADD(shape);
	/*
	 * Room for the new IP and ICMP headers before the packet's own IP header, which stays where
	 * it is to be quoted; the old Ethernet header (and tag) stays just before it, to be read.
	 */
	if (bpf_xdp_adjust_head(ctx, -(int)add))
		return verdict(XDP_DROP, XLB_STAT_DROP_TOO_BIG);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (bpf_xdp_adjust_tail(ctx, (int)(SHAPE_L2(shape) + SHAPE_ADD(shape) + XLB_ICMP_QUOTE) - (int)(end - data)))
		return verdict(XDP_DROP, XLB_STAT_DROP_TOO_BIG);
	/* Packet pointers are void after the adjustments: only ctx from here on. */
	vlan_proto = SHAPE_VLAN(shape);
	v4 = SHAPE_V4(shape);
	l2 = SHAPE_L2(shape);
	add = SHAPE_ADD(shape);
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + l2 + add + XLB_ICMP_QUOTE > end)
		return verdict(XDP_DROP, XLB_STAT_DROP_TOO_BIG);
	old = data + add;
	/* Back to where it came from: the MACs swapped, the tag kept. */
	__builtin_memcpy(data, old + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(data + ETH_ALEN, old, ETH_ALEN);
	if (vlan_proto) {
		struct vlan_tag *tag = data + sizeof(struct ethhdr);

		((struct ethhdr *)data)->h_proto = vlan_proto;
		tag->tci = ((struct vlan_tag *)(old + sizeof(struct ethhdr)))->tci;
		tag->proto = bpf_htons(v4 ? ETH_P_IP : ETH_P_IPV6);
	} else {
		((struct ethhdr *)data)->h_proto = bpf_htons(v4 ? ETH_P_IP : ETH_P_IPV6);
	}
	if (v4) {
		struct iphdr *ip = data + l2;
		const struct iphdr *was = data + l2 + add;

		icmp = (__u8 *)(ip + 1);
		ip->version = 4;
		ip->ihl = 5;
		ip->tos = 0;
		ip->tot_len = bpf_htons(sizeof(*ip) + 8 + XLB_ICMP_QUOTE);
		ip->id = 0;
		ip->frag_off = 0;
		ip->ttl = 64;
		ip->protocol = IPPROTO_ICMP;
		ip->saddr = was->daddr;
		ip->daddr = was->saddr;
		ip->check = 0;
		ip->check = ~csum_fold(csum_words((__u16 *)ip, sizeof(*ip) / 2, 0));
		/* Destination unreachable, fragmentation needed; the next hop's MTU in the last 16 bits. */
		icmp[0] = 3;
		icmp[1] = 4;
		*(__be32 *)(icmp + 4) = bpf_htonl(mtu & 0xffff);
		sum = 0;
	} else {
		struct ipv6hdr *ip6 = data + l2;
		const struct ipv6hdr *was = data + l2 + add;

		icmp = (__u8 *)(ip6 + 1);
		*(__be32 *)ip6 = bpf_htonl(0x60000000);
		ip6->payload_len = bpf_htons(8 + XLB_ICMP_QUOTE);
		ip6->nexthdr = IPPROTO_ICMPV6;
		ip6->hop_limit = 64;
		addr_copy(ip6->saddr.in6_u.u6_addr32, was->daddr.in6_u.u6_addr32);
		addr_copy(ip6->daddr.in6_u.u6_addr32, was->saddr.in6_u.u6_addr32);
		/* Packet too big, with the MTU; the checksum covers the pseudo-header. */
		icmp[0] = 2;
		icmp[1] = 0;
		*(__be32 *)(icmp + 4) = bpf_htonl(mtu);
		sum = csum_words((__u16 *)&ip6->saddr, 16, 0) + bpf_htons(8 + XLB_ICMP_QUOTE) + bpf_htons(IPPROTO_ICMPV6);
	}
	*(__u16 *)(icmp + 2) = 0;
	quoted = bpf_csum_diff(0, 0, (__be32 *)(icmp + 8), XLB_ICMP_QUOTE, 0);
	sum = csum_add(csum_words((__u16 *)icmp, 4, sum), (__u32)quoted);
	*(__u16 *)(icmp + 2) = ~csum_fold(sum);
	/* Out of the interface it came in on, by redirect (see reset_syn). */
	count(XLB_STAT_TX_ICMP_TOO_BIG);
	return bpf_redirect(ctx->ingress_ifindex, 0);
}

/*
 * The answer is out of line (a BPF-to-BPF call): it is rare and long, and every forwarding path
 * of both families may end in it; inlined, its copies were a quarter of the program.
 */
static __always_inline int too_big(struct xdp_md *ctx, const struct xlb_cfg *cfg, const struct pkt *p, __u32 mtu, __u64 now)
{
	return too_big_answer(ctx, cfg->icmp_rate, (__u64)p->l3_len | (__u64)p->vlan_proto << 16 | (__u64)p->family << 32, mtu, now);
}

/* A packet too long for the way to its backend: "too big" to its client, or, if it may be fragmented, nothing the balancer can send (drop). */
static __always_inline int refuse_long(struct xdp_md *ctx, const struct xlb_cfg *cfg, const struct pkt *p, __u32 mtu, __u64 now)
{
	if (fragmentable(p))
		return verdict(XDP_DROP, XLB_STAT_DROP_TOO_BIG);
	return too_big(ctx, cfg, p, mtu, now);
}

static __always_inline int encap(struct xdp_md *ctx, const struct xlb_cfg *cfg, struct pkt *p,
				 const struct xlb_flow *f, __u64 now)
{
	int v4 = p->family == XLB_FAMILY_V4;
	int outer_len = v4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	__u16 inner_len = p->l3_len;
	struct xlb_nexthop *nh;
	__be32 src[4] = {};
	struct ethhdr *eth;
	__u32 reason = 0;
	__be16 df = 0;
	__u8 tos = 0;
	void *end;

	if (v4) {
		const struct iphdr *ip = p->l3;

		src[0] = cfg->encap_src ? cfg->encap_src : ip->daddr;
		df = ip->frag_off & bpf_htons(IP_DF);
		tos = ip->tos;
	} else {
		const struct ipv6hdr *ip6 = p->l3;

		if (cfg->encap_src6[0] | cfg->encap_src6[1] | cfg->encap_src6[2] | cfg->encap_src6[3])
			addr_copy(src, cfg->encap_src6);
		else
			addr_copy(src, ip6->daddr.in6_u.u6_addr32);
		tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	}
	nh = backend_nexthop(ctx, p, f->nh_slot, f->backend, now, &reason);
	if (!nh)
		return verdict(XDP_PASS, reason);
	if (too_long(p, outer_len, nh))
		return refuse_long(ctx, cfg, p, nh->mtu - outer_len, now);
	/* The outer header goes after the MACs; a tag the packet came with goes (emit puts one on if need be). */
	if (inner_len > 0xffff - outer_len ||
	    bpf_xdp_adjust_head(ctx, -outer_len + (p->vlan_proto ? VLAN_HLEN : 0)))
		return verdict(XDP_DROP, XLB_STAT_DROP_ENCAP_FAILED);
	/* Packet pointers are void after adjust_head: only ctx from here on. */
	eth = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (v4) {
		struct iphdr *outer = (void *)(eth + 1);

		if ((void *)(outer + 1) > end)
			return verdict(XDP_DROP, XLB_STAT_DROP_ENCAP_FAILED);
		eth->h_proto = bpf_htons(ETH_P_IP);
		outer->version = 4;
		outer->ihl = 5;
		outer->tos = tos;
		outer->tot_len = bpf_htons(inner_len + sizeof(*outer));
		outer->id = 0;
		outer->frag_off = df;
		outer->ttl = 64;
		outer->protocol = IPPROTO_IPIP;
		outer->check = 0;
		outer->saddr = src[0];
		outer->daddr = f->backend[0];
		outer->check = ~csum_fold(csum_words((__u16 *)outer, sizeof(*outer) / 2, 0));
	} else {
		struct ipv6hdr *outer = (void *)(eth + 1);

		if ((void *)(outer + 1) > end)
			return verdict(XDP_DROP, XLB_STAT_DROP_ENCAP_FAILED);
		eth->h_proto = bpf_htons(ETH_P_IPV6);
		/* Version 6, the inner traffic class, flow label 0. */
		*(__be32 *)outer = bpf_htonl(0x60000000 | ((__u32)tos << 20));
		outer->payload_len = bpf_htons(inner_len);
		outer->nexthdr = IPPROTO_IPV6;
		outer->hop_limit = 64;
		addr_copy(outer->saddr.in6_u.u6_addr32, src);
		addr_copy(outer->daddr.in6_u.u6_addr32, f->backend);
	}
	return emit(ctx, 0, nh);
}

/* A packet of DSR flow f, on its way to f's backend: encapsulated (IPIP) or to its MAC (L2). */
static __always_inline int to_dsr(struct xdp_md *ctx, const struct xlb_cfg *cfg, struct pkt *p,
				  const struct xlb_flow *f, __u64 now)
{
	struct xlb_nexthop *nh;
	__u32 reason = 0;

	if (f->mode == XLB_MODE_DSR_IPIP)
		return encap(ctx, cfg, p, f, now);
	nh = backend_nexthop(ctx, p, f->nh_slot, f->backend, now, &reason);
	/*
	 * The packet is unchanged (to the VIP): the kernel, which does not hold the VIP, cannot
	 * forward it to the backend, so it is dropped, not passed. The agent keeps the neighbour
	 * entries of L2 DSR backends resolved; a client's retransmission finds one.
	 */
	if (!nh)
		return verdict(XDP_DROP, XLB_STAT_DROP_DSR_UNRESOLVED);
	/* Behind a gateway the backend's MAC is not ours to reach. */
	if (!nh->onlink)
		return verdict(XDP_DROP, XLB_STAT_DROP_DSR_NOT_ONLINK);
	if (too_long(p, 0, nh))
		return refuse_long(ctx, cfg, p, nh->mtu, now);
	return emit(ctx, p->vlan_proto != 0, nh);
}

/*
 * The FullNAT source address of flow f (of client flow fk) in generation gen: the VIP, or the
 * source address it took (xlb_snat). One its service no longer lists gives the VIP: such a
 * flow's backend knows it by an address this node no longer announces.
 */
static __always_inline const __be32 *nat_source(__u32 gen, const struct xlb_flow_key *fk,
						const struct xlb_flow *f)
{
	if (f->snat) {
		__u32 k = gen * (XLB_MAX_SERVICES + 1) + f->svc_id;
		const struct xlb_snat *sn = bpf_map_lookup_elem(&xlb_snat, &k);
		__u32 i = f->snat - 1;

		/* The mask says to the verifier what the bounds check says (a power of two). */
		if (sn && i < XLB_SNAT_ADDRS && i < sn->count)
			return sn->addr[i & (XLB_SNAT_ADDRS - 1)];
	}
	return fk->daddr;
}

/* A packet of flow f, on its way to f's backend in f's mode; fk is its flow key. */
static __always_inline int to_backend(struct xdp_md *ctx, const struct xlb_cfg *cfg, __u32 gen, struct pkt *p,
				      const struct xlb_flow_key *fk, const struct xlb_flow *f, __u64 now)
{
	struct xlb_nexthop *nh;
	__u32 reason = 0;

	if (f->mode >= XLB_MODE_DSR_L2)
		return to_dsr(ctx, cfg, p, f, now);
	if (hops_spent(p))
		return verdict(XDP_PASS, XLB_STAT_PASS_TTL_EXPIRED);
	nh = backend_nexthop(ctx, p, f->nh_slot, f->backend, now, &reason);
	/* Too big, and not to be fragmented: the client hears so, of its own packet (before translation). */
	if (nh && too_long(p, 0, nh) && !fragmentable(p))
		return too_big(ctx, cfg, p, nh->mtu, now);
	if (f->mode == XLB_MODE_DNAT)
		rewrite(p, fk->saddr, fk->sport, f->backend, f->backend_port);
	else
		rewrite(p, nat_source(gen, fk, f), f->nat_port, f->backend, f->backend_port);
	if (!nh)
		/* The kernel forwards the rewritten packet and resolves the neighbour. */
		return verdict(XDP_PASS, reason);
	/* Too big, and may be fragmented: the kernel forwards the translated packet in fragments. */
	if (too_long(p, 0, nh))
		return verdict(XDP_PASS, XLB_STAT_PASS_TOO_BIG);
	hop_decrement(p);
	return emit(ctx, p->vlan_proto != 0, nh);
}

static __always_inline int flow_expired(const struct xlb_cfg *cfg, const struct xlb_flow *f,
					__u8 proto, __u64 now)
{
	__u32 t;

	if (proto == IPPROTO_UDP)
		t = cfg->udp_timeout_s;
	else if (f->state == XLB_FLOW_ESTABLISHED)
		t = cfg->tcp_established_timeout_s;
	else if (f->state == XLB_FLOW_CLOSING)
		t = cfg->tcp_closing_timeout_s;
	else
		t = cfg->tcp_new_timeout_s;
	/* A mapping's own idle timeout (spec.idleTimeout) for its established and UDP flows. */
	if (proto == IPPROTO_UDP || f->state == XLB_FLOW_ESTABLISHED) {
		__u32 id = f->svc_id;
		struct xlb_svc_opts *opts = bpf_map_lookup_elem(&xlb_svc_opts, &id);

		if (opts && opts->idle_s)
			t = opts->idle_s;
	}
	/*
	 * 0: no timeout; the LRU still evicts. A flow seen after this CPU's clock (each CPU reads the
	 * coarse clock once a jiffy, and the agent stamps the flows it writes with its own) is live.
	 */
	return t && now > f->last_seen_ns && now - f->last_seen_ns > (__u64)t * NS_PER_S;
}

/* Fills a flow key from stored addresses (IPv4: word 0, the rest zero). */
static __always_inline void key_of(struct xlb_flow_key *k, __u8 family, const __be32 *saddr,
				   const __be32 *daddr, __be16 sport, __be16 dport, __u8 proto)
{
	addr_copy(k->saddr, saddr);
	addr_copy(k->daddr, daddr);
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
	k->family = family;
	k->pad[0] = 0;
	k->pad[1] = 0;
}

/* The flow-table key of the connection a reverse-NAT entry stands for. */
static __always_inline void flow_key_of(const struct xlb_rnat *r, const struct xlb_flow_key *rk,
					struct xlb_flow_key *k)
{
	key_of(k, rk->family, r->client, r->vip, r->client_port, r->vip_port, rk->proto);
}

/* The reverse translation of client flow fk: replies leave as VIP:port -> client:port. */
static __always_inline void rnat_of(const struct xlb_cfg *cfg, const struct xlb_flow_key *fk, const struct xlb_flow *f,
				    struct xlb_rnat *rv)
{
	addr_copy(rv->vip, fk->daddr);
	addr_copy(rv->client, fk->saddr);
	rv->vip_port = fk->dport;
	rv->client_port = fk->sport;
	rv->svc_id = f->svc_id;
	rv->backend = flow_backend(cfg, f);
}

/*
 * A flow event, when the configuration samples this flow (by its hash, so that a sampled flow
 * reports both its start and its close). Off the established path: only a flow's first packet
 * and the packet that closes it come here.
 */
static __always_inline void flow_event(const struct xlb_cfg *cfg, __u8 type, const struct xlb_flow_key *fk,
				       const struct xlb_flow *f, __u8 by_backend, __u8 tcp_flags, __u64 now)
{
	__u32 sample = cfg->event_sample, key = f->svc_id;
	struct xlb_flow_event *ev;
	struct xlb_svc_opts *opts;
	__u64 *c;

	/* A service with a connection log of its own samples by it (see xlb_svc_opts). */
	opts = bpf_map_lookup_elem(&xlb_svc_opts, &key);
	if (opts && opts->log_sample)
		sample = opts->log_sample;
	if (!sample || flow_hash(fk) % sample)
		return;
	/* Written in place in the ring, not built on the stack: the NAT port search ends flows too. */
	ev = bpf_ringbuf_reserve(&xlb_events, sizeof(*ev), 0);
	key = XLB_EVENTS_LOST;
	if (ev) {
		ev->time_ns = now;
		ev->flow = *fk;
		addr_copy(ev->backend, f->backend);
		ev->backend_port = f->backend_port;
		ev->nat_port = f->nat_port;
		ev->svc_id = f->svc_id;
		ev->type = type;
		ev->mode = f->mode;
		ev->by_backend = by_backend;
		ev->tcp_flags = tcp_flags;
		ev->snat = f->snat;
		ev->pad[0] = ev->pad[1] = ev->pad[2] = 0;
		bpf_ringbuf_submit(ev, 0);
		key = XLB_EVENTS_SENT;
	}
	c = bpf_map_lookup_elem(&xlb_event_stats, &key);
	if (c)
		*c += 1;
}

/* A flow, admitted or still new; 0 when neither table holds it. */
static __always_inline struct xlb_flow *flow_find(const struct xlb_flow_key *k)
{
	struct xlb_flow *f = bpf_map_lookup_elem(&xlb_flows, k);

	return f ? f : bpf_map_lookup_elem(&xlb_flows_new, k);
}

/*
 * The per-CPU flow cache: a direct-mapped copy of admitted flows, in front of xlb_flows. A hash
 * map lookup (the kernel hashes the 40-byte key, walks a bucket, and an LRU map marks the entry
 * used) is most of an established packet's cost; an entry here is found by the program's own
 * flow hash in an array the verifier inlines, and compared whole. The copy is only good for the
 * jiffy it was taken in (synced_ns, on the coarse clock, which moves once a jiffy) and the
 * agent's flow-table epoch (xlb_flow_epoch): at most one lookup per flow and jiffy goes to
 * xlb_flows, which keeps its last-seen time to within a jiffy and its LRU order. Only what
 * needs no state change is served from here: packets without SYN, FIN or RST, of established
 * TCP flows and of UDP flows. Everything else, and every miss, takes the flow table; a SYN, FIN
 * or RST also drops this CPU's copy of its flow, so the packets after it read the table too.
 *
 * A change another CPU makes to a flow (a FIN seen there) reaches this CPU's copy at the next
 * jiffy; flows of one tuple stay on one CPU under RSS, and a FIN changes nothing for the packets
 * after it until the flow is closed. A change the agent makes (flows ended, swept or cleared)
 * bumps the epoch, and reaches every copy at the next packet.
 */
#define FLOW_CACHE_SLOTS 4096

struct flow_cached {
	struct xlb_flow_key key;
	struct xlb_flow flow;
	__u64 synced_ns; /* the coarse clock when the copy was taken from xlb_flows */
	__u32 epoch;     /* xlb_flow_epoch then */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOW_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct flow_cached);
} xlb_flow_cache SEC(".maps");

/* Bumped by the agent after it deletes or rewrites flows: every cached copy is stale. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} xlb_flow_epoch SEC(".maps");

static __always_inline int key_eq(const struct xlb_flow_key *a, const struct xlb_flow_key *b)
{
	const __u64 *x = (const void *)a, *y = (const void *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) | (x[4] ^ y[4])) == 0;
}

/*
 * This CPU's cache slot for fk (0 when there is none), and through *hit its copy of fk's flow
 * when the copy is good now; *epoch is the current flow-table epoch, for a copy taken after.
 */
static __always_inline struct flow_cached *flow_cache(const struct xlb_flow_key *fk, __u64 now,
						      __u32 *epoch, struct xlb_flow **hit)
{
	__u32 slot = flow_hash(fk) & (FLOW_CACHE_SLOTS - 1), zero = 0;
	__u32 *e = bpf_map_lookup_elem(&xlb_flow_epoch, &zero);
	struct flow_cached *c = bpf_map_lookup_elem(&xlb_flow_cache, &slot);

	if (!e || !c)
		return 0;
	*epoch = *e;
	if (c->synced_ns == now && c->epoch == *epoch && key_eq(&c->key, fk))
		*hit = &c->flow;
	return c;
}

/* A reverse translation, of an admitted flow or of a new one. */
static __always_inline struct xlb_rnat *rnat_find(const struct xlb_flow_key *rk)
{
	struct xlb_rnat *r = bpf_map_lookup_elem(&xlb_rnat, rk);

	return r ? r : bpf_map_lookup_elem(&xlb_rnat_new, rk);
}

/* The reverse-NAT key of flow f of client flow fk: FullNAT backend -> source:nat port, DNAT backend -> client. */
static __always_inline void rnat_key_of(struct xlb_flow_key *rk, __u32 gen, const struct xlb_flow_key *fk,
					const struct xlb_flow *f)
{
	if (f->mode == XLB_MODE_DNAT)
		key_of(rk, fk->family, f->backend, fk->saddr, f->backend_port, fk->sport, fk->proto);
	else
		key_of(rk, fk->family, f->backend, nat_source(gen, fk, f), f->backend_port, f->nat_port, fk->proto);
}

/*
 * A new flow's second packet admits it: the flow (and its reverse translation) moves from the
 * new tables to xlb_flows and xlb_rnat, where new flows cannot evict it.
 */
static __always_inline void admit(__u32 gen, const struct xlb_flow_key *fk, const struct xlb_flow *f)
{
	struct xlb_flow_key rk;
	struct xlb_rnat *r;

	bpf_map_update_elem(&xlb_flows, fk, f, BPF_ANY);
	bpf_map_delete_elem(&xlb_flows_new, fk);
	if (f->mode > XLB_MODE_DNAT)
		return;
	rnat_key_of(&rk, gen, fk, f);
	r = bpf_map_lookup_elem(&xlb_rnat_new, &rk);
	if (r) {
		struct xlb_rnat rv = *r;

		bpf_map_update_elem(&xlb_rnat, &rk, &rv, BPF_ANY);
		bpf_map_delete_elem(&xlb_rnat_new, &rk);
	}
}

/*
 * A FIN or RST, of the client or (from_backend) of the backend: how the connection ends, which
 * decides when its FullNAT port may serve another connection (nat_port_free).
 */
static __always_inline void mark_close(struct xlb_flow *f, __u8 tcp_flags, int from_backend)
{
	if (tcp_flags & TCP_RST)
		f->flags |= XLB_FLOW_F_RESET;
	else if (!from_backend)
		f->flags |= XLB_FLOW_F_FIN_CLIENT;
	else if (f->flags & XLB_FLOW_F_FIN_CLIENT)
		f->flags |= XLB_FLOW_F_FIN_BACKEND;
	else
		f->flags |= XLB_FLOW_F_FIN_BACKEND | XLB_FLOW_F_TIME_WAIT;
}

/* A backend's reply (its flow key rk): the source becomes VIP:port, the destination the client. */
static __always_inline int reply(struct xdp_md *ctx, const struct xlb_cfg *cfg, struct pkt *p,
				 const struct xlb_flow_key *rk, const struct xlb_rnat *r)
{
	__u64 now = coarse_now();
	struct xlb_nexthop *nh;
	__u32 reason = 0;

	count(XLB_STAT_FWD_REPLY);
	svc_count(r->svc_id, r->backend, p->len, 1, 0);
	/* The server closes or refuses: the next SYN on this tuple starts afresh. */
	if (p->tcp_flags & (TCP_FIN | TCP_RST)) {
		struct xlb_flow_key k;
		struct xlb_flow *f;

		flow_key_of(r, rk, &k);
		f = flow_find(&k);
		if (f && f->state != XLB_FLOW_CLOSING) {
			f->state = XLB_FLOW_CLOSING;
			flow_event(cfg, XLB_EVENT_CLOSED, &k, f, 1, p->tcp_flags, now);
			conns_add(cfg, f, -1);
		}
		if (f)
			mark_close(f, p->tcp_flags, 1);
	}
	if (hops_spent(p))
		return verdict(XDP_PASS, XLB_STAT_PASS_TTL_EXPIRED);
	nh = reply_nexthop(ctx, p, r->client, now, &reason);
	/* Too big for the client's side, not to be fragmented: the backend hears so, of its own packet. */
	if (nh && too_long(p, 0, nh) && !fragmentable(p))
		return too_big(ctx, cfg, p, nh->mtu, now);
	rewrite(p, r->vip, r->vip_port, r->client, r->client_port);
	if (!nh)
		return verdict(XDP_PASS, reason);
	/* May be fragmented: the kernel forwards the translated reply in fragments. */
	if (too_long(p, 0, nh))
		return verdict(XDP_PASS, XLB_STAT_PASS_TOO_BIG);
	hop_decrement(p);
	return emit(ctx, p->vlan_proto != 0, nh);
}

/*
 * The TCP half of a reset: th becomes RST|ACK for a SYN that carried `payload` bytes, its
 * checksum computed over the pseudo-header sum `pseudo` and the bare 20-byte header.
 */
static __always_inline void reset_tcp(struct tcphdr *th, __u32 payload, __u32 pseudo)
{
	__u32 seq = bpf_ntohl(th->seq);
	__be16 port = th->source;

	th->source = th->dest;
	th->dest = port;
	th->ack_seq = bpf_htonl(seq + 1 + payload); /* the SYN counts as one */
	th->seq = 0;
	((__u8 *)th)[12] = 5 << 4;          /* data offset 5, no options */
	((__u8 *)th)[13] = TCP_RST | TCP_ACK;
	th->window = 0;
	th->urg_ptr = 0;
	th->check = 0;
	th->check = ~csum_fold(csum_words((__u16 *)th, sizeof(*th) / 2, pseudo));
}

/*
 * Shutdown window: answer a new connection's SYN with RST|ACK from the VIP, in place, so the
 * client fails fast and tries another address (DNS has moved on) instead of timing out.
 * Only packets whose TCP header follows the fixed IP header are answered; anything else is
 * dropped and counted.
 */
static __always_inline int reset_syn(struct xdp_md *ctx, struct pkt *p, void *end)
{
	__u32 payload, pseudo;
	struct tcphdr *th;
	__u8 mac[ETH_ALEN];
	long shrink;

	if (!p->l4_direct)
		return verdict(XDP_DROP, XLB_STAT_DROP_SHUTDOWN_UNSUPPORTED);

	__builtin_memcpy(mac, p->eth->h_dest, ETH_ALEN);
	__builtin_memcpy(p->eth->h_dest, p->eth->h_source, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, mac, ETH_ALEN);

	if (p->family == XLB_FAMILY_V4) {
		struct iphdr *ip = p->l3;
		__be32 addr;

		th = (void *)(ip + 1);
		if ((void *)(th + 1) > end)
			return verdict(XDP_DROP, XLB_STAT_DROP_SHUTDOWN_UNSUPPORTED);
		payload = bpf_ntohs(ip->tot_len) - sizeof(*ip) - th->doff * 4;
		addr = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = addr;
		ip->tot_len = bpf_htons(sizeof(*ip) + sizeof(*th));
		ip->id = 0;
		ip->frag_off = bpf_htons(IP_DF);
		ip->ttl = 64;
		ip->check = 0;
		ip->check = ~csum_fold(csum_words((__u16 *)ip, sizeof(*ip) / 2, 0));
		/* Pseudo-header: addresses, protocol, TCP length. */
		pseudo = csum_words((__u16 *)&ip->saddr, 4, 0);
		pseudo += bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(*th));
	} else {
		struct ipv6hdr *ip6 = p->l3;
		__be32 addr[4];

		th = (void *)(ip6 + 1);
		if ((void *)(th + 1) > end)
			return verdict(XDP_DROP, XLB_STAT_DROP_SHUTDOWN_UNSUPPORTED);
		payload = bpf_ntohs(ip6->payload_len) - th->doff * 4;
		addr_copy(addr, ip6->saddr.in6_u.u6_addr32);
		addr_copy(ip6->saddr.in6_u.u6_addr32, ip6->daddr.in6_u.u6_addr32);
		addr_copy(ip6->daddr.in6_u.u6_addr32, addr);
		ip6->payload_len = bpf_htons(sizeof(*th));
		ip6->hop_limit = 64;
		/* Pseudo-header (RFC 8200 8.1): addresses, upper-layer length, next header. */
		pseudo = csum_words((__u16 *)&ip6->saddr, 16, 0);
		pseudo += bpf_htons(sizeof(*th)) + bpf_htons(IPPROTO_TCP);
	}
	reset_tcp(th, payload, pseudo);

	shrink = (long)((void *)(th + 1) - end);
	if (shrink < 0 && bpf_xdp_adjust_tail(ctx, (int)shrink))
		return verdict(XDP_DROP, XLB_STAT_DROP_SHUTDOWN_UNSUPPORTED);
	/*
	 * Out of the interface it came in on. A redirect rather than XDP_TX: on veth, XDP_TX wakes
	 * the peer only if the peer runs XDP itself, so the RST would sit unsent; a redirect
	 * flushes on every driver, and this is not a hot path.
	 */
	count(XLB_STAT_TX_RST_SHUTDOWN);
	return bpf_redirect(ctx->ingress_ifindex, 0);
}

/*
 * May a new flow take the NAT port of translation r (key rk)? Yes when the flow that held it is
 * gone or past its timeout (the caller removes the translation), and when its connection has
 * ended at both ends and the backend keeps nothing of it: a new SYN on a tuple the backend holds
 * in TIME_WAIT is refused unless its TCP timestamp is newer, and Linux clients draw a timestamp
 * offset per connection, so another connection's SYN is refused half the time (the client then
 * waits a second to retry). So:
 * - after a RST, or a FIN each way of which the client's came first (the backend closed last and
 *   keeps no TIME_WAIT), once the flow has been quiet for NAT_PORT_CLOSED_NS (the last
 *   retransmissions);
 * - after the backend closed first (it holds the tuple in TIME_WAIT), once the flow has been
 *   quiet for NAT_PORT_TIME_WAIT_NS (Linux keeps TIME_WAIT 60 s);
 * - of a TCP handshake that never completed (SYNs only, from spoofed sources in a SYN flood),
 *   once it has been quiet for NAT_PORT_HALF_OPEN_NS, not at tcpNew: otherwise a flood of a
 *   port range's worth of SYNs per tcpNew (20,000 in 120 s, 170 a second) would refuse every new
 *   flow to the backend. A real client still trying sends its SYN again within that (Linux
 *   waits 1 s, then 2 s, 4 s, ...), and if it is late it starts afresh on another port. The
 *   backend may still hold the old handshake on the tuple (SYN-RECV); a Linux backend took the
 *   new client's SYN on such a tuple at once (SynFloodEndToEndTests).
 * A half-closed connection (one FIN) keeps its port until its timeout: its backend may still be
 * sending. The same client connection again (its own port reused) needs none of this: it takes
 * its flow's tuple afresh (serve), and so the same port, with a newer timestamp of its own.
 * A taken flow is removed, so that it no longer owns the port; a late packet of it starts a new flow.
 * A global function: verified once, not at each of its calls in the port search.
 */
__noinline int nat_port_free(const struct xlb_cfg *cfg, const struct xlb_rnat *r,
			     const struct xlb_flow_key *rk, __u64 now)
{
	struct xlb_flow_key k;
	struct xlb_flow *f;
	__u8 fl;

	if (!cfg || !r || !rk)
		return 0;
	flow_key_of(r, rk, &k);
	f = flow_find(&k);
	if (!f || flow_expired(cfg, f, rk->proto, now) || f->nat_port != rk->dport ||
	    !addr_eq(f->backend, rk->saddr) || f->backend_port != rk->sport)
		return 1;
	/* A handshake that has stopped: its client sends nothing but SYNs, and has sent none for a while. */
	if (rk->proto == IPPROTO_TCP && f->state == XLB_FLOW_NEW && f->last_seen_ns < now &&
	    now - f->last_seen_ns > NAT_PORT_HALF_OPEN_NS) {
		/* It ends here, idle (a connection that ended otherwise was closed when it did). */
		flow_event(cfg, XLB_EVENT_CLOSED, &k, f, 0, 0, now);
		conns_add(cfg, f, -1);
		goto take;
	}
	fl = f->flags;
	if (!(fl & XLB_FLOW_F_RESET) &&
	    (fl & (XLB_FLOW_F_FIN_CLIENT | XLB_FLOW_F_FIN_BACKEND)) != (XLB_FLOW_F_FIN_CLIENT | XLB_FLOW_F_FIN_BACKEND))
		return 0;
	/* Seen at or after this CPU's clock (another CPU's runs up to a jiffy ahead): not quiet. */
	if (f->last_seen_ns >= now ||
	    now - f->last_seen_ns <= ((fl & (XLB_FLOW_F_TIME_WAIT | XLB_FLOW_F_RESET)) == XLB_FLOW_F_TIME_WAIT
					  ? NAT_PORT_TIME_WAIT_NS : NAT_PORT_CLOSED_NS))
		return 0;
take:
	bpf_map_delete_elem(&xlb_flows, &k);
	bpf_map_delete_elem(&xlb_flows_new, &k);
	return 1;
}

/*
 * One try of the port search: take the translation rk (backend, source, port) for rv among the
 * new flows' unless a live flow holds it; a stale translation of an admitted flow is removed, or
 * it would shadow the new one. A global function: verified once, not at each try.
 */
__noinline int nat_port_take(const struct xlb_cfg *cfg, struct xlb_flow_key *rk, const struct xlb_rnat *rv, __u64 now)
{
	struct xlb_rnat *held;

	if (!cfg || !rk || !rv)
		return 0;
	held = bpf_map_lookup_elem(&xlb_rnat, rk);
	if (held) {
		if (!nat_port_free(cfg, held, rk, now))
			return 0;
		bpf_map_delete_elem(&xlb_rnat, rk);
	}
	if (bpf_map_update_elem(&xlb_rnat_new, rk, rv, BPF_NOEXIST) == 0)
		return 1;
	held = bpf_map_lookup_elem(&xlb_rnat_new, rk);
	return held && nat_port_free(cfg, held, rk, now) && bpf_map_update_elem(&xlb_rnat_new, rk, rv, BPF_ANY) == 0;
}

/*
 * Pick a FullNAT source address and port for this flow that no live flow to the same backend
 * holds, and record the reverse translation under them (nat_port_take). A service with
 * source addresses beyond its VIP (XLB_SVC_F_SNAT) spreads its tries over all of them, by the
 * flow's hash: each address has a port range of its own toward each backend.
 * (nat_port_free compares a translation's flow by port and backend, not by source address: a
 * client tuple reused on another address with the same port keeps that port busy on the first
 * until the flow ends. A try lost, never a port shared.)
 */
static __always_inline int alloc_nat_port(const struct xlb_cfg *cfg, __u32 gen, const struct xlb_svc *svc,
					  const struct xlb_flow_key *fk, struct xlb_flow *nf, __u32 h, __u64 now)
{
	__u32 span = (__u32)cfg->nat_port_max - cfg->nat_port_min + 1;
	const struct xlb_snat *sn = 0;
	struct xlb_flow_key rk;
	struct xlb_rnat rv = {};
	__u32 sources = 1, a = 0;
	int i;

	key_of(&rk, fk->family, nf->backend, fk->daddr, nf->backend_port, 0, fk->proto);
	rnat_of(cfg, fk, nf, &rv);
	if (svc->flags & XLB_SVC_F_SNAT) {
		__u32 k = gen * (XLB_MAX_SERVICES + 1) + svc->id;

		sn = bpf_map_lookup_elem(&xlb_snat, &k);
		if (sn)
			sources = 1 + (sn->count < XLB_SNAT_ADDRS ? sn->count : XLB_SNAT_ADDRS);
	}

	for (i = 0; i < NAT_PORT_TRIES; i++) {
		__u16 port = cfg->nat_port_min + (__u16)((h + i * 7919u) % span);

		if (sn) {
			a = ((h >> 16) + i) % sources;
			if (a > 0 && a <= XLB_SNAT_ADDRS)
				__builtin_memcpy(rk.daddr, sn->addr[(a - 1) & (XLB_SNAT_ADDRS - 1)], sizeof(rk.daddr));
			else
				__builtin_memcpy(rk.daddr, fk->daddr, sizeof(rk.daddr));
		}
		rk.dport = bpf_htons(port);
		if (nat_port_take(cfg, &rk, &rv, now))
			goto done;
	}
	return -1;
done:
	nf->nat_port = rk.dport;
	nf->snat = a;
	return 0;
}

/*
 * Can a new flow of this service be forwarded without state? DSR leaves the packet's addresses
 * alone, so nothing has to be translated back, and Maglev and source hash choose the same backend
 * for every packet of a flow while the backend set stays as it is. Round robin does not; NAT modes
 * need the reverse translation for the replies. Such a flow loses what the flow table gives it:
 * its backend when the set changes (a draining backend keeps no untracked flow), and its events.
 * A service with ClientIP affinity is never forwarded so: its flows' later packets, which start
 * a tracked flow, would follow the client's affinity, not the hash its SYN went by.
 * Past the new-flow cap (a SYN flood, mostly) this is the trade: a flow-table insert costs about
 * ten times the rest of a new flow's path here, so a CPU forwards a flood of new flows at nearly
 * the established rate instead of spending itself on inserts. Later packets of such a flow find
 * no entry and start it again, tracked once the cap allows.
 */
static __always_inline int stateless(const struct xlb_svc *svc)
{
	/* Maglev and source hash (XLB_ALGO_MAGLEV 0, XLB_ALGO_SOURCE_HASH 1); not round robin or LeastConn. */
	return svc->mode >= XLB_MODE_DSR_L2 && svc->algo <= XLB_ALGO_SOURCE_HASH && !(svc->flags & XLB_SVC_F_AFFINITY);
}

/*
 * LeastConn: the ring position, among the n backends of the service's ring at `base` (each once;
 * their weights follow them, at base + n), of the backend with the fewest open flows through this
 * node per unit of weight. It looks at all n, or, of more than XLB_LC_SCAN, at XLB_LC_SCAN in a
 * row from where the flow hash h points: the least loaded of a window the hash draws is close to
 * the least loaded of all (the "power of d choices"), at a cost per new flow that does not grow
 * with the backends. Ties go to the first from that point, so backends of equal load share new
 * flows by the hash.
 *
 * Without cross-CPU locks, the counts are a hint, not a total. They are one array shared by all
 * CPUs (xlb_backend_conns): a flow adds itself when it is recorded and takes itself away at its
 * FIN or RST or when it is found expired, each with one atomic add. There is no lock, but a busy
 * backend's cache line moves between the CPUs that open and close its flows. A CPU reads the
 * counts without ordering against the others: two CPUs choosing at the same instant may both see
 * the same backend as the least loaded and both give it a flow, and a FIN seen on two CPUs at once
 * (client and backend) may take a flow away twice. An exact count would need a lock held from the
 * read to the add on every new flow, putting all CPUs in one line. Per-CPU counts would move no
 * cache line, but each CPU would then balance only its own flows, or read every other CPU's count
 * of every candidate. Flows that end without a packet (swept idle, evicted, cleared, ended by a
 * drain) are not taken away here: the agent recounts the flow tables after each sweep and
 * corrects the counts (XdpDataPlane.RecountConnections), so such errors last until then.
 * A global function: the verifier checks it once, not at every place a new flow is chosen.
 */
/* xlb_least_conn()'s state, per CPU: the stack has 32 bytes to spare below the forwarding path's frame. */
struct lc_scratch {
	__u32 key;   /* a map key */
	__u32 base;
	__u32 n;
	__u32 best;  /* the ring position of the least loaded so far */
	__s64 least; /* its open flows */
	__s64 least_w; /* its weight */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lc_scratch);
} xlb_lc_scratch SEC(".maps");

__noinline int xlb_least_conn(__u32 base, __u32 n, __u32 h)
{
	struct lc_scratch *s;
	__u32 zero = 0, pos, i, *v;
	__s64 *c, conns, weight;

	s = bpf_map_lookup_elem(&xlb_lc_scratch, &zero);
	if (!s || n == 0)
		return 0;
	s->base = base;
	s->n = n;
	s->best = 0;
	s->least = 0;
	s->least_w = 1;
	pos = h % n;
	for (i = 0; i < XLB_LC_SCAN && i < s->n; i++, pos++) {
		if (pos >= s->n)
			pos -= s->n;
		s->key = s->base + s->n + pos;
		v = bpf_map_lookup_elem(&xlb_rings, &s->key);
		if (!v)
			break;
		weight = *v ? *v : 1;
		s->key = s->base + pos;
		v = bpf_map_lookup_elem(&xlb_rings, &s->key);
		if (!v)
			break;
		s->key = *v;
		c = bpf_map_lookup_elem(&xlb_backend_conns, &s->key);
		conns = c && *c > 0 ? *c : 0;
		/* conns / weight < least / least_w, without division (counts and weights are far below 2^31). */
		if (i == 0 || conns * s->least_w < s->least * weight) {
			s->least = conns;
			s->least_w = weight;
			s->best = pos;
		}
	}
	return s->best;
}

/*
 * ClientIP affinity: the ring position for a new flow of client fk->saddr to service svc_id, whose
 * ring has n slots, when its algorithm chose pos (n_pos: n << 32 | pos; four arguments keep them
 * out of the stack). A client seen within the service's timeout (since its last new flow, as
 * Kubernetes' sessionAffinity counts it) takes the position its last new flow took. While the
 * service's backends stay as they are, that is the same backend; when they change, it is the
 * backend that now holds the position: Maglev moves few positions, and those of a backend that
 * left or drains go to the others, so a client is never sent to a backend the ring no longer
 * has. Either way the client's entry records this flow. A global function, checked once by the
 * verifier.
 */
__noinline int xlb_affine(const struct xlb_flow_key *fk, __u32 svc_id, __u64 n_pos)
{
	__u32 n = n_pos >> 32, pos = (__u32)n_pos;
	struct affinity_scratch *s;
	struct xlb_svc_opts *opts;
	struct affinity *a;
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&xlb_affinity_scratch, &zero);
	if (!fk || !s || pos >= n)
		return pos;
	/* Everything into the scratch before the next call: the stack has no room for spills. */
	s->key = svc_id;
	s->n = n;
	s->v.pos = pos;
	opts = bpf_map_lookup_elem(&xlb_svc_opts, &s->key);
	if (!opts || opts->affinity_s == 0)
		return s->v.pos;
	s->timeout = opts->affinity_s;
	__builtin_memset(&s->k, 0, sizeof(s->k));
	s->k.svc_id = s->key;
	s->k.family = fk->family;
	addr_copy(s->k.addr, fk->saddr);
	s->v.last_ns = bpf_ktime_get_coarse_ns();
	a = bpf_map_lookup_elem(&xlb_affinity, &s->k);
	if (a && a->pos < s->n && s->v.last_ns - a->last_ns <= (__u64)s->timeout * 1000000000ull) {
		a->last_ns = s->v.last_ns;
		return a->pos;
	}
	bpf_map_update_elem(&xlb_affinity, &s->k, &s->v, BPF_ANY);
	return s->v.pos;
}

/* The positions of a service's ring that hold backends: all, but half of LeastConn's (see xlb_least_conn). */
static __always_inline __u32 backend_positions(const struct xlb_svc *svc)
{
	return svc->algo == XLB_ALGO_LEAST_CONN ? svc->ring_size / 2 : svc->ring_size;
}

/* The ring position a new flow takes, by the service's algorithm (its ring begins at base). */
static __always_inline __u32 pick(const struct xlb_svc *svc, const struct xlb_flow_key *fk, __u32 base)
{
	__u32 id = svc->id, *cursor;

	if (svc->algo == XLB_ALGO_SOURCE_HASH)
		return source_hash(fk) % svc->ring_size;
	if (svc->algo == XLB_ALGO_LEAST_CONN)
		return (__u32)xlb_least_conn(base, svc->ring_size / 2, flow_hash(fk)) % svc->ring_size;
	if (svc->algo == XLB_ALGO_ROUND_ROBIN) {
		cursor = bpf_map_lookup_elem(&xlb_rr, &id);
		if (cursor) {
			*cursor += 1;
			return *cursor % svc->ring_size;
		}
	}
	return flow_hash(fk) % svc->ring_size;
}

/* The service of generation gen at the flow's destination (VIP, port, protocol); 0: none. */
static __always_inline struct xlb_svc *service_of(const struct xlb_flow_key *fk, __u32 gen)
{
	struct xlb_svc_key sk = {};

	addr_copy(sk.vip, fk->daddr);
	sk.port = fk->dport;
	sk.proto = fk->proto;
	sk.family = fk->family;
	sk.gen = gen;
	return bpf_map_lookup_elem(&xlb_services, &sk);
}

/* The backend a new flow of svc takes (its ring slot by the service's algorithm), into nf; 0, or the reason to drop. */
static __always_inline __u32 choose(const struct xlb_cfg *cfg, __u32 gen, const struct xlb_svc *svc,
				    const struct xlb_flow_key *fk, int syn, __u64 now, struct xlb_flow *nf, int affine)
{
	__u32 slot, *bidx;
	struct xlb_backend *be;

	if (svc->ring_size == 0)
		return XLB_STAT_DROP_NO_BACKEND;
	slot = gen * ring_slots(cfg) + svc->ring_off;
	if (affine && (svc->flags & XLB_SVC_F_AFFINITY))
		/* LeastConn's weights are not positions: the client's must lie among the backends. */
		slot += (__u32)xlb_affine(fk, svc->id, (__u64)backend_positions(svc) << 32 | pick(svc, fk, slot)) % svc->ring_size;
	else
		slot += pick(svc, fk, slot);
	bidx = bpf_map_lookup_elem(&xlb_rings, &slot);
	if (!bidx || *bidx == 0 || *bidx >= backend_slots(cfg))
		return XLB_STAT_DROP_NO_BACKEND;
	slot = gen * backend_slots(cfg) + *bidx;
	be = bpf_map_lookup_elem(&xlb_backends, &slot);
	/* A backend of the other family cannot take this packet (the operator never plans one). */
	if (!be || be->family != fk->family)
		return XLB_STAT_DROP_NO_BACKEND;

	addr_copy(nf->backend, be->addr);
	/* DSR cannot change the port: the backend answers the client from VIP:port itself. */
	nf->backend_port = svc->mode >= XLB_MODE_DSR_L2 ? fk->dport : be->port;
	nf->svc_id = svc->id;
	nf->last_seen_ns = now;
	nf->nh_slot = slot;
	nf->mode = svc->mode;
	/* A flow first seen mid-connection (another node had it) is established already. */
	nf->state = fk->proto == IPPROTO_TCP && !syn ? XLB_FLOW_ESTABLISHED : XLB_FLOW_NEW;
	/* A mask, not a branch on the algorithm: the verifier need not walk the rest twice. */
	nf->flags = svc->flags & XLB_SVC_F_COUNT_FLOWS;
	return 0;
}

/* A new flow enters the new flows' table, and is counted (and sampled for an event). */
static __always_inline void record(const struct xlb_cfg *cfg, const struct pkt *p, const struct xlb_flow_key *fk,
				   const struct xlb_flow *nf, __u64 now)
{
	if (bpf_map_update_elem(&xlb_flows_new, fk, nf, BPF_ANY) == 0)
		conns_add(cfg, nf, 1);
	flow_event(cfg, XLB_EVENT_NEW, fk, nf, 0, p->tcp_flags, now);
	count(XLB_STAT_FWD_NEW_FLOW);
	svc_count(nf->svc_id, flow_backend(cfg, nf), p->len, 0, 1);
}

/* A new flow of a stateless-capable service past the new-flow cap: forwarded, not recorded (see stateless). */
static __always_inline int untracked(struct xdp_md *ctx, const struct xlb_cfg *cfg, struct pkt *p,
				     const struct xlb_flow *nf, __u64 now)
{
	count(XLB_STAT_FWD_UNTRACKED);
	svc_count(nf->svc_id, flow_backend(cfg, nf), p->len, 0, 1);
	return to_dsr(ctx, cfg, p, nf, now);
}

/*
 * The L4 header at l4: ports, checksum and flags into p; 0, or the verdict's reason. The header
 * must lie within the frame (end) and within the IP datagram (l3_end, before any padding).
 */
static __always_inline __u32 parse_l4(struct pkt *p, void *l4, void *end, void *l3_end)
{
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end || (void *)(th + 1) > l3_end)
			return XLB_STAT_DROP_TRUNCATED_L4;
		p->l4_sum = &th->check;
		p->sport = &th->source;
		p->dport = &th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
	} else {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > end || (void *)(uh + 1) > l3_end)
			return XLB_STAT_DROP_TRUNCATED_L4;
		p->l4_sum = &uh->check;
		p->sport = &uh->source;
		p->dport = &uh->dest;
		p->udp_nosum = uh->check == 0;
	}
	return 0;
}

/*
 * A parsed TCP/UDP packet that may concern us (the filter said so): a reply to translate
 * back, a packet of a known flow, or a new flow to a service.
 */
static __always_inline int serve(struct xdp_md *ctx, const struct xlb_cfg *cfg, __u32 gen,
				 struct pkt *p, struct xlb_flow_key *fk, int to_vip, void *end)
{
	struct flow_cached *cache;
	struct xlb_flow *flow;
	struct xlb_rnat *r;
	struct xlb_svc *svc;
	int syn, admitted, cached;
	__u32 epoch = 0;
	__u16 dport;
	__u64 now;

	if (!to_vip) {
		/* From a DNAT backend: its reply to a client, or traffic of its own. */
		r = rnat_find(fk);
		if (r)
			return reply(ctx, cfg, p, fk, r);
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);
	}

	/* FullNAT replies come back to VIP:nat_port; only ports in the NAT range can be replies. */
	dport = bpf_ntohs(fk->dport);
	if (dport >= cfg->nat_port_min && dport <= cfg->nat_port_max) {
		r = rnat_find(fk);
		if (r)
			return reply(ctx, cfg, p, fk, r);
	}

	now = coarse_now();
	syn = p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	/* Past the new-flow cap a SYN of a stateless-capable service skips the flow tables (see stateless). */
	if (syn && cfg->new_flow_cap && cap_spent(cfg, now, 0)) {
		svc = service_of(fk, gen);
		if (!svc)
			return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);
		if (stateless(svc)) {
			struct xlb_flow nf = {};
			__u32 reason;

			if (cfg->flags & XLB_CFG_F_SHUTDOWN)
				return reset_syn(ctx, p, end);
			/* Without state, and so without affinity (see stateless). */
			reason = choose(cfg, gen, svc, fk, 1, now, &nf, 0);
			if (reason)
				return verdict(XDP_DROP, reason);
			return untracked(ctx, cfg, p, &nf, now);
		}
	}
	flow = 0;
	cache = 0;
	if (!(cfg->flags & XLB_CFG_F_NO_FLOW_CACHE))
		cache = flow_cache(fk, now, &epoch, &flow);
	/* A SYN, FIN or RST changes the flow: it takes the table, and this CPU's copy is dropped. */
	if (flow && (syn || (p->tcp_flags & (TCP_FIN | TCP_RST)))) {
		cache->synced_ns = 0;
		flow = 0;
	}
	cached = flow != 0;
	if (!cached)
		flow = bpf_map_lookup_elem(&xlb_flows, fk);
	admitted = flow != 0;
	if (!admitted)
		flow = bpf_map_lookup_elem(&xlb_flows_new, fk);
	if (flow) {
		/* A SYN on a closed connection's tuple is a new connection (the client reused the port). */
		/* A copy from this CPU's cache was seen this jiffy: not expired, and no timeout to read. */
		if ((cached || !flow_expired(cfg, flow, fk->proto, now)) && !(syn && flow->state == XLB_FLOW_CLOSING)) {
			if (p->tcp_flags & (TCP_FIN | TCP_RST)) {
				if (flow->state != XLB_FLOW_CLOSING) {
					flow_event(cfg, XLB_EVENT_CLOSED, fk, flow, 0, p->tcp_flags, now);
					conns_add(cfg, flow, -1);
				}
				flow->state = XLB_FLOW_CLOSING;
				mark_close(flow, p->tcp_flags, 0);
			} else if (!syn && flow->state == XLB_FLOW_NEW && fk->proto == IPPROTO_TCP)
				flow->state = XLB_FLOW_ESTABLISHED;
			flow->last_seen_ns = now;
			/* An admitted flow that needs no state change on its next packets: copied for this jiffy. */
			if (cache && admitted && !cached &&
			    (fk->proto == IPPROTO_UDP || flow->state == XLB_FLOW_ESTABLISHED)) {
				cache->key = *fk;
				cache->flow = *flow;
				cache->synced_ns = now;
				cache->epoch = epoch;
			}
			count(XLB_STAT_FWD_ESTABLISHED);
			svc_count(flow->svc_id, flow_backend(cfg, flow), p->len, 0, 0);
			if (admitted || syn)
				return to_backend(ctx, cfg, gen, p, fk, flow, now);
			{
				/* Its second packet, and not a retransmitted SYN: the flow is real. */
				struct xlb_flow f = *flow;

				admit(gen, fk, &f);
				return to_backend(ctx, cfg, gen, p, fk, &f, now);
			}
		}
		count(XLB_STAT_FWD_EXPIRED_FLOW);
		/* It ended idle: its close, unless a FIN or RST already reported it (no flags: idle). */
		if (flow->state != XLB_FLOW_CLOSING) {
			flow_event(cfg, XLB_EVENT_CLOSED, fk, flow, 0, 0, now);
			conns_add(cfg, flow, -1);
		}
		if (flow->mode <= XLB_MODE_DNAT) {
			/* Free the old flow's translation (and NAT port) now rather than when the LRU gets to it. */
			struct xlb_flow_key rk;

			rnat_key_of(&rk, gen, fk, flow);
			if (admitted)
				bpf_map_delete_elem(&xlb_rnat, &rk);
			else
				bpf_map_delete_elem(&xlb_rnat_new, &rk);
		}
		if (admitted)
			bpf_map_delete_elem(&xlb_flows, fk);
	}

	svc = service_of(fk, gen);
	if (!svc)
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);

	/* Shutting down: new TCP connections are refused at once, existing flows carry on. */
	if ((cfg->flags & XLB_CFG_F_SHUTDOWN) && syn)
		return reset_syn(ctx, p, end);

	{
		struct xlb_flow nf = {};
		__u32 reason = choose(cfg, gen, svc, fk, syn, now, &nf, 1);

		if (reason)
			return verdict(XDP_DROP, reason);
		/*
		 * DSR apart: the cap's branches, merged into the NAT path, would have the verifier walk
		 * the NAT port search once for each of them.
		 */
		if (svc->mode >= XLB_MODE_DSR_L2) {
			if (cfg->new_flow_cap && stateless(svc) && cap_spent(cfg, now, 1))
				return untracked(ctx, cfg, p, &nf, now);
			record(cfg, p, fk, &nf, now);
			return to_dsr(ctx, cfg, p, &nf, now);
		}
		if (svc->mode == XLB_MODE_FULLNAT &&
		    alloc_nat_port(cfg, gen, svc, fk, &nf, flow_hash(fk), now))
			return verdict(XDP_DROP, XLB_STAT_DROP_NAT_PORTS_BUSY);
		if (svc->mode == XLB_MODE_DNAT) {
			/* Replies will come from backend:port to the client, with our VIP to restore. */
			struct xlb_flow_key rk;
			struct xlb_rnat rv = {};

			rnat_key_of(&rk, gen, fk, &nf);
			rnat_of(cfg, fk, &nf, &rv);
			bpf_map_update_elem(&xlb_rnat_new, &rk, &rv, BPF_ANY);
		}
		record(cfg, p, fk, &nf, now);
		return to_backend(ctx, cfg, gen, p, fk, &nf, now);
	}
}

/* The configuration and the active generation's filter; 0 when the agent has written none. */
static __always_inline const struct xlb_cfg *config(__u32 *gen, const struct xlb_filter **filter)
{
	__u32 zero = 0;
	const struct xlb_cfg *cfg = bpf_map_lookup_elem(&xlb_config, &zero);

	if (!cfg)
		return 0;
	*gen = cfg->active_gen & 1;
	*filter = bpf_map_lookup_elem(&xlb_filter, gen);
	return *filter ? cfg : 0;
}

static __always_inline int handle4(struct xdp_md *ctx, struct ethhdr *eth, __be16 vlan_proto,
				   __be16 vlan_vid, struct iphdr *ip, void *end)
{
	const struct xlb_filter *filter;
	struct xlb_flow_key fk = {};
	const struct xlb_cfg *cfg;
	struct pkt p = {};
	__u32 ihl, gen, reason;
	int to_vip;

	if ((void *)(ip + 1) > end)
		return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
	cfg = config(&gen, &filter);
	if (!cfg)
		return verdict(XDP_PASS, XLB_STAT_DROP_NO_CONFIG);

	/* The fast path for everything that is not ours: one array read. */
	to_vip = filter_has(filter->vip, ip->daddr);
	if (!to_vip && !filter_has(filter->rsrc, ip->saddr))
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);

	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip) || (void *)ip + ihl > end)
		return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
	/* The datagram must fit the frame (a longer frame is Ethernet padding). */
	p.l3_len = bpf_ntohs(ip->tot_len);
	if (p.l3_len < ihl || (void *)ip + p.l3_len > end)
		return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_TCP_UDP);
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return verdict(XDP_PASS, XLB_STAT_PASS_FRAGMENT);

	p.eth = eth;
	p.vlan_proto = vlan_proto;
	p.vlan_vid = vlan_vid;
	p.l3 = ip;
	p.len = (__u32)(end - (void *)eth);
	p.family = XLB_FAMILY_V4;
	p.proto = ip->protocol;
	p.l4_direct = ihl == sizeof(*ip);
	reason = parse_l4(&p, (void *)ip + ihl, end, (void *)ip + p.l3_len);
	if (reason)
		return verdict(XDP_DROP, reason);

	fk.saddr[0] = ip->saddr;
	fk.daddr[0] = ip->daddr;
	fk.sport = *p.sport;
	fk.dport = *p.dport;
	fk.proto = p.proto;
	fk.family = XLB_FAMILY_V4;
	return serve(ctx, cfg, gen, &p, &fk, to_vip, end);
}

/*
 * Has the VIP's standby taken it over from a node whose agent is gone? When the agent dies (or
 * is stopped without detaching), the program stays and goes on answering ARP and neighbour
 * solicitations for the VIPs its last configuration holds, while the standby that took them over
 * answers too: each neighbour then goes to whichever answered last. So a VIP another host has
 * announced (xlb_vip_claims) since the agent last stamped xlb_agent_seen, with the agent silent
 * for XLB_AGENT_SILENT_NS, is left to that host. Flows that still arrive are forwarded as before.
 * While the agent runs, it and its peers settle who holds a VIP (heartbeats), and a claim
 * changes nothing here: two live nodes must never both fall silent for a VIP. A stamp ahead of
 * this CPU's clock (the agent's clock, a jiffy ahead) is live.
 */
static __always_inline int yielded(const struct xlb_vip_key *vk)
{
	struct xlb_vip_key ck = *vk;
	struct xlb_claim *c;
	__u32 zero = 0;
	__u64 *seen, now;

	ck.gen = 0;
	c = bpf_map_lookup_elem(&xlb_vip_claims, &ck);
	if (!c)
		return 0;
	seen = bpf_map_lookup_elem(&xlb_agent_seen, &zero);
	if (!seen)
		return 0;
	now = coarse_now();
	if (*seen >= now || now - *seen <= XLB_AGENT_SILENT_NS)
		return 0;
	return c->seen_ns > *seen;
}

/*
 * The MAC to answer address resolution for vk with: the ingress interface's, when vk is a VIP
 * this node holds (XLB_VIP_F_ACTIVE in the active generation) and has not yielded; 0 when the
 * kernel should answer. With any_role, also for a VIP it is the standby of (and whether it
 * yielded does not matter): the MAC another host's announcement of it is told from.
 */
static __always_inline __u8 *resolver_mac(struct xdp_md *ctx, __be16 vlan_proto, __be16 vlan_vid,
					  const struct xlb_vip_key *vk, int any_role)
{
	__u32 ifindex = ctx->ingress_ifindex, *flags = bpf_map_lookup_elem(&xlb_vips, vk);
	struct xlb_vlan_dev *dev;
	struct xlb_ifmac *own;

	if (!flags || (!any_role && (!(*flags & XLB_VIP_F_ACTIVE) || yielded(vk))))
		return 0;
	/* On a VLAN, the VLAN device's MAC; a tag the node has no device for is not ours to answer. */
	if (vlan_proto) {
		struct xlb_vlan tag = { ifindex, vlan_proto, vlan_vid };

		dev = bpf_map_lookup_elem(&xlb_vlan_in, &tag);
		return dev ? dev->mac : 0;
	}
	own = bpf_map_lookup_elem(&xlb_ifmacs, &ifindex);
	return own ? own->mac : 0;
}

/*
 * Another host announced vk, a VIP of this node, active or standby (own: our MAC on the
 * interface it came in on), as its own with MAC sha: noted in xlb_vip_claims. For an active VIP
 * that is a rival (see yielded); for a standby VIP, its active node answering (the agent asks,
 * with ARP and ND probes, whether anyone does for a VIP whose active node it never heard). This node's
 * own announcements (any of its MACs, xlb_own_macs: heard on another of its interfaces on the
 * same segment) are not.
 */
_Static_assert(__builtin_offsetof(struct xlb_claim, pad) == __builtin_offsetof(struct xlb_claim, mac) + ETH_ALEN &&
		       sizeof(((struct xlb_claim *)0)->pad) + ETH_ALEN == sizeof(struct xlb_ifmac),
	       "a claim's mac and pad must read as an xlb_ifmac");

static __always_inline void note_claim(struct xdp_md *ctx, const struct xlb_vip_key *vk, const __u8 *sha,
				       const __u8 *own)
{
	struct xlb_vip_key ck = *vk;
	struct xlb_claim c = {};

	if (((sha[0] ^ own[0]) | (sha[1] ^ own[1]) | (sha[2] ^ own[2]) | (sha[3] ^ own[3]) | (sha[4] ^ own[4]) |
	     (sha[5] ^ own[5])) == 0)
		return;
	/* The claim's mac and pad are laid out as an xlb_ifmac: the key, with no stack of its own. */
	__builtin_memcpy(c.mac, sha, ETH_ALEN);
	if (bpf_map_lookup_elem(&xlb_own_macs, c.mac))
		return;
	ck.gen = 0;
	c.seen_ns = coarse_now();
	c.ifindex = ctx->ingress_ifindex;
	bpf_map_update_elem(&xlb_vip_claims, &ck, &c, BPF_ANY);
}

/* An ICMPv6 neighbour solicitation or advertisement (RFC 4861 4.3, 4.4) with one link-layer option. */
struct nd_msg1 {
	__u8 type;
	__u8 code;
	__be16 check;
	__be32 flags; /* reserved in a solicitation; R, S, O in an advertisement */
	__be32 target[4];
	__u8 opt_type;
	__u8 opt_len; /* in units of 8 bytes */
	__u8 opt_mac[ETH_ALEN];
};

#define ND_SOLICIT 135
#define ND_ADVERT 136
#define ND_OPT_SOURCE_LL 1
#define ND_OPT_TARGET_LL 2
#define ND_F_SOLICITED 0x40000000u
#define ND_F_OVERRIDE 0x20000000u

/*
 * A neighbour solicitation for a VIP this node holds is answered in place with a solicited
 * advertisement carrying the ingress interface's MAC, the IPv6 twin of answer_arp. Only the
 * form every host sends for address resolution and reachability probes is answered: hop limit
 * 255, a source address, and exactly one option, the sender's link-layer address. Duplicate
 * address detection (unspecified source) and anything else goes on to the kernel: -1.
 */
static __always_inline int answer_ns(struct xdp_md *ctx, __u32 gen, struct ethhdr *eth,
				     __be16 vlan_proto, __be16 vlan_vid, struct ipv6hdr *ip6, void *end)
{
	struct nd_msg1 *m = (void *)(ip6 + 1);
	__be32 *src = ip6->saddr.in6_u.u6_addr32;
	__u32 sum;
	struct xlb_vip_key vk = {};
	__u8 *own;

	if ((void *)(m + 1) > end || m->code != 0 || ip6->hop_limit != 255 || ip6->payload_len != bpf_htons(sizeof(*m)) ||
	    m->opt_len != 1)
		return -1;
	/* Another host advertising one of our VIPs with its own address (a standby taking it over, an active node answering). */
	if (m->type == ND_ADVERT && m->opt_type == ND_OPT_TARGET_LL) {
		addr_copy(vk.addr, m->target);
		vk.family = XLB_FAMILY_V6;
		vk.gen = gen;
		own = resolver_mac(ctx, vlan_proto, vlan_vid, &vk, 1);
		if (own)
			note_claim(ctx, &vk, m->opt_mac, own);
		return -1;
	}
	if (m->type != ND_SOLICIT || m->opt_type != ND_OPT_SOURCE_LL || (src[0] | src[1] | src[2] | src[3]) == 0)
		return -1;
	addr_copy(vk.addr, m->target);
	vk.family = XLB_FAMILY_V6;
	vk.gen = gen;
	own = resolver_mac(ctx, vlan_proto, vlan_vid, &vk, 0);
	if (!own)
		return -1;

	addr_copy(ip6->daddr.in6_u.u6_addr32, src);
	addr_copy(ip6->saddr.in6_u.u6_addr32, m->target);
	m->type = ND_ADVERT;
	m->flags = bpf_htonl(ND_F_SOLICITED | ND_F_OVERRIDE);
	m->opt_type = ND_OPT_TARGET_LL;
	__builtin_memcpy(m->opt_mac, own, ETH_ALEN);
	/* Pseudo-header (addresses, length, next header) and the message. */
	m->check = 0;
	sum = csum_words((__u16 *)&ip6->saddr, 16, 0);
	sum += bpf_htons(sizeof(*m)) + bpf_htons(IPPROTO_ICMPV6);
	m->check = ~csum_fold(csum_words((__u16 *)m, sizeof(*m) / 2, sum));
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, own, ETH_ALEN);
	count(XLB_STAT_TX_ND_ADVERT);
	return bpf_redirect(ctx->ingress_ifindex, 0);
}

static __always_inline int handle6(struct xdp_md *ctx, struct ethhdr *eth, __be16 vlan_proto,
				   __be16 vlan_vid, struct ipv6hdr *ip6, void *end)
{
	const struct xlb_filter *filter;
	struct xlb_flow_key fk = {};
	const struct xlb_cfg *cfg;
	struct pkt p = {};
	__u32 off = sizeof(*ip6), gen, reason, l3_len;
	__u8 next;
	int to_vip, i;

	if ((void *)(ip6 + 1) > end)
		return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
	cfg = config(&gen, &filter);
	if (!cfg)
		return verdict(XDP_PASS, XLB_STAT_DROP_NO_CONFIG);

	if (ip6->nexthdr == IPPROTO_ICMPV6) {
		/*
		 * Every ICMPv6 packet ends in this branch, with the verdict the TCP/UDP path below
		 * would give it. Falling through, it would bring the packet ranges checked here into
		 * that path, and the verifier would check the whole path once more for each.
		 */
		int answered = answer_ns(ctx, gen, eth, vlan_proto, vlan_vid, ip6, end);

		if (answered >= 0)
			return answered;
		if (!filter_has(filter->vip, xlb_filter_fold6(ip6->daddr.in6_u.u6_addr32)) &&
		    !filter_has(filter->rsrc, xlb_filter_fold6(ip6->saddr.in6_u.u6_addr32)))
			return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);
		if ((void *)(ip6 + 1) + bpf_ntohs(ip6->payload_len) > end)
			return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_TCP_UDP);
	}
	to_vip = filter_has(filter->vip, xlb_filter_fold6(ip6->daddr.in6_u.u6_addr32));
	if (!to_vip && !filter_has(filter->rsrc, xlb_filter_fold6(ip6->saddr.in6_u.u6_addr32)))
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);
	/* The datagram must fit the frame (no jumbograms: payload_len 0 is an empty payload). */
	l3_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	if ((void *)ip6 + l3_len > end)
		return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
	p.l3_len = l3_len;

	/*
	 * Extension headers, up to a bound; the kernel gets whatever we do not handle. Every
	 * header here, L4 included, is at least 8 bytes, and the same check on every path keeps
	 * the verifier's view of the packet the same on all of them.
	 */
	next = ip6->nexthdr;
#pragma unroll
	for (i = 0; i < XLB_IPV6_EXT_MAX + 1; i++) {
		struct ipv6_opt_hdr *eh = (void *)ip6 + off;
		int l4 = next == IPPROTO_TCP || next == IPPROTO_UDP;

		if (!l4) {
			if (next == IPPROTO_FRAGMENT)
				return verdict(XDP_PASS, XLB_STAT_PASS_FRAGMENT);
			if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS)
				return verdict(XDP_PASS, XLB_STAT_PASS_NOT_TCP_UDP);
			if (i == XLB_IPV6_EXT_MAX)
				return verdict(XDP_PASS, XLB_STAT_PASS_IPV6_EXT);
		}
		if ((void *)eh + 8 > end)
			return l4 ? verdict(XDP_DROP, XLB_STAT_DROP_TRUNCATED_L4)
				  : verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
		if (l4)
			break;
		/* A routing header with segments left: the VIP is not the final destination. */
		if (next == IPPROTO_ROUTING && ((__u8 *)eh)[3] != 0)
			return verdict(XDP_PASS, XLB_STAT_PASS_IPV6_EXT);
		next = eh->nexthdr;
		off += ((__u32)eh->hdrlen + 1) * 8;
	}
	if (off > 0x7ff)
		return verdict(XDP_PASS, XLB_STAT_PASS_IPV6_EXT);
	{
		/*
		 * Each number of extension headers leaves the verifier its own range for off, and it
		 * would verify everything below once per number. Passed through a stack slot that it
		 * does not track (2 bytes, not 8-aligned) and masked, off has one range on every
		 * path, and what follows is verified once: a store and a load per IPv6 packet.
		 */
		volatile __u16 blur[4];

		blur[1] = off;
		off = blur[1] & 0x7ff;
	}

	p.eth = eth;
	p.vlan_proto = vlan_proto;
	p.vlan_vid = vlan_vid;
	p.l3 = ip6;
	p.len = (__u32)(end - (void *)eth);
	p.family = XLB_FAMILY_V6;
	/* A constant per branch, not the packet byte: one view for the verifier on every path. */
	p.proto = next == IPPROTO_TCP ? IPPROTO_TCP : IPPROTO_UDP;
	p.l4_direct = off == sizeof(*ip6);
	reason = parse_l4(&p, (void *)ip6 + off, end, (void *)ip6 + p.l3_len);
	if (reason)
		return verdict(XDP_DROP, reason);
	if (p.udp_nosum)
		return verdict(XDP_DROP, XLB_STAT_DROP_UDP6_NO_CHECKSUM);

	addr_copy(fk.saddr, ip6->saddr.in6_u.u6_addr32);
	addr_copy(fk.daddr, ip6->daddr.in6_u.u6_addr32);
	fk.sport = *p.sport;
	fk.dport = *p.dport;
	fk.proto = p.proto;
	fk.family = XLB_FAMILY_V6;
	return serve(ctx, cfg, gen, &p, &fk, to_vip, end);
}

/* An Ethernet/IPv4 ARP packet (RFC 826); the addresses are not aligned, so bytes. */
struct arp4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
};

#define ARP_REQUEST 1
#define ARP_REPLY 2

/*
 * An ARP request for a VIP this node holds (XLB_VIP_F_ACTIVE in the active generation) is
 * answered in place with the MAC of the interface it came in on; everything else ARP, and
 * gratuitous announcements of others, goes to the kernel, and announcements of our VIPs by
 * another host are noted (note_claim).
 */
static __always_inline int answer_arp(struct xdp_md *ctx, struct ethhdr *eth, __be16 vlan_proto,
				      __be16 vlan_vid, struct arp4 *a, void *end)
{
	__u32 gen;
	const struct xlb_filter *filter;
	struct xlb_vip_key vk = {};
	__u8 *own;
	__be32 sender;
	__u8 spa[4];

	if ((void *)(a + 1) > end || a->htype != bpf_htons(1) || a->ptype != bpf_htons(ETH_P_IP) ||
	    a->hlen != ETH_ALEN || a->plen != 4)
		return verdict(XDP_PASS, XLB_STAT_PASS_NON_IP);
	if (!config(&gen, &filter))
		return verdict(XDP_PASS, XLB_STAT_DROP_NO_CONFIG);
	/* Another host sending as one of our VIPs: a gratuitous ARP (a standby taking it over), an ARP reply (an active node answering). */
	__builtin_memcpy(&sender, a->spa, 4);
	vk.addr[0] = sender;
	vk.family = XLB_FAMILY_V4;
	vk.gen = gen;
	own = resolver_mac(ctx, vlan_proto, vlan_vid, &vk, 1);
	if (own)
		note_claim(ctx, &vk, a->sha, own);
	if (a->op != bpf_htons(ARP_REQUEST))
		return verdict(XDP_PASS, XLB_STAT_PASS_NON_IP);
	__builtin_memcpy(&vk.addr[0], a->tpa, 4);
	own = vk.addr[0] == sender ? 0 : resolver_mac(ctx, vlan_proto, vlan_vid, &vk, 0);
	if (!own)
		return verdict(XDP_PASS, XLB_STAT_PASS_NON_IP);

	a->op = bpf_htons(ARP_REPLY);
	__builtin_memcpy(spa, a->spa, 4);
	__builtin_memcpy(a->tha, a->sha, ETH_ALEN);
	__builtin_memcpy(a->sha, own, ETH_ALEN);
	__builtin_memcpy(a->spa, a->tpa, 4);
	__builtin_memcpy(a->tpa, spa, 4);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, own, ETH_ALEN);
	/* Out of the interface it came in on, by redirect (see reset_syn); a tag stays as it came. */
	count(XLB_STAT_TX_ARP_REPLY);
	return bpf_redirect(ctx->ingress_ifindex, 0);
}

SEC("xdp")
int xlb_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__be16 proto, vlan_proto = 0, vlan_vid = 0;
	__u32 l2 = sizeof(*eth);
	void *l3;

	if ((void *)(eth + 1) > end)
		return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
	proto = eth->h_proto;
	if (is_vlan(proto)) {
		struct vlan_tag *t = (void *)(eth + 1);

		if ((void *)(t + 1) > end)
			return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
		if (is_vlan(t->proto))
			return verdict(XDP_PASS, XLB_STAT_PASS_VLAN_STACKED);
		vlan_proto = proto;
		vlan_vid = t->tci & bpf_htons(VLAN_VID_MASK);
		proto = t->proto;
		l2 += VLAN_HLEN;
	}
	{
		/*
		 * One view of the frame for the verifier, tagged or not: else it verifies everything
		 * below twice. The L3 offset (14 or 18) and the tag (0 or the packet's) go through a
		 * stack slot as one 64-bit word and come back as parts of it, which it does not
		 * follow (it does follow a value stored and loaded whole, or a constant's low bytes).
		 */
		volatile __u64 blur;

		blur = (__u64)l2 << 8 | (__u64)vlan_proto << 16 | (__u64)vlan_vid << 32;
		l2 = ((volatile __u8 *)&blur)[1] & 0x1f;
		vlan_proto = ((volatile __u16 *)&blur)[1];
		vlan_vid = ((volatile __u16 *)&blur)[2];
	}
	l3 = data + l2;
	/*
	 * Opaque from here: the verifier gives each packet pointer with a variable offset an
	 * identity of its own, and a bounds check holds only for that identity, so the compiler
	 * must not compute data + l2 again further down.
	 */
	asm volatile("" : "+r"(l3));
	if (proto == bpf_htons(ETH_P_IP))
		return handle4(ctx, eth, vlan_proto, vlan_vid, l3, end);
	if (proto == bpf_htons(ETH_P_IPV6))
		return handle6(ctx, eth, vlan_proto, vlan_vid, l3, end);
	if (proto == bpf_htons(ETH_P_ARP))
		return answer_arp(ctx, eth, vlan_proto, vlan_vid, l3, end);
	return verdict(XDP_PASS, XLB_STAT_PASS_NON_IP);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
