// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark harness for BPF_PROG_TEST_RUN. With repeat > 1 the kernel re-runs a program on the
 * packet as the previous run left it, so a NAT program would be timed on its own output.
 * bench_restore copies the original packet back before every run (optionally with a fresh
 * source address and port, so each run is a new flow) and tail-calls the program under test.
 * Its own cost is measured by tail-calling bench_pass, and subtracted.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#define BENCH_LEN 74 /* Ethernet + IPv6 + TCP without options; IPv4 packets carry 20 bytes of payload */

struct bench_pkt {
	__u32 vary_flow; /* nonzero: new source port and address low bytes every run */
	__u16 addr_off;  /* where the two varied source-address bytes are */
	__u16 port_off;  /* where the source port is */
	__u8 data[BENCH_LEN];
	__u8 pad[2];
};

/* The original packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_pkt);
} bench_packet SEC(".maps");

/* Run counter, for fresh flows. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_counter SEC(".maps");

/* The program under test. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_target SEC(".maps");

SEC("xdp")
int bench_restore(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct bench_pkt *p;
	__u32 zero = 0, *n;

	if (data + BENCH_LEN > end)
		return XDP_ABORTED;
	p = bpf_map_lookup_elem(&bench_packet, &zero);
	if (!p)
		return XDP_ABORTED;
	__builtin_memcpy(data, p->data, BENCH_LEN);
	if (p->vary_flow) {
		n = bpf_map_lookup_elem(&bench_counter, &zero);
		if (n) {
			*n += 1;
			/*
			 * The run's number in the two low bytes of the source address and in the TCP source
			 * port: each run is a new client (65,536 of them before they come round again), as a
			 * row that keeps state per client (affinity) needs, and a new flow.
			 */
			__u8 *a = data + (p->addr_off & 0x7f), *s = data + (p->port_off & 0x7f);

			if ((void *)(a + 2) <= end && (void *)(s + 2) <= end) {
				__builtin_memcpy(a, n, 2);
				__builtin_memcpy(s, n, 2);
			}
		}
	}
	bpf_tail_call(ctx, &bench_target, 0);
	return XDP_ABORTED;
}

SEC("xdp")
int bench_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int bench_macswap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 mac[ETH_ALEN];

	if ((void *)(eth + 1) > end)
		return XDP_ABORTED;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
