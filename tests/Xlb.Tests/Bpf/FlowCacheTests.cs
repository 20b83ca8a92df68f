using System.Net;
using Xlb.Agent;
using Xlb.Agent.Bpf;
using Xlb.Agent.Core;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.DataPlane;
using Xlb.Tests.Support;
using static Xlb.Tests.Bpf.DataPlaneFixture;

namespace Xlb.Tests.Bpf;

/// <summary>
/// The per-CPU flow cache (xdp/xlb.c): an established flow's packets are served from a copy of its
/// flow taken at most one jiffy ago. Every sequence runs on one CPU (the cache is per CPU), through
/// BPF_PROG_TEST_RUN in the LB namespace.
/// </summary>
public class FlowCacheTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private const int RoundCount = 20;

    private static byte[] Tcp(ushort clientPort, byte flags) => ClientTcp(clientPort, flags: flags).Build();

    private static XlbFlowKey Key(ushort clientPort) => ClientFlowKey(clientPort);

    private XdpDataPlane Plane(bool flowCache = true)
    {
        var (plane, _) = fx.PrivatePlane(new DataPlaneOptions { FlowCache = flowCache }, OneVip(ToBackends("t/one/p", 80, 1)));
        return plane;
    }

    /// <summary>A connection whose flow is admitted and, by a third packet, copied into this CPU's flow cache.</summary>
    private static void Establish(int fd, ushort port)
    {
        TestRun.Xdp(fd, Tcp(port, Packet.Syn));
        TestRun.Xdp(fd, Tcp(port, Packet.Ack));
        Assert.Equal(XdpRedirect, (int)TestRun.Xdp(fd, Tcp(port, Packet.Ack)).Verdict);
    }

    /// <summary>
    /// Rounds of a sequence on one CPU, each with an established connection of its own client port
    /// (its flow in this CPU's cache); what went wrong in each, if anything.
    /// </summary>
    private List<string> Rounds(int fd, ushort firstPort, Func<ushort, string?> round) => Netns.Run(fx.Topology.Lb, () =>
    {
        OneCpu.Pin();
        var wrong = new List<string>();
        for (var i = 0; i < RoundCount; i++)
        {
            var port = (ushort)(firstPort + i);
            Establish(fd, port);
            if (round(port) is { } what)
            {
                wrong.Add($"round {i}: {what}");
            }
        }
        return wrong;
    });

    [Theory]
    [InlineData("cleared")]
    [InlineData("ended")]
    public void What_the_agent_takes_out_of_the_flow_table_is_gone_for_the_next_packet(string how)
    {
        Privileged.Require();
        using var plane = Plane();
        var fd = plane.ProgramFd;
        var drained = new DrainedBackend("t/one/p", VipAddress, 80, L4Protocol.TCP, IPAddress.Parse(LbTopology.BackendAddress(1)), 8080);
        var stale = Rounds(fd, 47100, port =>
        {
            Assert.True(how == "cleared" ? plane.ClearFlows() > 0 : plane.EndFlows([drained]) > 0);
            // The flow is gone: this packet begins a flow afresh (mid-connection, so established
            // at once), in the new flows' table, rather than riding the cached copy.
            TestRun.Xdp(fd, Tcp(port, Packet.Ack));
            return plane.NewFlows.TryLookup(Key(port), out _) ? null : "the packet rode the old flow";
        });
        Assert.True(stale.Count == 0, string.Join("\n", stale));
    }

    [Fact]
    public void A_connection_that_closes_and_opens_again_on_its_tuple_goes_where_its_new_flow_goes()
    {
        Privileged.Require();
        // Round robin: the tuple's new flow takes the next backend, not the old flow's.
        var (plane, _) = fx.PrivatePlane(null, OneVip(ToBackends("t/rr/p", 80, 1, 2) with { Algorithm = SchedulingAlgorithm.RoundRobin }));
        using var _p = plane;
        var fd = plane.ProgramFd;
        var wrong = Rounds(fd, 47400, port =>
        {
            TestRun.Xdp(fd, Tcp(port, Packet.Fin | Packet.Ack));
            // The client reuses its port at once: a new connection, a new flow, the other backend.
            var syn = Packet.Parse(TestRun.Xdp(fd, Tcp(port, Packet.Syn)).Packet);
            var ack = Packet.Parse(TestRun.Xdp(fd, Tcp(port, Packet.Ack)).Packet);
            return ack.Dst.Equals(syn.Dst) && ack.SrcPort == syn.SrcPort ? null
                : $"the SYN went to {syn.Dst}:{syn.DstPort} from port {syn.SrcPort}, the ACK to {ack.Dst}:{ack.DstPort} from port {ack.SrcPort}";
        });
        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
    }

    [Fact]
    public void A_change_written_to_the_flow_table_directly_reaches_the_program_within_a_jiffy_and_at_once_without_the_cache()
    {
        Privileged.Require();
        using var cached = Plane();
        using var uncached = Plane(flowCache: false);
        int PacketsUntilSeen(XdpDataPlane plane, ushort port) => Netns.Run(fx.Topology.Lb, () =>
        {
            OneCpu.Pin();
            var fd = plane.ProgramFd;
            Establish(fd, port);
            Assert.True(plane.Flows.TryLookup(Key(port), out var flow));
            // Another backend port for the flow, written without FlowTableChanged.
            plane.Flows.Update(Key(port), flow with { BackendPortBe = Net.Be(9090) });
            var deadline = DateTime.UtcNow.AddSeconds(1);
            for (var n = 1; DateTime.UtcNow < deadline; n++)
            {
                if (Packet.Parse(TestRun.Xdp(fd, Tcp(port, Packet.Ack)).Packet).DstPort == 9090)
                {
                    return n;
                }
            }
            return -1;
        });

        Assert.Equal(1, PacketsUntilSeen(uncached, 47200));
        // With the cache, the packets of the jiffy the copy was taken in may ride it; the next jiffy reads the table.
        Assert.NotEqual(-1, PacketsUntilSeen(cached, 47201));
    }

    [Fact]
    public void The_flow_tables_last_seen_time_moves_on_while_the_cache_serves_the_packets()
    {
        Privileged.Require();
        using var plane = Plane();
        var fd = plane.ProgramFd;
        var (first, last) = Netns.Run(fx.Topology.Lb, () =>
        {
            OneCpu.Pin();
            Establish(fd, 47300);
            Assert.True(plane.Flows.TryLookup(Key(47300), out var before));
            var until = DateTime.UtcNow.AddMilliseconds(80);
            while (DateTime.UtcNow < until)
            {
                Assert.Equal(XdpRedirect, (int)TestRun.Xdp(fd, Tcp(47300, Packet.Ack)).Verdict);
            }
            Assert.True(plane.Flows.TryLookup(Key(47300), out var after));
            return (before.LastSeenNs, after.LastSeenNs);
        });
        // Within a jiffy of the last packet (a jiffy is at most 10 ms), not frozen at the copy's.
        Assert.True(last - first >= 60_000_000, $"the flow table's last-seen time moved {last - first} ns in 80 ms of packets");
    }
}
