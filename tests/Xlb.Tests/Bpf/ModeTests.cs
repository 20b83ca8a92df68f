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

/// <summary>
/// NAT modes, scheduling algorithms, flow states and per-service counters, packet by packet through
/// BPF_PROG_TEST_RUN with maps written by the agent's apply path.
/// </summary>
public class ModeTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private static int s_port = 30000;

    private static ushort NextClientPort() => (ushort)Interlocked.Increment(ref s_port);

    private ulong Stat(XlbStat s) => fx.Plane.Stats()[s];

    [Theory]
    [InlineData(4)]
    [InlineData(6)]
    public void Dnat_keeps_the_client_address_and_translates_the_backends_reply_back_to_the_vip(int family)
    {
        Privileged.Require();
        var (client, vip) = family == 4 ? (Client, VipAddress) : (Client6, VipAddress6);
        var port = NextClientPort();
        var result = fx.Run((ClientTcp(port, DnatPort) with { Src = client, Dst = vip }).Build());
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        Assert.True(Packet.ChecksumsValid(result.Packet));
        var forward = Packet.Parse(result.Packet);
        Assert.Equal((client, port), (forward.Src, forward.SrcPort));
        Assert.InRange(LbTopology.BackendIndexOf(forward.Dst), 1, 2);
        Assert.Equal((8080, 63), (forward.DstPort, (int)forward.Ttl));

        // The backend answers the client itself; its reply is routed through the LB.
        var reply = new Packet { Src = forward.Dst, Dst = client, SrcPort = 8080, DstPort = port, TcpFlags = Packet.Syn | Packet.Ack, Payload = [9] };
        var back = fx.Run(reply.Build());
        Assert.Equal(XdpRedirect, (int)back.Verdict);
        Assert.True(Packet.ChecksumsValid(back.Packet));
        var translated = Packet.Parse(back.Packet);
        Assert.Equal((vip, (ushort)DnatPort, client, port), (translated.Src, translated.SrcPort, translated.Dst, translated.DstPort));
        Assert.Equal(MacBytes(LbTopology.Mac(fx.Topology.Client, "eth0")), translated.DstMac);

        // Other traffic of that backend is not ours.
        var own = (reply with { SrcPort = 22 }).Build();
        var passed = fx.Run(own);
        Assert.Equal(XdpPass, (int)passed.Verdict);
        Assert.Equal(own, passed.Packet);
    }

    [Fact]
    public void Dsr_l2_sends_the_packet_unchanged_to_the_backends_mac()
    {
        Privileged.Require();
        var input = (ClientTcp(NextClientPort(), DsrL2Port) with { Payload = [1, 2, 3] }).Build();
        var result = fx.Run(input);
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        // Not a byte of the IP packet changes: the backend holds the VIP and answers from it.
        Assert.Equal(input[14..], result.Packet[14..]);
        var backend = Enumerable.Range(1, 2).Single(i => MacBytes(LbTopology.Mac(fx.Topology.Backends[i - 1], "eth0")).SequenceEqual(result.Packet[..6]));
        Assert.Equal(MacBytes(LbTopology.Mac(fx.Topology.Lb, LbTopology.BackendIfOnLb(backend))), result.Packet[6..12]);
    }

    [Fact]
    public void Dsr_l2_refuses_a_backend_behind_a_gateway()
    {
        Privileged.Require();
        var before = Stat(XlbStat.DropDsrNotOnlink);
        Assert.Equal(XdpDrop, (int)fx.Run(ClientTcp(NextClientPort(), DsrOffLinkPort).Build()).Verdict);
        Assert.Equal(before + 1, Stat(XlbStat.DropDsrNotOnlink));
    }

    [Fact]
    public void Dsr_l2_to_a_backend_without_a_neighbour_entry_drops_rather_than_hand_the_kernel_a_vip_packet()
    {
        Privileged.Require();
        var before = Stat(XlbStat.DropDsrUnresolved);
        var result = fx.Run(ClientTcp(NextClientPort(), DsrUnresolvedPort).Build());
        Assert.Equal(XdpDrop, (int)result.Verdict);
        Assert.Equal(before + 1, Stat(XlbStat.DropDsrUnresolved));
    }

    [Fact]
    public void Dsr_ipip_wraps_the_packet_in_an_outer_header_to_the_backend()
    {
        Privileged.Require();
        var input = (ClientTcp(NextClientPort(), DsrIpipPort) with { Payload = [4, 5, 6, 7] }).Build();
        var result = fx.Run(input);
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        var p = result.Packet;
        Assert.Equal(input.Length + 20, p.Length);
        Assert.Equal((byte)0x45, p[14]);
        Assert.Equal((byte)4, p[14 + 9]); // IPPROTO_IPIP
        Assert.Equal(input.Length - 14 + 20, BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(16)));
        Assert.Equal(0, Packet.Checksum(p.AsSpan(14, 20)));
        Assert.Equal(VipAddress, new IPAddress(p.AsSpan(14 + 12, 4))); // no encapsulation source configured
        var backend = LbTopology.BackendIndexOf(new IPAddress(p.AsSpan(14 + 16, 4)));
        Assert.InRange(backend, 1, 2);
        Assert.Equal(input[14..], p[34..]);
        Assert.Equal(MacBytes(LbTopology.Mac(fx.Topology.Backends[backend - 1], "eth0")), p[..6]);
    }

    [Fact]
    public void Round_robin_takes_the_backends_in_turn()
    {
        Privileged.Require();
        var fd = fx.Plane.ProgramFd;
        var backends = Netns.Run(fx.Topology.Lb, () =>
        {
            // The cursor is per CPU: stay on one for the sequence.
            OneCpu.Pin();
            return Enumerable.Range(0, 6)
                .Select(_ => LbTopology.BackendIndexOf(Packet.Parse(TestRun.Xdp(fd, ClientTcp(NextClientPort(), RoundRobinPort).Build()).Packet).Dst))
                .ToList();
        });
        Assert.All(Enumerable.Range(1, 5), i => Assert.NotEqual(backends[i - 1], backends[i]));
    }

    [Fact]
    public void Source_hash_sends_every_connection_of_a_client_to_one_backend()
    {
        Privileged.Require();
        int BackendFor(IPAddress client) =>
            LbTopology.BackendIndexOf(Packet.Parse(fx.Run((ClientTcp(NextClientPort(), SourceHashPort) with { Src = client }).Build()).Packet).Dst);
        var clients = Enumerable.Range(2, 40).Select(i => IPAddress.Parse($"10.200.0.{i}")).ToList();
        foreach (var c in clients.Take(4))
        {
            Assert.Single(Enumerable.Range(0, 8).Select(_ => BackendFor(c)).Distinct());
        }
        Assert.Equal([1, 2], clients.Select(BackendFor).Distinct().Order());
    }

    [Fact]
    public void Tcp_state_follows_the_connection_and_a_syn_after_close_starts_a_new_flow()
    {
        Privileged.Require();
        var port = NextClientPort();
        var key = ClientFlowKey(port, 80);
        fx.Run(ClientTcp(port, 80).Build());
        Assert.True(fx.Plane.TryFindFlow(key, out var flow));
        Assert.Equal(XlbAbi.FlowNew, flow.State);
        fx.Run(ClientTcp(port, 80, Packet.Ack).Build());
        fx.Plane.TryFindFlow(key, out flow);
        Assert.Equal(XlbAbi.FlowEstablished, flow.State);
        // A retransmitted SYN of a live connection keeps it.
        var expired = Stat(XlbStat.FwdExpiredFlow);
        fx.Run(ClientTcp(port, 80).Build());
        Assert.Equal(expired, Stat(XlbStat.FwdExpiredFlow));
        fx.Run(ClientTcp(port, 80, Packet.Fin | Packet.Ack).Build());
        fx.Plane.TryFindFlow(key, out flow);
        Assert.Equal(XlbAbi.FlowClosing, flow.State);

        // The client reuses the port: the SYN is a new connection.
        fx.Run(ClientTcp(port, 80).Build());
        Assert.Equal(expired + 1, Stat(XlbStat.FwdExpiredFlow));
        fx.Plane.TryFindFlow(key, out var renewed);
        Assert.Equal(XlbAbi.FlowNew, renewed.State);
        Assert.True(fx.Plane.TryFindReverseNat(ReverseKey(renewed), out var r));
        Assert.Equal(Net.Be(port), r.ClientPortBe);
    }

    [Fact]
    public void A_backends_rst_closes_the_flow_so_the_clients_next_syn_chooses_again()
    {
        Privileged.Require();
        var port = NextClientPort();
        var key = ClientFlowKey(port, 80);
        var first = Packet.Parse(fx.Run(ClientTcp(port, 80).Build()).Packet);
        var rst = new Packet { Src = first.Dst, Dst = VipAddress, SrcPort = 8080, DstPort = first.SrcPort, TcpFlags = Packet.Rst | Packet.Ack };
        Assert.Equal(XdpRedirect, (int)fx.Run(rst.Build()).Verdict);
        Assert.True(fx.Plane.TryFindFlow(key, out var flow));
        Assert.Equal(XlbAbi.FlowClosing, flow.State);
        var expired = Stat(XlbStat.FwdExpiredFlow);
        fx.Run(ClientTcp(port, 80).Build());
        Assert.Equal(expired + 1, Stat(XlbStat.FwdExpiredFlow));
    }

    /// <summary>
    /// A private data plane (its own maps) with 5 s timeouts (or the closing one given) and one FullNAT listener on VIP:80
    /// toward backend 1, run in the fixture's LB namespace. A flow's last-seen time set to 0 (boot)
    /// is then certainly past every timeout.
    /// </summary>
    private (XdpDataPlane Plane, Func<Packet, TestRunResult> Run) OwnPlane(ushort natMin = 40000, ushort natMax = 59999, TimeSpan? closing = null)
    {
        var five = TimeSpan.FromSeconds(5);
        var (plane, run) = fx.PrivatePlane(new DataPlaneOptions
        {
            NatPortMin = natMin,
            NatPortMax = natMax,
            Timeouts = new FlowTimeouts { TcpNew = five, TcpEstablished = five, TcpClosing = closing ?? five, Udp = five },
        }, OneVip(ToBackends("t/one/p", 80, 1)));
        return (plane, p => run(p.Build()));
    }

    [Fact]
    public void An_idle_flow_past_its_timeout_is_chosen_for_afresh()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane();
        using var _ = plane;
        var port = NextClientPort();
        var key = ClientFlowKey(port, 80);
        run(ClientTcp(port, 80));
        run(ClientTcp(port, 80, Packet.Ack));
        Assert.True(plane.TryFindFlow(key, out var flow));
        Assert.Equal(XlbAbi.FlowEstablished, flow.State);
        // Within the timeout the flow carries on.
        run(ClientTcp(port, 80, Packet.Ack));
        Assert.Equal(0UL, plane.Stats()[XlbStat.FwdExpiredFlow]);

        plane.Flows.Update(key, flow with { LastSeenNs = 0 });
        plane.FlowTableChanged();
        Assert.Equal(XdpRedirect, (int)run(ClientTcp(port, 80, Packet.Ack)).Verdict);
        Assert.Equal(1UL, plane.Stats()[XlbStat.FwdExpiredFlow]);
        plane.TryFindFlow(key, out var renewed);
        Assert.NotEqual(0UL, renewed.LastSeenNs);
        // A packet in mid-connection without a live flow (another node had it) starts out established.
        Assert.Equal(XlbAbi.FlowEstablished, renewed.State);
    }

    /// <summary>
    /// A flow stamped after this CPU's clock (each CPU reads the coarse clock once a jiffy, and
    /// the agent stamps the flows flow sync writes with its own clock) is live, not "idle for
    /// 2^64 ns"; and its NAT port is not quiet either.
    /// </summary>
    [Fact]
    public void A_flow_stamped_ahead_of_the_programs_clock_is_live()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane(45000, 45000);
        using var owned = plane;
        var port = NextClientPort();
        var key = ClientFlowKey(port, 80);
        run(ClientTcp(port, 80));
        run(ClientTcp(port, 80, Packet.Ack));
        Assert.True(plane.TryFindFlow(key, out var flow));
        plane.Flows.Update(key, flow with { LastSeenNs = XdpDataPlane.MonotonicNs() + 1_000_000_000 });
        plane.FlowTableChanged();
        Assert.Equal(XdpRedirect, (int)run(ClientTcp(port, 80, Packet.Ack)).Verdict);
        Assert.Equal(0UL, plane.Stats()[XlbStat.FwdExpiredFlow]);

        // Reset, and stamped ahead: its port is not given away.
        run(ClientTcp(port, 80, Packet.Rst));
        Assert.True(plane.TryFindFlow(key, out var reset));
        plane.Flows.Update(key, reset with { LastSeenNs = XdpDataPlane.MonotonicNs() + 1_000_000_000 });
        plane.FlowTableChanged();
        Assert.Equal(XdpDrop, (int)run(ClientTcp(NextClientPort(), 80)).Verdict);
        Assert.Equal(1UL, plane.Stats()[XlbStat.DropNatPortsBusy]);
    }

    [Fact]
    public void A_flows_last_seen_time_is_the_monotonic_clock_at_tick_resolution_and_moves_on()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane();
        using var _ = plane;
        var port = NextClientPort();
        var key = ClientFlowKey(port, 80);
        // The program reads the coarse clock once per jiffy per CPU; a tick is at most 10 ms (HZ ≥ 100).
        const ulong twoTicks = 20_000_000;
        var before = XdpDataPlane.MonotonicNs();
        run(ClientTcp(port, 80));
        var after = XdpDataPlane.MonotonicNs();
        Assert.True(plane.TryFindFlow(key, out var first));
        Assert.InRange(first.LastSeenNs, before - twoTicks, after);

        Thread.Sleep(60);
        before = XdpDataPlane.MonotonicNs();
        run(ClientTcp(port, 80, Packet.Ack));
        after = XdpDataPlane.MonotonicNs();
        Assert.True(plane.TryFindFlow(key, out var second));
        Assert.InRange(second.LastSeenNs, before - twoTicks, after);
        Assert.True(second.LastSeenNs - first.LastSeenNs >= 40_000_000, $"the flow's time moved {second.LastSeenNs - first.LastSeenNs} ns in 60 ms");
    }

    [Fact]
    public void A_nat_port_held_by_a_dead_flow_is_given_to_a_new_one()
    {
        Privileged.Require();
        // One FullNAT port toward one backend: a second flow needs the first one's port.
        var (plane, run) = OwnPlane(45000, 45000);
        using var _ = plane;

        var a = NextClientPort();
        var first = run(ClientTcp(a, 80));
        Assert.Equal(XdpRedirect, (int)first.Verdict);
        Assert.Equal(45000, Packet.Parse(first.Packet).SrcPort);
        var b = NextClientPort();
        Assert.Equal(XdpDrop, (int)run(ClientTcp(b, 80)).Verdict);
        Assert.Equal(1UL, plane.Stats()[XlbStat.DropNatPortsBusy]);

        // The first connection closes and its closing timeout passes.
        run(ClientTcp(a, 80, Packet.Fin | Packet.Ack));
        Assert.True(plane.TryFindFlow(ClientFlowKey(a, 80), out var closing));
        Assert.Equal(XlbAbi.FlowClosing, closing.State);
        plane.Flows.Update(ClientFlowKey(a, 80), closing with { LastSeenNs = 0 });
        plane.FlowTableChanged();

        var second = run(ClientTcp(b, 80));
        Assert.Equal(XdpRedirect, (int)second.Verdict);
        Assert.Equal(45000, Packet.Parse(second.Packet).SrcPort);
        Assert.True(plane.TryFindFlow(ClientFlowKey(b, 80), out var fb));
        Assert.True(plane.TryFindReverseNat(ReverseKey(fb), out var r));
        Assert.Equal(Net.Be(b), r.ClientPortBe);
    }

    /// <summary>How a connection ends, packet by packet: the client's FIN, the backend's, or a RST.</summary>
    public enum Close { BackendFirst, ClientFirst, ClientReset, BackendReset }

    /// <summary>
    /// One FullNAT port toward one backend, held by a connection that ends as <paramref name="close"/>.
    /// While the connection is half closed the port stays its own, however quiet. Once it has ended
    /// at both ends, another connection takes the port after 2 quiet seconds, unless the backend
    /// closed first (it holds the tuple in TIME_WAIT, which may refuse another connection's SYN):
    /// then after 65 s. The closing timeout here is 120 s, so none of this is the flow expiring.
    /// </summary>
    [Theory]
    [InlineData(Close.BackendFirst)]
    [InlineData(Close.ClientFirst)]
    [InlineData(Close.ClientReset)]
    [InlineData(Close.BackendReset)]
    public void A_nat_port_of_a_connection_that_ended_goes_to_the_next_one_once_the_backend_keeps_nothing_of_it(Close close)
    {
        Privileged.Require();
        var (plane, run) = OwnPlane(45000, 45000, closing: TimeSpan.FromSeconds(120));
        using var owned = plane;
        var a = NextClientPort();
        var oldKey = ClientFlowKey(a, 80);
        Assert.Equal(45000, Packet.Parse(run(ClientTcp(a, 80)).Packet).SrcPort);
        run(ClientTcp(a, 80, Packet.Ack));
        Packet FromBackend(byte flags) => new() { Src = IPAddress.Parse(LbTopology.BackendAddress(1)), Dst = VipAddress, SrcPort = 8080, DstPort = 45000, TcpFlags = flags };
        void Quiet(double seconds)
        {
            Assert.True(plane.TryFindFlow(oldKey, out var f));
            plane.Flows.Update(oldKey, f with { LastSeenNs = XdpDataPlane.MonotonicNs() - (ulong)(seconds * 1e9) });
            plane.FlowTableChanged();
        }
        var b = NextClientPort();
        var busy = 0UL;
        void Refused(string when)
        {
            Assert.True(XdpDrop == (int)run(ClientTcp(b, 80)).Verdict, $"{close}: the port was given {when}");
            Assert.Equal(++busy, plane.Stats()[XlbStat.DropNatPortsBusy]);
        }

        switch (close)
        {
            case Close.BackendFirst:
                run(FromBackend(Packet.Fin | Packet.Ack));
                Quiet(100);
                Refused("while the client could still send");
                run(ClientTcp(a, 80, Packet.Fin | Packet.Ack));
                break;
            case Close.ClientFirst:
                run(ClientTcp(a, 80, Packet.Fin | Packet.Ack));
                Quiet(100);
                Refused("while the backend could still send");
                run(FromBackend(Packet.Fin | Packet.Ack));
                run(ClientTcp(a, 80, Packet.Ack));
                break;
            case Close.ClientReset:
                run(ClientTcp(a, 80, Packet.Rst));
                break;
            case Close.BackendReset:
                run(FromBackend(Packet.Rst | Packet.Ack));
                break;
        }
        Assert.True(plane.TryFindFlow(oldKey, out var ended));
        Assert.Equal(XlbAbi.FlowClosing, ended.State);
        var timeWait = close == Close.BackendFirst;
        Assert.Equal(timeWait, (ended.Flags & XlbAbi.FlowTimeWait) != 0);
        Refused("at once");
        Quiet(3);
        if (timeWait)
        {
            Refused("while the backend holds TIME_WAIT");
            Quiet(70);
        }
        var taken = run(ClientTcp(b, 80));
        Assert.Equal(XdpRedirect, (int)taken.Verdict);
        Assert.Equal(45000, Packet.Parse(taken.Packet).SrcPort);
        // The ended connection no longer owns the port; replies on it reach the new connection.
        Assert.False(plane.TryFindFlow(oldKey, out _));
        Assert.True(plane.TryFindFlow(ClientFlowKey(b, 80), out var fb));
        Assert.True(plane.TryFindReverseNat(ReverseKey(fb), out var r));
        Assert.Equal(Net.Be(b), r.ClientPortBe);
        Assert.Equal(busy, plane.Stats()[XlbStat.DropNatPortsBusy]);
    }

    /// <summary>
    /// One FullNAT port toward one backend, for TCP and for UDP, held by a new flow. A TCP handshake
    /// that never completed (SYNs only) gives its port to the next connection once it has been quiet
    /// 2 s, not at tcpNew (120 s here): a SYN flood would otherwise hold every port for that long.
    /// A SYN sent again keeps it; a completed handshake and a UDP flow keep theirs however quiet.
    /// </summary>
    [Fact]
    public void A_nat_port_of_a_handshake_that_never_completed_goes_to_the_next_one_after_two_quiet_seconds()
    {
        Privileged.Require();
        const int UdpPort = 53;
        var longer = TimeSpan.FromSeconds(120);
        var (plane, runBytes) = fx.PrivatePlane(new DataPlaneOptions
        {
            NatPortMin = 45000, NatPortMax = 45000,
            Timeouts = new FlowTimeouts { TcpNew = longer, TcpEstablished = longer, TcpClosing = longer, Udp = longer },
        }, OneVip(ToBackends("t/one/p", 80, 1), ToBackends("t/dns/p", UdpPort, 1) with { Protocol = L4Protocol.UDP }));
        using var owned = plane;
        TestRunResult Run(Packet p) => runBytes(p.Build());
        void Quiet(XlbFlowKey key, double seconds)
        {
            var table = plane.NewFlows.TryLookup(key, out var f) ? plane.NewFlows : plane.Flows;
            Assert.True(table.TryLookup(key, out f));
            table.Update(key, f with { LastSeenNs = XdpDataPlane.MonotonicNs() - (ulong)(seconds * 1e9) });
            plane.FlowTableChanged();
        }
        var busy = 0UL;
        void Refused(Packet p, string why)
        {
            Assert.True(XdpDrop == (int)Run(p).Verdict, why);
            Assert.Equal(++busy, plane.Stats()[XlbStat.DropNatPortsBusy]);
        }
        ushort Taken(Packet p)
        {
            var result = Run(p);
            Assert.Equal(XdpRedirect, (int)result.Verdict);
            return Packet.Parse(result.Packet).SrcPort;
        }

        var a = NextClientPort();
        Assert.Equal(45000, Taken(ClientTcp(a, 80)));
        var b = NextClientPort();
        Refused(ClientTcp(b, 80), "the port was given while the handshake was under way");
        Quiet(ClientFlowKey(a, 80), 1);
        Refused(ClientTcp(b, 80), "the port was given after a quiet second");
        // The client sends its SYN again: the same port, and quiet no longer.
        Quiet(ClientFlowKey(a, 80), 3);
        Assert.Equal(45000, Taken(ClientTcp(a, 80)));
        Refused(ClientTcp(b, 80), "the port was given right after the client's SYN came again");

        Quiet(ClientFlowKey(a, 80), 3);
        Assert.Equal(45000, Taken(ClientTcp(b, 80)));
        Assert.False(plane.TryFindFlow(ClientFlowKey(a, 80), out _));
        Assert.True(plane.TryFindFlow(ClientFlowKey(b, 80), out var fb));
        Assert.True(plane.TryFindReverseNat(ReverseKey(fb), out var r));
        Assert.Equal(Net.Be(b), r.ClientPortBe);
        Assert.Equal(busy, plane.Stats()[XlbStat.DropNatPortsBusy]);

        // Its handshake completes: established, the port stays its own, however quiet.
        Assert.Equal(45000, Taken(ClientTcp(b, 80, Packet.Ack)));
        Quiet(ClientFlowKey(b, 80), 60);
        Refused(ClientTcp(NextClientPort(), 80), "an established connection's port was given");

        // A UDP flow of one datagram is not a handshake: its port stays until the UDP timeout.
        var u = NextClientPort();
        var datagram = ClientTcp(u, UdpPort) with { Protocol = 17 };
        Assert.Equal(45000, Taken(datagram));
        var udpKey = ClientFlowKey(u, UdpPort) with { Proto = XlbAbi.ProtoUdp };
        Quiet(udpKey, 60);
        Refused(datagram with { SrcPort = NextClientPort() }, "a UDP flow's port was given");
    }

    /// <summary>
    /// A mapping's own idle timeout (spec.idleTimeout, xlb_svc_opts) holds for its established TCP
    /// flows and its UDP flows, in the program and in the agent's sweep and counts; a handshake
    /// still waits tcpNew, and another mapping keeps the node's timeouts (120 s here).
    /// </summary>
    [Fact]
    public void A_mappings_own_idle_timeout_ends_its_idle_flows_and_leaves_the_others_to_the_nodes()
    {
        Privileged.Require();
        const int Short = 81, ShortUdp = 53, Plain = 82;
        var longer = TimeSpan.FromSeconds(120);
        var two = new Duration(TimeSpan.FromSeconds(2));
        var (plane, runBytes) = fx.PrivatePlane(new DataPlaneOptions
        {
            Timeouts = new FlowTimeouts { TcpNew = longer, TcpEstablished = longer, TcpClosing = longer, Udp = longer },
        }, OneVip(ToBackends("t/short/p", Short, 1) with { IdleTimeout = two }, ToBackends("t/dns/p", ShortUdp, 1) with { Protocol = L4Protocol.UDP, IdleTimeout = two },
            ToBackends("t/plain/p", Plain, 1)));
        using var owned = plane;
        TestRunResult Run(Packet p) => runBytes(p.Build());
        XlbFlowKey Udp(ushort port) => ClientFlowKey(port, ShortUdp) with { Proto = XlbAbi.ProtoUdp };
        void Quiet(XlbFlowKey key, double seconds)
        {
            var table = plane.NewFlows.TryLookup(key, out var f) ? plane.NewFlows : plane.Flows;
            Assert.True(table.TryLookup(key, out f));
            table.Update(key, f with { LastSeenNs = XdpDataPlane.MonotonicNs() - (ulong)(seconds * 1e9) });
            plane.FlowTableChanged();
        }

        // An established connection and a UDP flow of the short mappings, one of the plain one, and a handshake.
        var (a, u, p, h) = (NextClientPort(), NextClientPort(), NextClientPort(), NextClientPort());
        Run(ClientTcp(a, Short));
        Run(ClientTcp(a, Short, Packet.Ack));
        Run(ClientTcp(u, ShortUdp) with { Protocol = 17 });
        Run(ClientTcp(p, Plain));
        Run(ClientTcp(p, Plain, Packet.Ack));
        Run(ClientTcp(h, Short));
        foreach (var key in new[] { ClientFlowKey(a, Short), Udp(u), ClientFlowKey(p, Plain), ClientFlowKey(h, Short) })
        {
            Quiet(key, 3);
        }
        // The agent counts as the program judges: the short mappings' two idle flows are not live.
        var live = plane.Census().ByService.Where(s => s.Value > 0).Select(s => Net.FromBe(s.Key.PortBe)).Order().ToList();
        Assert.Equal([Short, Plain], live);

        var expired = plane.Stats()[XlbStat.FwdExpiredFlow];
        Assert.Equal(XdpRedirect, (int)Run(ClientTcp(a, Short, Packet.Ack)).Verdict);
        Run(ClientTcp(u, ShortUdp) with { Protocol = 17 });
        Assert.Equal(expired + 2, plane.Stats()[XlbStat.FwdExpiredFlow]);
        Run(ClientTcp(p, Plain, Packet.Ack));
        Run(ClientTcp(h, Short));
        Assert.Equal(expired + 2, plane.Stats()[XlbStat.FwdExpiredFlow]);

        // The sweep takes a flow past its mapping's timeout and the grace (2 s), and no other.
        Quiet(ClientFlowKey(a, Short), 5);
        Quiet(ClientFlowKey(p, Plain), 5);
        var (swept, _) = plane.SweepIdleFlows();
        Assert.Equal(1, swept);
        Assert.False(plane.TryFindFlow(ClientFlowKey(a, Short), out _));
        Assert.True(plane.TryFindFlow(ClientFlowKey(p, Plain), out _));
    }

    [Fact]
    public void Service_counters_count_packets_bytes_new_flows_and_replies()
    {
        Privileged.Require();
        XlbSvcStats Counters() => fx.Plane.ServiceStats().Single(s => s.Key.PortBe == Net.Be(DnatPort) && s.Key.Family == XlbAbi.FamilyV4).Value;
        var before = Counters();
        var port = NextClientPort();
        var syn = ClientTcp(port, DnatPort).Build();
        var forward = Packet.Parse(fx.Run(syn).Packet);
        fx.Run(ClientTcp(port, DnatPort, Packet.Ack).Build());
        fx.Run(new Packet { Src = forward.Dst, Dst = Client, SrcPort = 8080, DstPort = port, TcpFlags = Packet.Ack }.Build());
        var after = Counters();
        Assert.Equal(2UL, after.Packets - before.Packets);
        Assert.Equal(1UL, after.NewFlows - before.NewFlows);
        Assert.Equal(1UL, after.ReplyPackets - before.ReplyPackets);
        Assert.Equal((ulong)(2 * syn.Length), after.Bytes - before.Bytes);
    }

    [Fact]
    public void Backend_counters_count_each_backend_and_a_backend_new_to_an_index_starts_from_zero()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane();
        using var owned = plane;
        XlbSvcStats Of(int backend) => plane.BackendStats().SingleOrDefault(b => b.Key.Addr.ToAddress(b.Key.Family).ToString() == LbTopology.BackendAddress(backend)).Value;

        var port = NextClientPort();
        var syn = ClientTcp(port, 80);
        var forward = Packet.Parse(run(syn).Packet);
        run(ClientTcp(port, 80, Packet.Ack));
        run(new Packet { Src = forward.Dst, Dst = VipAddress, SrcPort = 8080, DstPort = forward.SrcPort, TcpFlags = Packet.Ack });
        var one = Of(1);
        Assert.Equal((2UL, 1UL, 1UL), (one.Packets, one.NewFlows, one.ReplyPackets));
        Assert.Equal((ulong)(2 * syn.Build().Length), one.Bytes);

        // Backend 2 joins: backend 1 keeps its index and its counts, and the established flow
        // still counts to it after the flip; backend 2, new to its index, starts from zero.
        var spec = OneVip(ToBackends("t/one/p", 80, 1, 2));
        plane.Apply(spec);
        Assert.Equal(one, Of(1));
        Assert.Equal(default, Of(2));
        run(ClientTcp(port, 80, Packet.Ack));
        Assert.Equal(3UL, Of(1).Packets);

        // Backend 1 leaves and comes back a revision later: its counts start again from zero.
        plane.Apply(spec with { Listeners = [ToBackends("t/one/p", 80, 2)] });
        Assert.DoesNotContain(plane.BackendStats().Keys, b => b.Addr.ToAddress(b.Family).ToString() == LbTopology.BackendAddress(1));
        plane.Apply(spec);
        Assert.Equal(default, Of(1));
    }

    private static XlbFlowKey ReverseKey(XlbFlow f) => new()
    {
        Saddr = f.Backend,
        Daddr = Addr16.From(VipAddress),
        SportBe = f.BackendPortBe,
        DportBe = f.NatPortBe,
        Proto = XlbAbi.ProtoTcp,
        Family = XlbAbi.FamilyV4,
    };
}
