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
/// The LB namespace of a topology with three VLANs on backend 1's link (802.1Q 100 and 300,
/// 802.1ad 200), and a private data plane whose services reach backends on them.
/// The kernel here has no 802.1Q support (CONFIG_VLAN_8021Q is off), so each VLAN device is
/// stood in for by a veth of the LB namespace that carries the VLAN's address, route and
/// neighbour: the FIB answers with it exactly as with a VLAN device, and the data plane is told
/// (as the agent tells it of real ones) that it is that VLAN on top of backend 1's link.
/// </summary>
public sealed class VlanFixture : IDisposable
{
    public const string Q100 = "10.100.0.2", Ad200 = "10.102.0.2", Q300 = "10.103.0.2", Q100v6 = "fd00:100::2";
    /// <summary>A second host on backend 2's plain link, used by one test only (its next-hop cache slot is its own).</summary>
    public const string Plain = "10.201.2.50";
    public static readonly byte[] Q100Mac = [0x02, 0x10, 0, 0, 0x64, 0x02], Ad200Mac = [0x02, 0x10, 0, 0, 0xc8, 0x02];
    /// <summary>The VLAN devices' own MACs, unlike the device below them, so a test can tell which one answered.</summary>
    public static readonly byte[] V100Mac = [0x02, 0x10, 0, 0, 0x64, 0x01], V200Mac = [0x02, 0x10, 0, 0, 0xc8, 0x01], V300Mac = [0x02, 0x10, 0, 0, 0x12, 0x01];
    public const int FullNat = 80, Ad = 81, Plain2 = 82, IpipQ = 83, IpipPlain = 84, DsrQ = 85, Disabled = 86;

    private readonly Lazy<(LbTopology Topology, XdpDataPlane Plane, int Lower, List<LinkInfo> Links, IReadOnlyList<VlanLink> Vlans)> _state = new(Build);

    public LbTopology Topology => _state.Value.Topology;
    public XdpDataPlane Plane => _state.Value.Plane;
    /// <summary>The ifindex of the device the VLANs sit on (backend 1's link).</summary>
    public int Lower => _state.Value.Lower;
    /// <summary>The LB namespace's links, as the agent's netlink dump read them.</summary>
    public List<LinkInfo> Links => _state.Value.Links;
    /// <summary>What the data plane was told: the three stand-ins as VLANs on backend 1's link.</summary>
    public IReadOnlyList<VlanLink> Vlans => _state.Value.Vlans;

    private static Listener To(string name, int port, string backend) => new()
    {
        Name = name, Vip = Vip, Port = port, Backends = [new NodeBackend { Address = backend, Port = 8080 }],
    };

    public static XlbNodeConfigSpec Spec() => new()
    {
        NodeName = "lb-1",
        Vips = [new NodeVip { Address = Vip, Role = VipRole.Active, Shard = "s" }, new NodeVip { Address = Vip6, Role = VipRole.Active, Shard = "s" }],
        Listeners =
        [
            To("v/q/p", FullNat, Q100),
            To("v/ad/p", Ad, Ad200),
            To("v/plain/p", Plain2, LbTopology.BackendAddress(2)),
            To("v/ipip-q/p", IpipQ, Q100) with { NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.IPIP },
            To("v/ipip-plain/p", IpipPlain, LbTopology.BackendAddress(2)) with { NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.IPIP },
            To("v/dsr-q/p", DsrQ, Q100) with { NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.L2 },
            To("v/disabled/p", Disabled, Plain),
            new Listener { Name = "v6/q/p", Vip = Vip6, Port = FullNat, Backends = [new NodeBackend { Address = Q100v6, Port = 8080 }] },
        ],
    };

    private static string Mac(byte[] m) => string.Join(":", m.Select(b => b.ToString("x2")));

    private static (LbTopology, XdpDataPlane, int, List<LinkInfo>, IReadOnlyList<VlanLink>) Build()
    {
        var topology = LbTopology.Create(LbTopology.NewPrefix("v"), backends: 2);
        try
        {
            var lb = topology.Lb;
            var lower = LbTopology.BackendIfOnLb(1);
            (string Dev, ushort Proto, ushort Vid, byte[] Own, string Addr, string Peer, byte[] PeerMac)[] vlans =
            [
                ("xv100", XlbAbi.Vlan8021Q, 100, V100Mac, "10.100.0.1/24", Q100, Q100Mac),
                ("xv200", XlbAbi.Vlan8021Ad, 200, V200Mac, "10.102.0.1/24", Ad200, Ad200Mac),
                ("xv300", XlbAbi.Vlan8021Q, 300, V300Mac, "10.103.0.1/24", Q300, Q100Mac),
            ];
            foreach (var v in vlans)
            {
                Netns.Ip(lb, "link", "add", v.Dev, "address", Mac(v.Own), "type", "veth", "peer", "name", v.Dev + "p");
                Netns.Ip(lb, "addr", "add", v.Addr, "dev", v.Dev);
                Netns.Ip(lb, "link", "set", v.Dev + "p", "up");
                Netns.Ip(lb, "link", "set", v.Dev, "up");
                Netns.Ip(lb, "neigh", "replace", v.Peer, "lladdr", Mac(v.PeerMac), "dev", v.Dev, "nud", "permanent");
            }
            Netns.Ip(lb, "addr", "add", "fd00:100::1/64", "dev", "xv100", "nodad");
            Netns.Ip(lb, "neigh", "replace", Q100v6, "lladdr", Mac(Q100Mac), "dev", "xv100", "nud", "permanent");
            Netns.Ip(lb, "neigh", "replace", Plain, "lladdr", "02:10:00:00:02:32", "dev", LbTopology.BackendIfOnLb(2), "nud", "permanent");
            // A VLAN that does not forward: the FIB, asked from it, refuses.
            Netns.Exec(lb, "sysctl", "-q", "-w", "net.ipv4.conf.xv300.forwarding=0");

            var plane = DataPlaneFixture.Alive(XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath));
            plane.Apply(Spec());
            var (lowerIndex, links) = Netns.Run(lb, () =>
            {
                var dump = new LinkDump();
                Rtnetlink.DumpLinks(dump.Feed);
                return (Xdp.IfIndex(lower), dump.Links);
            });
            var byName = links.ToDictionary(l => l.Name);
            List<VlanLink> told = [.. vlans.Select(v => new VlanLink(byName[v.Dev].Ifindex, v.Dev, lowerIndex, v.Proto, v.Vid, byName[v.Dev].Mac))];
            plane.SetVlans(told);
            return (topology, plane, lowerIndex, links, told);
        }
        catch
        {
            topology.Dispose();
            throw;
        }
    }

    /// <summary>Runs the program once inside the LB namespace, as if the packet came in on <paramref name="ifindex"/> (0: loopback).</summary>
    public TestRunResult Run(byte[] packet, int ifindex = 0)
    {
        Privileged.Require();
        var fd = Plane.ProgramFd;
        return Netns.Run(Topology.Lb, () => TestRun.Xdp(fd, packet, 1, ifindex));
    }

    public void Dispose()
    {
        if (_state.IsValueCreated)
        {
            _state.Value.Plane.Dispose();
            _state.Value.Topology.Dispose();
        }
    }
}

/// <summary>One VLAN tag, packet by packet: parsed on the way in, and the tag each next hop's device wants on the way out.</summary>
public class VlanTests(VlanFixture fx) : IClassFixture<VlanFixture>
{
    private static int s_port = 41000;

    private static ushort NextPort() => (ushort)Interlocked.Increment(ref s_port);

    private static Packet Syn(int vipPort, IPAddress? src = null, IPAddress? dst = null) => new()
    {
        Src = src ?? Client, Dst = dst ?? VipAddress, SrcPort = NextPort(), DstPort = (ushort)vipPort, Payload = [1, 2, 3],
    };

    private ulong Stat(XlbStat s) => fx.Plane.Stats()[s];

    private static byte[] OwnMac(string ns, string ifname) => MacBytes(LbTopology.Mac(ns, ifname));

    [Fact]
    public void The_agents_link_dump_reads_each_devices_index_mac_kind_and_parent()
    {
        Privileged.Require();
        var byName = fx.Links.ToDictionary(l => l.Name);
        var xv100 = byName["xv100"];
        Assert.Equal("veth", xv100.Kind);
        Assert.Equal(VlanFixture.V100Mac, xv100.Mac);
        // A veth's parent is its peer: here in the same namespace, for backend 1's link in the backend's.
        Assert.Equal((byName["xv100p"].Ifindex, false), (xv100.Lower, xv100.LowerElsewhere));
        Assert.True(byName[LbTopology.BackendIfOnLb(1)].LowerElsewhere);
        Assert.Equal(fx.Lower, byName[LbTopology.BackendIfOnLb(1)].Ifindex);
        Assert.Null(byName["lo"].Kind);
        // No VLAN devices (the stand-ins are veths): nothing for the data plane from this dump.
        Assert.Empty(LinkDump.Vlans(fx.Links, out var dropped));
        Assert.Equal(0, dropped);
    }

    [Theory]
    [InlineData(4)]
    [InlineData(6)]
    public void An_untagged_packet_to_a_backend_on_a_vlan_leaves_tagged_by_the_device_below(int family)
    {
        Privileged.Require();
        var input = (family == 4 ? Syn(VlanFixture.FullNat) : Syn(VlanFixture.FullNat, Client6, VipAddress6)).Build();
        var result = fx.Run(input);

        // Out of backend 1's link (not the loopback it came in on), so a redirect.
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        Assert.Equal(input.Length + 4, result.Packet.Length);
        Assert.Equal((XlbAbi.Vlan8021Q, (ushort)100), Packet.TagOf(result.Packet));
        Assert.Equal(VlanFixture.Q100Mac, result.Packet[..6]);
        Assert.Equal(VlanFixture.V100Mac, result.Packet[6..12]);
        var inner = Packet.Untagged(result.Packet);
        Assert.True(Packet.ChecksumsValid(inner));
        var forward = Packet.Parse(inner);
        Assert.Equal(IPAddress.Parse(family == 4 ? VlanFixture.Q100 : VlanFixture.Q100v6), forward.Dst);
        Assert.Equal(family == 4 ? VipAddress : VipAddress6, forward.Src);
        Assert.Equal(8080, forward.DstPort);
    }

    [Fact]
    public void A_tagged_packet_keeps_rewrites_or_loses_its_tag_as_the_next_hop_wants()
    {
        Privileged.Require();
        // On VLAN 100, to a backend on VLAN 100: out of the device it came in on, tag as it was.
        var same = Packet.Tagged(Syn(VlanFixture.FullNat).Build(), XlbAbi.Vlan8021Q, 100);
        var r1 = fx.Run(same, fx.Lower);
        Assert.Equal(XdpTx, (int)r1.Verdict);
        Assert.Equal((XlbAbi.Vlan8021Q, (ushort)100), Packet.TagOf(r1.Packet));
        Assert.True(Packet.ChecksumsValid(Packet.Untagged(r1.Packet)));

        // To the 802.1ad VLAN 200 on the same device: the tag changes protocol and id.
        var other = Packet.Tagged(Syn(VlanFixture.Ad).Build(), XlbAbi.Vlan8021Q, 100);
        var r2 = fx.Run(other, fx.Lower);
        Assert.Equal(XdpTx, (int)r2.Verdict);
        Assert.Equal(other.Length, r2.Packet.Length);
        Assert.Equal((XlbAbi.Vlan8021Ad, (ushort)200), Packet.TagOf(r2.Packet));
        Assert.Equal(VlanFixture.Ad200Mac, r2.Packet[..6]);
        Assert.Equal(IPAddress.Parse(VlanFixture.Ad200), Packet.Parse(Packet.Untagged(r2.Packet)).Dst);

        // To a backend on a plain link: the tag goes, the EtherType stays.
        var plain = Packet.Tagged(Syn(VlanFixture.Plain2).Build(), XlbAbi.Vlan8021Q, 100);
        var r3 = fx.Run(plain, fx.Lower);
        Assert.Equal(XdpRedirect, (int)r3.Verdict);
        Assert.Equal(plain.Length - 4, r3.Packet.Length);
        Assert.Null(Packet.TagOf(r3.Packet));
        Assert.Equal(OwnMac(fx.Topology.Backends[1], "eth0"), r3.Packet[..6]);
        Assert.True(Packet.ChecksumsValid(r3.Packet));
        Assert.Equal((IPAddress.Parse(LbTopology.BackendAddress(2)), (ushort)8080), (Packet.Parse(r3.Packet).Dst, Packet.Parse(r3.Packet).DstPort));
    }

    [Fact]
    public void The_backends_tagged_reply_reaches_the_untagged_client_without_its_tag()
    {
        Privileged.Require();
        var syn = Syn(VlanFixture.FullNat);
        var forward = Packet.Parse(Packet.Untagged(fx.Run(syn.Build()).Packet));
        var reply = new Packet
        {
            Src = forward.Dst, Dst = forward.Src, SrcPort = forward.DstPort, DstPort = forward.SrcPort,
            TcpFlags = Packet.Syn | Packet.Ack, Payload = [7],
        }.Build();
        var back = fx.Run(Packet.Tagged(reply, XlbAbi.Vlan8021Q, 100), fx.Lower);
        Assert.Equal(XdpRedirect, (int)back.Verdict);
        Assert.Null(Packet.TagOf(back.Packet));
        Assert.True(Packet.ChecksumsValid(back.Packet));
        var translated = Packet.Parse(back.Packet);
        Assert.Equal((VipAddress, (ushort)VlanFixture.FullNat, Client, syn.SrcPort), (translated.Src, translated.SrcPort, translated.Dst, translated.DstPort));
        Assert.Equal(OwnMac(fx.Topology.Client, "eth0"), translated.DstMac);
    }

    [Fact]
    public void A_replys_next_hop_is_the_fibs_answer_for_the_device_and_tag_it_came_in_on()
    {
        Privileged.Require();
        var syn = Syn(VlanFixture.FullNat);
        var forward = Packet.Parse(Packet.Untagged(fx.Run(syn.Build()).Packet));
        var reply = new Packet { Src = forward.Dst, Dst = forward.Src, SrcPort = forward.DstPort, DstPort = forward.SrcPort, TcpFlags = Packet.Ack }.Build();
        // From VLAN 100, forwarded (and the next hop toward the client cached)...
        Assert.Equal(XdpRedirect, (int)fx.Run(Packet.Tagged(reply, XlbAbi.Vlan8021Q, 100), fx.Lower).Verdict);
        Assert.Equal(XdpRedirect, (int)fx.Run(Packet.Tagged(reply, XlbAbi.Vlan8021Q, 100), fx.Lower).Verdict);
        // ...but the same reply from VLAN 300, whose device does not forward, goes to the kernel,
        var failed = Stat(XlbStat.PassFibFailed);
        Assert.Equal(XdpPass, (int)fx.Run(Packet.Tagged(reply, XlbAbi.Vlan8021Q, 300), fx.Lower).Verdict);
        Assert.Equal(failed + 1, Stat(XlbStat.PassFibFailed));
        // and untagged, from the device below, it is forwarded again.
        var plain = fx.Run(reply, fx.Lower);
        Assert.Equal(XdpRedirect, (int)plain.Verdict);
        Assert.Equal(OwnMac(fx.Topology.Client, "eth0"), Packet.Parse(plain.Packet).DstMac);
    }

    [Fact]
    public void Dsr_keeps_the_ip_packet_whole_and_tags_only_the_frame()
    {
        Privileged.Require();
        // L2 DSR from a plain link to a backend on VLAN 100: the IP packet is not touched.
        var l2 = Syn(VlanFixture.DsrQ).Build();
        var r1 = fx.Run(l2);
        Assert.Equal(XdpRedirect, (int)r1.Verdict);
        Assert.Equal((XlbAbi.Vlan8021Q, (ushort)100), Packet.TagOf(r1.Packet));
        Assert.Equal(VlanFixture.Q100Mac, r1.Packet[..6]);
        Assert.Equal(l2[12..], r1.Packet[16..]);

        // IPIP from a plain link to VLAN 100: tag, outer header, the packet as it came.
        var ipip = Syn(VlanFixture.IpipQ).Build();
        var r2 = fx.Run(ipip);
        Assert.Equal(XdpRedirect, (int)r2.Verdict);
        Assert.Equal((XlbAbi.Vlan8021Q, (ushort)100), Packet.TagOf(r2.Packet));
        Assert.Equal(0x0800, BinaryPrimitives.ReadUInt16BigEndian(r2.Packet.AsSpan(16)));
        Assert.Equal(4, r2.Packet[18 + 9]); // outer protocol: IPIP
        Assert.Equal(IPAddress.Parse(VlanFixture.Q100), new IPAddress(r2.Packet.AsSpan(18 + 16, 4)));
        Assert.Equal(0, Packet.Checksum(r2.Packet.AsSpan(18, 20)));
        Assert.Equal(ipip[14..], r2.Packet[38..]);

        // IPIP from VLAN 100 to a plain link: the tag goes, the outer header takes its place.
        var tagged = Packet.Tagged(Syn(VlanFixture.IpipPlain).Build(), XlbAbi.Vlan8021Q, 100);
        var r3 = fx.Run(tagged, fx.Lower);
        Assert.Equal(XdpRedirect, (int)r3.Verdict);
        Assert.Null(Packet.TagOf(r3.Packet));
        Assert.Equal(0x0800, BinaryPrimitives.ReadUInt16BigEndian(r3.Packet.AsSpan(12)));
        Assert.Equal(IPAddress.Parse(LbTopology.BackendAddress(2)), new IPAddress(r3.Packet.AsSpan(14 + 16, 4)));
        Assert.Equal(0, Packet.Checksum(r3.Packet.AsSpan(14, 20)));
        Assert.Equal(tagged[18..], r3.Packet[34..]);
    }

    [Fact]
    public void A_tagged_packet_too_big_for_ipip_is_answered_on_its_vlan()
    {
        Privileged.Require();
        // 1,500 bytes of IP from VLAN 100, for IPIP to a backend on a 1,500-byte link: 20 too many.
        var big = Packet.Tagged((Syn(VlanFixture.IpipPlain) with { Payload = new byte[1460] }).Build(), XlbAbi.Vlan8021Q, 100);
        var r = fx.Run(big, fx.Lower);
        Assert.Equal(XdpRedirect, (int)r.Verdict);
        Assert.Equal((XlbAbi.Vlan8021Q, (ushort)100), Packet.TagOf(r.Packet));
        Assert.Equal(big[6..12], r.Packet[..6]);
        Assert.Equal(big[..6], r.Packet[6..12]);
        var icmp = Packet.Untagged(r.Packet).AsSpan(14 + 20);
        Assert.Equal(0, Packet.Checksum(Packet.Untagged(r.Packet).AsSpan(14, 20)));
        Assert.Equal((3, 4, 1480), (icmp[0], icmp[1], BinaryPrimitives.ReadUInt16BigEndian(icmp[6..])));
        Assert.Equal(0, Packet.Checksum(icmp));
        Assert.Equal(big.AsSpan(18, 512).ToArray(), icmp[8..].ToArray());
    }

    [Fact]
    public void The_fib_is_asked_from_the_vlan_device_the_packet_came_in_on()
    {
        Privileged.Require();
        // VLAN 300's device does not forward: a new flow arriving on it is left to the kernel...
        var fromV300 = Packet.Tagged(Syn(VlanFixture.Disabled).Build(), XlbAbi.Vlan8021Q, 300);
        var failed = Stat(XlbStat.PassFibFailed);
        var r1 = fx.Run(fromV300, fx.Lower);
        Assert.Equal(XdpPass, (int)r1.Verdict);
        Assert.Equal(failed + 1, Stat(XlbStat.PassFibFailed));
        // ...while on a VLAN the node has no device for, the FIB is asked from the device below, which forwards.
        var r2 = fx.Run(Packet.Tagged(Syn(VlanFixture.Disabled).Build(), XlbAbi.Vlan8021Q, 999), fx.Lower);
        Assert.Equal(XdpRedirect, (int)r2.Verdict);
        Assert.Null(Packet.TagOf(r2.Packet));
    }

    [Fact]
    public void Address_resolution_on_a_vlan_is_answered_with_the_vlan_devices_mac_and_keeps_the_tag()
    {
        Privileged.Require();
        byte[] asker = [0x02, 0xaa, 0, 0, 0, 1];
        var arp = Packet.Tagged(Packet.ArpRequest(asker, IPAddress.Parse("10.100.0.9"), VipAddress), XlbAbi.Vlan8021Q, 100);
        var r1 = fx.Run(arp, fx.Lower);
        Assert.Equal(XdpRedirect, (int)r1.Verdict);
        Assert.Equal((XlbAbi.Vlan8021Q, (ushort)100), Packet.TagOf(r1.Packet));
        Assert.Equal(asker, r1.Packet[..6]);
        Assert.Equal(VlanFixture.V100Mac, r1.Packet[6..12]);
        Assert.Equal(VlanFixture.V100Mac, r1.Packet[(18 + 8)..(18 + 14)]); // sender hardware address

        var ns = Packet.Tagged(Packet.NeighbourSolicitation(asker, IPAddress.Parse("fd00:200::9"), VipAddress6), XlbAbi.Vlan8021Ad, 200);
        var r2 = fx.Run(ns, fx.Lower);
        Assert.Equal(XdpRedirect, (int)r2.Verdict);
        Assert.Equal((XlbAbi.Vlan8021Ad, (ushort)200), Packet.TagOf(r2.Packet));
        Assert.Equal(VlanFixture.V200Mac, r2.Packet[6..12]);
        Assert.Equal(136, r2.Packet[18 + 40]); // a neighbour advertisement

        // A VLAN the node has no device for is not the program's to answer.
        var stray = Packet.Tagged(Packet.ArpRequest(asker, IPAddress.Parse("10.100.0.9"), VipAddress), XlbAbi.Vlan8021Q, 42);
        var r3 = fx.Run(stray, fx.Lower);
        Assert.Equal(XdpPass, (int)r3.Verdict);
        Assert.Equal(stray, r3.Packet);
    }

    [Fact]
    public void The_vlan_maps_follow_what_the_agent_tells_them_entry_by_entry()
    {
        Privileged.Require();
        byte[] asker = [0x02, 0xaa, 0, 0, 0, 2];
        var arp = Packet.Tagged(Packet.ArpRequest(asker, IPAddress.Parse("10.100.0.9"), VipAddress), XlbAbi.Vlan8021Q, 100);
        Assert.Equal(0, fx.Plane.SetVlans(fx.Vlans));
        try
        {
            // VLAN 100 gone: both its entries go, the others stay, and its ARP is no longer answered.
            Assert.Equal(2, fx.Plane.SetVlans([.. fx.Vlans.Where(v => v.Vid != 100)]));
            Assert.Equal(XdpPass, (int)fx.Run(arp, fx.Lower).Verdict);
            // Back, with another MAC: one entry changes (its device, by tag); the route side is as it was.
            var moved = fx.Vlans.Select(v => v.Vid == 100 ? v with { Mac = [0x02, 0x10, 0, 0, 0x64, 0x99] } : v).ToList();
            Assert.Equal(2, fx.Plane.SetVlans(moved));
            Assert.Equal(1, fx.Plane.SetVlans(fx.Vlans));
        }
        finally
        {
            fx.Plane.SetVlans(fx.Vlans);
        }
        var answered = fx.Run(arp, fx.Lower);
        Assert.Equal(XdpRedirect, (int)answered.Verdict);
        Assert.Equal(VlanFixture.V100Mac, answered.Packet[6..12]);
    }

    [Fact]
    public void Stacked_truncated_and_foreign_tagged_frames_go_to_the_kernel_untouched()
    {
        Privileged.Require();
        var inner = Packet.Tagged(Syn(VlanFixture.FullNat).Build(), XlbAbi.Vlan8021Q, 100);
        var qinq = Packet.Tagged(inner, XlbAbi.Vlan8021Ad, 7);
        var stacked = Stat(XlbStat.PassVlanStacked);
        var r1 = fx.Run(qinq, fx.Lower);
        Assert.Equal(XdpPass, (int)r1.Verdict);
        Assert.Equal(qinq, r1.Packet);
        Assert.Equal(stacked + 1, Stat(XlbStat.PassVlanStacked));

        var truncated = Stat(XlbStat.PassTruncated);
        var cut = inner[..16];
        var r2 = fx.Run(cut, fx.Lower);
        Assert.Equal(XdpPass, (int)r2.Verdict);
        Assert.Equal(cut, r2.Packet);
        Assert.Equal(truncated + 1, Stat(XlbStat.PassTruncated));

        var notVip = Packet.Tagged(new Packet { Src = Client, Dst = IPAddress.Parse("10.100.0.1"), SrcPort = 1, DstPort = 22 }.Build(), XlbAbi.Vlan8021Q, 100);
        var r3 = fx.Run(notVip, fx.Lower);
        Assert.Equal(XdpPass, (int)r3.Verdict);
        Assert.Equal(notVip, r3.Packet);
    }
}
