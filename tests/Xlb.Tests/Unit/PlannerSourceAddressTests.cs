using Xlb.Crds;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

/// <summary>
/// spec.nat.sourceAddresses in the planner: carried to every listener of the mapping in its order,
/// announced with the VIP by the nodes that hold or stand by for it, taken from IPAM, and refused
/// with a reason where they cannot work.
/// </summary>
public class PlannerSourceAddressTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private static LoadBalancerPool Pool(string name, string block, params string[] reserved) => new()
    {
        Metadata = new ObjectMeta { Name = name, Generation = 1 },
        Spec = new LoadBalancerPoolSpec { Blocks = [block], Reserved = [.. reserved], Sharing = new PoolSharing { AllowSharedVips = true } },
    };

    private static VipShard Shard(string name, string pool) => new()
    {
        Metadata = new ObjectMeta { Name = name, Generation = 1 },
        Spec = new VipShardSpec { PoolRef = pool },
    };

    private static PortMapping Mapping(string name, string shard, string[] sources, string vip = "Auto", NatMode mode = NatMode.FullNAT, string? shareKey = null, int port = 80) => new()
    {
        Metadata = new ObjectMeta { Name = name, Namespace = "ns", Generation = 1 },
        Spec = new PortMappingSpec
        {
            ShardRef = shard,
            Vip = vip,
            ShareKey = shareKey,
            Ports = [new ServicePort { Name = "p", Port = port, TargetPort = port }],
            Backend = new BackendSpec { Endpoints = [new StaticEndpoint { Address = "10.1.0.1" }] },
            Nat = new NatSpec { Mode = mode, SourceAddresses = [.. sources] },
        },
    };

    private static PlanResult Plan(params PortMapping[] mappings) => Planner.Plan(new PlanInput
    {
        Pools = [Pool("p", "192.0.2.0/28", "192.0.2.14-192.0.2.15"), Pool("p2", "198.51.100.0/30")],
        Shards = [Shard("edge", "p"), Shard("core", "p2")],
        Nodes = [new Node { Metadata = new ObjectMeta { Name = "a1" } }, new Node { Metadata = new ObjectMeta { Name = "a2" } }],
        PortMappings = mappings,
        Now = T0,
    });

    [Fact]
    public void Source_addresses_reach_the_listeners_in_order_and_are_announced_with_their_vip_by_its_active_and_standby_nodes()
    {
        var plan = Plan(Mapping("web", "edge", ["198.51.100.1", "192.0.2.14"]), Mapping("api", "core", []));
        Assert.Empty(plan.Problems);
        var vip = plan.Vips[new ObjectRef("PortMapping", "ns", "web")].ToString();
        foreach (var config in plan.NodeConfigs)
        {
            var listener = config.Spec.Listeners.Single(l => l.Name == "ns/web/p");
            Assert.Equal(["198.51.100.1", "192.0.2.14"], listener.SourceAddresses);
            Assert.Null(config.Spec.Listeners.Single(l => l.Name == "ns/api/p").SourceAddresses);
            var held = config.Spec.Vips.Single(v => v.Address == vip);
            foreach (var source in listener.SourceAddresses!)
            {
                // The same role, shard, active node and takeover time as the VIP: they move together.
                Assert.Equal(held with { Address = source }, config.Spec.Vips.Single(v => v.Address == source));
            }
        }
        Assert.Equal(["a1", "a2"], plan.NodeConfigs.Select(c => c.Spec.Vips.Single(v => v.Address == "192.0.2.14").Role).Order().Select(r => r == VipRole.Active ? "a1" : "a2"));
        // IPAM does not hand a source address out: the other pool's Auto VIP skips 198.51.100.1.
        Assert.Equal("198.51.100.2", plan.Vips[new ObjectRef("PortMapping", "ns", "api")].ToString());
    }

    [Theory]
    [InlineData("DNAT", "198.51.100.9", "InvalidSpec", "for mode FullNAT only")]
    [InlineData("FullNAT", "192.0.2.5", "InvalidSpec", "LoadBalancerPool p may hand out as a VIP")]
    [InlineData("FullNAT", "2001:db8::1", "InvalidSpec", "is not of the family of the VIP")]
    [InlineData("FullNAT", "198.51.100.9,198.51.100.9", "InvalidSpec", "is listed twice")]
    [InlineData("FullNAT", "198.51.100.9,198.51.100.10,198.51.100.11,198.51.100.12,198.51.100.13", "InvalidSpec", "at most 4")]
    [InlineData("FullNAT", "198.51.100", "InvalidSpec", "is not an IP address")]
    [InlineData("FullNAT", "fe80::1%eth0", "InvalidSpec", "is not an IP address")]
    public void A_source_address_that_cannot_work_stalls_its_mapping_and_says_why(string mode, string sources, string reason, string message)
    {
        var plan = Plan(Mapping("web", "edge", sources.Split(','), mode: Enum.Parse<NatMode>(mode)), Mapping("api", "edge", []));
        var problem = Assert.Single(plan.Problems);
        Assert.Equal((new ObjectRef("PortMapping", "ns", "web"), reason), (problem.Object, problem.Reason));
        Assert.Contains(message, problem.Message, StringComparison.Ordinal);
        Assert.All(plan.NodeConfigs, c => Assert.Equal(["ns/api/p"], c.Spec.Listeners.Select(l => l.Name)));
        Assert.Equal("True", plan.MappingStatuses[new ObjectRef("PortMapping", "ns", "web")].Conditions.Single(c => c.Type == "Stalled").Status);
    }

    [Fact]
    public void Two_vips_cannot_share_a_source_address_and_a_vip_cannot_be_one()
    {
        var plan = Plan(
            Mapping("a", "edge", ["198.51.100.1"]),
            Mapping("b", "edge", ["198.51.100.1"]),
            Mapping("c", "core", [], vip: "198.51.100.1"));
        Assert.Equal(2, plan.Problems.Count);
        var b = plan.Problems.Single(p => p.Object.Name == "b");
        Assert.Equal("SourceAddressConflict", b.Reason);
        Assert.Contains("198.51.100.1 is a source address of PortMapping ns/a on VIP", b.Message, StringComparison.Ordinal);
        var c = plan.Problems.Single(p => p.Object.Name == "c");
        Assert.Equal(("VipConflict", "spec.vip 198.51.100.1 is a source address of PortMapping ns/a (spec.nat.sourceAddresses)"), (c.Reason, c.Message));
        Assert.All(plan.NodeConfigs, n => Assert.Equal(["ns/a/p"], n.Spec.Listeners.Select(l => l.Name)));
    }

    [Fact]
    public void Mappings_that_share_a_vip_may_list_the_same_source_address_and_it_is_announced_once()
    {
        var plan = Plan(
            Mapping("a", "edge", ["198.51.100.3"], shareKey: "k"),
            Mapping("b", "edge", ["198.51.100.3", "198.51.100.2"], shareKey: "k", port: 443));
        Assert.Empty(plan.Problems);
        Assert.All(plan.NodeConfigs, n =>
        {
            Assert.Single(n.Spec.Vips, v => v.Address == "198.51.100.3");
            Assert.Single(n.Spec.Vips, v => v.Address == "198.51.100.2");
            Assert.Equal(3, n.Spec.Vips.Count);
        });
    }
}
