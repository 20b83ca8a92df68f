// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * XLB XDP program: an L4 load balancer for IPv4 TCP and UDP.
 *
 * A packet to a VIP service is bound to a backend (the flow table first, then the service's
 * ring) and leaves in the service's mode:
 *   FullNAT   source VIP:nat_port, destination backend:target port. The backend's replies
 *             come back to VIP:nat_port and are translated back (reverse-NAT table).
 *   DNAT      destination backend:target port, the client's address kept. The backend routes
 *             its replies through this node, which puts VIP:port back as their source.
 *   DSR L2    unchanged, to the backend's MAC on a shared link. The backend holds the VIP on
 *             its loopback and answers the client directly.
 *   DSR IPIP  unchanged, inside an outer IPv4 header addressed to the backend.
 * Everything else is XDP_PASS; for traffic that is not ours that costs one array read (the
 * filter). Next hops come from bpf_fib_lookup and are cached per backend for a second.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "include/xlb_abi.h"

#ifndef AF_INET
#define AF_INET 2
#endif

#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define NAT_PORT_TRIES 8
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

/* VIP addresses of both generations: the first lookup of every IPv4 packet. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XLB_MAX_SERVICES * XLB_GENERATIONS);
	__type(key, struct xlb_vip_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xlb_vips SEC(".maps");

/* Backends of both generations, indexed gen * XLB_MAX_BACKENDS + index. */
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

static __always_inline void svc_count(__u32 id, __u64 bytes, int reply, int new_flow)
{
	struct xlb_svc_stats *s = bpf_map_lookup_elem(&xlb_svc_stats, &id);

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

static __always_inline void csum_replace4(__u16 *sum, __be32 from, __be32 to)
{
	__u32 c = (__u16)~*sum;

	c = csum_add(c, ~from);
	c = csum_add(c, to);
	*sum = ~csum_fold(c);
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

/* Parsed view of an IPv4 TCP/UDP packet. */
struct pkt {
	struct ethhdr *eth;
	struct iphdr *ip;
	__u16 *l4_sum; /* TCP or UDP checksum field */
	__be16 *sport;
	__be16 *dport;
	__u64 len;     /* frame length, for the byte counters */
	__u8 tcp_flags;
	__u8 udp_nosum; /* IPv4 UDP sent without a checksum */
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

static __always_inline int filter_has(const __u64 *bits, __be32 addr)
{
	__u32 slot = xlb_filter_slot(addr);

	return (bits[slot >> 6] >> (slot & 63)) & 1;
}

/* Rewrite addresses and ports of an IPv4 packet, keeping IP and L4 checksums valid. */
static __always_inline void rewrite4(struct pkt *p, __be32 saddr, __be16 sport, __be32 daddr,
				     __be16 dport)
{
	struct iphdr *ip = p->ip;

	if (!p->udp_nosum) {
		csum_replace4(p->l4_sum, ip->saddr, saddr);
		csum_replace4(p->l4_sum, ip->daddr, daddr);
		csum_replace2(p->l4_sum, *p->sport, sport);
		csum_replace2(p->l4_sum, *p->dport, dport);
		/* A UDP checksum that computes to zero is sent as all ones (RFC 768). */
		if (ip->protocol == IPPROTO_UDP && *p->l4_sum == 0)
			*p->l4_sum = 0xffff;
	}
	csum_replace4(&ip->check, ip->saddr, saddr);
	csum_replace4(&ip->check, ip->daddr, daddr);
	ip->saddr = saddr;
	ip->daddr = daddr;
	*p->sport = sport;
	*p->dport = dport;
}

static __always_inline void ttl_decrement(struct iphdr *ip)
{
	/* 0x0100 is one step of the TTL byte in the TTL/protocol word. */
	csum_replace2(&ip->check, bpf_htons((__u16)ip->ttl << 8), bpf_htons((__u16)(ip->ttl - 1) << 8));
	ip->ttl--;
}

/* Asks the FIB how to reach dst; 0 and *nh filled, or the pass reason. */
static __always_inline __u32 fib_resolve(struct xdp_md *ctx, const struct iphdr *ip, __be32 dst,
					 struct xlb_nexthop *nh)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	fib.tot_len = bpf_ntohs(ip->tot_len);
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = dst;
	fib.ifindex = ctx->ingress_ifindex;

	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return XLB_STAT_PASS_FIB_NO_NEIGH;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return XLB_STAT_PASS_FIB_FAILED;
	nh->addr[0] = dst;
	nh->ifindex = fib.ifindex;
	/* On success the FIB leaves the gateway in ipv4_dst when there is one. */
	nh->onlink = fib.ipv4_dst == dst;
	__builtin_memcpy(nh->dmac, fib.dmac, ETH_ALEN);
	__builtin_memcpy(nh->smac, fib.smac, ETH_ALEN);
	return 0;
}

/*
 * The next hop toward a backend, from the cache slot of the backend's index, resolved again
 * when the slot holds another address or is older than XLB_NEXTHOP_TTL_NS. Two CPUs may
 * refresh a slot at once; both write the same answer.
 */
static __always_inline struct xlb_nexthop *backend_nexthop(struct xdp_md *ctx, const struct iphdr *ip,
							   __u32 slot, __be32 dst, __u64 now,
							   __u32 *reason)
{
	struct xlb_nexthop fresh = {}, *nh = bpf_map_lookup_elem(&xlb_nexthops, &slot);

	if (!nh) {
		*reason = XLB_STAT_PASS_FIB_FAILED;
		return 0;
	}
	if (nh->addr[0] == dst && nh->ifindex && now - nh->resolved_ns < XLB_NEXTHOP_TTL_NS)
		return nh;
	*reason = fib_resolve(ctx, ip, dst, &fresh);
	if (*reason)
		return 0;
	fresh.resolved_ns = now;
	*nh = fresh;
	return nh;
}

static __always_inline int emit(struct xdp_md *ctx, struct ethhdr *eth, const struct xlb_nexthop *nh)
{
	__builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);
	if (nh->ifindex == ctx->ingress_ifindex)
		return verdict(XDP_TX, XLB_STAT_TX);
	count(XLB_STAT_REDIRECT);
	return bpf_redirect(nh->ifindex, 0);
}

/*
 * DSR over IPIP: the packet as it came, inside an outer IPv4 header to the backend, which
 * decapsulates it and answers the client from the VIP itself.
 */
static __always_inline int encap_ipip(struct xdp_md *ctx, const struct xlb_cfg *cfg, struct pkt *p,
				      const struct xlb_flow *f, __u64 now)
{
	__be32 src = cfg->encap_src ? cfg->encap_src : p->ip->daddr;
	__u16 inner_len = bpf_ntohs(p->ip->tot_len);
	__be16 df = p->ip->frag_off & bpf_htons(IP_DF);
	__u8 tos = p->ip->tos;
	struct xlb_nexthop *nh;
	struct iphdr *outer;
	struct ethhdr *eth;
	__u32 reason = 0;
	void *end;

	nh = backend_nexthop(ctx, p->ip, f->nh_slot, f->backend[0], now, &reason);
	if (!nh)
		return verdict(XDP_PASS, reason);
	if (inner_len > 0xffff - sizeof(*outer) ||
	    bpf_xdp_adjust_head(ctx, -(int)sizeof(*outer)))
		return verdict(XDP_DROP, XLB_STAT_DROP_ENCAP_FAILED);
	/* Packet pointers are void after adjust_head: only ctx from here on. */
	eth = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	outer = (void *)(eth + 1);
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
	outer->saddr = src;
	outer->daddr = f->backend[0];
	outer->check = ~csum_fold(csum_words((__u16 *)outer, sizeof(*outer) / 2, 0));
	return emit(ctx, eth, nh);
}

/* A packet of flow f, on its way to f's backend in f's mode. */
static __always_inline int to_backend(struct xdp_md *ctx, const struct xlb_cfg *cfg, struct pkt *p,
				      const struct xlb_flow *f, __u64 now)
{
	struct iphdr *ip = p->ip;
	struct xlb_nexthop *nh;
	__u32 reason = 0;

	if (f->mode == XLB_MODE_DSR_IPIP)
		return encap_ipip(ctx, cfg, p, f, now);
	if (f->mode == XLB_MODE_DSR_L2) {
		nh = backend_nexthop(ctx, ip, f->nh_slot, f->backend[0], now, &reason);
		if (!nh)
			return verdict(XDP_PASS, reason);
		/* Behind a gateway the backend's MAC is not ours to reach. */
		if (!nh->onlink)
			return verdict(XDP_DROP, XLB_STAT_DROP_DSR_NOT_ONLINK);
		return emit(ctx, p->eth, nh);
	}
	if (ip->ttl <= 1)
		return verdict(XDP_PASS, XLB_STAT_PASS_TTL_EXPIRED);
	nh = backend_nexthop(ctx, ip, f->nh_slot, f->backend[0], now, &reason);
	if (f->mode == XLB_MODE_DNAT)
		rewrite4(p, ip->saddr, *p->sport, f->backend[0], f->backend_port);
	else
		rewrite4(p, ip->daddr, f->nat_port, f->backend[0], f->backend_port);
	if (!nh)
		/* The kernel forwards the rewritten packet and resolves the neighbour. */
		return verdict(XDP_PASS, reason);
	ttl_decrement(ip);
	return emit(ctx, p->eth, nh);
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
	/* 0: no timeout; the LRU still evicts. */
	return t && now - f->last_seen_ns > (__u64)t * NS_PER_S;
}

/* Fills an IPv4 flow key; k must start zeroed (hash keys compare their unused bytes). */
static __always_inline void key4(struct xlb_flow_key *k, __be32 saddr, __be32 daddr, __be16 sport,
				 __be16 dport, __u8 proto)
{
	k->saddr[0] = saddr;
	k->daddr[0] = daddr;
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
	k->family = XLB_FAMILY_V4;
}

/* The flow-table key of the connection a reverse-NAT entry stands for. */
static __always_inline void flow_key_of(const struct xlb_rnat *r, __u8 proto, struct xlb_flow_key *k)
{
	key4(k, r->client[0], r->vip[0], r->client_port, r->vip_port, proto);
}

/* The reverse translation of client flow fk: replies leave as VIP:port -> client:port. */
static __always_inline void rnat_of(const struct xlb_flow_key *fk, __u32 svc_id, struct xlb_rnat *rv)
{
	rv->vip[0] = fk->daddr[0];
	rv->client[0] = fk->saddr[0];
	rv->vip_port = fk->dport;
	rv->client_port = fk->sport;
	rv->svc_id = svc_id;
}

/* A backend's reply: the source becomes VIP:port, the destination the client. */
static __always_inline int reply4(struct xdp_md *ctx, struct pkt *p, const struct xlb_rnat *r)
{
	struct xlb_nexthop nh = {};
	struct iphdr *ip = p->ip;
	__u32 reason;

	count(XLB_STAT_FWD_REPLY);
	svc_count(r->svc_id, p->len, 1, 0);
	/* The server closes or refuses: the next SYN on this tuple starts afresh. */
	if (p->tcp_flags & (TCP_FIN | TCP_RST)) {
		struct xlb_flow_key k = {};
		struct xlb_flow *f;

		flow_key_of(r, ip->protocol, &k);
		f = bpf_map_lookup_elem(&xlb_flows, &k);
		if (f)
			f->state = XLB_FLOW_CLOSING;
	}
	if (ip->ttl <= 1)
		return verdict(XDP_PASS, XLB_STAT_PASS_TTL_EXPIRED);
	reason = fib_resolve(ctx, ip, r->client[0], &nh);
	rewrite4(p, r->vip[0], r->vip_port, r->client[0], r->client_port);
	if (reason)
		return verdict(XDP_PASS, reason);
	ttl_decrement(ip);
	return emit(ctx, p->eth, &nh);
}

/*
 * Shutdown window: answer a new connection's SYN with RST|ACK from the VIP, in place, so the
 * client fails fast and tries another address (DNS has moved on) instead of timing out.
 * Only plain 20-byte IPv4 headers are answered; anything else is dropped and counted.
 */
static __always_inline int reset_syn4(struct xdp_md *ctx, struct pkt *p, void *end)
{
	struct iphdr *ip = p->ip;
	struct tcphdr *th = (void *)(ip + 1);
	__u8 mac[ETH_ALEN];
	__u32 seq, payload, sum;
	__be32 addr;
	__be16 port;
	long shrink;

	if (ip->ihl != 5 || (void *)(th + 1) > end)
		return verdict(XDP_DROP, XLB_STAT_DROP_SHUTDOWN_UNSUPPORTED);

	payload = bpf_ntohs(ip->tot_len) - sizeof(*ip) - th->doff * 4;
	seq = bpf_ntohl(th->seq);

	__builtin_memcpy(mac, p->eth->h_dest, ETH_ALEN);
	__builtin_memcpy(p->eth->h_dest, p->eth->h_source, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, mac, ETH_ALEN);

	addr = ip->saddr;
	ip->saddr = ip->daddr;
	ip->daddr = addr;
	ip->tot_len = bpf_htons(sizeof(*ip) + sizeof(*th));
	ip->id = 0;
	ip->frag_off = bpf_htons(IP_DF);
	ip->ttl = 64;
	ip->check = 0;
	ip->check = ~csum_fold(csum_words((__u16 *)ip, sizeof(*ip) / 2, 0));

	port = th->source;
	th->source = th->dest;
	th->dest = port;
	th->ack_seq = bpf_htonl(seq + 1 + payload); /* the SYN counts as one */
	th->seq = 0;
	((__u8 *)th)[12] = 5 << 4;          /* data offset 5, no options */
	((__u8 *)th)[13] = TCP_RST | TCP_ACK;
	th->window = 0;
	th->urg_ptr = 0;
	th->check = 0;
	/* Pseudo-header: addresses, protocol, TCP length. */
	sum = csum_words((__u16 *)&ip->saddr, 4, 0);
	sum += bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(*th));
	th->check = ~csum_fold(csum_words((__u16 *)th, sizeof(*th) / 2, sum));

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
 * Is this reverse-NAT entry left over? Its flow is gone, expired, or now holds another port
 * or backend: the port can be given to a new flow.
 */
static __always_inline int rnat_stale(const struct xlb_cfg *cfg, const struct xlb_rnat *r,
				      const struct xlb_flow_key *rk, __u64 now)
{
	struct xlb_flow_key k = {};
	struct xlb_flow *f;

	flow_key_of(r, rk->proto, &k);
	f = bpf_map_lookup_elem(&xlb_flows, &k);
	return !f || flow_expired(cfg, f, rk->proto, now) || f->nat_port != rk->dport ||
	       f->backend[0] != rk->saddr[0] || f->backend_port != rk->sport;
}

/*
 * Pick a FullNAT source port for this flow that no live flow to the same backend holds, and
 * record the reverse translation under it.
 */
static __always_inline int alloc_nat_port(const struct xlb_cfg *cfg, const struct xlb_flow_key *fk,
					  const struct xlb_flow *nf, __u32 h, __u64 now, __be16 *out)
{
	__u32 span = (__u32)cfg->nat_port_max - cfg->nat_port_min + 1;
	struct xlb_flow_key rk = {};
	struct xlb_rnat rv = {};
	int i;

	key4(&rk, nf->backend[0], fk->daddr[0], nf->backend_port, 0, fk->proto);
	rnat_of(fk, nf->svc_id, &rv);

	for (i = 0; i < NAT_PORT_TRIES; i++) {
		__u16 port = cfg->nat_port_min + (__u16)((h + i * 7919u) % span);
		struct xlb_rnat *held;

		rk.dport = bpf_htons(port);
		if (bpf_map_update_elem(&xlb_rnat, &rk, &rv, BPF_NOEXIST) == 0)
			goto done;
		held = bpf_map_lookup_elem(&xlb_rnat, &rk);
		if (held && rnat_stale(cfg, held, &rk, now) &&
		    bpf_map_update_elem(&xlb_rnat, &rk, &rv, BPF_ANY) == 0)
			goto done;
	}
	return -1;
done:
	*out = rk.dport;
	return 0;
}

/* The ring slot a new flow takes, by the service's algorithm. */
static __always_inline __u32 pick(const struct xlb_svc *svc, const struct xlb_flow_key *fk)
{
	__u32 id = svc->id, *cursor;

	if (svc->algo == XLB_ALGO_SOURCE_HASH)
		return source_hash(fk) % svc->ring_size;
	if (svc->algo == XLB_ALGO_ROUND_ROBIN) {
		cursor = bpf_map_lookup_elem(&xlb_rr, &id);
		if (cursor) {
			*cursor += 1;
			return *cursor % svc->ring_size;
		}
	}
	return flow_hash(fk) % svc->ring_size;
}

static __always_inline int handle4(struct xdp_md *ctx, struct ethhdr *eth, void *end)
{
	struct iphdr *ip = (void *)(eth + 1);
	const struct xlb_filter *filter;
	struct xlb_flow_key fk = {};
	struct xlb_svc_key sk = {};
	const struct xlb_cfg *cfg;
	struct xlb_flow *flow;
	struct xlb_rnat *r;
	struct xlb_svc *svc;
	struct pkt p = {};
	__u32 ihl, zero = 0, gen;
	int to_vip, syn;
	__u16 dport;
	__u64 now;
	void *l4;

	if ((void *)(ip + 1) > end)
		return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
	cfg = bpf_map_lookup_elem(&xlb_config, &zero);
	if (!cfg)
		return verdict(XDP_PASS, XLB_STAT_DROP_NO_CONFIG);
	gen = cfg->active_gen & 1;
	filter = bpf_map_lookup_elem(&xlb_filter, &gen);
	if (!filter)
		return verdict(XDP_PASS, XLB_STAT_DROP_NO_CONFIG);

	/* The fast path for everything that is not ours: one array read. */
	to_vip = filter_has(filter->vip, ip->daddr);
	if (!to_vip && !filter_has(filter->rsrc, ip->saddr))
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);

	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip) || (void *)ip + ihl > end)
		return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_TCP_UDP);
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return verdict(XDP_PASS, XLB_STAT_PASS_FRAGMENT);

	l4 = (void *)ip + ihl;
	p.eth = eth;
	p.ip = ip;
	p.len = (__u64)(end - (void *)eth);
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > end)
			return verdict(XDP_DROP, XLB_STAT_DROP_TRUNCATED_L4);
		p.l4_sum = &th->check;
		p.sport = &th->source;
		p.dport = &th->dest;
		p.tcp_flags = ((__u8 *)th)[13];
	} else {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > end)
			return verdict(XDP_DROP, XLB_STAT_DROP_TRUNCATED_L4);
		p.l4_sum = &uh->check;
		p.sport = &uh->source;
		p.dport = &uh->dest;
		p.udp_nosum = uh->check == 0;
	}

	key4(&fk, ip->saddr, ip->daddr, *p.sport, *p.dport, ip->protocol);

	if (!to_vip) {
		/* From a DNAT backend: its reply to a client, or traffic of its own. */
		r = bpf_map_lookup_elem(&xlb_rnat, &fk);
		if (r)
			return reply4(ctx, &p, r);
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);
	}

	/* FullNAT replies come back to VIP:nat_port; only ports in the NAT range can be replies. */
	dport = bpf_ntohs(fk.dport);
	if (dport >= cfg->nat_port_min && dport <= cfg->nat_port_max) {
		r = bpf_map_lookup_elem(&xlb_rnat, &fk);
		if (r)
			return reply4(ctx, &p, r);
	}

	now = bpf_ktime_get_coarse_ns();
	syn = ip->protocol == IPPROTO_TCP && (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	flow = bpf_map_lookup_elem(&xlb_flows, &fk);
	if (flow) {
		/* A SYN on a closed connection's tuple is a new connection (the client reused the port). */
		if (!flow_expired(cfg, flow, fk.proto, now) && !(syn && flow->state == XLB_FLOW_CLOSING)) {
			if (p.tcp_flags & (TCP_FIN | TCP_RST))
				flow->state = XLB_FLOW_CLOSING;
			else if (!syn && flow->state == XLB_FLOW_NEW && fk.proto == IPPROTO_TCP)
				flow->state = XLB_FLOW_ESTABLISHED;
			flow->last_seen_ns = now;
			count(XLB_STAT_FWD_ESTABLISHED);
			svc_count(flow->svc_id, p.len, 0, 0);
			return to_backend(ctx, cfg, &p, flow, now);
		}
		count(XLB_STAT_FWD_EXPIRED_FLOW);
		if (flow->mode == XLB_MODE_FULLNAT) {
			/* Free the old flow's NAT port now rather than when the LRU gets to it. */
			struct xlb_flow_key rk = {};

			key4(&rk, flow->backend[0], fk.daddr[0], flow->backend_port, flow->nat_port, fk.proto);
			bpf_map_delete_elem(&xlb_rnat, &rk);
		}
	}

	sk.vip[0] = ip->daddr;
	sk.port = fk.dport;
	sk.proto = fk.proto;
	sk.family = XLB_FAMILY_V4;
	sk.gen = gen;
	svc = bpf_map_lookup_elem(&xlb_services, &sk);
	if (!svc)
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);

	/* Shutting down: new TCP connections are refused at once, existing flows carry on. */
	if ((cfg->flags & XLB_CFG_F_SHUTDOWN) && syn)
		return reset_syn4(ctx, &p, end);

	{
		__u32 slot, *bidx;
		struct xlb_backend *be;
		struct xlb_flow nf = {};

		if (svc->ring_size == 0)
			return verdict(XDP_DROP, XLB_STAT_DROP_NO_BACKEND);
		slot = gen * XLB_RING_CAPACITY + svc->ring_off + pick(svc, &fk);
		bidx = bpf_map_lookup_elem(&xlb_rings, &slot);
		if (!bidx || *bidx == 0 || *bidx >= XLB_MAX_BACKENDS)
			return verdict(XDP_DROP, XLB_STAT_DROP_NO_BACKEND);
		slot = gen * XLB_MAX_BACKENDS + *bidx;
		be = bpf_map_lookup_elem(&xlb_backends, &slot);
		if (!be || be->family != XLB_FAMILY_V4)
			return verdict(XDP_DROP, XLB_STAT_DROP_NO_BACKEND);

		nf.backend[0] = be->addr[0];
		/* DSR cannot change the port: the backend answers the client from VIP:port itself. */
		nf.backend_port = svc->mode >= XLB_MODE_DSR_L2 ? fk.dport : be->port;
		nf.svc_id = svc->id;
		nf.last_seen_ns = now;
		nf.nh_slot = slot;
		nf.mode = svc->mode;
		/* A flow first seen mid-connection (another node had it) is established already. */
		nf.state = fk.proto == IPPROTO_TCP && !syn ? XLB_FLOW_ESTABLISHED : XLB_FLOW_NEW;
		if (svc->mode == XLB_MODE_FULLNAT &&
		    alloc_nat_port(cfg, &fk, &nf, flow_hash(&fk), now, &nf.nat_port))
			return verdict(XDP_DROP, XLB_STAT_DROP_NAT_PORTS_BUSY);
		bpf_map_update_elem(&xlb_flows, &fk, &nf, BPF_ANY);
		if (svc->mode == XLB_MODE_DNAT) {
			/* Replies will come from backend:port to the client, with our VIP to restore. */
			struct xlb_flow_key rk = {};
			struct xlb_rnat rv = {};

			key4(&rk, nf.backend[0], fk.saddr[0], nf.backend_port, fk.sport, fk.proto);
			rnat_of(&fk, nf.svc_id, &rv);
			bpf_map_update_elem(&xlb_rnat, &rk, &rv, BPF_ANY);
		}
		count(XLB_STAT_FWD_NEW_FLOW);
		svc_count(nf.svc_id, p.len, 0, 1);
		return to_backend(ctx, cfg, &p, &nf, now);
	}
}

SEC("xdp")
int xlb_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return verdict(XDP_PASS, XLB_STAT_PASS_NON_IP);
	return handle4(ctx, eth, end);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
