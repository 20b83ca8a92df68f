using Xlb.Crds;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

/// <summary>Announcement mode BGP in the planner: each node's sessions, their place in the content hash, and the shard errors a user can make.</summary>
public class PlannerBgpTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private static LoadBalancerPool Pool() => new()
    {
        Metadata = new ObjectMeta { Name = "p", Generation = 1 },
        Spec = new LoadBalancerPoolSpec { Blocks = ["192.0.2.0/28"] },
    };

    private static BgpPeer Peer(string address, long asn = 65000, long myAsn = 65001, TimeSpan? hold = null) =>
        new() { Address = address, Asn = asn, MyAsn = myAsn, HoldTime = new Duration(hold ?? TimeSpan.FromSeconds(9)) };

    private static VipShard Shard(string name, string? nodeLabel, AnnouncementMode mode, params BgpPeer[] peers) => new()
    {
        Metadata = new ObjectMeta { Name = name, Generation = 1 },
        Spec = new VipShardSpec
        {
            PoolRef = "p",
            NodeSelector = nodeLabel is null ? null : new LabelSelector { MatchLabels = new() { ["rack"] = nodeLabel } },
            Announcement = new Announcement { Mode = mode, Peers = [.. peers] },
        },
    };

    private static BgpPeer OnRack(BgpPeer peer, string rack) => peer with { NodeSelector = new LabelSelector { MatchLabels = new() { ["rack"] = rack } } };

    private static Node Node(string name, string rack) => new() { Metadata = new ObjectMeta { Name = name, Labels = new() { ["rack"] = rack } } };

    private static PortMapping Mapping(string name, string shard) => new()
    {
        Metadata = new ObjectMeta { Name = name, Namespace = "ns", Generation = 1 },
        Spec = new PortMappingSpec
        {
            ShardRef = shard,
            Ports = [new ServicePort { Port = 80, TargetPort = 8080 }],
            Backend = new BackendSpec { Endpoints = [new StaticEndpoint { Address = "10.1.0.1" }] },
        },
    };

    private static PlanInput Input(VipShard[] shards, params PortMapping[] mappings) => new()
    {
        Pools = [Pool()],
        Shards = shards,
        Nodes = [Node("a1", "a"), Node("a2", "a"), Node("b1", "b")],
        PortMappings = mappings,
        Now = T0,
    };

    [Fact]
    public void Each_node_gets_one_session_per_neighbour_of_its_BGP_shards_with_the_shards_it_carries()
    {
        var shards = new[]
        {
            Shard("east", "a", AnnouncementMode.BGP, Peer("10.0.0.1"), Peer("fd00::1")),
            Shard("west", "a", AnnouncementMode.BGP, Peer("10.0.0.1")),
            Shard("lan", "b", AnnouncementMode.L2),
        };
        var plan = Planner.Plan(Input(shards, Mapping("e", "east"), Mapping("w", "west"), Mapping("l", "lan")));
        Assert.Empty(plan.Problems);
        var byNode = plan.NodeConfigs.ToDictionary(c => c.Spec.NodeName);
        foreach (var node in new[] { "a1", "a2" })
        {
            var peers = byNode[node].Spec.BgpPeers;
            Assert.Equal(["10.0.0.1", "fd00::1"], peers.Select(p => p.Address));
            Assert.Equal(["east", "west"], peers[0].Shards);
            Assert.Equal(["east"], peers[1].Shards);
            Assert.All(peers, p => Assert.Equal((65000L, 65001L, 179, TimeSpan.FromSeconds(9)), (p.Asn, p.MyAsn, p.Port, p.HoldTime.Value)));
        }
        Assert.Empty(byNode["b1"].Spec.BgpPeers);
        Assert.All(plan.ShardStatuses.Values, s => Assert.Equal("True", s.Conditions.Single(c => c.Type == "Ready").Status));
    }

    [Fact]
    public void A_changed_neighbour_makes_a_new_revision_and_an_unchanged_one_does_not()
    {
        var input = Input([Shard("east", null, AnnouncementMode.BGP, Peer("10.0.0.1"))], Mapping("e", "east"));
        var first = Planner.Plan(input);
        var previous = first.NodeConfigs.ToDictionary(c => c.Spec.NodeName);
        var again = Planner.Plan(input with { Previous = previous });
        Assert.Equal(first.NodeConfigs.Select(c => (c.Spec.Revision, c.Spec.ContentHash)), again.NodeConfigs.Select(c => (c.Spec.Revision, c.Spec.ContentHash)));

        var slower = Planner.Plan(input with { Shards = [Shard("east", null, AnnouncementMode.BGP, Peer("10.0.0.1", hold: TimeSpan.FromSeconds(30)))], Previous = previous });
        foreach (var config in slower.NodeConfigs)
        {
            Assert.Equal(previous[config.Spec.NodeName].Spec.Revision + 1, config.Spec.Revision);
            Assert.NotEqual(previous[config.Spec.NodeName].Spec.ContentHash, config.Spec.ContentHash);
            Assert.Equal(Digests(previous[config.Spec.NodeName].Spec.Listeners), Digests(config.Spec.Listeners));
        }

        // The same VIPs and listeners over L2: the hash is that of the content alone, as before BGP existed.
        var l2 = Planner.Plan(input with { Shards = [Shard("east", null, AnnouncementMode.L2)] });
        Assert.All(l2.NodeConfigs, c => Assert.Equal(
            NodeConfigContent.Hash(c.Spec.Vips.Select(v => NodeConfigContent.Digest(v).Sha256).Concat(c.Spec.Listeners.Select(l => NodeConfigContent.Digest(l).Sha256))),
            c.Spec.ContentHash));
    }

    private static List<string> Digests(List<Listener> listeners) => listeners.ConvertAll(l => Convert.ToHexString(NodeConfigContent.Digest(l).Sha256));

    [Fact]
    public void A_chunked_config_keeps_its_sessions_in_the_node_config_and_in_its_hash()
    {
        var input = Input([Shard("east", null, AnnouncementMode.BGP, Peer("10.0.0.1"))], Mapping("e", "east"), Mapping("f", "east")) with { ChunkLimit = 1 };
        var plan = Planner.Plan(input);
        var other = Planner.Plan(input with { Shards = [Shard("east", null, AnnouncementMode.BGP, Peer("10.0.0.2"))] });
        Assert.Contains(plan.NodeConfigs, c => c.Spec.Chunks.Count > 0);
        foreach (var config in plan.NodeConfigs)
        {
            Assert.Equal("10.0.0.1", config.Spec.BgpPeers.Single().Address);
            var twin = other.NodeConfigs.Single(c => c.Spec.NodeName == config.Spec.NodeName);
            Assert.Equal(config.Spec.Chunks, twin.Spec.Chunks);
            Assert.NotEqual(config.Spec.ContentHash, twin.Spec.ContentHash);
        }
    }

    [Theory]
    [InlineData("", "needs at least one peer")]
    [InlineData("10.0.0", "is not an IP address")]
    [InlineData("fe80::1%eth0", "is not an IP address")]
    [InlineData("10.0.0.1,10.0.0.1", "is listed twice")]
    [InlineData("10.0.0.1/1s", "holdTime of 10.0.0.1 must be from 3s to 65535s")]
    public void A_shard_with_bad_neighbours_stalls_and_says_why(string peers, string message)
    {
        var list = peers.Length == 0 ? [] : peers.Split(',').Select(p => p.Split('/') is [var a, var h] ? Peer(a, hold: TimeSpan.FromSeconds(double.Parse(h.TrimEnd('s'), System.Globalization.CultureInfo.InvariantCulture))) : Peer(p)).ToArray();
        var plan = Planner.Plan(Input([Shard("east", null, AnnouncementMode.BGP, list)], Mapping("e", "east")));
        var problem = Assert.Single(plan.Problems, p => p.Object.Kind == "VipShard");
        Assert.Equal("InvalidSpec", problem.Reason);
        Assert.Contains(message, problem.Message, StringComparison.Ordinal);
        Assert.Equal("True", plan.ShardStatuses["east"].Conditions.Single(c => c.Type == "Stalled").Status);
        Assert.All(plan.NodeConfigs, c => Assert.Empty(c.Spec.BgpPeers));
    }

    [Fact]
    public void Peers_on_an_L2_shard_are_refused()
    {
        var plan = Planner.Plan(Input([Shard("east", null, AnnouncementMode.L2, Peer("10.0.0.1"))], Mapping("e", "east")));
        Assert.Contains("peers are for mode BGP only", Assert.Single(plan.Problems, p => p.Object.Kind == "VipShard").Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Two_shards_that_configure_one_neighbour_differently_stall_the_second_and_serve_the_first()
    {
        var shards = new[]
        {
            Shard("east", null, AnnouncementMode.BGP, Peer("10.0.0.1", asn: 65000)),
            Shard("west", null, AnnouncementMode.BGP, Peer("10.0.0.1", asn: 65099)),
        };
        var plan = Planner.Plan(Input(shards, Mapping("e", "east"), Mapping("w", "west")));
        var problem = Assert.Single(plan.Problems, p => p.Object.Kind == "VipShard");
        Assert.Equal(("west", "PeerConflict"), (problem.Object.Name, problem.Reason));
        Assert.Contains("neighbour 10.0.0.1 has other settings in VipShard east", problem.Message, StringComparison.Ordinal);
        Assert.All(plan.NodeConfigs, c => Assert.Equal(["east"], c.Spec.BgpPeers.Single().Shards));
        Assert.Contains(plan.NodeConfigs.SelectMany(c => c.Spec.Listeners), l => l.Name.StartsWith("ns/e/", StringComparison.Ordinal));
        Assert.DoesNotContain(plan.NodeConfigs.SelectMany(c => c.Spec.Listeners), l => l.Name.StartsWith("ns/w/", StringComparison.Ordinal));
    }

    [Fact]
    public void A_neighbour_with_a_node_selector_gets_sessions_from_the_nodes_it_selects_only()
    {
        // Each rack's nodes peer with their rack's router; every node with the route reflector.
        var shards = new[] { Shard("edge", null, AnnouncementMode.BGP, OnRack(Peer("10.0.1.1"), "a"), OnRack(Peer("10.0.2.1"), "b"), Peer("fd00::1")) };
        var plan = Planner.Plan(Input(shards, Mapping("e", "edge")));
        Assert.Empty(plan.Problems);
        var byNode = plan.NodeConfigs.ToDictionary(c => c.Spec.NodeName, c => c.Spec.BgpPeers.Select(p => p.Address).ToList());
        Assert.Equal(["10.0.1.1", "fd00::1"], byNode["a1"]);
        Assert.Equal(["10.0.1.1", "fd00::1"], byNode["a2"]);
        Assert.Equal(["10.0.2.1", "fd00::1"], byNode["b1"]);
        Assert.Equal(["a1", "a2", "b1"], plan.ShardStatuses["edge"].ReadyNodes);
    }

    [Fact]
    public void A_node_that_no_neighbour_selects_does_not_serve_the_shard_and_none_at_all_says_why()
    {
        // Only rack a's router: b1 could hold a VIP it cannot announce, so it holds none.
        var plan = Planner.Plan(Input([Shard("edge", null, AnnouncementMode.BGP, OnRack(Peer("10.0.1.1"), "a"))], Mapping("e", "edge"), Mapping("f", "edge"), Mapping("g", "edge")));
        Assert.Empty(plan.Problems);
        Assert.Equal(["a1", "a2"], plan.ShardStatuses["edge"].ReadyNodes);
        var placements = plan.Placements["edge"];
        Assert.Equal(3, placements.Count);
        Assert.All(placements, p => Assert.Contains(p.ActiveNode, (string[])["a1", "a2"]));
        Assert.All(placements, p => Assert.Contains(p.StandbyNode, (string[])["a1", "a2"]));
        Assert.All(plan.NodeConfigs.Where(c => c.Spec.NodeName == "b1"), c => Assert.Empty(c.Spec.Vips));

        var none = Planner.Plan(Input([Shard("edge", "b", AnnouncementMode.BGP, OnRack(Peer("10.0.1.1"), "a"))], Mapping("e", "edge")));
        var problem = Assert.Single(none.Problems, p => p.Object.Kind == "VipShard");
        Assert.Equal("NoNodes", problem.Reason);
        Assert.Contains("matches the nodeSelector of any of spec.announcement.peers", problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Two_shards_may_select_other_nodes_for_one_neighbour_with_the_same_settings()
    {
        var shards = new[]
        {
            Shard("east", null, AnnouncementMode.BGP, OnRack(Peer("10.0.0.1"), "a")),
            Shard("west", null, AnnouncementMode.BGP, Peer("10.0.0.1")),
        };
        var plan = Planner.Plan(Input(shards, Mapping("e", "east"), Mapping("w", "west")));
        Assert.Empty(plan.Problems);
        var byNode = plan.NodeConfigs.ToDictionary(c => c.Spec.NodeName, c => c.Spec.BgpPeers.Single().Shards);
        Assert.Equal(["east", "west"], byNode["a1"]);
        Assert.Equal(["west"], byNode["b1"]);
    }
}
