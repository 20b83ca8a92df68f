using System.Net;
using Xlb.Agent;
using Xlb.Agent.Bpf;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.DataPlane;
using Xlb.Tests.Support;
using static Xlb.Tests.Bpf.DataPlaneFixture;

namespace Xlb.Tests.Bpf;

/// <summary>
/// LeastConn through BPF_PROG_TEST_RUN: a new flow goes to the backend with the fewest open flows
/// (xlb_backend_conns), which the program keeps as flows open and close, and the agent's recount
/// corrects for flows that leave the tables without a packet. Each test has a data plane of its
/// own, so its counts start from zero.
/// </summary>
public class LeastConnTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private static Listener LeastConn(bool firstDraining = false) => ToBackends("t/lc/p", 80, 1, 2) with
    {
        Algorithm = SchedulingAlgorithm.LeastConn,
        Backends =
        [
            new NodeBackend { Address = LbTopology.BackendAddress(1), Port = 8080, Draining = firstDraining },
            new NodeBackend { Address = LbTopology.BackendAddress(2), Port = 8080 },
        ],
    };

    private static byte[] Tcp(ushort clientPort, byte flags) => ClientTcp(clientPort, flags: flags).Build();

    private static XlbFlowKey Key(ushort clientPort) => ClientFlowKey(clientPort);

    /// <summary>The open-flow count of the topology's backends 1 and 2, by number.</summary>
    private static Dictionary<int, long> Counts(XdpDataPlane plane)
    {
        var counts = new Dictionary<int, long> { [1] = 0, [2] = 0 };
        foreach (var (be, n) in plane.OpenFlowCounts())
        {
            counts[LbTopology.BackendIndexOf(be.Addr.ToAddress(be.Family))] = n;
        }
        return counts;
    }

    /// <summary>The topology's backend a forwarded packet went to.</summary>
    private static int BackendOf(TestRunResult r)
    {
        Assert.Equal(XdpRedirect, (int)r.Verdict);
        return LbTopology.BackendIndexOf(Packet.Parse(r.Packet).Dst);
    }

    private static int _nextPort = 41000;

    private static ushort NextPort() => (ushort)Interlocked.Increment(ref _nextPort);

    [Fact]
    public void A_new_flow_goes_to_the_backend_with_fewer_open_flows_and_a_closed_one_frees_its_place()
    {
        Privileged.Require();
        var (plane, run) = fx.PrivatePlane(null, OneVip(LeastConn()));
        using var _ = plane;
        var open = new Dictionary<ushort, int>();
        for (var i = 0; i < 10; i++)
        {
            var before = Counts(plane);
            var port = NextPort();
            var to = BackendOf(run(Tcp(port, Packet.Syn)));
            Assert.True(before[to] <= before[3 - to], $"connection {i}: to backend {to} with {before[to]} open flows, the other has {before[3 - to]}");
            Assert.Equal(XdpRedirect, (int)run(Tcp(port, Packet.Ack)).Verdict);
            open[port] = to;
        }
        var counts = Counts(plane);
        Assert.Equal(10, counts[1] + counts[2]);
        Assert.Equal(open.Count(o => o.Value == 1), counts[1]);
        Assert.InRange(counts[1] - counts[2], -1, 1);

        // Backend 1's clients close four connections: the next four go to backend 1, which now has fewer.
        foreach (var port in open.Where(o => o.Value == 1).Take(4).Select(o => o.Key))
        {
            run(Tcp(port, Packet.Fin | Packet.Ack));
        }
        Assert.Equal(counts[1] - 4, Counts(plane)[1]);
        var next = Enumerable.Range(0, 4).Select(_ => BackendOf(run(Tcp(NextPort(), Packet.Syn)))).ToList();
        Assert.Equal([1, 1, 1, 1], next);
    }

    [Fact]
    public void A_flow_counts_once_from_its_syn_until_a_fin_or_rst_from_either_side()
    {
        Privileged.Require();
        var (plane, run) = fx.PrivatePlane(null, OneVip(LeastConn()));
        using var _ = plane;
        long Total() => Counts(plane).Values.Sum();

        var port = NextPort();
        run(Tcp(port, Packet.Syn));
        Assert.Equal(1, Total());
        run(Tcp(port, Packet.Syn)); // retransmitted
        run(Tcp(port, Packet.Ack)); // admitted
        run(Tcp(port, Packet.Ack | 0x08));
        run(Tcp(port, Packet.Ack | 0x08)); // from the flow cache
        Assert.Equal(1, Total());
        Assert.True(plane.TryFindFlow(Key(port), out var flow));
        Assert.Equal(XlbAbi.FlowCounted, flow.Flags);
        run(Tcp(port, Packet.Fin | Packet.Ack));
        Assert.Equal(0, Total());
        run(Tcp(port, Packet.Fin | Packet.Ack));
        run(Tcp(port, Packet.Rst));
        Assert.Equal(0, Total());

        // The backend closes (its FIN comes back through the reverse translation): counted off once.
        var other = NextPort();
        run(Tcp(other, Packet.Syn));
        run(Tcp(other, Packet.Ack));
        Assert.True(plane.TryFindFlow(Key(other), out flow));
        var reply = new Packet
        {
            Src = flow.Backend.ToAddress(XlbAbi.FamilyV4), Dst = VipAddress, SrcPort = 8080, DstPort = (ushort)Net.FromBe(flow.NatPortBe),
            TcpFlags = Packet.Fin | Packet.Ack,
        }.Build();
        Assert.Equal(XdpRedirect, (int)run(reply).Verdict);
        Assert.Equal(0, Total());
        run(Tcp(other, Packet.Fin | Packet.Ack));
        Assert.Equal(0, Total());
        // And the recount agrees with what the program kept.
        Assert.Equal(0, plane.RecountConnections());
    }

    [Fact]
    public void A_flow_found_expired_counts_off_and_its_successor_on()
    {
        Privileged.Require();
        var (plane, run) = fx.PrivatePlane(new DataPlaneOptions { Timeouts = SinceBootIsIdle }, OneVip(LeastConn()));
        using var _ = plane;
        var port = NextPort();
        run(Tcp(port, Packet.Syn));
        run(Tcp(port, Packet.Ack));
        Assert.True(plane.Flows.TryLookup(Key(port), out var flow));
        plane.Flows.Update(Key(port), flow with { LastSeenNs = 1 });
        plane.FlowTableChanged();

        var expired = plane.Stats()[XlbStat.FwdExpiredFlow];
        run(Tcp(port, Packet.Ack | 0x08));
        Assert.Equal(expired + 1, plane.Stats()[XlbStat.FwdExpiredFlow]);
        Assert.Equal(1, Counts(plane).Values.Sum());
        Assert.Equal(0, plane.RecountConnections());
    }

    [Fact]
    public void Flows_that_leave_without_a_packet_stop_counting_at_the_recount()
    {
        Privileged.Require();
        var (plane, run) = fx.PrivatePlane(new DataPlaneOptions { Timeouts = SinceBootIsIdle }, OneVip(LeastConn()));
        using var _ = plane;
        var ports = Enumerable.Range(0, 6).Select(_ => NextPort()).ToList();
        foreach (var port in ports)
        {
            run(Tcp(port, Packet.Syn));
            run(Tcp(port, Packet.Ack));
        }
        Assert.Equal(6, Counts(plane).Values.Sum());

        // Two evicted (as the LRU would, without a word to the program): counted until the recount.
        foreach (var port in ports.Take(2))
        {
            Assert.True(plane.Flows.Delete(Key(port)));
        }
        plane.FlowTableChanged();
        Assert.Equal(6, Counts(plane).Values.Sum());
        Assert.True(plane.RecountConnections() > 0);
        Assert.Equal(4, Counts(plane).Values.Sum());
        Assert.Equal(0, plane.RecountConnections());

        // Two idle past their timeout: the sweep takes them and recounts.
        foreach (var port in ports.Skip(2).Take(2))
        {
            Assert.True(plane.Flows.TryLookup(Key(port), out var flow));
            plane.Flows.Update(Key(port), flow with { LastSeenNs = 1 });
        }
        plane.FlowTableChanged();
        Assert.Equal(2, plane.SweepIdleFlows().Swept);
        Assert.Equal(2, Counts(plane).Values.Sum());

        // Cleared: nothing counts.
        plane.ClearFlows();
        Assert.Equal(0, Counts(plane).Values.Sum());
    }

    [Fact]
    public void Open_flows_are_compared_per_unit_of_weight()
    {
        Privileged.Require();
        var weighted = LeastConn() with
        {
            Backends = [new NodeBackend { Address = LbTopology.BackendAddress(1), Port = 8080, Weight = 3 }, new NodeBackend { Address = LbTopology.BackendAddress(2), Port = 8080 }],
        };
        var (plane, run) = fx.PrivatePlane(null, OneVip(weighted));
        using var _ = plane;
        // Whatever the hash breaks ties to, weight 3 beside weight 1 ends at 6 and 2 after 8 flows.
        foreach (var port in Enumerable.Range(0, 8).Select(_ => NextPort()))
        {
            BackendOf(run(Tcp(port, Packet.Syn)));
        }
        Assert.Equal(new Dictionary<int, long> { [1] = 6, [2] = 2 }, Counts(plane));
        // The service's span: its two backends, then their weights.
        var svc = plane.Services.Entries(k => k.Gen == plane.ActiveGeneration).Values.Single();
        Assert.Equal(4u, svc.RingSize);
    }

    [Fact]
    public void A_draining_backend_gets_no_new_flow_however_few_it_has()
    {
        Privileged.Require();
        var (plane, run) = fx.PrivatePlane(null, OneVip(LeastConn(firstDraining: true)));
        using var _ = plane;
        var to = Enumerable.Range(0, 6).Select(_ => BackendOf(run(Tcp(NextPort(), Packet.Syn)))).ToList();
        Assert.Equal([2, 2, 2, 2, 2, 2], to);
        Assert.Equal(new Dictionary<int, long> { [1] = 0, [2] = 6 }, Counts(plane));
    }

    [Fact]
    public void Flows_of_other_algorithms_are_not_counted()
    {
        Privileged.Require();
        var (plane, run) = fx.PrivatePlane(null, OneVip(ToBackends("t/maglev/p", 80, 1, 2)));
        using var _ = plane;
        var port = NextPort();
        run(Tcp(port, Packet.Syn));
        run(Tcp(port, Packet.Ack));
        Assert.True(plane.TryFindFlow(Key(port), out var flow));
        Assert.Equal(0, flow.Flags);
        Assert.Equal(0, Counts(plane).Values.Sum());
        Assert.Equal(0, plane.RecountConnections());
    }
}
