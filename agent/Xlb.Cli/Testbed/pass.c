// SPDX-License-Identifier: GPL-2.0
/*
 * A bare XDP_PASS program for the testbed: attached to a router namespace's veth end where an LB
 * node sends with XDP_TX, so that those frames wake its receive path (with GRO alone they wait
 * in its ring; see RoutedPairTopology and docs/architecture.md, "Test topology").
 */
#include <linux/bpf.h>

__attribute__((section("xdp"), used)) int testbed_pass(struct xdp_md *ctx)
{
	(void)ctx;
	return XDP_PASS;
}

char LICENSE[] __attribute__((section("license"), used)) = "GPL";
