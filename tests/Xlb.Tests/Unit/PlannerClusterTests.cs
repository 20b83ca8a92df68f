using System.Net;
using Xlb.Crds;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

/// <summary>The planner with cluster inputs: EndpointSlices, Services, namespaces, agent liveness and previous state.</summary>
public class PlannerClusterTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private static LoadBalancerPool Pool(string blocks = "192.0.2.0/29", LabelSelector? namespaces = null) => new()
    {
        Metadata = new ObjectMeta { Name = "p", Generation = 1 },
        Spec = new LoadBalancerPoolSpec { Blocks = [blocks], Allocation = new PoolAllocation { NamespaceSelector = namespaces } },
    };

    private static VipShard Shard(PlacementStrategy strategy = PlacementStrategy.Spread, params string[] pinned) => new()
    {
        Metadata = new ObjectMeta { Name = "s", Generation = 1 },
        Spec = new VipShardSpec { PoolRef = "p", Placement = new Placement { Strategy = strategy, Nodes = [.. pinned] } },
    };

    private static Node Node(string name) => new() { Metadata = new ObjectMeta { Name = name } };

    private static PortMapping ByService(string name, string service = "web", IntOrString? target = null, TrafficPolicy policy = TrafficPolicy.Cluster) => new()
    {
        Metadata = new ObjectMeta { Name = name, Namespace = "ns", Generation = 3 },
        Spec = new PortMappingSpec
        {
            ShardRef = "s",
            Ports = [new ServicePort { Name = "http", Port = 80, TargetPort = target }],
            Backend = new BackendSpec { ServiceRef = new ServiceRef { Name = service } },
            TrafficPolicy = policy,
        },
    };

    private static PortMapping Static(string name, params string[] backends) => new()
    {
        Metadata = new ObjectMeta { Name = name, Namespace = "ns", Generation = 1 },
        Spec = new PortMappingSpec
        {
            ShardRef = "s",
            Ports = [new ServicePort { Port = 80, TargetPort = 8080 }],
            Backend = new BackendSpec { Endpoints = [.. (backends.Length == 0 ? ["10.1.0.1"] : backends).Select(a => new StaticEndpoint { Address = a })] },
        },
    };

    private static SliceEndpoint Ep(string address, bool? ready = null, bool? serving = null, bool? terminating = null, string? node = null) =>
        new() { Addresses = [address], Conditions = new EndpointConditions { Ready = ready, Serving = serving, Terminating = terminating }, NodeName = node };

    private static EndpointSlice Slice(string name, string service, string addressType, (string? Name, int Port)[] ports, params SliceEndpoint[] endpoints) => new()
    {
        Metadata = new ObjectMeta { Name = name, Namespace = "ns", Labels = new() { [EndpointSlice.ServiceNameLabel] = service } },
        AddressType = addressType,
        Ports = [.. ports.Select(p => new SlicePort { Name = p.Name, Port = p.Port })],
        Endpoints = [.. endpoints],
    };

    private static PlanInput Input(params PortMapping[] mappings) => new()
    {
        Pools = [Pool()],
        Shards = [Shard()],
        Nodes = [Node("n1"), Node("n2")],
        PortMappings = mappings,
        Now = T0,
    };

    private static Dictionary<string, XlbNodeConfig> ByNode(PlanResult plan) => plan.NodeConfigs.ToDictionary(c => c.Spec.NodeName);

    [Fact]
    public void EndpointSlices_give_ready_backends_draining_terminating_ones_and_drop_the_rest()
    {
        var service = new Service
        {
            Metadata = new ObjectMeta { Name = "web", Namespace = "ns" },
            Spec = new ServiceSpec { Ports = [new ServiceSpecPort { Name = "web-http", Port = 80, TargetPort = new IntOrString("http") }] },
        };
        var slices = new[]
        {
            Slice("web-a", "web", "IPv4", [("web-http", 8080)], Ep("10.1.0.1"), Ep("10.1.0.2", ready: false, serving: true, terminating: true), Ep("10.1.0.3", ready: false)),
            // The same endpoint in a second slice while it moves: counted once, as ready.
            Slice("web-b", "web", "IPv4", [("web-http", 8080)], Ep("10.1.0.1", ready: false, serving: true, terminating: true), Ep("10.1.0.4")),
            Slice("web-v6", "web", "IPv6", [("web-http", 8080)], Ep("2001:db8::1")),
            Slice("other", "other", "IPv4", [("web-http", 8080)], Ep("10.9.9.9")),
        };
        var plan = Planner.Plan(Input(ByService("m")) with { Services = [service], EndpointSlices = slices });
        Assert.Empty(plan.Problems);
        var listener = ByNode(plan).Values.First(c => c.Spec.Listeners.Count > 0).Spec.Listeners.Single();
        Assert.Equal(
            ["10.1.0.1:8080 active", "10.1.0.2:8080 draining", "10.1.0.4:8080 active"],
            listener.Backends.Select(b => $"{b.Address}:{b.Port} {(b.Draining ? "draining" : "active")}"));
        var status = plan.MappingStatuses[new ObjectRef("PortMapping", "ns", "m")];
        // 3 IPv4 + 1 IPv6 usable endpoints (2 ready IPv4, 1 draining, 1 IPv6 ready), 1 not ready.
        Assert.Equal((5, 3, 1), (status.Backends!.Total, status.Backends.Ready, status.Backends.Terminating));
        Assert.Equal(3, status.ObservedGeneration);
    }

    [Fact]
    public void A_backend_address_is_rendered_canonical_and_a_canonical_one_is_the_slices_own_string()
    {
        var canonical = new string("10.1.0.7".AsSpan()); // a string of its own, not a literal another test shares
        var slices = new[]
        {
            Slice("web-a", "web", "IPv4", [("http", 8080)], Ep(canonical)),
            Slice("web-v6", "web", "IPv6", [("http", 8080)], Ep("2001:DB8:0:0::A")),
        };
        var v4 = Planner.Plan(Input(ByService("m", target: new IntOrString("http"))) with { EndpointSlices = slices });
        var v6 = Planner.Plan(Input(ByService("m", target: new IntOrString("http"))) with
        {
            Pools = [Pool("2001:db8:ff::/120")],
            EndpointSlices = slices,
        });
        var four = Assert.Single(ByNode(v4).Values.First(c => c.Spec.Listeners.Count > 0).Spec.Listeners.Single().Backends);
        var six = Assert.Single(ByNode(v6).Values.First(c => c.Spec.Listeners.Count > 0).Spec.Listeners.Single().Backends);
        Assert.Equal("2001:db8::a", six.Address);
        Assert.Equal("10.1.0.7", four.Address);
        Assert.Same(canonical, four.Address);
    }

    [Fact]
    public void Static_endpoints_given_in_any_order_are_listed_by_address_and_those_of_the_other_family_are_left_out()
    {
        var plan = Planner.Plan(Input(Static("m", "10.1.0.9", "2001:db8::5", "10.1.0.10", "10.1.0.2")));
        Assert.Empty(plan.Problems);
        var listener = ByNode(plan).Values.First(c => c.Spec.Listeners.Count > 0).Spec.Listeners.Single();
        Assert.Equal(["10.1.0.10", "10.1.0.2", "10.1.0.9"], listener.Backends.Select(b => b.Address));
    }

    [Fact]
    public void Target_ports_resolve_by_number_by_slice_port_name_and_through_the_service_port()
    {
        var slices = new[] { Slice("a", "web", "IPv4", [("http", 8080), ("metrics", 9090)], Ep("10.1.0.1")) };
        int PortOf(PortMapping pm, params Service[] services) =>
            Planner.Plan(Input(pm) with { EndpointSlices = slices, Services = services }).NodeConfigs.SelectMany(c => c.Spec.Listeners).First().Backends.Single().Port;
        Assert.Equal(7000, PortOf(ByService("m", target: 7000)));
        Assert.Equal(9090, PortOf(ByService("m", target: new IntOrString("metrics"))));
        var service = new Service { Metadata = new ObjectMeta { Name = "web", Namespace = "ns" }, Spec = new ServiceSpec { Ports = [new ServiceSpecPort { Name = "http", Port = 80 }] } };
        Assert.Equal(8080, PortOf(ByService("m"), service));
        // No Service port 80 and no targetPort: the mapping port itself.
        Assert.Equal(80, PortOf(ByService("m")));
    }

    [Fact]
    public void A_service_without_endpoints_is_accepted_but_not_ready()
    {
        var plan = Planner.Plan(Input(ByService("m")));
        Assert.Empty(plan.Problems);
        var conditions = plan.MappingStatuses[new ObjectRef("PortMapping", "ns", "m")].Conditions.ToDictionary(c => c.Type);
        Assert.Equal("True", conditions["Accepted"].Status);
        Assert.Equal(("False", "NoReadyBackends"), (conditions["Ready"].Status, conditions["Ready"].Reason));
        Assert.Equal("Service web has no endpoints", conditions["BackendsReady"].Message);
        Assert.Equal("False", conditions["Stalled"].Status);
    }

    [Fact]
    public void Traffic_policy_local_gives_each_node_only_the_backends_it_runs()
    {
        var slices = new[] { Slice("a", "web", "IPv4", [(null, 8080)], Ep("10.1.0.1", node: "n1"), Ep("10.1.0.2", node: "n2"), Ep("10.1.0.3", node: "w9")) };
        var plan = Planner.Plan(Input(ByService("m", target: 8080, policy: TrafficPolicy.Local)) with { EndpointSlices = slices });
        var configs = ByNode(plan);
        Assert.Equal(["10.1.0.1"], configs["n1"].Spec.Listeners.Single().Backends.Select(b => b.Address));
        Assert.Equal(["10.1.0.2"], configs["n2"].Spec.Listeners.Single().Backends.Select(b => b.Address));
    }

    [Fact]
    public void When_the_active_agent_stops_renewing_its_vips_move_to_the_standby_and_stay_there_when_it_returns()
    {
        var mappings = Enumerable.Range(0, 5).Select(i => Static($"m{i}")).ToArray();
        var nodes = new[] { Node("n1"), Node("n2"), Node("n3") };
        var alive = new Dictionary<string, DateTimeOffset> { ["n1"] = T0, ["n2"] = T0, ["n3"] = T0 };
        var first = Planner.Plan(Input(mappings) with { Nodes = nodes, AgentRenewals = alive });
        var before = first.Placements["s"].ToDictionary(p => p.Address);
        var victim = before.Values.GroupBy(p => p.ActiveNode).OrderByDescending(g => g.Count()).First().Key;

        // 2.9 s later nothing has expired (the default detection, 250 ms × 3, and the Lease window of at least 3 s); at 3.1 s the victim's lease has.
        var later = alive.ToDictionary(kv => kv.Key, kv => kv.Key == victim ? T0 : T0.AddSeconds(3));
        var early = Planner.Plan(Input(mappings) with { Nodes = nodes, AgentRenewals = later, Now = T0.AddSeconds(2.9), Previous = ByNode(first), Shards = [Shard() with { Status = first.ShardStatuses["s"] }] });
        Assert.Equal(before.Values.Select(p => p.ActiveNode), early.Placements["s"].Select(p => p.ActiveNode));

        var failed = Planner.Plan(Input(mappings) with { Nodes = nodes, AgentRenewals = later, Now = T0.AddSeconds(3.1), Previous = ByNode(first), Shards = [Shard() with { Status = first.ShardStatuses["s"] }] });
        var moved = 0;
        foreach (var p in failed.Placements["s"])
        {
            var was = before[p.Address];
            Assert.NotEqual(victim, p.ActiveNode);
            Assert.NotEqual(victim, p.StandbyNode);
            if (was.ActiveNode == victim)
            {
                Assert.Equal(was.StandbyNode, p.ActiveNode); // the standby takes over
                moved++;
            }
            else
            {
                Assert.Equal(was.ActiveNode, p.ActiveNode); // nothing else moves
            }
        }
        var shard = failed.ShardStatuses["s"];
        Assert.Equal(moved, shard.Transitions);
        Assert.DoesNotContain(victim, shard.ReadyNodes);
        var degraded = shard.Conditions.Single(c => c.Type == "Degraded");
        Assert.Equal(("True", "NodesNotReady"), (degraded.Status, degraded.Reason));
        Assert.Contains(victim, degraded.Message, StringComparison.Ordinal);
        Assert.Empty(ByNode(failed)[victim].Spec.Vips);

        // The node comes back: nothing moves back (sticky), and it becomes a standby again where one is missing.
        var back = alive.ToDictionary(kv => kv.Key, _ => T0.AddSeconds(4));
        var returned = Planner.Plan(Input(mappings) with { Nodes = nodes, AgentRenewals = back, Now = T0.AddSeconds(4), Previous = ByNode(failed), Shards = [Shard() with { Status = shard }] });
        Assert.Equal(failed.Placements["s"].Select(p => p.ActiveNode), returned.Placements["s"].Select(p => p.ActiveNode));
        Assert.Equal(moved, returned.ShardStatuses["s"].Transitions);
        Assert.Equal("False", returned.ShardStatuses["s"].Conditions.Single(c => c.Type == "Degraded").Status);
    }

    [Theory]
    [InlineData(200, 3, 3.0)] // the agents take over after 600 ms; the operator waits for a Lease 3 s old
    [InlineData(2000, 3, 6.0)] // a window longer than 3 s is the Lease window too
    public void The_operator_counts_an_agent_dead_when_its_Lease_is_as_old_as_the_detection_window_and_3_s_at_least(int intervalMs, int multiplier, double deadAfter)
    {
        var shard = Shard() with { Spec = Shard().Spec with { Failover = new Failover { Detection = new FailureDetection { Interval = new Duration(TimeSpan.FromMilliseconds(intervalMs)), Multiplier = multiplier } } } };
        var mappings = Enumerable.Range(0, 4).Select(i => Static($"m{i}")).ToArray();
        var nodes = new[] { Node("n1"), Node("n2") };
        var first = Planner.Plan(Input(mappings) with { Nodes = nodes, Shards = [shard], AgentRenewals = new Dictionary<string, DateTimeOffset> { ["n1"] = T0, ["n2"] = T0 } });
        var victim = first.Placements["s"][0].ActiveNode!;
        PlanResult At(double seconds) => Planner.Plan(Input(mappings) with
        {
            Nodes = nodes, Now = T0.AddSeconds(seconds), Previous = ByNode(first), Shards = [shard with { Status = first.ShardStatuses["s"] }],
            AgentRenewals = new Dictionary<string, DateTimeOffset> { ["n1"] = victim == "n1" ? T0 : T0.AddSeconds(seconds), ["n2"] = victim == "n2" ? T0 : T0.AddSeconds(seconds) },
        });
        Assert.Contains(At(deadAfter - 0.1).Placements["s"], p => p.ActiveNode == victim);
        Assert.DoesNotContain(At(deadAfter + 0.1).Placements["s"], p => p.ActiveNode == victim);
        // The standby's node config says when its agent takes over by itself: the detection window.
        var standby = first.NodeConfigs.Single(c => c.Spec.NodeName != victim).Spec.Vips.First(v => v.Role == VipRole.Standby);
        Assert.Null(standby.TakeoverAfter); // the nodes have no address: no heartbeats, only the operator moves VIPs
    }

    [Theory]
    [InlineData("50ms", 3, "interval must be from 100ms to 1m, not 50ms")]
    [InlineData("2m", 3, "interval must be from 100ms to 1m, not 120s")]
    [InlineData("1s", 1, "multiplier must be from 2 to 30, not 1")]
    public void A_detection_out_of_range_stalls_the_shard(string interval, int multiplier, string message)
    {
        Assert.True(Duration.TryParse(interval, out var d));
        var shard = Shard() with { Spec = Shard().Spec with { Failover = new Failover { Detection = new FailureDetection { Interval = d, Multiplier = multiplier } } } };
        var plan = Planner.Plan(Input(Static("m")) with { Shards = [shard] });
        var problem = Assert.Single(plan.Problems, p => p.Object.Kind == "VipShard");
        Assert.Equal("InvalidSpec", problem.Reason);
        Assert.EndsWith(message, problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_restart_with_previous_state_changes_no_allocation_no_placement_and_no_revision()
    {
        var mappings = Enumerable.Range(0, 6).Select(i => Static($"m{i}")).ToArray();
        var first = Planner.Plan(Input(mappings) with { Nodes = [Node("n1"), Node("n2"), Node("n3")] });
        // A restarted operator reads back the statuses it wrote and the node configs, in another order.
        var withStatus = mappings.Reverse().Select(m => m with { Status = first.MappingStatuses[ObjectRef.Of(m)] }).ToArray();
        var again = Planner.Plan(Input(withStatus) with { Nodes = [Node("n3"), Node("n2"), Node("n1")], Previous = ByNode(first) });
        Assert.Equal(first.Vips.OrderBy(v => v.Key.Name).Select(v => v.Value), again.Vips.OrderBy(v => v.Key.Name).Select(v => v.Value));
        Assert.Equal(first.NodeConfigs.Select(c => (c.Spec.NodeName, c.Spec.Revision, c.Spec.ContentHash)), again.NodeConfigs.Select(c => (c.Spec.NodeName, c.Spec.Revision, c.Spec.ContentHash)));

        // Status alone (node configs lost) is enough to keep every VIP, even when mappings arrive in a new order.
        var fromStatus = Planner.Plan(Input([Static("aaa"), .. withStatus]));
        foreach (var m in mappings)
        {
            Assert.Equal(first.Vips[ObjectRef.Of(m)], fromStatus.Vips[ObjectRef.Of(m)]);
        }
    }

    [Fact]
    public void Pack_puts_every_vip_on_one_node_and_pinned_follows_the_list()
    {
        var mappings = Enumerable.Range(0, 4).Select(i => Static($"m{i}")).ToArray();
        var nodes = new[] { Node("n1"), Node("n2"), Node("n3") };
        var pack = Planner.Plan(Input(mappings) with { Nodes = nodes, Shards = [Shard(PlacementStrategy.Pack)] });
        Assert.All(pack.Placements["s"], p => Assert.Equal(("n1", "n2"), (p.ActiveNode, p.StandbyNode)));
        var pinned = Planner.Plan(Input(mappings) with { Nodes = nodes, Shards = [Shard(PlacementStrategy.Pinned, "n3", "n1")] });
        Assert.All(pinned.Placements["s"], p => Assert.Equal(("n3", "n1"), (p.ActiveNode, p.StandbyNode)));
    }

    [Fact]
    public void Programmed_waits_for_every_serving_agent_to_apply_the_revision()
    {
        var alive = new Dictionary<string, DateTimeOffset> { ["n1"] = T0, ["n2"] = T0 };
        var first = Planner.Plan(Input(Static("m")) with { AgentRenewals = alive });
        var pending = first.MappingStatuses[new ObjectRef("PortMapping", "ns", "m")];
        var programmed = pending.Conditions.Single(c => c.Type == "Programmed");
        Assert.Equal(("False", "Pending"), (programmed.Status, programmed.Reason));
        Assert.Equal("True", pending.Conditions.Single(c => c.Type == "Reconciling").Status);
        Assert.Equal(T0.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture), programmed.LastTransitionTime);

        // Both agents report the revision applied.
        var applied = first.NodeConfigs.ToDictionary(c => c.Spec.NodeName, c => c with { Status = new XlbNodeConfigStatus { AppliedRevision = c.Spec.Revision, AppliedHash = c.Spec.ContentHash } });
        var mapping = Static("m") with { Status = pending };
        var later = T0.AddSeconds(5);
        var renewed = alive.ToDictionary(kv => kv.Key, _ => later);
        var second = Planner.Plan(Input(mapping) with { AgentRenewals = renewed, Previous = applied, Now = later });
        var status = second.MappingStatuses[new ObjectRef("PortMapping", "ns", "m")];
        var conditions = status.Conditions.ToDictionary(c => c.Type);
        Assert.Equal(("True", "Applied"), (conditions["Programmed"].Status, conditions["Programmed"].Reason));
        Assert.Equal("True", conditions["Ready"].Status);
        Assert.Equal("False", conditions["Reconciling"].Status);
        Assert.All(status.Nodes, n => Assert.True(n.Applied));
        Assert.Equal([VipRole.Active, VipRole.Standby], status.Nodes.Select(n => n.Role));
        // Accepted did not change, so its transition time did not either.
        Assert.Equal(pending.Conditions.Single(c => c.Type == "Accepted").LastTransitionTime, conditions["Accepted"].LastTransitionTime);
        Assert.NotEqual(programmed.LastTransitionTime, conditions["Programmed"].LastTransitionTime);
        Assert.All(status.Conditions, c => Assert.Equal(1, c.ObservedGeneration));
    }

    [Fact]
    public void Unhealthy_backends_reported_by_the_active_agent_are_not_counted_healthy()
    {
        var alive = new Dictionary<string, DateTimeOffset> { ["n1"] = T0, ["n2"] = T0 };
        var first = Planner.Plan(Input(Static("m", "10.1.0.1", "10.1.0.2")) with { AgentRenewals = alive });
        var active = first.Placements["s"].Single().ActiveNode;
        var previous = first.NodeConfigs.ToDictionary(c => c.Spec.NodeName, c => c with
        {
            Status = new XlbNodeConfigStatus { AppliedRevision = c.Spec.Revision, AppliedHash = c.Spec.ContentHash, UnhealthyBackends = c.Spec.NodeName == active ? ["10.1.0.1:8080", "10.1.0.2:8080"] : [] },
        });
        var status = Planner.Plan(Input(Static("m", "10.1.0.1", "10.1.0.2")) with { AgentRenewals = alive, Previous = previous }).MappingStatuses[new ObjectRef("PortMapping", "ns", "m")];
        Assert.Equal((2, 0), (status.Backends!.Ready, status.Backends.Healthy));
        Assert.Equal("NoReadyBackends", status.Conditions.Single(c => c.Type == "Ready").Reason);
    }

    [Fact]
    public void A_maglev_table_size_reaches_the_listeners_and_one_that_is_not_prime_stalls_its_mapping()
    {
        PortMapping With(string name, int size, SchedulingAlgorithm algorithm = SchedulingAlgorithm.Maglev)
        {
            var pm = Static(name, "10.1.0.1", "10.1.0.2");
            return pm with { Spec = pm.Spec with { Scheduling = new SchedulingSpec { Algorithm = algorithm, MaglevTableSize = size } } };
        }
        var plan = Planner.Plan(Input(With("big", 4093), With("odd", 1000), With("rr", 4093, SchedulingAlgorithm.RoundRobin)));
        var problem = Assert.Single(plan.Problems);
        Assert.Equal(("odd", "InvalidSpec"), (problem.Object.Name, problem.Reason));
        Assert.Equal("spec.scheduling.maglevTableSize 1000 is not prime (every backend's walk of the table must reach every slot): 997 and 1009 are", problem.Message);
        var listeners = plan.NodeConfigs.SelectMany(c => c.Spec.Listeners).ToList();
        Assert.All(listeners.Where(l => l.Name.StartsWith("ns/big/", StringComparison.Ordinal)), l => Assert.Equal(4093, l.MaglevTableSize));
        // Round robin has no table: the size is not carried.
        Assert.All(listeners.Where(l => l.Name.StartsWith("ns/rr/", StringComparison.Ordinal)), l => Assert.Null(l.MaglevTableSize));
        Assert.Contains(listeners, l => l.Name.StartsWith("ns/big/", StringComparison.Ordinal));
    }

    [Fact]
    public void An_idle_timeout_reaches_the_listeners_and_one_outside_a_second_to_a_week_stalls_its_mapping()
    {
        PortMapping With(string name, TimeSpan? idle)
        {
            var pm = Static(name, "10.1.0.1", "10.1.0.2");
            return pm with { Spec = pm.Spec with { IdleTimeout = idle is { } t ? new Duration(t) : null } };
        }
        var plan = Planner.Plan(Input(With("dns", TimeSpan.FromSeconds(5)), With("plain", null), With("short", TimeSpan.FromMilliseconds(500)), With("long", TimeSpan.FromDays(8))));
        Assert.Equal([("long", "InvalidSpec", "spec.idleTimeout 691200s is outside 1s-168h"), ("short", "InvalidSpec", "spec.idleTimeout 500ms is outside 1s-168h")],
            plan.Problems.Select(p => (p.Object.Name, p.Reason, p.Message)).Order());
        var listeners = plan.NodeConfigs.SelectMany(c => c.Spec.Listeners).ToList();
        Assert.All(listeners.Where(l => l.Name.StartsWith("ns/dns/", StringComparison.Ordinal)), l => Assert.Equal(TimeSpan.FromSeconds(5), l.IdleTimeout?.Value));
        Assert.All(listeners.Where(l => l.Name.StartsWith("ns/plain/", StringComparison.Ordinal)), l => Assert.Null(l.IdleTimeout));
        Assert.Contains(listeners, l => l.Name.StartsWith("ns/dns/", StringComparison.Ordinal));
        Assert.DoesNotContain(listeners, l => l.Name.StartsWith("ns/short/", StringComparison.Ordinal) || l.Name.StartsWith("ns/long/", StringComparison.Ordinal));
    }

    [Fact]
    public void Client_ip_affinity_reaches_the_listeners_and_a_timeout_past_a_day_stalls_its_mapping()
    {
        PortMapping With(string name, TimeSpan timeout)
        {
            var pm = Static(name, "10.1.0.1", "10.1.0.2");
            return pm with { Spec = pm.Spec with { Affinity = new AffinitySpec { Mode = AffinityMode.ClientIP, Timeout = new Duration(timeout) } } };
        }
        var plan = Planner.Plan(Input(With("sticky", TimeSpan.FromMinutes(30)), With("long", TimeSpan.FromDays(2)), Static("plain")));
        var problem = Assert.Single(plan.Problems);
        Assert.Equal(("long", "InvalidSpec", "spec.affinity.timeout 172800s is outside 1s-24h"), (problem.Object.Name, problem.Reason, problem.Message));
        var listeners = plan.NodeConfigs.SelectMany(c => c.Spec.Listeners).ToList();
        Assert.All(listeners.Where(l => l.Name.StartsWith("ns/sticky/", StringComparison.Ordinal)),
            l => Assert.Equal(new AffinitySpec { Mode = AffinityMode.ClientIP, Timeout = new Duration(TimeSpan.FromMinutes(30)) }, l.Affinity));
        Assert.All(listeners.Where(l => l.Name.StartsWith("ns/plain/", StringComparison.Ordinal)), l => Assert.Null(l.Affinity));
    }

    [Fact]
    public void A_least_conn_mapping_is_programmed_with_its_algorithm()
    {
        var pm = Static("lc", "10.1.0.1", "10.1.0.2");
        pm = pm with { Spec = pm.Spec with { Scheduling = new SchedulingSpec { Algorithm = SchedulingAlgorithm.LeastConn } } };
        var plan = Planner.Plan(Input(pm));
        Assert.Empty(plan.Problems);
        var listeners = plan.NodeConfigs.SelectMany(c => c.Spec.Listeners).ToList();
        Assert.NotEmpty(listeners);
        Assert.All(listeners, l => Assert.Equal(SchedulingAlgorithm.LeastConn, l.Algorithm));
        Assert.Equal("True", plan.MappingStatuses[ObjectRef.Of(pm)].Conditions.Single(c => c.Type == "Ready").Status);
    }

    [Fact]
    public void Namespace_selectors_unsupported_settings_and_invalid_specs_stall_with_a_reason_and_keep_held_vips()
    {
        var pool = Pool(namespaces: new LabelSelector { MatchLabels = new() { ["lb"] = "yes" } });
        var allowed = new Namespace { Metadata = new ObjectMeta { Name = "ns", Labels = new() { ["lb"] = "yes" } } };
        var other = Static("x") with { Metadata = new ObjectMeta { Name = "x", Namespace = "other", Generation = 1 } };
        var dnat = Static("d") with { Spec = Static("d").Spec with { Nat = new NatSpec { Mode = NatMode.DSR }, Ports = [new ServicePort { Port = 80, TargetPort = 8080 }] } };
        var first = Planner.Plan(Input(Static("a"), Static("b"), other, dnat) with { Pools = [pool], Namespaces = [allowed] });
        Assert.Equal([("d", "Unsupported"), ("x", "NamespaceNotAllowed")], first.Problems.Select(p => (p.Object.Name, p.Reason)).Order());
        var stalled = first.MappingStatuses[ObjectRef.Of(dnat)].Conditions.Single(c => c.Type == "Stalled");
        Assert.Equal(("True", "Unsupported"), (stalled.Status, stalled.Reason));
        Assert.Contains("DSR cannot translate ports", stalled.Message, StringComparison.Ordinal);

        // b gets an invalid edit: it stops being programmed but keeps its VIP, which a newcomer cannot take.
        var bVip = first.Vips[new ObjectRef("PortMapping", "ns", "b")].ToString();
        var broken = Static("b") with { Spec = Static("b").Spec with { Ports = [new ServicePort { Port = 80, TargetPort = 70000 }] }, Status = first.MappingStatuses[new ObjectRef("PortMapping", "ns", "b")] };
        var second = Planner.Plan(Input(Static("a") with { Status = first.MappingStatuses[new ObjectRef("PortMapping", "ns", "a")] }, broken, Static("c")) with { Pools = [pool], Namespaces = [allowed] });
        Assert.Equal([bVip], second.MappingStatuses[ObjectRef.Of(broken)].Vips);
        Assert.NotEqual(bVip, second.Vips[new ObjectRef("PortMapping", "ns", "c")].ToString());
        Assert.DoesNotContain(second.NodeConfigs.SelectMany(c => c.Spec.Listeners), l => l.Name.StartsWith("ns/b/", StringComparison.Ordinal));
        Assert.Equal(3, second.PoolStatuses["p"].Allocated);
    }

    [Fact]
    public void Pool_status_counts_per_family_and_reports_exhaustion()
    {
        var pool = Pool("192.0.2.1-192.0.2.2") with { Spec = Pool().Spec with { Blocks = ["192.0.2.1-192.0.2.2", "2001:db8::/64"], Reserved = ["2001:db8::1"] } };
        var plan = Planner.Plan(Input(Static("a"), Static("b")) with { Pools = [pool] });
        var status = plan.PoolStatuses["p"];
        // 2^64 - 1 IPv6 addresses saturate.
        Assert.Equal([(IpFamily.IPv4, 2L, 2L, 0L), (IpFamily.IPv6, long.MaxValue, 0L, long.MaxValue)],
            status.Families.Select(f => (f.Family, f.Total, f.Allocated, f.Available)));
        Assert.Equal("False", status.Conditions.Single(c => c.Type == "Exhausted").Status); // IPv6 has room

        var v4only = Planner.Plan(Input(Static("a"), Static("b"), Static("c")) with { Pools = [Pool("192.0.2.1-192.0.2.2")] });
        var exhausted = v4only.PoolStatuses["p"].Conditions.Single(c => c.Type == "Exhausted");
        Assert.Equal(("True", "NoAddressLeft"), (exhausted.Status, exhausted.Reason));
        Assert.Equal("True", v4only.PoolStatuses["p"].Conditions.Single(c => c.Type == "Ready").Status);
        Assert.Equal("PoolExhausted", Assert.Single(v4only.Problems).Reason);
    }

    [Fact]
    public void Property_no_address_is_ever_given_to_two_mappings_that_do_not_share_a_key()
    {
        var property = FsCheck.Fluent.Prop.ForAll(
            FsCheck.Fluent.Arb.From(FsCheck.Fluent.Gen.ListOf(FsCheck.Fluent.Gen.Choose(0, 15))),
            FsCheck.Fluent.Arb.From(FsCheck.Fluent.Gen.Choose(0, int.MaxValue)),
            (requests, seed) =>
            {
                // Each entry is a mapping: 0-7 request 192.0.2.<n>, 8-15 ask for Auto; some carry a share key.
                var mappings = requests.Select((r, i) =>
                {
                    var pm = Static($"m{i:D3}");
                    return pm with { Spec = pm.Spec with { Vip = r < 8 ? $"192.0.2.{r}" : "Auto", ShareKey = (seed >> (i % 31) & 1) == 1 ? "k" : null, Ports = [new ServicePort { Port = 80 + (i % 3) }] } };
                }).ToArray();
                var pool = Pool("192.0.2.0/29") with { Spec = Pool("192.0.2.0/29").Spec with { Sharing = new PoolSharing { AllowSharedVips = true } } };
                var plan = Planner.Plan(Input(mappings) with { Pools = [pool] });
                var byAddress = plan.Vips.GroupBy(v => v.Value).ToList();
                var spec = mappings.ToDictionary(m => ObjectRef.Of(m), m => m.Spec);
                return byAddress.All(g => g.Count() == 1 || g.All(v => spec[v.Key].ShareKey == "k")
                        && g.SelectMany(v => spec[v.Key].Ports.Select(p => p.Port)).GroupBy(p => p).All(x => x.Count() == 1))
                    && plan.Vips.Count + plan.Problems.Count == mappings.Length
                    && plan.Vips.Values.All(a => IPAddress.Parse("192.0.2.1").Equals(a) || a.GetAddressBytes()[3] is >= 1 and <= 6);
            });
        FsCheck.Check.One(FsCheck.Config.QuickThrowOnFailure.WithMaxTest(200), property);
    }

    [Fact]
    public void Property_placement_is_stable_under_replanning_and_adding_a_node_moves_nothing()
    {
        var property = FsCheck.Fluent.Prop.ForAll(
            FsCheck.Fluent.Arb.From(FsCheck.Fluent.Gen.Choose(1, 6)),
            FsCheck.Fluent.Arb.From(FsCheck.Fluent.Gen.Choose(2, 6)),
            (vipCount, nodeCount) =>
            {
                var mappings = Enumerable.Range(0, vipCount).Select(i => Static($"m{i}")).ToArray();
                var nodes = Enumerable.Range(1, nodeCount).Select(i => Node($"n{i}")).ToArray();
                var first = Planner.Plan(Input(mappings) with { Nodes = nodes });
                var again = Planner.Plan(Input(mappings) with { Nodes = nodes, Previous = ByNode(first) });
                var grown = Planner.Plan(Input(mappings) with { Nodes = [.. nodes, Node("n9")], Previous = ByNode(first) });
                return first.Placements["s"].SequenceEqual(again.Placements["s"])
                    && first.Placements["s"].Select(p => p.ActiveNode).SequenceEqual(grown.Placements["s"].Select(p => p.ActiveNode))
                    && again.NodeConfigs.All(c => c.Spec.Revision == 1);
            });
        FsCheck.Check.One(FsCheck.Config.QuickThrowOnFailure.WithMaxTest(100), property);
    }
}
