using System.Buffers.Binary;
using System.Net;
using Xlb.Agent;
using Xlb.Agent.Bpf;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.DataPlane;
using Xlb.Tests.Support;
using static Xlb.Tests.Bpf.DataPlaneFixture;

namespace Xlb.Tests.Bpf;

/// <summary>Sampled new and closed flow events through the xlb_events ring buffer, read as the agent reads them.</summary>
public sealed class FlowEventTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private (XdpDataPlane Plane, Func<Packet, TestRunResult> Run) OwnPlane(uint sample)
    {
        var (plane, run) = fx.PrivatePlane(new DataPlaneOptions { FlowEventSample = sample }, OneVip(ToBackends("t/one/p", 80, 1)));
        return (plane, p => run(p.Build()));
    }

    private static Packet Tcp(ushort port, byte flags = Packet.Syn) =>
        new() { Src = Client, Dst = VipAddress, SrcPort = port, DstPort = 80, TcpFlags = flags };

    private static List<XlbFlowEvent> Drain(XdpDataPlane plane)
    {
        var events = new List<XlbFlowEvent>();
        using var ring = plane.OpenFlowEvents(events.Add);
        while (ring.Poll(TimeSpan.Zero) > 0)
        {
        }
        return events;
    }

    [Fact]
    public void A_sampled_flow_reports_its_start_and_its_close_by_either_side()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane(sample: 1);
        using var owned = plane;

        var forward = Packet.Parse(run(Tcp(43000)).Packet);
        run(Tcp(43000, Packet.Ack));
        run(Tcp(43000, Packet.Fin | Packet.Ack));
        run(Tcp(43000, Packet.Rst)); // already closing: no second event
        var second = Packet.Parse(run(Tcp(43001)).Packet);
        run(new Packet { Src = second.Dst, Dst = VipAddress, SrcPort = 8080, DstPort = second.SrcPort, TcpFlags = Packet.Rst | Packet.Ack });

        var events = Drain(plane);
        Assert.Equal([(XlbAbi.EventNew, 43000), (XlbAbi.EventClosed, 43000), (XlbAbi.EventNew, 43001), (XlbAbi.EventClosed, 43001)],
            events.Select(e => (e.Type, Net.FromBe(e.Flow.SportBe))));
        var opened = events[0];
        Assert.Equal((Addr16.From(Client), Addr16.From(VipAddress), 80), (opened.Flow.Saddr, opened.Flow.Daddr, Net.FromBe(opened.Flow.DportBe)));
        Assert.Equal((IPAddress.Parse(LbTopology.BackendAddress(1)), 8080), (opened.Backend.ToAddress(XlbAbi.FamilyV4), Net.FromBe(opened.BackendPortBe)));
        Assert.Equal((forward.SrcPort, XlbAbi.ModeFullNat), (Net.FromBe(opened.NatPortBe), opened.Mode));
        Assert.Contains(plane.Services.Entries().Values, s => s.Id == opened.SvcId);
        Assert.Equal((0, Packet.Fin | Packet.Ack), (events[1].ByBackend, events[1].TcpFlags));
        Assert.Equal((1, Packet.Rst | Packet.Ack), (events[3].ByBackend, events[3].TcpFlags));
        Assert.True(events[1].TimeNs >= opened.TimeNs);
        Assert.Equal((4UL, 0UL), plane.FlowEventCounts());
    }

    [Fact]
    public void A_flow_found_idle_past_its_timeout_reports_its_close_once_and_the_new_flow_its_start()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane(sample: 1);
        using var owned = plane;
        run(Tcp(43100));
        run(Tcp(43100, Packet.Ack));
        var key = new XlbFlowKey
        {
            Saddr = Addr16.From(Client), Daddr = Addr16.From(VipAddress), SportBe = Net.Be(43100), DportBe = Net.Be(80),
            Proto = XlbAbi.ProtoTcp, Family = XlbAbi.FamilyV4,
        };
        Assert.True(plane.Flows.TryLookup(key, out var flow));
        // Last seen at boot: past every timeout. Its next packet finds it idle and starts afresh.
        plane.Flows.Update(key, flow with { LastSeenNs = 0 });
        run(Tcp(43100, Packet.Ack));
        // A flow a FIN closed is not reported again when a new SYN takes its tuple.
        run(Tcp(43101));
        run(Tcp(43101, Packet.Fin | Packet.Ack));
        run(Tcp(43101));

        var events = Drain(plane);
        Assert.Equal(
            [(XlbAbi.EventNew, 43100, Packet.Syn), (XlbAbi.EventClosed, 43100, 0), (XlbAbi.EventNew, 43100, Packet.Ack),
             (XlbAbi.EventNew, 43101, Packet.Syn), (XlbAbi.EventClosed, 43101, Packet.Fin | Packet.Ack), (XlbAbi.EventNew, 43101, Packet.Syn)],
            events.Select(e => (e.Type, (int)Net.FromBe(e.Flow.SportBe), (int)e.TcpFlags)));
        // The idle close names the backend the flow had.
        Assert.Equal(events[0].Backend, events[1].Backend);
    }

    [Fact]
    public void Sampling_picks_flows_by_hash_and_zero_sends_none()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane(sample: 4);
        using var owned = plane;
        var ports = Enumerable.Range(44000, 200).Select(p => (ushort)p).ToList();
        foreach (var port in ports)
        {
            run(Tcp(port));
            run(Tcp(port, Packet.Fin | Packet.Ack));
        }
        var expected = ports.Where(p => FlowHash(Client, VipAddress, p, 80, 6) % 4 == 0).ToList();
        Assert.InRange(expected.Count, 20, 80); // the hash spreads: about one in four
        var events = Drain(plane);
        Assert.Equal(expected.SelectMany(p => new[] { (XlbAbi.EventNew, (int)p), (XlbAbi.EventClosed, (int)p) }), events.Select(e => (e.Type, Net.FromBe(e.Flow.SportBe))));

        var (quiet, runQuiet) = OwnPlane(sample: 0);
        using var ownedQuiet = quiet;
        runQuiet(Tcp(45000));
        runQuiet(Tcp(45000, Packet.Fin | Packet.Ack));
        Assert.Empty(Drain(quiet));
        Assert.Equal((0UL, 0UL), quiet.FlowEventCounts());
    }

    /// <summary>flow_hash of xlb.c: the flow key's words as the program reads them (little-endian loads of network-order bytes).</summary>
    private static uint FlowHash(IPAddress client, IPAddress vip, ushort sport, ushort dport, byte proto)
    {
        static uint Mix(uint h, uint v)
        {
            h ^= v;
            h *= 0x9e3779b1u;
            return h ^ (h >> 16);
        }
        _ = vip; // the hash covers the client's side and the ports, not the VIP
        Span<byte> s = stackalloc byte[16];
        client.TryWriteBytes(s, out _);
        var h = 0x5bd1e995u;
        for (var i = 0; i < 4; i++)
        {
            h = Mix(h, BinaryPrimitives.ReadUInt32LittleEndian(s[(i * 4)..]));
        }
        var sp = (uint)Net.Be(sport);
        var dp = (uint)Net.Be(dport);
        h = Mix(h, (sp << 16) | dp);
        return Mix(h, proto);
    }
}
