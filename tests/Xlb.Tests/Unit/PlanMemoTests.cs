using System.Text.Json;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

/// <summary>Planning many mappings: the memo changes how fast a plan is, never what it says; a change touches only its own mapping's status.</summary>
public class PlanMemoTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private static EndpointSlice Slice(int i, int endpoints, int skip = -1, bool terminating = false) => new()
    {
        Metadata = new ObjectMeta { Name = $"svc-{i}-1", Namespace = "b", Labels = new() { [EndpointSlice.ServiceNameLabel] = $"svc-{i}" } },
        AddressType = "IPv4",
        Ports = [new SlicePort { Name = "http", Port = 8080 }],
        Endpoints = [.. Enumerable.Range(0, endpoints).Where(e => e != skip).Select(e => new SliceEndpoint
        {
            Addresses = [$"10.{100 + i / 250}.{i % 250}.{e + 1}"],
            Conditions = terminating && e == 0 ? new EndpointConditions { Ready = false, Serving = true, Terminating = true } : new EndpointConditions { Ready = true },
            NodeName = e % 2 == 0 ? "n1" : "n2",
        })],
    };

    private static PortMapping Mapping(int i, TrafficPolicy policy = TrafficPolicy.Cluster, string vip = "Auto") => new()
    {
        Metadata = new ObjectMeta { Name = $"m{i:D3}", Namespace = "b", Generation = 1, Uid = $"u{i}" },
        Spec = new PortMappingSpec
        {
            ShardRef = "s",
            Vip = vip,
            TrafficPolicy = policy,
            Ports = [new ServicePort { Name = "http", Port = 80, TargetPort = new IntOrString("http") }],
            Backend = new BackendSpec { ServiceRef = new ServiceRef { Name = $"svc-{i}" } },
        },
    };

    private static PlanInput Input(int n) => new()
    {
        Pools = [new LoadBalancerPool { Metadata = new ObjectMeta { Name = "p" }, Spec = new LoadBalancerPoolSpec { Blocks = ["10.250.0.0/24"] } }],
        Shards = [new VipShard { Metadata = new ObjectMeta { Name = "s" }, Spec = new VipShardSpec { PoolRef = "p" } }],
        Nodes = [new Node { Metadata = new ObjectMeta { Name = "n1" } }, new Node { Metadata = new ObjectMeta { Name = "n2" } }],
        Namespaces = [new Namespace { Metadata = new ObjectMeta { Name = "b" } }],
        Services = [.. Enumerable.Range(0, n).Select(i => new Service { Metadata = new ObjectMeta { Name = $"svc-{i}", Namespace = "b" } })],
        EndpointSlices = [.. Enumerable.Range(0, n).Select(i => Slice(i, 8))],
        PortMappings = [.. Enumerable.Range(0, n).Select(i => Mapping(i, i % 5 == 0 ? TrafficPolicy.Local : TrafficPolicy.Cluster))],
        Now = T0,
        ChunkLimit = 4096,
    };

    private static string Canonical(PlanResult plan) => JsonSerializer.Serialize(new
    {
        plan.NodeConfigs,
        plan.Chunks,
        Problems = plan.Problems.Select(p => p.ToString()),
        Mappings = plan.MappingStatuses.OrderBy(s => s.Key.Name, StringComparer.Ordinal).Select(s => s.Value),
        plan.ShardStatuses,
        plan.PoolStatuses,
    }, XlbJson.Options);

    [Fact]
    public void A_sequence_of_changes_planned_with_the_memo_gives_what_planning_afresh_gives()
    {
        var memo = new PlanMemo();
        var input = Input(40);
        var steps = new List<(string What, Func<PlanInput, PlanInput> Change)>
        {
            ("nothing", i => i),
            ("an endpoint leaves slice 7", i => i with { EndpointSlices = [.. i.EndpointSlices.Select(s => s.Metadata.Name == "svc-7-1" ? Slice(7, 8, skip: 3) : s)] }),
            ("an endpoint of slice 5 terminates (Local policy)", i => i with { EndpointSlices = [.. i.EndpointSlices.Select(s => s.Metadata.Name == "svc-5-1" ? Slice(5, 8, terminating: true) : s)] }),
            ("mapping 9 asks for a fixed VIP", i => i with { PortMappings = [.. i.PortMappings.Select(m => m.Metadata.Name == "m009" ? Mapping(9, vip: "10.250.0.200") : m)] }),
            ("mapping 3 is deleted", i => i with { PortMappings = [.. i.PortMappings.Where(m => m.Metadata.Name != "m003")] }),
            ("service 11 is deleted with its slice", i => i with { Services = [.. i.Services.Where(s => s.Metadata.Name != "svc-11")], EndpointSlices = [.. i.EndpointSlices.Where(s => s.Metadata.Name != "svc-11-1")] }),
            ("the pool now selects namespaces by a label b lacks", i => i with { Pools = [i.Pools[0] with { Spec = i.Pools[0].Spec with { Allocation = new PoolAllocation { NamespaceSelector = new LabelSelector { MatchLabels = new() { ["lb"] = "yes" } } } } }] }),
            ("namespace b gets the label", i => i with { Namespaces = [new Namespace { Metadata = new ObjectMeta { Name = "b", Labels = new() { ["lb"] = "yes" } } }] }),
            ("node n2's agent stops renewing", i => i with { AgentRenewals = new Dictionary<string, DateTimeOffset> { ["n1"] = T0, ["n2"] = T0.AddSeconds(-60) } }),
            ("nothing again", i => i),
        };
        foreach (var (what, change) in steps)
        {
            input = change(input);
            var remembered = Planner.Plan(input with { Memo = memo });
            var afresh = Planner.Plan(input);
            Assert.True(Canonical(afresh) == Canonical(remembered), $"after '{what}' the memo changed the plan");
            if (what == "nothing again")
            {
                Assert.True(memo.LastPlan.Hits > 0 && memo.LastPlan.Misses == 0, $"'{what}': {memo.LastPlan.Hits} hits, {memo.LastPlan.Misses} misses");
            }
            input = input with { Previous = afresh.NodeConfigs.ToDictionary(c => c.Spec.NodeName) };
        }
    }

    [Fact]
    public void A_change_to_one_mapping_moves_the_node_revision_but_leaves_every_other_mappings_status_as_it_was()
    {
        var input = Input(20);
        var first = Planner.Plan(input);
        // The planner's statuses as written, and agents that applied what they were given.
        input = input with
        {
            PortMappings = [.. input.PortMappings.Select(m => m with { Status = first.MappingStatuses[ObjectRef.Of(m)] })],
            Previous = first.NodeConfigs.ToDictionary(c => c.Spec.NodeName, c => c with { Status = new XlbNodeConfigStatus { AppliedRevision = c.Spec.Revision, AppliedHash = c.Spec.ContentHash } }),
            AgentRenewals = new Dictionary<string, DateTimeOffset> { ["n1"] = T0, ["n2"] = T0 },
        };
        var settled = Planner.Plan(input);
        input = input with { PortMappings = [.. input.PortMappings.Select(m => m with { Status = settled.MappingStatuses[ObjectRef.Of(m)] })] };

        var changed = Planner.Plan(input with { EndpointSlices = [.. input.EndpointSlices.Select(s => s.Metadata.Name == "svc-4-1" ? Slice(4, 8, skip: 2) : s)] });
        Assert.All(changed.NodeConfigs, c => Assert.Equal(settled.NodeConfigs.Single(s => s.Spec.NodeName == c.Spec.NodeName).Spec.Revision + 1, c.Spec.Revision));
        foreach (var pm in input.PortMappings)
        {
            var now = JsonSerializer.Serialize(changed.MappingStatuses[ObjectRef.Of(pm)], XlbJson.Options);
            var was = JsonSerializer.Serialize(pm.Status, XlbJson.Options);
            if (pm.Metadata.Name == "m004")
            {
                Assert.NotEqual(was, now);
                Assert.All(changed.MappingStatuses[ObjectRef.Of(pm)].Nodes, n => Assert.False(n.Applied)); // waits for the new revision
            }
            else
            {
                Assert.Equal(was, now);
            }
        }
    }
}
