using System.Buffers.Binary;
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
/// New flows wait in tables of their own until their second packet, so a flood of SYNs or of
/// one-off datagrams cannot push established connections off their backends.
/// </summary>
public sealed class FloodTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private const int FullNatPort = 80, DnatPort = 81, UdpPort = 53;

    /// <summary>A private data plane with a FullNAT and a DNAT TCP listener and a DNAT UDP listener toward both backends.</summary>
    private (XdpDataPlane Plane, Func<byte[], TestRunResult> Run) OwnPlane() => fx.PrivatePlane(null, OneVip(
        ToBackends("t/full/p", FullNatPort, 1, 2),
        ToBackends("t/dnat/p", DnatPort, 1, 2) with { NatMode = NatMode.DNAT },
        ToBackends("t/dns/p", UdpPort, 1, 2) with { Protocol = L4Protocol.UDP, NatMode = NatMode.DNAT }));

    private static Packet From(IPAddress client, ushort port, int vipPort, byte flags = Packet.Syn, byte proto = 6) =>
        new() { Src = client, Dst = VipAddress, SrcPort = port, DstPort = (ushort)vipPort, TcpFlags = flags, Protocol = proto };

    private static XlbFlowKey Key(Packet p) => new()
    {
        Saddr = Addr16.From(p.Src), Daddr = Addr16.From(p.Dst), SportBe = Net.Be(p.SrcPort), DportBe = Net.Be(p.DstPort),
        Proto = p.Protocol, Family = XlbAbi.FamilyV4,
    };

    [Fact]
    public void A_new_flow_is_admitted_by_its_second_packet_with_its_reverse_translation()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane();
        using var owned = plane;
        var syn = From(Client, 41000, FullNatPort);
        var forward = Packet.Parse(run(syn.Build()).Packet);
        Assert.True(plane.NewFlows.TryLookup(Key(syn), out var fresh));
        Assert.False(plane.Flows.TryLookup(Key(syn), out _));
        var reverse = new XlbFlowKey
        {
            Saddr = fresh.Backend, Daddr = Addr16.From(VipAddress), SportBe = fresh.BackendPortBe, DportBe = fresh.NatPortBe,
            Proto = XlbAbi.ProtoTcp, Family = XlbAbi.FamilyV4,
        };
        Assert.True(plane.NewReverseNat.TryLookup(reverse, out _));

        // The backend's SYN-ACK is translated from the new flow's table.
        var synAck = new Packet { Src = forward.Dst, Dst = VipAddress, SrcPort = 8080, DstPort = forward.SrcPort, TcpFlags = Packet.Syn | Packet.Ack };
        var back = Packet.Parse(run(synAck.Build()).Packet);
        Assert.Equal((VipAddress, (ushort)FullNatPort, Client, (ushort)41000), (back.Src, back.SrcPort, back.Dst, back.DstPort));

        // A retransmitted SYN does not admit the flow; the client's ACK does.
        run(syn.Build());
        Assert.False(plane.Flows.TryLookup(Key(syn), out _));
        Assert.Equal(XdpRedirect, (int)run((syn with { TcpFlags = Packet.Ack }).Build()).Verdict);
        Assert.True(plane.Flows.TryLookup(Key(syn), out var admitted));
        Assert.False(plane.NewFlows.TryLookup(Key(syn), out _));
        Assert.Equal((fresh.Backend, fresh.NatPortBe, XlbAbi.FlowEstablished), (admitted.Backend, admitted.NatPortBe, admitted.State));
        Assert.True(plane.ReverseNat.TryLookup(reverse, out _));
        Assert.False(plane.NewReverseNat.TryLookup(reverse, out _));

        // UDP: the second datagram admits.
        var query = From(Client, 41001, UdpPort, proto: 17);
        run(query.Build());
        Assert.True(plane.NewFlows.TryLookup(Key(query), out _));
        run(query.Build());
        Assert.True(plane.Flows.TryLookup(Key(query), out _));
        Assert.False(plane.NewFlows.TryLookup(Key(query), out _));
    }

    /// <summary>
    /// Established FullNAT, DNAT and UDP flows, then twice as many new flows (SYNs and one-off
    /// datagrams from spoofed sources) as the flow table holds: every established flow keeps its
    /// entry, its backend and its NAT port, and its replies are still translated. With one table
    /// for all flows the kernel's LRU spares entries that were looked up since their insert, but
    /// not a reverse translation that no reply has used yet: the FullNAT replies fail.
    /// </summary>
    [Fact]
    public void A_flood_of_new_flows_does_not_evict_established_ones()
    {
        Privileged.Require();
        var (plane, run) = OwnPlane();
        using var owned = plane;

        var established = new List<(Packet Next, XlbFlow Flow)>();
        for (ushort i = 0; i < 60; i++)
        {
            var vipPort = (i % 3) switch { 0 => FullNatPort, 1 => DnatPort, _ => UdpPort };
            var first = From(Client, (ushort)(42000 + i), vipPort, proto: (byte)(vipPort == UdpPort ? 17 : 6));
            var next = first with { TcpFlags = Packet.Ack };
            run(first.Build());
            run(next.Build());
            Assert.True(plane.Flows.TryLookup(Key(first), out var flow));
            established.Add((next, flow));
        }

        var syn = From(IPAddress.Parse("10.77.0.0"), 1, DnatPort).Build();
        var datagram = From(IPAddress.Parse("10.78.0.0"), 1, UdpPort, proto: 17).Build();
        var flood = 2 * XlbAbi.MaxFlows;
        var statsBefore = plane.Stats();
        Netns.Run(fx.Topology.Lb, () =>
        {
            for (var n = 0; n < flood; n++)
            {
                // A different spoofed source for every packet: bytes 28..29 of the source address and the source port.
                var p = n % 4 == 0 ? datagram : syn;
                BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(28), (ushort)(n >> 8));
                BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(34), (ushort)(1024 + (n & 0xff)));
                TestRun.Xdp(plane.ProgramFd, p);
            }
            return 0;
        });
        var stats = plane.Stats();
        Assert.Equal((ulong)flood, stats[XlbStat.FwdNewFlow] - statsBefore[XlbStat.FwdNewFlow]);

        var kept = established.Count(e => plane.Flows.TryLookup(Key(e.Next), out var now) && now.Backend.Equals(e.Flow.Backend) && now.NatPortBe == e.Flow.NatPortBe);
        Assert.Equal(established.Count, kept);
        var newFlows = stats[XlbStat.FwdNewFlow];
        foreach (var (next, flow) in established)
        {
            var result = run(next.Build());
            Assert.Equal(XdpRedirect, (int)result.Verdict);
            var forward = Packet.Parse(result.Packet);
            Assert.Equal(flow.Backend.ToAddress(XlbAbi.FamilyV4), forward.Dst);
            if (next.DstPort == FullNatPort)
            {
                // The backend's reply still finds its translation.
                var reply = new Packet { Src = forward.Dst, Dst = VipAddress, SrcPort = 8080, DstPort = forward.SrcPort, TcpFlags = Packet.Ack };
                var back = Packet.Parse(run(reply.Build()).Packet);
                Assert.Equal((Client, next.SrcPort), (back.Dst, back.DstPort));
            }
        }
        Assert.Equal(newFlows, plane.Stats()[XlbStat.FwdNewFlow]);
    }

    /// <summary>
    /// A SYN flood against a FullNAT service holds every NAT port toward its backend (64 here),
    /// and new connections are refused while it does. Two seconds after the spoofed handshakes
    /// went quiet, real clients get ports again, long before tcpNew (120 s) would have freed them;
    /// the established connection keeps its port and its replies throughout.
    /// </summary>
    [Fact]
    public void A_syn_flood_holds_the_nat_ports_for_two_seconds_not_for_tcp_new()
    {
        Privileged.Require();
        const ushort First = 45000, Last = 45063;
        var (plane, run) = fx.PrivatePlane(new DataPlaneOptions { NatPortMin = First, NatPortMax = Last }, OneVip(ToBackends("t/full/p", FullNatPort, 1)));
        using var owned = plane;
        var established = From(Client, 43000, FullNatPort);
        var heldPort = Packet.Parse(run(established.Build()).Packet).SrcPort;
        run((established with { TcpFlags = Packet.Ack }).Build());
        Assert.True(plane.Flows.TryLookup(Key(established), out _));

        var syn = From(IPAddress.Parse("10.77.0.0"), 1, FullNatPort).Build();
        var verdicts = Netns.Run(fx.Topology.Lb, () => Enumerable.Range(0, 256).Select(n =>
        {
            BinaryPrimitives.WriteUInt16BigEndian(syn.AsSpan(28), (ushort)n);
            return TestRun.Xdp(plane.ProgramFd, syn).Verdict;
        }).ToList());
        Assert.Equal(Last - First, verdicts.Count(v => v == XdpRedirect));
        Assert.Equal(Last - First, plane.NewReverseNat.Entries().Count);
        var busy = plane.Stats()[XlbStat.DropNatPortsBusy];
        Assert.Equal((ulong)(256 - (Last - First)), busy);
        Assert.Equal(XdpDrop, (int)run(From(Client, 43001, FullNatPort).Build()).Verdict);
        // What the node config's Degraded condition says of it (NatPortsLow).
        var (held, range) = plane.NatPorts();
        Assert.Equal(new NatPortUse(Last - First + 1, 0, Last - First), Assert.Single(held).Value);
        Assert.Contains($"64 of 64 ports held, 0 of them by ended connections, {Last - First} by handshakes not completed", Assert.Single(NatPressure.Of(held, range)));

        // Two seconds and more later (the flows' clock set back rather than waited for).
        foreach (var (key, flow) in plane.NewFlows.Entries())
        {
            plane.NewFlows.Update(key, flow with { LastSeenNs = XdpDataPlane.MonotonicNs() - 2_500_000_000 });
        }
        plane.FlowTableChanged();
        var ports = new HashSet<ushort>();
        for (ushort c = 0; c < 32; c++)
        {
            var result = run(From(Client, (ushort)(43100 + c), FullNatPort).Build());
            Assert.Equal(XdpRedirect, (int)result.Verdict);
            Assert.True(ports.Add(Packet.Parse(result.Packet).SrcPort));
        }
        Assert.DoesNotContain(heldPort, ports);
        Assert.Equal(busy + 1, plane.Stats()[XlbStat.DropNatPortsBusy]);

        // The established connection: its port, and its replies.
        var forward = Packet.Parse(run((established with { TcpFlags = Packet.Ack }).Build()).Packet);
        Assert.Equal(heldPort, forward.SrcPort);
        var reply = new Packet { Src = forward.Dst, Dst = VipAddress, SrcPort = 8080, DstPort = heldPort, TcpFlags = Packet.Ack };
        var back = Packet.Parse(run(reply.Build()).Packet);
        Assert.Equal((Client, (ushort)43000), (back.Dst, back.DstPort));
    }

    /// <summary>
    /// Past the new-flow cap a CPU forwards new flows of DSR services by the consistent hash alone:
    /// to the very backend a plane without a cap chooses, with no flow-table entry. NAT and round
    /// robin flows are still tracked, and established flows carry on.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Past_the_new_flow_cap_dsr_flows_are_forwarded_by_the_hash_without_state(bool v6)
    {
        Privileged.Require();
        const int Cap = 2, DsrPort = 83, RoundRobinDsrPort = 84;
        var (vip, client) = v6 ? (VipAddress6, Client6) : (VipAddress, Client);
        Listener Listening(string name, int port) => new()
        {
            Name = name, Vip = vip.ToString(), Port = port,
            Backends = [.. new[] { 1, 2 }.Select(i => new NodeBackend { Address = v6 ? LbTopology.BackendAddress6(i) : LbTopology.BackendAddress(i), Port = 8080 })],
        };
        var spec = OneVip(
            Listening("t/full/p", FullNatPort),
            Listening("t/dsr/p", DsrPort) with { NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.IPIP },
            Listening("t/rr/p", RoundRobinDsrPort) with { NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.IPIP, Algorithm = SchedulingAlgorithm.RoundRobin });
        spec = spec with { Vips = [new NodeVip { Address = vip.ToString(), Role = VipRole.Active, Shard = "s" }] };
        var (plane, _) = fx.PrivatePlane(new DataPlaneOptions { NewFlowCap = Cap }, spec);
        using var owned = plane;
        var (reference, _) = fx.PrivatePlane(new DataPlaneOptions { NewFlowCap = 0 }, spec);
        using var ownedReference = reference;
        Packet To(ushort port, int vipPort, byte flags = Packet.Syn) => From(client, port, vipPort, flags) with { Dst = vip };
        XlbFlowKey KeyOf(Packet p) => Key(p) with { Family = v6 ? XlbAbi.FamilyV6 : XlbAbi.FamilyV4 };

        var dsr = Enumerable.Range(0, 24).Select(i => To((ushort)(42000 + i), DsrPort)).ToList();
        var (outputs, expected, others) = Netns.Run(fx.Topology.Lb, () =>
        {
            // The cap is counted per CPU: stay on one.
            OneCpu.Pin();
            var got = dsr.Select(p => TestRun.Xdp(plane.ProgramFd, p.Build())).ToList();
            var want = dsr.Select(p => TestRun.Xdp(reference.ProgramFd, p.Build())).ToList();
            // Over the cap still: a FullNAT SYN, a round-robin DSR SYN, and an untracked flow's ACK.
            var more = new[] { To(42100, FullNatPort), To(42101, RoundRobinDsrPort), dsr[^1] with { TcpFlags = Packet.Ack } }
                .Select(p => TestRun.Xdp(plane.ProgramFd, p.Build())).ToList();
            return (got, want, more);
        });

        // The first Cap flows are tracked, the rest are not, and each goes where the hash sends it.
        Assert.All(dsr.Take(Cap), p => Assert.True(plane.NewFlows.TryLookup(KeyOf(p), out _)));
        Assert.All(dsr.Skip(Cap), p => Assert.False(plane.NewFlows.TryLookup(KeyOf(p), out _) || plane.Flows.TryLookup(KeyOf(p), out _)));
        for (var i = 0; i < dsr.Count; i++)
        {
            Assert.Equal(expected[i].Verdict, outputs[i].Verdict);
            Assert.Equal(expected[i].Packet, outputs[i].Packet);
        }
        // The outer header's destination: the backend.
        Assert.Equal(2, outputs.Select(o => new IPAddress(v6 ? o.Packet.AsSpan(14 + 24, 16) : o.Packet.AsSpan(14 + 16, 4))).Distinct().Count());
        var stats = plane.Stats();
        Assert.Equal((ulong)(dsr.Count - Cap + 1), stats[XlbStat.FwdUntracked]);
        Assert.Equal(0UL, reference.Stats()[XlbStat.FwdUntracked]);

        Assert.All(others, o => Assert.Equal(XdpRedirect, (int)o.Verdict));
        Assert.True(plane.NewFlows.TryLookup(KeyOf(To(42100, FullNatPort)), out _));
        Assert.True(plane.NewFlows.TryLookup(KeyOf(To(42101, RoundRobinDsrPort)), out _));
        Assert.False(plane.NewFlows.TryLookup(KeyOf(dsr[^1]), out _));
        Assert.Equal((ulong)(Cap + 2), stats[XlbStat.FwdNewFlow]);
    }
}
