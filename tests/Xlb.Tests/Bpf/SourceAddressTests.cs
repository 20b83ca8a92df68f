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
/// FullNAT from source addresses beyond the VIP (spec.nat.sourceAddresses): new flows spread over
/// the VIP and the listener's addresses, each with a port range of its own toward a backend, so a
/// backend takes as many more connections from the service as there are addresses; a flow keeps
/// the address it took, and the backend's replies to it are translated back to the VIP.
/// </summary>
public sealed class SourceAddressTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private const ushort First = 46000, Last = 46063;
    private const int Range = Last - First + 1;

    [Theory]
    [InlineData(4)]
    [InlineData(6)]
    public void New_flows_take_the_vip_or_a_source_address_each_with_its_own_ports_and_replies_come_back(int family)
    {
        Privileged.Require();
        var (client, vip) = family == 4 ? (Client, VipAddress) : (Client6, VipAddress6);
        IPAddress[] sources = family == 4
            ? [IPAddress.Parse("10.250.0.51"), IPAddress.Parse("10.250.0.52")]
            : [IPAddress.Parse("fd00:250::51"), IPAddress.Parse("fd00:250::52")];
        var backend = family == 4 ? LbTopology.BackendAddress(1) : LbTopology.BackendAddress6(1);
        var spec = new XlbNodeConfigSpec
        {
            NodeName = "lb-1",
            Vips = [new NodeVip { Address = vip.ToString(), Role = VipRole.Active, Shard = "s" }, .. sources.Select(s => new NodeVip { Address = s.ToString(), Role = VipRole.Active, Shard = "s" })],
            Listeners =
            [
                new Listener
                {
                    Name = "t/snat/p", Vip = vip.ToString(), Port = 80, SourceAddresses = [.. sources.Select(s => s.ToString())],
                    Backends = [new NodeBackend { Address = backend, Port = 8080 }],
                },
            ],
        };
        var (plane, run) = fx.PrivatePlane(new DataPlaneOptions { NatPortMin = First, NatPortMax = Last, FlowEventSample = 1 }, spec);
        using var owned = plane;

        // More new connections to one backend than one address has ports for.
        var taken = new List<(IPAddress Source, ushort Port, ushort ClientPort)>();
        var dropped = 0;
        Netns.Run(fx.Topology.Lb, () =>
        {
            for (ushort n = 1; n <= 3 * Range; n++)
            {
                var result = TestRun.Xdp(plane.ProgramFd, new Packet { Src = client, Dst = vip, SrcPort = n, DstPort = 80, TcpFlags = Packet.Syn }.Build());
                if (result.Verdict == XdpDrop)
                {
                    dropped++;
                    continue;
                }
                Assert.Equal(XdpRedirect, (int)result.Verdict);
                Assert.True(Packet.ChecksumsValid(result.Packet));
                var forward = Packet.Parse(result.Packet);
                taken.Add((forward.Src, forward.SrcPort, n));
            }
            return 0;
        });
        // Every (source, port) pair serves one connection; the VIP and both addresses serve some,
        // and together more than the VIP's range alone could.
        Assert.Equal(taken.Count, taken.Select(t => (t.Source, t.Port)).Distinct().Count());
        Assert.Equal([vip, .. sources], taken.Select(t => t.Source).Distinct().OrderBy(a => a.ToString()));
        Assert.All(taken, t => Assert.InRange(t.Port, First, Last));
        Assert.True(taken.Count > Range, $"{taken.Count} connections from {1 + sources.Length} addresses of {Range} ports");
        Assert.Equal((ulong)dropped, plane.Stats()[XlbStat.DropNatPortsBusy]);
        // Each new flow's event says which source it took (the connection log names the address).
        var events = new List<XlbFlowEvent>();
        using (var ring = plane.OpenFlowEvents(events.Add))
        {
            while (ring.Poll(TimeSpan.Zero) > 0)
            {
            }
        }
        Assert.Equal(taken.Select(t => ((int)t.ClientPort, Array.IndexOf([vip, .. sources], t.Source))),
            events.Where(e => e.Type == XlbAbi.EventNew).Select(e => (Net.FromBe(e.Flow.SportBe), (int)e.Snat)));
        var (held, range) = plane.NatPorts();
        Assert.Equal(Range, range);
        Assert.Equal([vip, .. sources], held.Keys.Select(k => k.Source.ToAddress(k.Family)).OrderBy(a => a.ToString()));
        Assert.All(held.Values, h => Assert.InRange(h.Held, 1, Range));

        // A flow through a source address: its next packet keeps address and port, and the
        // backend's reply to that address goes back to the client from the VIP.
        var (source, port, clientPort) = taken.First(t => t.Source.Equals(sources[1]));
        var ack = new Packet { Src = client, Dst = vip, SrcPort = clientPort, DstPort = 80, TcpFlags = Packet.Ack };
        var again = Packet.Parse(run(ack.Build()).Packet);
        Assert.Equal((source, port), (again.Src, again.SrcPort));
        var reply = run(new Packet { Src = again.Dst, Dst = source, SrcPort = 8080, DstPort = port, TcpFlags = Packet.Syn | Packet.Ack }.Build());
        Assert.Equal(XdpRedirect, (int)reply.Verdict);
        Assert.True(Packet.ChecksumsValid(reply.Packet));
        var back = Packet.Parse(reply.Packet);
        Assert.Equal((vip, (ushort)80, client, clientPort), (back.Src, back.SrcPort, back.Dst, back.DstPort));
        // The flow says which it took, and the reverse translation is under that address.
        var key = new XlbFlowKey
        {
            Saddr = Addr16.From(client), Daddr = Addr16.From(vip), SportBe = Net.Be(clientPort), DportBe = Net.Be(80),
            Proto = XlbAbi.ProtoTcp, Family = (byte)(family == 4 ? XlbAbi.FamilyV4 : XlbAbi.FamilyV6),
        };
        Assert.True(plane.Flows.TryLookup(key, out var flow));
        Assert.Equal(2, flow.Snat);
        Assert.True(plane.TryFindReverseNat(key with { Saddr = flow.Backend, Daddr = Addr16.From(source), SportBe = flow.BackendPortBe, DportBe = flow.NatPortBe }, out _));

        // A new revision (another backend) flips to the other generation, whose table holds the
        // same addresses in the same places: the flow keeps its address.
        var backend2 = family == 4 ? LbTopology.BackendAddress(2) : LbTopology.BackendAddress6(2);
        plane.Apply(spec with { Listeners = [spec.Listeners[0] with { Backends = [.. spec.Listeners[0].Backends, new NodeBackend { Address = backend2, Port = 8080 }] }] });
        Assert.Equal((source, port), (Packet.Parse(run(ack.Build()).Packet).Src, Packet.Parse(run(ack.Build()).Packet).SrcPort));
    }

    [Fact]
    public void A_listener_without_source_addresses_takes_the_vip_alone()
    {
        Privileged.Require();
        var (plane, run) = fx.PrivatePlane(new DataPlaneOptions { NatPortMin = First, NatPortMax = Last }, OneVip(ToBackends("t/full/p", 80, 1)));
        using var owned = plane;
        var sources = Enumerable.Range(1, 40).Select(n => Packet.Parse(run(ClientTcp((ushort)(47000 + n)).Build()).Packet).Src).Distinct();
        Assert.Equal([VipAddress], sources);
    }
}
