// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * XLB XDP program: an L4 load balancer in FullNAT mode.
 *
 * Forward path: a packet to a VIP service is bound to a backend (conntrack first, then the
 * service's Maglev ring), its source becomes VIP:nat_port and its destination
 * backend:target_port, and it leaves through the FIB's next hop.
 * Reply path: a packet from a backend to VIP:nat_port is translated back to VIP:port ->
 * client:port through the reverse-NAT table.
 * Everything else is XDP_PASS.
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

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define NAT_PORT_TRIES 8

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

/* Parsed view of an IPv4 TCP/UDP packet. */
struct pkt {
	struct ethhdr *eth;
	struct iphdr *ip;
	__u16 *l4_sum; /* TCP or UDP checksum field */
	__be16 *sport;
	__be16 *dport;
	__u8 tcp_flags;
	int udp_nosum; /* IPv4 UDP sent without a checksum */
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

/* Send the rewritten packet toward ip->daddr through the FIB's next hop. */
static __always_inline int forward4(struct xdp_md *ctx, struct pkt *p)
{
	struct bpf_fib_lookup fib = {};
	struct iphdr *ip = p->ip;
	long rc;

	if (ip->ttl <= 1)
		return verdict(XDP_PASS, XLB_STAT_PASS_TTL_EXPIRED);

	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	fib.tot_len = bpf_ntohs(ip->tot_len);
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.ifindex = ctx->ingress_ifindex;

	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		/* The kernel forwards the rewritten packet and resolves the neighbour. */
		return verdict(XDP_PASS, XLB_STAT_PASS_FIB_NO_NEIGH);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return verdict(XDP_PASS, XLB_STAT_PASS_FIB_FAILED);

	/* TTL decrement: 0x0100 is one step of the TTL byte in the TTL/protocol word. */
	csum_replace2(&ip->check, bpf_htons((__u16)ip->ttl << 8),
		      bpf_htons((__u16)(ip->ttl - 1) << 8));
	ip->ttl--;

	__builtin_memcpy(p->eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, fib.smac, ETH_ALEN);
	if (fib.ifindex == ctx->ingress_ifindex)
		return verdict(XDP_TX, XLB_STAT_TX);
	count(XLB_STAT_REDIRECT);
	return bpf_redirect(fib.ifindex, 0);
}

/* Sum of 16-bit words for a fresh checksum; n is a compile-time constant. */
static __always_inline __u32 csum_words(const __u16 *w, int n, __u32 sum)
{
#pragma unroll
	for (int i = 0; i < n; i++)
		sum += w[i];
	return sum;
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
	ip->frag_off = bpf_htons(0x4000); /* DF */
	ip->ttl = 64;
	ip->check = 0;
	ip->check = ~csum_fold(csum_words((__u16 *)ip, sizeof(*ip) / 2, 0));

	port = th->source;
	th->source = th->dest;
	th->dest = port;
	th->ack_seq = bpf_htonl(seq + 1 + payload); /* the SYN counts as one */
	th->seq = 0;
	((__u8 *)th)[12] = 5 << 4;          /* data offset 5, no options */
	((__u8 *)th)[13] = 0x04 | 0x10;     /* RST|ACK */
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

/* A backend's reply to VIP:nat_port: translate it back to VIP:port -> client. */
static __always_inline int reply4(struct xdp_md *ctx, struct pkt *p, const struct xlb_rnat *r)
{
	count(XLB_STAT_FWD_REPLY);
	rewrite4(p, p->ip->daddr, r->vip_port, r->client[0], r->client_port);
	return forward4(ctx, p);
}

/* Pick a FullNAT source port for this flow that no other flow to the same backend holds. */
static __always_inline int alloc_nat_port(const struct xlb_cfg *cfg, const struct xlb_flow_key *fk,
					  const struct xlb_backend *be, __u32 h, __be16 *out)
{
	__u32 span = (__u32)cfg->nat_port_max - cfg->nat_port_min + 1;
	struct xlb_flow_key rk = {};
	struct xlb_rnat rv = {};
	int i;

	rk.saddr[0] = be->addr[0];
	rk.daddr[0] = fk->daddr[0];
	rk.sport = be->port;
	rk.proto = fk->proto;
	rk.family = XLB_FAMILY_V4;
	rv.client[0] = fk->saddr[0];
	rv.client_port = fk->sport;
	rv.vip_port = fk->dport;

	for (i = 0; i < NAT_PORT_TRIES; i++) {
		__u16 port = cfg->nat_port_min + (__u16)((h + i * 7919u) % span);

		rk.dport = bpf_htons(port);
		if (bpf_map_update_elem(&xlb_rnat, &rk, &rv, BPF_NOEXIST) == 0) {
			*out = rk.dport;
			return 0;
		}
	}
	return -1;
}

static __always_inline int handle4(struct xdp_md *ctx, struct ethhdr *eth, void *end)
{
	struct iphdr *ip = (void *)(eth + 1);
	struct xlb_flow_key fk = {};
	struct xlb_svc_key sk = {};
	struct xlb_vip_key vk = {};
	const struct xlb_cfg *cfg;
	struct xlb_flow *flow;
	struct xlb_svc *svc;
	struct pkt p = {};
	__u32 ihl, zero = 0;
	__u16 dport;
	void *l4;

	if ((void *)(ip + 1) > end)
		return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip) || (void *)ip + ihl > end)
		return verdict(XDP_PASS, XLB_STAT_PASS_TRUNCATED);

	cfg = bpf_map_lookup_elem(&xlb_config, &zero);
	if (!cfg)
		return verdict(XDP_PASS, XLB_STAT_DROP_NO_CONFIG);

	/* The fast path for everything that is not ours: one hash lookup. */
	vk.addr[0] = ip->daddr;
	vk.family = XLB_FAMILY_V4;
	vk.gen = cfg->active_gen & 1;
	if (!bpf_map_lookup_elem(&xlb_vips, &vk))
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);

	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return verdict(XDP_PASS, XLB_STAT_PASS_FRAGMENT);

	l4 = (void *)ip + ihl;
	p.eth = eth;
	p.ip = ip;
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

	fk.saddr[0] = ip->saddr;
	fk.daddr[0] = ip->daddr;
	fk.sport = *p.sport;
	fk.dport = *p.dport;
	fk.proto = ip->protocol;
	fk.family = XLB_FAMILY_V4;

	/* Replies come back to VIP:nat_port; only ports in the NAT range can be replies. */
	dport = bpf_ntohs(fk.dport);
	if (dport >= cfg->nat_port_min && dport <= cfg->nat_port_max) {
		struct xlb_rnat *r = bpf_map_lookup_elem(&xlb_rnat, &fk);

		if (r)
			return reply4(ctx, &p, r);
	}

	sk.vip[0] = ip->daddr;
	sk.port = fk.dport;
	sk.proto = fk.proto;
	sk.family = XLB_FAMILY_V4;
	sk.gen = vk.gen;
	svc = bpf_map_lookup_elem(&xlb_services, &sk);
	if (!svc)
		return verdict(XDP_PASS, XLB_STAT_PASS_NOT_VIP);

	flow = bpf_map_lookup_elem(&xlb_flows, &fk);
	if (flow) {
		flow->last_seen_ns = bpf_ktime_get_ns();
		count(XLB_STAT_FWD_ESTABLISHED);
		rewrite4(&p, ip->daddr, flow->nat_port, flow->backend[0], flow->backend_port);
		return forward4(ctx, &p);
	}

	/* Shutting down: new TCP connections are refused at once, existing flows carry on. */
	if ((cfg->flags & XLB_CFG_F_SHUTDOWN) && ip->protocol == IPPROTO_TCP && (p.tcp_flags & 0x12) == 0x02)
		return reset_syn4(ctx, &p, end);

	{
		__u32 h = flow_hash(&fk), slot, *bidx, gen = sk.gen;
		struct xlb_backend *be;
		struct xlb_flow nf = {};

		if (svc->ring_size == 0)
			return verdict(XDP_DROP, XLB_STAT_DROP_NO_BACKEND);
		slot = gen * XLB_RING_CAPACITY + svc->ring_off + h % svc->ring_size;
		bidx = bpf_map_lookup_elem(&xlb_rings, &slot);
		if (!bidx || *bidx == 0 || *bidx >= XLB_MAX_BACKENDS)
			return verdict(XDP_DROP, XLB_STAT_DROP_NO_BACKEND);
		slot = gen * XLB_MAX_BACKENDS + *bidx;
		be = bpf_map_lookup_elem(&xlb_backends, &slot);
		if (!be || be->family != XLB_FAMILY_V4)
			return verdict(XDP_DROP, XLB_STAT_DROP_NO_BACKEND);

		if (alloc_nat_port(cfg, &fk, be, h, &nf.nat_port))
			return verdict(XDP_DROP, XLB_STAT_DROP_NAT_PORTS_BUSY);
		nf.backend[0] = be->addr[0];
		nf.backend_port = be->port;
		nf.svc_id = svc->id;
		nf.last_seen_ns = bpf_ktime_get_ns();
		bpf_map_update_elem(&xlb_flows, &fk, &nf, BPF_ANY);
		count(XLB_STAT_FWD_NEW_FLOW);
		rewrite4(&p, ip->daddr, nf.nat_port, nf.backend[0], nf.backend_port);
		return forward4(ctx, &p);
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
