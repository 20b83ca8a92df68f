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
        Vips = plan.Vips.OrderBy(v => v.Key.ToString(), StringComparer.Ordinal).Select(v => $"{v.Key} {v.Value}"),
        plan.Placements,
        plan.NextExpiry,
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

    /// <summary>
    /// What the operator feeds the planner, changed at random: endpoints come, go and terminate;
    /// statuses come back as written (all of them or a few); agents apply revisions and report
    /// unhealthy backends; time passes; specs change with and without moving allocation; Services
    /// and slices come and go; an agent dies; the informers' order changes; the previous configs lag.
    /// Each plan through the memo (which continues from the last plan where it can) must equal a
    /// plan made afresh, and most of them must have continued.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5, true)]
    [InlineData(6, true)]
    public void Plans_that_continue_from_the_last_equal_plans_made_afresh_over_random_changes(int seed, bool cold = false)
    {
        var random = new Random(seed);
        const int n = 60;
        var memo = new PlanMemo();
        var now = T0;
        var input = Input(n) with
        {
            // One mapping that never validates: its status comes and goes like the others'.
            PortMappings = [.. Input(n).PortMappings, Mapping(n) with { Spec = Mapping(n).Spec with { ShardRef = "missing" } }],
            AgentRenewals = new Dictionary<string, DateTimeOffset> { ["n1"] = T0, ["n2"] = T0 },
        };
        // The operator's first reconcile has written every status and config; or (cold) nothing is
        // written yet, and the first plan gives VIPs that no status records.
        if (!cold)
        {
            var first = Planner.Plan(input);
            input = input with { PortMappings = [.. input.PortMappings.Select(m => m with { Status = first.MappingStatuses[ObjectRef.Of(m)] })], Previous = Assembled(first) };
        }
        var continued = 0;
        var full = 0;
        PlanResult? last = null;
        var steps = new List<string>();
        for (var step = 0; step < 60; step++)
        {
            var what = "nothing";
            if (last is not null)
            {
                // Cold: the first plan's statuses come back first, as in the operator.
                (what, input) = cold && step == 1
                    ? ("every status comes back as written", input with { PortMappings = [.. input.PortMappings.Select(m => last.MappingStatuses.TryGetValue(ObjectRef.Of(m), out var st) ? m with { Status = st } : m)] })
                    : RandomChange(random, input, last, n);
            }
            now = now.AddMilliseconds(random.Next(0, 1500));
            input = input with { Now = now, AgentRenewals = input.AgentRenewals is { } r && r["n2"] < now.AddSeconds(-30) ? r : new Dictionary<string, DateTimeOffset> { ["n1"] = now, ["n2"] = now } };
            var remembered = Planner.Plan(input with { Memo = memo });
            var afresh = Planner.Plan(input);
            steps.Add($"{what}{(memo.LastContinued ? " (continued)" : "")}");
            Assert.True(Canonical(afresh) == Canonical(remembered), $"seed {seed}, step {step}: the memo changed the plan; steps: {string.Join("; ", steps)}");
            Assert.True(!cold || step != 1 || memo.LastContinued, $"seed {seed}: the plan after the first one's statuses came back did not continue from it");
            _ = memo.LastContinued ? continued++ : full++;
            last = afresh;
            // Most of the time the operator has written the configs and reads them back; sometimes not yet.
            var written = random.Next(8) != 0;
            if (written || (cold && step == 0))
            {
                input = input with { Previous = Assembled(afresh, input.Previous) };
            }
        }
        Assert.True(continued >= 25, $"seed {seed}: only {continued} of 60 plans continued ({full} full); steps: {string.Join("; ", steps)}");
        Assert.True(full >= 3, $"seed {seed}: only {full} full plans: the changes that need one were not made");
    }

    [Fact]
    public void A_plan_made_on_many_threads_equals_one_made_on_one()
    {
        // Past the size from which a plan spreads validation, rendering, the nodes and the statuses over threads (two ports each: 1,200 listeners per node).
        var input = Input(600) with { PortMappings = [.. Input(600).PortMappings.Select(m => m with { Spec = m.Spec with { Ports = [.. m.Spec.Ports, new ServicePort { Name = "alt", Port = 81, TargetPort = new IntOrString(8081) }] } })] };
        var single = Planner.Plan(input with { MaxParallelism = 1 });
        var memo = new PlanMemo();
        var threaded = Planner.Plan(input with { Memo = memo });
        Assert.Equal(Canonical(single), Canonical(threaded));
        Assert.Equal(Canonical(single), Canonical(Planner.Plan(input)));
        // And the memo holds what the threads made: the same input again computes nothing.
        Planner.Plan(input with { Memo = memo, Previous = threaded.NodeConfigs.ToDictionary(c => c.Spec.NodeName) });
        Assert.Equal(0, memo.LastPlan.Misses);
    }

    /// <summary>The node configs of a plan as the operator reads them back: chunked ones assembled from their chunks.</summary>
    private static Dictionary<string, XlbNodeConfig> Assembled(PlanResult plan, IReadOnlyDictionary<string, XlbNodeConfig>? statusesFrom = null) =>
        plan.NodeConfigs.ToDictionary(c => c.Spec.NodeName, c =>
        {
            var parts = c.Spec.Chunks.Select(r => plan.Chunks.Single(k => k.Metadata.Name == r.Name).Spec).ToList();
            var status = statusesFrom?.GetValueOrDefault(c.Spec.NodeName)?.Status;
            return parts.Count == 0 ? c with { Status = status }
                : c with { Spec = c.Spec with { Vips = [.. parts.SelectMany(p => p.Vips)], Listeners = [.. parts.SelectMany(p => p.Listeners)] }, Status = status };
        });

    [Fact]
    public void A_plan_that_continues_after_a_failover_does_not_count_its_moves_again()
    {
        var memo = new PlanMemo();
        var input = Input(30) with { AgentRenewals = new Dictionary<string, DateTimeOffset> { ["n1"] = T0, ["n2"] = T0 } };
        PlanResult Step(PlanInput i)
        {
            var remembered = Planner.Plan(i with { Memo = memo });
            var afresh = Planner.Plan(i);
            Assert.Equal(Canonical(afresh), Canonical(remembered));
            return afresh;
        }
        PlanInput Written(PlanInput i, PlanResult plan) => i with
        {
            PortMappings = [.. i.PortMappings.Select(m => m with { Status = plan.MappingStatuses[ObjectRef.Of(m)] })],
            Shards = [.. i.Shards.Select(s => s with { Status = plan.ShardStatuses[s.Metadata.Name!] })],
            Previous = Assembled(plan),
        };
        input = Written(input, Step(input));
        input = Written(input, Step(input));
        var failover = input with { Now = T0.AddSeconds(60), AgentRenewals = new Dictionary<string, DateTimeOffset> { ["n1"] = T0.AddSeconds(60), ["n2"] = T0 } };
        var moved = Step(failover);
        Assert.False(memo.LastContinued);
        var transitions = moved.ShardStatuses["s"].Transitions;
        Assert.True(transitions > 0, "no VIP moved off n2");
        // The configs are written and read back; the shard (and its status) is as before when an endpoint changes.
        var next = Step(failover with
        {
            Previous = Assembled(moved),
            EndpointSlices = [.. failover.EndpointSlices.Select(s => s.Metadata.Name == "svc-3-1" ? Slice(3, 8, skip: 1) : s)],
        });
        Assert.True(memo.LastContinued, "the plan after the failover did not continue from it");
        // Transitions add to what the shard's status says: the moves are in the status written for the failover, not again here.
        Assert.Equal(failover.Shards[0].Status!.Transitions, next.ShardStatuses["s"].Transitions);
    }

    private static (string What, PlanInput Input) RandomChange(Random random, PlanInput input, PlanResult last, int n)
    {
        var i = random.Next(n);
        var slice = $"svc-{i}-1";
        PlanInput Slices(Func<EndpointSlice, EndpointSlice?> f) => input with { EndpointSlices = [.. input.EndpointSlices.Select(f).OfType<EndpointSlice>()] };
        PlanInput Mappings(Func<PortMapping, PortMapping> f) => input with { PortMappings = [.. input.PortMappings.Select(f)] };
        PortMapping Echo(PortMapping m) => last.MappingStatuses.TryGetValue(ObjectRef.Of(m), out var s) ? m with { Status = s } : m;
        switch (random.Next(21))
        {
            case 0 or 1 or 2:
                return ($"endpoint {i % 8} leaves slice {i}", Slices(s => s.Metadata.Name == slice ? Slice(i, 8, skip: i % 8) : s));
            case 3:
                return ($"an endpoint of slice {i} terminates", Slices(s => s.Metadata.Name == slice ? Slice(i, 8, terminating: true) : s));
            case 4:
                return ($"slice {i} is whole again", Slices(s => s.Metadata.Name == slice ? Slice(i, 8) : s));
            case 5 or 6:
                return ("every status comes back as written", Mappings(Echo));
            case 7:
                return ($"the status of mapping {i} comes back", Mappings(m => m.Metadata.Name == $"m{i:D3}" || m.Metadata.Name == $"m{n:D3}" ? Echo(m) : m));
            case 8:
                List<string> unhealthy = random.Next(2) == 0 ? [] : [$"10.{100 + i / 250}.{i % 250}.1:8080"];
                // An agent may report the revision with another hash (it applied other content under that number).
                var hash = random.Next(3) == 0 ? "0000" : null;
                return ($"the agents apply what they were given{(hash is null ? "" : ", with another hash")}", input with
                {
                    Previous = input.Previous.ToDictionary(p => p.Key, p => p.Value with { Status = new XlbNodeConfigStatus { AppliedRevision = p.Value.Spec.Revision, AppliedHash = hash ?? p.Value.Spec.ContentHash, UnhealthyBackends = unhealthy } }),
                });
            case 9:
                return ($"mapping {i} takes a numbered target port", Mappings(m => m.Metadata.Name == $"m{i:D3}" ? m with { Spec = m.Spec with { Ports = [new ServicePort { Name = "http", Port = 80, TargetPort = new IntOrString(8080) }] } } : m));
            case 10:
                return ($"mapping {i} asks for a fixed VIP", Mappings(m => m.Metadata.Name == $"m{i:D3}" ? m with { Spec = m.Spec with { Vip = $"10.250.0.{200 + i % 50}" } } : m));
            case 11:
                return ($"service {i} is replaced by an equal object", input with { Services = [.. input.Services.Select(s => s.Metadata.Name == $"svc-{i}" ? s with { Metadata = s.Metadata with { } } : s)] });
            case 12:
                var extra = $"svc-{i}-2";
                return input.EndpointSlices.Any(s => s.Metadata.Name == extra)
                    ? ($"slice {extra} goes", Slices(s => s.Metadata.Name == extra ? null : s))
                    : ($"slice {extra} comes", input with
                    {
                        EndpointSlices = [.. input.EndpointSlices, Slice(i, 3) with
                        {
                            Metadata = Slice(i, 3).Metadata with { Name = extra },
                            Endpoints = [.. Enumerable.Range(1, 3).Select(e => new SliceEndpoint { Addresses = [$"172.16.{i}.{e}"], Conditions = new EndpointConditions { Ready = true } })],
                        }],
                    });
            case 13:
                return ("the informers list in another order", input with { EndpointSlices = [.. input.EndpointSlices.Reverse()], PortMappings = [.. input.PortMappings.Reverse()] });
            case 15:
                return ($"someone writes another VIP into mapping {i}'s status", Mappings(m => m.Metadata.Name == $"m{i:D3}" && m.Status is { } st ? m with { Status = st with { Vips = [$"10.250.0.{150 + i}"] } } : m));
            case 16:
                return ($"someone else rewrites mapping {i}'s conditions and bumps its generation", Mappings(m => m.Metadata.Name == $"m{i:D3}" && m.Status is { } st
                    ? m with
                    {
                        Metadata = m.Metadata with { Generation = (m.Metadata.Generation ?? 0) + 1 },
                        Status = st with { Conditions = [.. st.Conditions.Select(c => c with { Status = "Unknown", LastTransitionTime = "2020-01-01T00:00:00Z" })] },
                    }
                    : m));
            case 17:
                return ("the pools' and shards' statuses come back as written", input with
                {
                    Pools = [.. input.Pools.Select(p => last.PoolStatuses.TryGetValue(p.Metadata.Name!, out var st) ? p with { Status = st } : p)],
                    Shards = [.. input.Shards.Select(x => last.ShardStatuses.TryGetValue(x.Metadata.Name!, out var st) ? x with { Status = st } : x)],
                });
            case 18:
                return ("someone else rewrites the shards' and pools' statuses", input with
                {
                    Pools = [.. input.Pools.Select(p => p with { Status = new LoadBalancerPoolStatus { Allocated = 7, Conditions = [new Condition { Type = "Ready", Status = "Unknown", Reason = "Other", LastTransitionTime = "2020-01-01T00:00:00Z" }] } })],
                    Shards = [.. input.Shards.Select(x => x with { Status = new VipShardStatus { Transitions = 40 + i, Conditions = [new Condition { Type = "Ready", Status = "Unknown", Reason = "Other", LastTransitionTime = "2020-01-01T00:00:00Z" }] } })],
                });
            case 19:
                return ("the pool's reserved addresses change (a new generation)", input with
                {
                    Pools = [.. input.Pools.Select(p => p with
                    {
                        Metadata = p.Metadata with { Generation = (p.Metadata.Generation ?? 1) + 1 },
                        Spec = p.Spec with { Reserved = p.Spec.Reserved.Count == 0 ? ["10.250.0.254"] : [] },
                    })],
                });
            case 14:
                return input.AgentRenewals!["n2"] < input.Now.AddSeconds(-30)
                    ? ("n2's agent is back", input with { AgentRenewals = null })
                    : ("n2's agent stops renewing", input with { AgentRenewals = new Dictionary<string, DateTimeOffset> { ["n1"] = input.Now, ["n2"] = input.Now.AddSeconds(-60) } });
            default:
                return ($"mapping {i} breaks or heals", Mappings(m => m.Metadata.Name == $"m{i:D3}" ? m with { Spec = m.Spec with { Ports = m.Spec.Ports.Count == 0 ? Mapping(i).Spec.Ports : [] } } : m));
        }
    }
}
