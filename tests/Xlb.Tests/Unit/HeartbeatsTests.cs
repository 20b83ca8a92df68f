using System.Net;
using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

/// <summary>Agent-to-agent failure detection's pure parts: the heartbeat datagram, who is silent, what a standby takes over, and what the planner gives each node.</summary>
public class HeartbeatsTests
{
    private static readonly byte[] Key = "0123456789abcdef0123"u8.ToArray();
    private const long Now = 1_800_000_000_000;

    [Fact]
    public void A_heartbeat_goes_through_a_datagram_and_is_told_apart_from_flow_sync()
    {
        foreach (var h in new[] { new Heartbeat("lb-1", false), new Heartbeat("ünïcode-node", true), new Heartbeat("lb-2", false, HoldingYours: true), new Heartbeat("lb-3", true, true) })
        {
            Assert.Equal(h, Heartbeats.Decode(Heartbeats.Encode(h), [], Now));
            Assert.Equal(h, Heartbeats.Decode(Heartbeats.Encode(h, Key, Now), [Key], Now + 1000));
        }
        Assert.True(Heartbeats.Is(Heartbeats.Encode(new Heartbeat("a", false))));
        var flowSync = SyncedFlows.Encode([new SyncedFlow(default, default, 0, 0, 0, 0, 0)])[0];
        Assert.False(Heartbeats.Is(flowSync));
        Assert.Throws<FormatException>(() => Heartbeats.Decode(flowSync, [], Now));
        Assert.Throws<ArgumentException>(() => Heartbeats.Encode(new Heartbeat("", false)));
        Assert.Throws<ArgumentException>(() => Heartbeats.Encode(new Heartbeat(new string('n', 254), false)));
    }

    [Fact]
    public void With_a_key_a_heartbeat_is_taken_only_whole_from_a_holder_of_the_key_and_recent()
    {
        var good = Heartbeats.Encode(new Heartbeat("lb-1", false), Key, Now);
        for (var i = 0; i < good.Length; i++)
        {
            var bad = (byte[])good.Clone();
            bad[i] ^= 0x20;
            Assert.ThrowsAny<Exception>(() => Heartbeats.Decode(bad, [Key], Now));
        }
        Assert.Throws<FormatException>(() => Heartbeats.Decode(good, ["another key, long enough"u8.ToArray()], Now));
        Assert.Throws<FormatException>(() => Heartbeats.Decode(good, [Key], Now + 31_000));
        Assert.Throws<FormatException>(() => Heartbeats.Decode(good, [Key], Now - 31_000));
        // A node with a key and one without do not take each other's heartbeats.
        Assert.Throws<FormatException>(() => Heartbeats.Decode(good, [], Now));
        Assert.Throws<FormatException>(() => Heartbeats.Decode(Heartbeats.Encode(new Heartbeat("lb-1", false)), [Key], Now));
        // The key before a new one is still taken.
        Assert.Equal("lb-1", Heartbeats.Decode(good, ["the new key, sixteen+"u8.ToArray(), Key], Now).Node);
        // Cut short or lengthened.
        Assert.Throws<FormatException>(() => Heartbeats.Decode(good.AsSpan(0, good.Length - 1), [Key], Now));
        Assert.Throws<FormatException>(() => Heartbeats.Decode([.. good, 0], [Key], Now));
    }

    [Fact]
    public void A_peer_is_silent_from_its_last_heartbeat_unknown_until_its_first_and_silent_at_once_when_it_leaves()
    {
        var live = new PeerLiveness();
        live.Configure(["a", "b"], 1000);
        // Never heard: nothing to take over from (a blocked port must not make every standby active).
        Assert.Null(live.SilentFor("a", 60_000));
        Assert.Empty(live.NeverHeard(10_999, TimeSpan.FromSeconds(10)));
        Assert.Equal(["a", "b"], live.NeverHeard(11_000, TimeSpan.FromSeconds(10)));
        Assert.Null(live.SilentFor("c", 1500));
        Assert.False(live.Heard("c", false, 1500));
        Assert.True(live.Heard("a", false, 1400));
        Assert.True(live.Heard("b", false, 1000));
        Assert.Equal(TimeSpan.FromMilliseconds(100), live.SilentFor("a", 1500));
        Assert.Equal(TimeSpan.FromMilliseconds(500), live.SilentFor("b", 1500));
        Assert.Empty(live.NeverHeard(60_000, TimeSpan.FromSeconds(10)));
        // A heartbeat that says it is leaving: silent at once; one that does not, heard again.
        live.Heard("b", true, 1600);
        Assert.Equal(TimeSpan.MaxValue, live.SilentFor("b", 1600));
        live.Heard("b", false, 1700);
        Assert.Equal(TimeSpan.Zero, live.SilentFor("b", 1700));
        // Configured again: a known peer keeps its time, a new one is unheard, a gone one is forgotten.
        live.Configure(["a", "d"], 5000);
        Assert.Equal(TimeSpan.FromMilliseconds(3600), live.SilentFor("a", 5000));
        Assert.Null(live.SilentFor("d", 5000));
        Assert.Null(live.SilentFor("b", 5000));
        Assert.Equal(["d"], live.NeverHeard(15_000, TimeSpan.FromSeconds(10)));
        // A clock read before the last heartbeat (another thread) is not a negative silence.
        live.Heard("d", false, 5000);
        Assert.Equal(TimeSpan.Zero, live.SilentFor("d", 4000));
    }

    private static XlbNodeConfigSpec Spec(params NodeVip[] vips) => new() { NodeName = "lb-2", Vips = [.. vips] };

    private static NodeVip Standby(string address, string active, double? afterSeconds) => new()
    {
        Address = address, Role = VipRole.Standby, Shard = "edge", ActiveNode = active,
        TakeoverAfter = afterSeconds is { } s ? new Duration(TimeSpan.FromSeconds(s)) : null,
    };

    [Fact]
    public void A_standby_takes_over_the_VIPs_of_a_peer_silent_for_their_takeover_time_only()
    {
        var spec = Spec(
            new NodeVip { Address = "192.0.2.1", Role = VipRole.Active, Shard = "edge" },
            Standby("192.0.2.2", "lb-1", 0.9),
            Standby("192.0.2.3", "lb-1", 3),
            Standby("192.0.2.4", "lb-3", 0.9),
            Standby("192.0.2.5", "lb-1", null));
        var silence = new Dictionary<string, TimeSpan> { ["lb-1"] = TimeSpan.FromSeconds(1), ["lb-3"] = TimeSpan.FromSeconds(0.2) };
        var (effective, taken, unreachable) = Takeover.Apply(spec, n => silence.TryGetValue(n, out var s) ? s : null);
        Assert.Empty(unreachable);
        Assert.Equal([new TakenVip("192.0.2.2", "lb-1", TimeSpan.FromSeconds(1))], taken);
        Assert.Equal(["Active", "Active", "Standby", "Standby", "Standby"], effective.Vips.Select(v => v.Role.ToString()));
        Assert.Equal(spec.Vips.Select(v => v.Address), effective.Vips.Select(v => v.Address));
        // The config it came from is not changed.
        Assert.Equal(VipRole.Standby, spec.Vips[1].Role);

        // Nobody silent: the very same config.
        var quiet = Takeover.Apply(spec, _ => TimeSpan.Zero);
        Assert.Same(spec, quiet.Effective);
        Assert.Empty(quiet.Taken);
        // A leaving peer: all of its VIPs with a takeover time, at once.
        var left = Takeover.Apply(spec, n => n == "lb-1" ? TimeSpan.MaxValue : TimeSpan.Zero);
        Assert.Equal(["192.0.2.2", "192.0.2.3"], left.Taken.Select(t => t.Address));
        // A peer this node does not know (no address in the config): never taken from.
        Assert.Empty(Takeover.Apply(spec, _ => null).Taken);
        // A silent peer seen renewing its Lease keeps its VIPs, and is named; one that is leaving does not.
        var renewing = Takeover.Apply(spec, n => silence.TryGetValue(n, out var s) ? s : null, n => n == "lb-1");
        Assert.Same(spec, renewing.Effective);
        Assert.Empty(renewing.Taken);
        Assert.Equal(["lb-1"], renewing.Unreachable);
        Assert.Equal(["lb-1"], renewing.Overdue);
        Assert.Equal(2, Takeover.Apply(spec, n => n == "lb-1" ? TimeSpan.MaxValue : TimeSpan.Zero, _ => true).Taken.Count);
    }

    [Fact]
    public void VIPs_taken_from_a_peer_heard_again_stay_while_this_node_hands_it_its_connections_and_go_back_then()
    {
        var spec = Spec(Standby("192.0.2.2", "lb-1", 0.9), Standby("192.0.2.3", "lb-1", 0.9), Standby("192.0.2.4", "lb-3", 0.9));
        var taken = Takeover.Apply(spec, n => n == "lb-1" ? TimeSpan.FromSeconds(2) : TimeSpan.Zero).Taken;
        Assert.Equal(["192.0.2.2", "192.0.2.3"], taken.Select(t => t.Address));

        // lb-1 is heard again: while its flows are on their way, its VIPs stay here, as they were taken.
        var handing = Takeover.Apply(spec, _ => TimeSpan.Zero, previous: taken, handingBack: n => n == "lb-1");
        Assert.Equal(taken, handing.Taken);
        Assert.Equal(["Active", "Active", "Standby"], handing.Effective.Vips.Select(v => v.Role.ToString()));
        // Then they go back.
        var back = Takeover.Apply(spec, _ => TimeSpan.Zero, previous: taken, handingBack: _ => false);
        Assert.Same(spec, back.Effective);
        Assert.Empty(back.Taken);
        // The hand-back ends on another thread, perhaps while this is asked: a peer's VIPs stay, or go, together.
        var answers = 0;
        var midway = Takeover.Apply(spec, _ => TimeSpan.Zero, previous: taken, handingBack: _ => answers++ == 0);
        Assert.Equal(taken, midway.Taken);
        // So with a peer's silence that passes its VIPs' takeover time while they are looked at.
        var looks = 0;
        Assert.Empty(Takeover.Apply(spec, n => n == "lb-1" ? TimeSpan.FromSeconds(looks++ == 0 ? 0.5 : 2) : TimeSpan.Zero).Taken);
        // Nothing is held that was not taken before, nor for another node, nor a VIP the config no longer has it stand by for.
        Assert.Empty(Takeover.Apply(spec, _ => TimeSpan.Zero, previous: [], handingBack: _ => true).Taken);
        Assert.Empty(Takeover.Apply(spec, _ => TimeSpan.Zero, previous: [taken[0] with { From = "lb-3" }], handingBack: _ => true).Taken);
        var moved = Spec(new NodeVip { Address = "192.0.2.2", Role = VipRole.Active, Shard = "edge" }, Standby("192.0.2.3", "lb-1", 0.9));
        Assert.Equal(["192.0.2.3"], Takeover.Apply(moved, _ => TimeSpan.Zero, previous: taken, handingBack: _ => true).Taken.Select(t => t.Address));
    }

    [Fact]
    public void A_VIP_of_a_never_heard_node_is_probed_in_L2_and_taken_only_when_nobody_answered_for_it_for_its_takeover_time()
    {
        var spec = Spec(
            new NodeVip { Address = "192.0.2.1", Role = VipRole.Active, Shard = "edge" },
            Standby("192.0.2.2", "lb-1", 0.6),
            Standby("192.0.2.3", "lb-1", 0.6),
            Standby("192.0.2.4", "lb-3", 0.6),
            Standby("192.0.2.5", "lb-1", null),
            Standby("2001:db8::6", "lb-1", 0.6),
            Standby("192.0.2.7", "lb-1", 0.6));
        // lb-1 never heard, lb-3 heard; 192.0.2.7 is advertised by BGP, where nobody answers ARP/ND for a VIP.
        TimeSpan? SilentFor(string n) => n == "lb-3" ? TimeSpan.Zero : null;
        var probed = ResolutionWitness.Probed(spec, SilentFor, new HashSet<IPAddress> { IPAddress.Parse("192.0.2.7") });
        Assert.Equal([(IPAddress.Parse("192.0.2.2"), TimeSpan.FromSeconds(0.6)), (IPAddress.Parse("192.0.2.3"), TimeSpan.FromSeconds(0.6)),
            (IPAddress.Parse("2001:db8::6"), TimeSpan.FromSeconds(0.6))], probed);

        const ulong Ms = 1_000_000;
        var witness = new ResolutionWitness();
        witness.Probe(probed.Select(p => p.Vip), 1000 * Ms);
        Assert.Equal(TimeSpan.FromMilliseconds(400), witness.UnansweredFor("192.0.2.2", 1400 * Ms));
        Assert.Null(witness.UnansweredFor("192.0.2.4", 1400 * Ms));
        // lb-1 answers for .3 at 1300 ms (and someone did for .2 before the probing began; this node's own MAC does not count).
        byte[] mine = [2, 0, 0, 0, 0, 2], theirs = [2, 0, 0, 0, 0, 1];
        witness.Observe(
        [
            new VipClaim(IPAddress.Parse("192.0.2.3"), theirs, 1, 1300 * Ms),
            new VipClaim(IPAddress.Parse("192.0.2.2"), theirs, 1, 900 * Ms),
            new VipClaim(IPAddress.Parse("192.0.2.2"), mine, 1, 1350 * Ms),
        ], [mine]);
        // Probed again (every apply): what is known stays. A VIP that could not be asked for everywhere starts afresh.
        witness.Probe(probed.Select(p => p.Vip), 1500 * Ms);
        witness.Restart([IPAddress.Parse("2001:db8::6")], 1500 * Ms);
        Assert.Equal(TimeSpan.FromMilliseconds(200), witness.UnansweredFor("2001:db8::6", 1700 * Ms));
        Assert.Equal(TimeSpan.FromMilliseconds(700), witness.UnansweredFor("192.0.2.2", 1700 * Ms));
        Assert.Equal(TimeSpan.FromMilliseconds(400), witness.UnansweredFor("192.0.2.3", 1700 * Ms));

        var (effective, taken, _) = Takeover.Apply(spec, SilentFor, unanswered: a => witness.UnansweredFor(a, 1700 * Ms));
        Assert.Equal([new TakenVip("192.0.2.2", "lb-1", TimeSpan.FromMilliseconds(700), Unheard: true)], taken);
        Assert.Equal(VipRole.Active, effective.Vips[1].Role);
        Assert.Equal(VipRole.Standby, effective.Vips[2].Role);
        // Without the witness (BGP, or no interface to probe from), a node never heard is never taken from.
        Assert.Empty(Takeover.Apply(spec, SilentFor).Taken);
        // Once lb-1 is heard, its heartbeats decide, not ARP: quiet, it keeps the VIP however long nobody answered.
        Assert.Empty(Takeover.Apply(spec, _ => TimeSpan.Zero, unanswered: a => witness.UnansweredFor(a, 1700 * Ms)).Taken);

        // lb-1 comes and announces .2 (taken here): answered, so given back; and a VIP no longer probed is forgotten.
        witness.Observe([new VipClaim(IPAddress.Parse("192.0.2.2"), theirs, 1, 1800 * Ms)], [mine]);
        Assert.Empty(Takeover.Apply(spec, SilentFor, unanswered: a => witness.UnansweredFor(a, 1850 * Ms)).Taken);
        witness.Probe([IPAddress.Parse("192.0.2.3")], 2000 * Ms);
        Assert.Null(witness.UnansweredFor("192.0.2.2", 2000 * Ms));
    }

    [Fact]
    public void A_silent_peer_counts_as_renewing_from_a_change_of_its_Lease_seen_while_watched_until_it_goes_stale()
    {
        var e = new LeaseEvidence();
        e.Watch(["a"]);
        e.Observe("b", "t1", 0); // not watched: ignored
        e.Observe("a", "t1", 0);
        Assert.False(e.Renewing("a", 0)); // a renewal from before it fell silent proves nothing
        e.Observe("a", "t1", 250);
        Assert.False(e.Renewing("a", 250));
        e.Observe("a", "t2", 500);
        Assert.True(e.Renewing("a", 500));
        Assert.True(e.Renewing("a", 3500));
        Assert.False(e.Renewing("a", 3501)); // no renewal for 3 s: dead after all
        e.Observe("a", "t3", 4000);
        Assert.True(e.Renewing("a", 4000));
        e.Observe("a", null, 4250); // the Lease is gone (a drain deletes it)
        Assert.False(e.Renewing("a", 4250));
        e.Observe("a", "t4", 4500); // a Lease again: its agent is back and renews
        Assert.True(e.Renewing("a", 4500));
        // Forgotten when no longer watched, and a baseline again when watched anew.
        e.Observe("a", "t5", 4750);
        Assert.True(e.Renewing("a", 4750));
        e.Watch([]);
        Assert.False(e.Renewing("a", 4750));
        e.Watch(["a"]);
        e.Observe("a", "t5", 5000);
        Assert.False(e.Renewing("a", 5000));
        Assert.False(e.Renewing("b", 5000));
    }

    private static Node LbNode(string name, string? address) => new()
    {
        Metadata = new ObjectMeta { Name = name, Labels = new() { ["kubernetes.io/hostname"] = name } },
        Status = address is null ? null : new KubeNodeStatus { Addresses = [new NodeAddress { Type = "InternalIP", Address = address }] },
    };

    private static VipShard Shard(string name, string pool, int intervalMs, int multiplier, params string[] nodes) => new()
    {
        Metadata = new ObjectMeta { Name = name, Generation = 1 },
        Spec = new VipShardSpec
        {
            PoolRef = pool,
            Placement = new Placement { Strategy = PlacementStrategy.Pinned, Nodes = [.. nodes] },
            NodeSelector = new LabelSelector { MatchExpressions = [new LabelSelectorRequirement { Key = "kubernetes.io/hostname", Operator = SelectorOperator.In, Values = [.. nodes] }] },
            Failover = new Failover { Detection = new FailureDetection { Interval = new Duration(TimeSpan.FromMilliseconds(intervalMs)), Multiplier = multiplier } },
        },
    };

    private static PortMapping Mapping(string name, string shard) => new()
    {
        Metadata = new ObjectMeta { Name = name, Namespace = "ns", Generation = 1 },
        Spec = new PortMappingSpec { ShardRef = shard, Ports = [new ServicePort { Port = 80, TargetPort = 8080 }], Backend = new BackendSpec { Endpoints = [new StaticEndpoint { Address = "10.1.0.1" }] } },
    };

    [Fact]
    public void Each_node_gets_its_shards_other_nodes_with_the_shortest_interval_and_each_standby_VIP_its_active_node_and_window()
    {
        var nodes = new[] { LbNode("a", "10.0.0.1"), LbNode("b", "10.0.0.2"), LbNode("c", null) };
        var input = new PlanInput
        {
            Pools =
            [
                new LoadBalancerPool { Metadata = new ObjectMeta { Name = "p1", Generation = 1 }, Spec = new LoadBalancerPoolSpec { Blocks = ["192.0.2.0/28"] } },
                new LoadBalancerPool { Metadata = new ObjectMeta { Name = "p2", Generation = 1 }, Spec = new LoadBalancerPoolSpec { Blocks = ["198.51.100.0/28"] } },
            ],
            // fast: a then b; slow: b then a; third: c then a (c has no address).
            Shards = [Shard("fast", "p1", 200, 3, "a", "b"), Shard("slow", "p1", 2000, 5, "b", "a"), Shard("third", "p2", 1000, 3, "c", "a")],
            Nodes = nodes,
            PortMappings = [Mapping("f", "fast"), Mapping("s", "slow"), Mapping("t", "third")],
            Now = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero),
        };
        var plan = Planner.Plan(input);
        Assert.Empty(plan.Problems);
        var byNode = plan.NodeConfigs.ToDictionary(c => c.Spec.NodeName);
        // a and b share fast (200 ms) and slow (2 s): every 200 ms. c has no address: nobody's peer, and a is not its peer either.
        Assert.Equal([("b", "10.0.0.2", 200.0)], byNode["a"].Spec.FailoverPeers.Select(p => (p.Node, p.Address, p.Interval.Value.TotalMilliseconds)));
        Assert.Equal([("a", "10.0.0.1", 200.0)], byNode["b"].Spec.FailoverPeers.Select(p => (p.Node, p.Address, p.Interval.Value.TotalMilliseconds)));
        Assert.Equal([("a", "10.0.0.1", 1000.0)], byNode["c"].Spec.FailoverPeers.Select(p => (p.Node, p.Address, p.Interval.Value.TotalMilliseconds)));

        NodeVip Vip(string node, string shard) => byNode[node].Spec.Vips.Single(v => v.Shard == shard);
        // Each standby VIP waits its own shard's window, not the peer's shortest one.
        Assert.Equal(("a", 0.6), (Vip("b", "fast").ActiveNode, Vip("b", "fast").TakeoverAfter!.Value.Value.TotalSeconds));
        Assert.Equal(("b", 10.0), (Vip("a", "slow").ActiveNode, Vip("a", "slow").TakeoverAfter!.Value.Value.TotalSeconds));
        // c's agent cannot be heard (no address): its VIPs are the operator's to move.
        Assert.Null(Vip("a", "third").TakeoverAfter);
        Assert.Equal("c", Vip("a", "third").ActiveNode);
        // Active VIPs carry neither.
        Assert.All(plan.NodeConfigs.SelectMany(c => c.Spec.Vips).Where(v => v.Role == VipRole.Active), v => Assert.Equal((null, null), (v.ActiveNode, v.TakeoverAfter)));

        // A changed window is a new revision of the standby's config, and with the memo too.
        var memo = new PlanMemo();
        var first = Planner.Plan(input with { Memo = memo });
        var previous = first.NodeConfigs.ToDictionary(c => c.Spec.NodeName);
        var changed = Planner.Plan(input with
        {
            Memo = memo, Previous = previous,
            Shards = [Shard("fast", "p1", 300, 3, "a", "b"), Shard("slow", "p1", 2000, 5, "b", "a"), Shard("third", "p2", 1000, 3, "c", "a")],
        });
        var b = changed.NodeConfigs.Single(c => c.Spec.NodeName == "b");
        Assert.Equal(previous["b"].Spec.Revision + 1, b.Spec.Revision);
        Assert.Equal(0.9, b.Spec.Vips.Single(v => v.Shard == "fast").TakeoverAfter!.Value.Value.TotalSeconds);
        Assert.Equal(300, b.Spec.FailoverPeers.Single().Interval.Value.TotalMilliseconds);
    }

    [Fact]
    public void A_chunked_config_carries_the_failover_peers_in_its_head_and_each_standby_VIPs_takeover_in_its_chunks()
    {
        var input = new PlanInput
        {
            Pools = [new LoadBalancerPool { Metadata = new ObjectMeta { Name = "p1", Generation = 1 }, Spec = new LoadBalancerPoolSpec { Blocks = ["192.0.2.0/24"] } }],
            Shards = [Shard("fast", "p1", 200, 3, "a", "b")],
            Nodes = [LbNode("a", "10.0.0.1"), LbNode("b", "10.0.0.2")],
            PortMappings = [.. Enumerable.Range(0, 60).Select(i => Mapping($"m{i:D2}", "fast"))],
            Now = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero),
        };
        var whole = Planner.Plan(input).NodeConfigs.Single(c => c.Spec.NodeName == "b").Spec;
        var split = Planner.Plan(input with { ChunkLimit = 4096 });
        var head = split.NodeConfigs.Single(c => c.Spec.NodeName == "b").Spec;
        Assert.True(head.Chunks.Count > 1);
        Assert.Empty(head.Vips);
        var chunks = split.Chunks.ToDictionary(c => c.Metadata.Name!, c => c.Spec);
        var assembled = NodeConfigContent.Assemble(head, chunks.GetValueOrDefault, out var incomplete)!;
        Assert.Null(incomplete);
        Assert.Equal(whole.FailoverPeers, assembled.FailoverPeers);
        Assert.Equal(60, assembled.Vips.Count);
        Assert.All(assembled.Vips, v => Assert.Equal((VipRole.Standby, "a", 600.0), (v.Role, v.ActiveNode, v.TakeoverAfter?.Value.TotalMilliseconds)));
        Assert.Equal(whole.Vips.OrderBy(v => v.Address), assembled.Vips.OrderBy(v => v.Address));
    }
}
