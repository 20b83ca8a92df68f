using System.Net;
using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Tests.Unit;

public class NodeStatusTests
{
    private static readonly IPAddress Vip = IPAddress.Parse("10.250.0.10");
    private static readonly XlbSvcKey Key = new() { Vip = Addr16.From(Vip), PortBe = Net.Be(80), Proto = XlbAbi.ProtoTcp, Family = XlbAbi.FamilyV4, Gen = 1 };

    private static XlbBackend Backend(string address, byte flags = 0) =>
        new() { Addr = Addr16.From(IPAddress.Parse(address)), PortBe = Net.Be(8080), Family = XlbAbi.FamilyV4, Flags = flags };

    private static KeyValuePair<XlbFlowKey, XlbFlow> Flow(int clientPort, string backend, byte state, ulong lastSeen) => new(
        new XlbFlowKey { Saddr = Addr16.From(IPAddress.Parse("10.200.0.2")), Daddr = Addr16.From(Vip), SportBe = Net.Be(clientPort), DportBe = Net.Be(80), Proto = XlbAbi.ProtoTcp, Family = XlbAbi.FamilyV4 },
        new XlbFlow { Backend = Addr16.From(IPAddress.Parse(backend)), BackendPortBe = Net.Be(8080), NatPortBe = Net.Be(40001), SvcId = 1, LastSeenNs = lastSeen, State = state, Mode = XlbAbi.ModeFullNat });

    private const ulong Second = 1_000_000_000;

    private static DataPlaneContents Maps() => new()
    {
        Config = new XlbCfg { ActiveGen = 1, TcpNewTimeoutS = 5, TcpEstablishedTimeoutS = 300, TcpClosingTimeoutS = 10, UdpTimeoutS = 30 },
        Vips = new Dictionary<XlbVipKey, uint> { [new XlbVipKey { Addr = Addr16.From(Vip), Family = XlbAbi.FamilyV4, Gen = 1 }] = XlbAbi.VipActive },
        Services = new Dictionary<XlbSvcKey, XlbSvc> { [Key] = new XlbSvc { Id = 1, RingOff = 0, RingSize = 7, Mode = XlbAbi.ModeFullNat, Algo = XlbAbi.AlgoMaglev } },
        // Backend 1 holds five slots, backend 2 (draining) two; backend 3 is unhealthy: not in the ring.
        Rings = new Dictionary<XlbSvcKey, uint[]> { [Key] = [1, 1, 2, 1, 1, 2, 1] },
        Backends = new Dictionary<uint, XlbBackend> { [1] = Backend("10.201.1.2"), [2] = Backend("10.201.2.2", XlbAbi.BackendDraining) },
        ServiceCounters = new Dictionary<uint, XlbSvcStats> { [1] = new XlbSvcStats { Packets = 10, NewFlows = 3 } },
        Reasons = new Dictionary<XlbStat, ulong> { [XlbStat.FwdNewFlow] = 3, [XlbStat.PassNonIp] = 0 },
        Flows =
        [
            Flow(1001, "10.201.1.2", XlbAbi.FlowEstablished, 100 * Second),
            Flow(1002, "10.201.2.2", XlbAbi.FlowEstablished, 99 * Second),
            Flow(1003, "10.201.1.2", XlbAbi.FlowClosing, 50 * Second), // closed 50 s ago: past its 10 s
        ],
        NowNs = 100 * Second,
    };

    private static XlbNodeConfigSpec Spec() => new()
    {
        NodeName = "lb-1",
        Revision = 4,
        Vips = [new NodeVip { Address = "10.250.0.10", Role = VipRole.Active, Shard = "s" }],
        Listeners =
        [
            new Listener
            {
                Name = "demo/web/http", Vip = "10.250.0.10", Port = 80,
                Backends =
                [
                    new NodeBackend { Address = "10.201.1.2", Port = 8080, Weight = 5 },
                    new NodeBackend { Address = "10.201.2.2", Port = 8080, Weight = 2, Draining = true },
                    new NodeBackend { Address = "10.201.3.2", Port = 8080 },
                ],
            },
        ],
    };

    [Fact]
    public void Backends_show_their_ring_share_state_and_live_flows()
    {
        var r = NodeStatus.Build(Maps(), Spec(), ["10.201.3.2:8080"], null);
        var s = Assert.Single(r.Services);
        Assert.Equal(("demo/web/http", "FullNAT", "Maglev", 2), (s.Name, s.Mode, s.Algorithm, s.ActiveFlows));
        Assert.Equal(
            [("10.201.1.2", "active", 5, 5, 71.43, 1), ("10.201.2.2", "draining", 2, 2, 28.57, 1), ("10.201.3.2", "unhealthy", 1, 0, 0.0, 0)],
            s.Backends.Select(b => (b.Address, b.State, b.Weight ?? 0, b.RingSlots, b.Share, b.ActiveFlows)));
        Assert.Equal(new VipStatus("10.250.0.10", "active"), Assert.Single(r.Vips));
        Assert.Equal(new Dictionary<string, ulong> { ["fwd_new_flow"] = 3 }, r.Counters);
        Assert.Null(r.Flows);
        Assert.Equal(("lb-1", 4L), (r.Node, r.Revision));
    }

    [Fact]
    public void FullNAT_backends_show_the_nat_ports_held_toward_them_and_how_many_are_of_ended_connections()
    {
        static KeyValuePair<XlbFlowKey, XlbFlow> Ending(int port, byte flags)
        {
            var f = Flow(port, "10.201.1.2", XlbAbi.FlowClosing, 98 * Second);
            return new(f.Key, f.Value with { Flags = flags });
        }
        var maps = Maps() with
        {
            Config = Maps().Config with { NatPortMin = 40000, NatPortMax = 59999 },
            Flows =
            [
                .. Maps().Flows, // backend 1: one live (the closed one is past its timeout), backend 2: one
                Ending(1004, XlbAbi.FlowReset),
                Ending(1005, XlbAbi.FlowFinBackend | XlbAbi.FlowTimeWait | XlbAbi.FlowFinClient),
                Ending(1006, XlbAbi.FlowFinClient), // half closed: its port is its own
            ],
        };
        var r = NodeStatus.Build(maps, Spec(), null, null);
        Assert.Equal(20000, r.NatPortRange);
        Assert.Equal([(4, 2), (1, 0)], Assert.Single(r.Services).Backends.Where(b => b.RingSlots > 0).Select(b => (b.NatPorts ?? -1, b.NatPortsEnded ?? -1)));
        Assert.Contains("NAT PORTS (ENDED)", Xlb.Cli.StatusCommand.Table(r), StringComparison.Ordinal);
        Assert.Contains("4/20000 (2)", Xlb.Cli.StatusCommand.Table(r), StringComparison.Ordinal);

        // Other modes hold no NAT ports.
        var dnat = maps with { Services = new Dictionary<XlbSvcKey, XlbSvc> { [Key] = maps.Services[Key] with { Mode = XlbAbi.ModeDnat } } };
        Assert.All(Assert.Single(NodeStatus.Build(dnat, Spec(), null, null).Services).Backends, b => Assert.Null(b.NatPorts));
    }

    [Fact]
    public void Least_conn_backends_show_the_open_flows_the_program_compares()
    {
        var maglev = NodeStatus.Build(Maps() with { OpenFlowCounts = new Dictionary<uint, long> { [1] = 4 } }, Spec(), null, null);
        Assert.All(Assert.Single(maglev.Services).Backends, b => Assert.Null(b.OpenFlows));
        var maps = Maps() with
        {
            // Two backends, then their weights.
            Services = new Dictionary<XlbSvcKey, XlbSvc> { [Key] = new XlbSvc { Id = 1, RingOff = 0, RingSize = 4, Mode = XlbAbi.ModeFullNat, Algo = XlbAbi.AlgoLeastConn } },
            Rings = new Dictionary<XlbSvcKey, uint[]> { [Key] = [1, 2, 5, 2] },
            OpenFlowCounts = new Dictionary<uint, long> { [1] = 4, [2] = 0 },
        };
        var s = Assert.Single(NodeStatus.Build(maps, Spec(), null, null).Services);
        Assert.Equal("LeastConn", s.Algorithm);
        Assert.Equal([("10.201.1.2", 4L, 1), ("10.201.2.2", 0L, 1)], s.Backends.Where(b => b.RingSlots > 0).Select(b => (b.Address, b.OpenFlows ?? -1, b.RingSlots)));
    }

    [Fact]
    public void Without_the_node_config_the_maps_alone_answer()
    {
        var r = NodeStatus.Build(Maps(), null, null, null);
        var s = Assert.Single(r.Services);
        Assert.Null(s.Name);
        Assert.Equal(["10.201.1.2", "10.201.2.2"], s.Backends.Select(b => b.Address));
        Assert.All(s.Backends, b => Assert.Null(b.Weight));
    }

    [Fact]
    public void The_flow_cache_is_reported_as_the_config_map_holds_it()
    {
        Assert.True(NodeStatus.Build(Maps(), null, null, null).FlowCache);
        var off = Maps() with { Config = Maps().Config with { Flags = XlbAbi.CfgNoFlowCache } };
        Assert.False(NodeStatus.Build(off, null, null, null).FlowCache);
    }

    [Theory]
    [InlineData(null, 2)]
    [InlineData("10.201.2.2", 1)]
    [InlineData(":1001", 1)]
    [InlineData("10.200.0.2:1002", 1)]
    [InlineData("10.200.0.2:1003", 0)] // expired: not listed
    public void Flows_are_the_live_ones_that_match_the_filter_most_recent_first(string? filter, int expected)
    {
        var f = filter is null ? new FlowFilter() : FlowFilter.Parse(filter, 100);
        var flows = NodeStatus.Build(Maps(), Spec(), null, f).Flows!;
        Assert.Equal(expected, flows.Count);
        if (filter is null)
        {
            Assert.Equal(["10.200.0.2:1001", "10.200.0.2:1002"], flows.Select(x => x.Client));
            Assert.Equal(("established", 40001, "demo/web/http", 0.0), (flows[0].State, flows[0].NatPort!.Value, flows[0].Service!, flows[0].IdleSeconds));
            Assert.All(flows, x => Assert.Null(x.Copy));
        }
    }

    [Fact]
    public void A_flow_another_node_sent_is_shown_as_a_copy()
    {
        var maps = Maps();
        maps = maps with { Flows = [.. maps.Flows.Select(kv => kv.Key.SportBe == Net.Be(1001) ? new(kv.Key, kv.Value with { Flags = XlbAbi.FlowSynced }) : kv)] };
        var flows = NodeStatus.Build(maps, Spec(), null, new FlowFilter()).Flows!;
        Assert.Equal([true, null], flows.Select(f => f.Copy));
    }

    [Fact]
    public void The_flow_limit_says_how_many_it_left_out()
    {
        var r = NodeStatus.Build(Maps(), null, null, new FlowFilter(Limit: 1));
        Assert.Equal("10.200.0.2:1001", Assert.Single(r.Flows!).Client);
        Assert.Equal(1, r.FlowsOmitted);
    }

    [Theory]
    [InlineData("10.0.0.1:")]
    [InlineData("host:80")]
    [InlineData(":0")]
    public void A_bad_flow_filter_is_refused(string text) =>
        Assert.Throws<FormatException>(() => FlowFilter.Parse(text, 10));
}
