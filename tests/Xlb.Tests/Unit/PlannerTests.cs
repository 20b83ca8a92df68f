using Xlb.Crds;
using Xlb.Operator.Core;
using Xlb.Tests.Support;

namespace Xlb.Tests.Unit;

public class PlannerTests
{
    private static LoadBalancerPool Pool(string name, params string[] blocks) =>
        new() { Metadata = new ObjectMeta { Name = name }, Spec = new LoadBalancerPoolSpec { Blocks = [.. blocks] } };

    private static VipShard Shard(string name, string pool) =>
        new() { Metadata = new ObjectMeta { Name = name }, Spec = new VipShardSpec { PoolRef = pool } };

    private static Node Node(string name) => new() { Metadata = new ObjectMeta { Name = name } };

    private static PortMapping Mapping(string name, string vip = "Auto", int port = 80, string shard = "s", params string[] backends) => new()
    {
        Metadata = new ObjectMeta { Name = name, Namespace = "ns" },
        Spec = new PortMappingSpec
        {
            ShardRef = shard,
            Vip = vip,
            Ports = [new ServicePort { Name = "p", Port = port, TargetPort = 8080 }],
            Backend = new BackendSpec { Endpoints = [.. (backends.Length == 0 ? ["10.1.0.1"] : backends).Select(a => new StaticEndpoint { Address = a })] },
        },
    };

    private static PlanInput Input(params PortMapping[] mappings) => new()
    {
        Pools = [Pool("p", "192.0.2.0/29")],
        Shards = [Shard("s", "p")],
        Nodes = [Node("n1")],
        PortMappings = mappings,
    };

    [Fact]
    public void The_demo_renders_one_listener_port_to_target_port_with_all_backends()
    {
        var set = Examples.Read("demo");
        var plan = Planner.Plan(new PlanInput { Pools = set.Pools, Shards = set.Shards, PortMappings = set.PortMappings, Nodes = set.Nodes });
        Assert.Empty(plan.Problems);
        var config = Assert.Single(plan.NodeConfigs);
        Assert.Equal("lb-1", config.Spec.NodeName);
        Assert.Equal(1, config.Spec.Revision);
        var vip = Assert.Single(config.Spec.Vips);
        Assert.Equal(("10.250.0.10", VipRole.Active), (vip.Address, vip.Role)); // .1-.9 are reserved
        var listener = Assert.Single(config.Spec.Listeners);
        Assert.Equal(("demo/web/http", "10.250.0.10", 80), (listener.Name, listener.Vip, listener.Port));
        Assert.Equal(["10.201.1.2:8080", "10.201.2.2:8080", "10.201.3.2:8080"], listener.Backends.Select(b => $"{b.Address}:{b.Port}"));
    }

    [Fact]
    public void Automatic_vips_skip_network_broadcast_and_never_repeat()
    {
        var plan = Planner.Plan(Input(Mapping("a"), Mapping("b"), Mapping("c")));
        Assert.Empty(plan.Problems);
        Assert.Equal(["192.0.2.1", "192.0.2.2", "192.0.2.3"], plan.Vips.Values.Select(v => v.ToString()).Order());
    }

    [Fact]
    public void An_exhausted_pool_stalls_only_the_mappings_that_did_not_fit()
    {
        var mappings = Enumerable.Range(0, 8).Select(i => Mapping($"m{i}")).ToArray();
        var plan = Planner.Plan(Input(mappings));
        Assert.Equal(6, plan.Vips.Count); // a /29 offers .1 to .6
        Assert.Equal(2, plan.Problems.Count);
        Assert.All(plan.Problems, p => Assert.Equal("PoolExhausted", p.Reason));
        Assert.Equal(6, plan.NodeConfigs.Single().Spec.Listeners.Count);
    }

    [Fact]
    public void Vips_stay_where_they_were_when_an_earlier_mapping_arrives()
    {
        var first = Planner.Plan(Input(Mapping("zz")));
        var before = first.Vips.Single().Value;
        var second = Planner.Plan(Input(Mapping("aa"), Mapping("zz")) with
        {
            Previous = first.NodeConfigs.ToDictionary(c => c.Metadata.Name!),
        });
        Assert.Equal(before, second.Vips[new ObjectRef("PortMapping", "ns", "zz")]);
        Assert.NotEqual(before, second.Vips[new ObjectRef("PortMapping", "ns", "aa")]);
    }

    [Fact]
    public void Revision_stays_when_nothing_changed_and_increments_when_content_changes()
    {
        var first = Planner.Plan(Input(Mapping("a")));
        var previous = first.NodeConfigs.ToDictionary(c => c.Metadata.Name!);
        var same = Planner.Plan(Input(Mapping("a")) with { Previous = previous });
        Assert.Equal(1, same.NodeConfigs.Single().Spec.Revision);
        Assert.Equal(first.NodeConfigs.Single().Spec.ContentHash, same.NodeConfigs.Single().Spec.ContentHash);
        var changed = Planner.Plan(Input(Mapping("a", backends: ["10.1.0.1", "10.1.0.2"])) with { Previous = previous });
        Assert.Equal(2, changed.NodeConfigs.Single().Spec.Revision);
        Assert.NotEqual(first.NodeConfigs.Single().Spec.ContentHash, changed.NodeConfigs.Single().Spec.ContentHash);
    }

    [Fact]
    public void One_invalid_mapping_does_not_block_the_others()
    {
        var broken = Mapping("broken") with { Spec = Mapping("broken").Spec with { Ports = [new ServicePort { Port = 70000 }] } };
        var plan = Planner.Plan(Input(Mapping("good1"), broken, Mapping("good2"), Mapping("lost", shard: "nope")));
        Assert.Equal(2, plan.NodeConfigs.Single().Spec.Listeners.Count);
        Assert.Collection(plan.Problems.OrderBy(p => p.Object.Name, StringComparer.Ordinal),
            p => Assert.Equal(("broken", "InvalidSpec"), (p.Object.Name, p.Reason)),
            p => Assert.Equal(("lost", "ShardNotFound"), (p.Object.Name, p.Reason)));
        Assert.Contains("70000", plan.Problems.First(p => p.Object.Name == "broken").Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Ports_that_would_name_one_listener_twice_are_refused()
    {
        PortMapping With(string name, params ServicePort[] ports) => Mapping(name) with { Spec = Mapping(name).Spec with { Ports = [.. ports] } };
        var plan = Planner.Plan(Input(
            With("named", new ServicePort { Name = "web", Port = 80 }, new ServicePort { Name = "web", Port = 81 }),
            With("numbered", new ServicePort { Name = "81", Port = 80 }, new ServicePort { Port = 81 }),
            With("fine", new ServicePort { Name = "web", Port = 80 }, new ServicePort { Port = 81 })));
        Assert.Equal([("named", "InvalidSpec"), ("numbered", "InvalidSpec")], plan.Problems.Select(p => (p.Object.Name, p.Reason)).Order());
        Assert.Contains("name 'web' is taken", plan.Problems.Single(p => p.Object.Name == "named").Message, StringComparison.Ordinal);
        Assert.Equal(["ns/fine/81", "ns/fine/web"], plan.NodeConfigs.Single().Spec.Listeners.Select(l => l.Name));
    }

    [Fact]
    public void Vips_are_shared_only_by_mappings_with_one_share_key_in_a_pool_that_allows_it_and_never_on_one_port()
    {
        static PortMapping Keyed(string name, string vip, int port, string? key) =>
            Mapping(name, vip: vip, port: port) with { Spec = Mapping(name, vip: vip, port: port).Spec with { ShareKey = key } };
        var sharing = Pool("p", "192.0.2.0/29") with { Spec = Pool("p", "192.0.2.0/29").Spec with { Sharing = new PoolSharing { AllowSharedVips = true } } };
        var plan = Planner.Plan(Input(Keyed("a", "192.0.2.5", 80, "web"), Keyed("b", "192.0.2.5", 443, "web"), Keyed("c", "192.0.2.5", 80, "web"), Keyed("d", "Auto", 8443, "web"), Keyed("e", "192.0.2.5", 22, null)) with { Pools = [sharing] });
        Assert.Equal([("c", "VipConflict"), ("e", "VipConflict")], plan.Problems.Select(p => (p.Object.Name, p.Reason)).Order());
        Assert.Contains("already uses a port", plan.Problems.Single(p => p.Object.Name == "c").Message, StringComparison.Ordinal);
        Assert.Contains("same spec.shareKey", plan.Problems.Single(p => p.Object.Name == "e").Message, StringComparison.Ordinal);
        Assert.Equal("192.0.2.5", plan.Vips[new ObjectRef("PortMapping", "ns", "d")].ToString()); // Auto joins its share group
        Assert.Equal(3, plan.NodeConfigs.Single().Spec.Listeners.Count);

        var closed = Planner.Plan(Input(Keyed("a", "192.0.2.5", 80, "web"), Keyed("b", "192.0.2.5", 443, "web")));
        Assert.Contains("does not allow shared VIPs", Assert.Single(closed.Problems).Message, StringComparison.Ordinal);
        var outside = Planner.Plan(Input(Mapping("d", vip: "198.51.100.1")));
        Assert.Equal("VipNotInPool", Assert.Single(outside.Problems).Reason);
    }

    [Fact]
    public void Overlapping_pools_are_reported_and_the_later_one_is_not_used()
    {
        var plan = Planner.Plan(Input(Mapping("a")) with { Pools = [Pool("p", "192.0.2.0/29"), Pool("q", "192.0.2.4-192.0.2.20")] });
        Assert.Equal(("q", "PoolOverlap"), (plan.Problems.Single().Object.Name, plan.Problems.Single().Reason));
    }

    [Fact]
    public void Each_vip_has_one_active_and_one_standby_node_and_both_get_its_listeners()
    {
        var nodes = Enumerable.Range(1, 4).Select(i => Node($"n{i}")).ToArray();
        var mappings = Enumerable.Range(0, 6).Select(i => Mapping($"m{i}")).ToArray();
        var plan = Planner.Plan(Input(mappings) with { Nodes = nodes });
        foreach (var vip in plan.Vips.Values.Select(v => v.ToString()))
        {
            var roles = plan.NodeConfigs.SelectMany(c => c.Spec.Vips.Where(v => v.Address == vip).Select(v => (c.Spec.NodeName, v.Role))).ToList();
            Assert.Single(roles, r => r.Role == VipRole.Active);
            Assert.Single(roles, r => r.Role == VipRole.Standby);
            Assert.All(roles, r => Assert.Contains(plan.NodeConfigs.Single(c => c.Spec.NodeName == r.NodeName).Spec.Listeners, l => l.Vip == vip));
        }
    }

    [Fact]
    public void Adding_a_node_moves_only_vips_that_the_new_node_takes()
    {
        var mappings = Enumerable.Range(0, 6).Select(i => Mapping($"m{i}")).ToArray();
        var three = Planner.Plan(Input(mappings) with { Nodes = [Node("n1"), Node("n2"), Node("n3")] });
        var four = Planner.Plan(Input(mappings) with { Nodes = [Node("n1"), Node("n2"), Node("n3"), Node("n4")] });
        var before = three.Placements["s"].ToDictionary(p => p.Address, p => p.ActiveNode);
        foreach (var p in four.Placements["s"])
        {
            Assert.True(p.ActiveNode == before[p.Address] || p.ActiveNode == "n4", $"{p.Address} moved from {before[p.Address]} to {p.ActiveNode}");
        }
    }
}
