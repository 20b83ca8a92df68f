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
        var (plane, run) = fx.PrivatePlane(new DataPlaneOptions { FlowEventSample = sample, Timeouts = SinceBootIsIdle }, OneVip(ToBackends("t/one/p", 80, 1)));
        return (plane, p => run(p.Build()));
    }

    private static Packet Tcp(ushort port, byte flags = Packet.Syn) => ClientTcp(port, flags: flags);

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
    public void A_mapping_with_a_connection_log_of_its_own_is_logged_by_its_sample_and_the_others_by_the_nodes()
    {
        Privileged.Require();
        var logged = ToBackends("t/logged/p", 80, 1) with { ConnectionLog = new ConnectionLogSpec { Enabled = true, SampleEvery = 1 } };
        var quiet = ToBackends("t/quiet/p", 81, 1);
        // The node logs nothing of its own (no --flow-log: sample 0).
        var (plane, run) = fx.PrivatePlane(new DataPlaneOptions { FlowEventSample = 0, Timeouts = SinceBootIsIdle }, OneVip(logged, quiet));
        using var owned = plane;
        foreach (var port in new ushort[] { 80, 81 })
        {
            for (var i = 0; i < 8; i++)
            {
                run((Tcp((ushort)(43200 + i)) with { DstPort = port }).Build());
            }
        }
        var events = Drain(plane);
        Assert.Equal(8, events.Count);
        Assert.All(events, e => Assert.Equal(80, Net.FromBe(e.Flow.DportBe)));

        // Logged no more once the mapping turns it off; and an idle flow's close, swept by the
        // agent, follows the same sample.
        plane.Apply(OneVip(logged with { ConnectionLog = null }, quiet));
        run(Tcp(43300).Build());
        Assert.Empty(Drain(plane));
        plane.Apply(OneVip(logged, quiet));
        var key = ClientFlowKey(43301);
        run(Tcp(43301).Build());
        Assert.True(plane.TryFindFlow(key, out var flow));
        plane.NewFlows.Update(key, flow with { LastSeenNs = 1 });
        var (swept, closed) = plane.SweepIdleFlows();
        Assert.True(swept >= 1);
        Assert.Contains(closed, e => Net.FromBe(e.Flow.SportBe) == 43301);
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
        plane.FlowTableChanged();
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

    /// <summary>Makes a flow last seen at boot: past every timeout and the sweep's grace.</summary>
    private static void IdleSinceBoot(BpfMap<XlbFlowKey, XlbFlow> table, ushort port)
    {
        Assert.True(table.TryLookup(ClientFlowKey(port), out var flow), $"flow {port}");
        table.Update(ClientFlowKey(port), flow with { LastSeenNs = 0 });
    }

    [Fact]
    public void Flows_idle_without_another_packet_are_swept_with_their_close_and_live_ones_stay()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane(sample: 1);
        using var owned = plane;
        run(Tcp(43200));
        run(Tcp(43200, Packet.Ack));                 // admitted, then idle
        run(Tcp(43201));                             // a SYN alone (still new), then idle
        run(Tcp(43202));
        run(Tcp(43202, Packet.Fin | Packet.Ack));    // closed by a FIN, then idle
        run(Tcp(43203));
        run(Tcp(43203, Packet.Ack));                 // admitted and live
        IdleSinceBoot(plane.Flows, 43200);
        IdleSinceBoot(plane.NewFlows, 43201);
        IdleSinceBoot(plane.Flows, 43202);
        var started = Drain(plane);

        var (count, swept) = plane.SweepIdleFlows();

        // The three idle ones are gone; the close of the two a FIN did not close is logged, as the program would have.
        Assert.Equal(3, count);
        Assert.Equal([(XlbAbi.EventClosed, 43200, 0), (XlbAbi.EventClosed, 43201, 0)],
            swept.Select(e => (e.Type, (int)Net.FromBe(e.Flow.SportBe), (int)e.TcpFlags)).OrderBy(e => e.Item2));
        Assert.False(plane.Flows.TryLookup(ClientFlowKey(43200), out _));
        Assert.False(plane.NewFlows.TryLookup(ClientFlowKey(43201), out _));
        Assert.False(plane.Flows.TryLookup(ClientFlowKey(43202), out _));
        Assert.True(plane.Flows.TryLookup(ClientFlowKey(43203), out _));
        var close = swept.Single(e => Net.FromBe(e.Flow.SportBe) == 43200);
        var open = started.Single(e => e.Type == XlbAbi.EventNew && Net.FromBe(e.Flow.SportBe) == 43200);
        Assert.Equal((open.Backend, open.BackendPortBe, open.NatPortBe, open.SvcId, open.Mode), (close.Backend, close.BackendPortBe, close.NatPortBe, close.SvcId, close.Mode));
        // Nothing left to sweep, and the live flow still forwards.
        Assert.Equal(0, plane.SweepIdleFlows().Swept);
        Assert.NotEqual(XdpPass, (int)run(Tcp(43203, Packet.Ack)).Verdict);
        Assert.True(plane.Flows.TryLookup(ClientFlowKey(43203), out _));
    }

    [Fact]
    public void The_connection_log_writes_a_swept_flows_close_as_idle()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane(sample: 1);
        using var owned = plane;
        run(Tcp(43300));
        run(Tcp(43300, Packet.Ack));
        IdleSinceBoot(plane.Flows, 43300);
        var output = new StringWriter();
        using var log = new FlowLog(plane, output, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        log.PollOnce(TimeSpan.Zero); // the new flow's line
        Assert.Equal(1, log.SweepOnce());
        var line = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1];
        using var json = System.Text.Json.JsonDocument.Parse(line);
        Assert.Equal(("closed", "idle", $"{Client}:43300"), (json.RootElement.GetProperty("event").GetString(), json.RootElement.GetProperty("reason").GetString(), json.RootElement.GetProperty("client").GetString()));
        Assert.Equal((1L, 1L), log.Counts);
        Assert.Equal(1, log.Swept);
    }

    [Fact]
    public async Task The_connection_logs_own_thread_sweeps_at_its_interval()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane(sample: 1);
        using var owned = plane;
        var output = new StringWriter();
        using var log = new FlowLog(plane, TextWriter.Synchronized(output), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance) { SweepInterval = TimeSpan.FromMilliseconds(200) };
        using var stop = new CancellationTokenSource();
        var running = log.RunAsync(stop.Token);
        run(Tcp(43400));
        run(Tcp(43400, Packet.Ack));
        await Eventually.TrueAsync(() => log.Counts.New == 1, "the new flow logged", 10);
        IdleSinceBoot(plane.Flows, 43400);
        await Eventually.TrueAsync(() => log.Swept == 1 && log.Counts.Closed == 1, "the idle flow swept and its close logged", 10);
        await stop.CancelAsync();
        await running;
        Assert.False(plane.Flows.TryLookup(ClientFlowKey(43400), out _));
    }

    [Fact]
    public void The_sweep_samples_closes_by_the_programs_own_hash()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane(sample: 4);
        using var owned = plane;
        var ports = Enumerable.Range(46000, 120).Select(p => (ushort)p).ToList();
        foreach (var port in ports)
        {
            run(Tcp(port));
            run(Tcp(port, Packet.Ack));
            IdleSinceBoot(plane.Flows, port);
        }
        Assert.All(ports, p => Assert.Equal(FlowHash(Client, VipAddress, p, 80, 6), Xlb.Agent.Core.IdleFlows.FlowHash(ClientFlowKey(p))));
        var (count, swept) = plane.SweepIdleFlows();
        Assert.Equal(ports.Count, count);
        Assert.Equal(ports.Where(p => FlowHash(Client, VipAddress, p, 80, 6) % 4 == 0).Select(p => (int)p), swept.Select(e => (int)Net.FromBe(e.Flow.SportBe)).Order());
        Assert.DoesNotContain(plane.Flows.Entries().Keys, k => ports.Contains((ushort)Net.FromBe(k.SportBe)));
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
