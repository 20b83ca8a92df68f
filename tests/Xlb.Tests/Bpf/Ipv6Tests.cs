using System.Buffers.Binary;
using System.Net;
using Xlb.Cli.Testbed;
using Xlb.DataPlane;
using Xlb.Tests.Support;
using static Xlb.Tests.Bpf.DataPlaneFixture;

namespace Xlb.Tests.Bpf;

/// <summary>
/// IPv6 through the XDP program: FullNAT, DSR, extension headers, and the verdicts IPv6 adds
/// (DNAT over IPv6: <see cref="ModeTests"/>).
/// Checksums are verified by the test's own implementation (RFC 8200 pseudo-header).
/// </summary>
public class Ipv6Tests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private static int s_port = 40000;

    private static ushort NextClientPort() => (ushort)Interlocked.Increment(ref s_port);

    private static Packet Tcp(ushort clientPort, int vipPort = 80, byte flags = Packet.Syn) =>
        new() { Src = Client6, Dst = VipAddress6, SrcPort = clientPort, DstPort = (ushort)vipPort, TcpFlags = flags };

    private static Packet Udp(ushort clientPort) =>
        new() { Src = Client6, Dst = VipAddress6, SrcPort = clientPort, DstPort = 53, Protocol = 17, Payload = [1, 2, 3, 4, 5] };

    private ulong Stat(XlbStat s) => fx.Plane.Stats()[s];

    private byte[] BackendMac(int backend) => MacBytes(LbTopology.Mac(fx.Topology.Backends[backend - 1], "eth0"));

    private byte[] LbMacToward(int backend) => MacBytes(LbTopology.Mac(fx.Topology.Lb, LbTopology.BackendIfOnLb(backend)));

    [Fact]
    public void A_syn_to_an_ipv6_vip_is_fullnatted_and_the_reply_comes_back_translated()
    {
        Privileged.Require();
        var port = NextClientPort();
        var result = fx.Run(Tcp(port).Build());
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        Assert.True(Packet.ChecksumsValid(result.Packet), "TCP checksum is wrong after the IPv6 rewrite");
        var forward = Packet.Parse(result.Packet);
        Assert.Equal(VipAddress6, forward.Src);
        var backend = LbTopology.BackendIndexOf(forward.Dst);
        Assert.InRange(backend, 1, 2);
        Assert.Equal(IPAddress.Parse(LbTopology.BackendAddress6(backend)), forward.Dst);
        Assert.Equal((8080, 63), (forward.DstPort, (int)forward.Ttl));
        Assert.InRange(forward.SrcPort, 40000, 59999);
        Assert.Equal(BackendMac(backend), forward.DstMac);
        Assert.Equal(LbMacToward(backend), forward.SrcMac);

        var next = fx.Run((Tcp(port, flags: Packet.Ack) with { Payload = [5, 6] }).Build());
        Assert.Equal((forward.Dst, forward.SrcPort), (Packet.Parse(next.Packet).Dst, Packet.Parse(next.Packet).SrcPort));

        var reply = new Packet { Src = forward.Dst, Dst = VipAddress6, SrcPort = 8080, DstPort = forward.SrcPort, TcpFlags = Packet.Syn | Packet.Ack, Payload = [1] };
        var back = fx.Run(reply.Build());
        Assert.Equal(XdpRedirect, (int)back.Verdict);
        Assert.True(Packet.ChecksumsValid(back.Packet));
        var translated = Packet.Parse(back.Packet);
        Assert.Equal((VipAddress6, (ushort)80, Client6, port), (translated.Src, translated.SrcPort, translated.Dst, translated.DstPort));
        Assert.Equal(MacBytes(LbTopology.Mac(fx.Topology.Client, "eth0")), translated.DstMac);
    }

    [Fact]
    public void Udp_over_ipv6_is_translated_and_a_zero_checksum_is_dropped()
    {
        Privileged.Require();
        var result = fx.Run(Udp(NextClientPort()).Build());
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        Assert.True(Packet.ChecksumsValid(result.Packet));
        Assert.Equal(8080, Packet.Parse(result.Packet).DstPort);
        Assert.Equal([1, 2, 3, 4, 5], Packet.Parse(result.Packet).Payload);

        // RFC 8200 8.1: an IPv6 receiver discards UDP with a zero checksum.
        var before = Stat(XlbStat.DropUdp6NoChecksum);
        Assert.Equal(XdpDrop, (int)fx.Run((Udp(NextClientPort()) with { UdpNoChecksum = true }).Build()).Verdict);
        Assert.Equal(before + 1, Stat(XlbStat.DropUdp6NoChecksum));
    }

    [Fact]
    public void Extension_headers_are_skipped_and_kept()
    {
        Privileged.Require();
        (byte, byte[]) hopByHop = (0, [0, 0, 1, 4, 0, 0, 0, 0]); // PadN
        (byte, byte[]) destOpts = (60, [0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // 16 bytes
        var input = Tcp(NextClientPort()) with { Extensions = [hopByHop, destOpts], Payload = [1, 2, 3] };
        var result = fx.Run(input.Build());
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        Assert.True(Packet.ChecksumsValid(result.Packet));
        var output = Packet.Parse(result.Packet);
        Assert.Equal((8080, (byte)6, 63), (output.DstPort, output.Protocol, (int)output.Ttl));
        Assert.Equal([1, 2, 3], output.Payload);
        // The extension headers travel on untouched.
        Assert.Equal(input.Build()[54..(54 + 24)], result.Packet[54..(54 + 24)]);
    }

    [Theory]
    [InlineData(44, XlbStat.PassFragment, "a fragment header")]
    [InlineData(43, XlbStat.PassIpv6Ext, "a routing header with segments left")]
    [InlineData(0, XlbStat.PassIpv6Ext, "more extension headers than the bound")]
    public void Ipv6_packets_the_program_does_not_handle_pass_to_the_kernel_counted(byte type, XlbStat reason, string what)
    {
        Privileged.Require();
        IReadOnlyList<(byte, byte[])> extensions = type switch
        {
            44 => [(44, [0, 0, 0, 1, 0, 0, 0, 1])], // offset 0, more fragments
            43 => [(43, [0, 0, 4, 1, 0, 0, 0, 0])], // segments left 1
            // A hop-by-hop header, then destination options: one more header than the bound.
            _ => [(0, [0, 0, 1, 4, 0, 0, 0, 0]), .. Enumerable.Range(0, XlbAbi.Ipv6ExtMax).Select(_ => ((byte)60, new byte[] { 0, 0, 1, 4, 0, 0, 0, 0 }))],
        };
        var input = (Tcp(NextClientPort()) with { Extensions = extensions }).Build();
        var before = Stat(reason);
        var result = fx.Run(input);
        Assert.True(XdpPass == (int)result.Verdict, $"{what}: expected XDP_PASS, got {result.Verdict}");
        Assert.Equal(input, result.Packet);
        Assert.Equal(before + 1, Stat(reason));
    }

    [Fact]
    public void Ipv6_traffic_that_is_not_a_service_passes_untouched()
    {
        Privileged.Require();
        foreach (var input in new[]
        {
            Tcp(NextClientPort()) with { Dst = IPAddress.Parse("fd00:201:1::2") },
            Tcp(NextClientPort(), 99),
            Udp(NextClientPort()) with { DstPort = 80 },
        })
        {
            var packet = input.Build();
            var result = fx.Run(packet);
            Assert.Equal(XdpPass, (int)result.Verdict);
            Assert.Equal(packet, result.Packet);
        }
    }

    [Theory]
    [InlineData(14 + 30, XdpPass)]      // the fixed header cut short
    [InlineData(14 + 40 + 10, XdpPass)] // the TCP header cut short: payload_len says more than the frame holds
    public void Truncated_ipv6_packets_are_never_forwarded(int length, int verdict)
    {
        Privileged.Require();
        var full = Tcp(NextClientPort()).Build();
        Assert.Equal(verdict, (int)fx.Run(full[..length]).Verdict);
    }

    [Fact]
    public void Ipv6_dsr_l2_sends_the_packet_unchanged_to_the_backends_mac()
    {
        Privileged.Require();
        var input = (Tcp(NextClientPort(), DsrL2Port) with { Payload = [4, 2] }).Build();
        var result = fx.Run(input);
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        Assert.Equal(input[14..], result.Packet[14..]);
        var backend = Enumerable.Range(1, 2).Single(i => BackendMac(i).SequenceEqual(result.Packet[..6]));
        Assert.Equal(LbMacToward(backend), result.Packet[6..12]);
    }

    [Fact]
    public void Ipv6_dsr_ipip_wraps_the_packet_in_an_outer_ipv6_header_to_the_backend()
    {
        Privileged.Require();
        var input = (Tcp(NextClientPort(), DsrIpipPort) with { Payload = [9, 9, 9] }).Build();
        var result = fx.Run(input);
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        var o = result.Packet.AsSpan(14, 40);
        Assert.Equal(0x86dd, BinaryPrimitives.ReadUInt16BigEndian(result.Packet.AsSpan(12)));
        Assert.Equal(6, o[0] >> 4);
        Assert.Equal(input.Length - 14, BinaryPrimitives.ReadUInt16BigEndian(o[4..]));
        Assert.Equal(41, o[6]);  // IPv6 in IPv6
        Assert.Equal(64, o[7]);
        Assert.Equal(VipAddress6, new IPAddress(o[8..24]));
        var backend = LbTopology.BackendIndexOf(new IPAddress(o[24..40]));
        Assert.InRange(backend, 1, 2);
        Assert.Equal(BackendMac(backend), result.Packet[..6]);
        // The inner packet, byte for byte.
        Assert.Equal(input[14..], result.Packet[(14 + 40)..]);
    }

    [Fact]
    public void In_the_shutdown_window_an_ipv6_syn_is_answered_with_rst()
    {
        Privileged.Require();
        var establishedPort = NextClientPort();
        var established = Packet.Parse(fx.Run(Tcp(establishedPort).Build()).Packet);
        fx.Plane.SetShutdown(true);
        try
        {
            var syn = Tcp(NextClientPort()) with { SrcMac = [2, 0, 0, 0, 0, 7], DstMac = [2, 0, 0, 0, 0, 8], Payload = [1, 2] };
            var result = fx.Run(syn.Build());
            Assert.Equal(XdpRedirect, (int)result.Verdict);
            Assert.Equal(14 + 40 + 20, result.Packet.Length);
            Assert.True(Packet.ChecksumsValid(result.Packet), "RST checksum is wrong");
            var rst = Packet.Parse(result.Packet);
            Assert.Equal(Packet.Rst | Packet.Ack, rst.TcpFlags);
            Assert.Equal((VipAddress6, (ushort)80, Client6, syn.SrcPort), (rst.Src, rst.SrcPort, rst.Dst, rst.DstPort));
            Assert.Equal(syn.SrcMac, rst.DstMac);
            // ack = seq + 1 for the SYN + 2 payload bytes (the builder's seq is 1000).
            Assert.Equal(1003u, BinaryPrimitives.ReadUInt32BigEndian(result.Packet.AsSpan(14 + 40 + 8)));

            var more = fx.Run(Tcp(establishedPort, flags: Packet.Ack).Build());
            Assert.Equal(XdpRedirect, (int)more.Verdict);
            Assert.Equal(established.Dst, Packet.Parse(more.Packet).Dst);
        }
        finally
        {
            fx.Plane.SetShutdown(false);
        }
    }
    [Fact]
    public void A_neighbour_solicitation_for_an_active_vip_is_answered_with_the_interfaces_mac()
    {
        Privileged.Require();
        // BPF_PROG_TEST_RUN runs the program as if the packet came in on lo (ifindex 1).
        byte[] own = [0x02, 0x11, 0x22, 0x33, 0x44, 0x66];
        fx.Plane.SetInterfaceMac(1, own);
        byte[] client = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
        var before = Stat(XlbStat.TxNdAdvert);
        var result = fx.Run(Packet.NeighbourSolicitation(client, Client6, VipAddress6));
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        var r = result.Packet;
        Assert.Equal(14 + 40 + 32, r.Length);
        Assert.Equal(client, r[..6]);
        Assert.Equal(own, r[6..12]);
        Assert.Equal((58, 255), (r[20], r[21]));
        Assert.Equal(VipAddress6, new IPAddress(r[22..38]));
        Assert.Equal(Client6, new IPAddress(r[38..54]));
        Assert.Equal(136, r[54]); // advertisement
        Assert.Equal(0x60, r[58]); // solicited, override; not a router
        Assert.Equal(VipAddress6, new IPAddress(r[62..78]));
        Assert.Equal((2, 1), (r[78], r[79])); // target link-layer address option
        Assert.Equal(own, r[80..86]);
        Assert.True(Packet.ChecksumsValid(r), "ICMPv6 checksum of the advertisement is wrong");
        Assert.Equal(before + 1, Stat(XlbStat.TxNdAdvert));
    }

    [Theory]
    [InlineData("fd00:201:1::2", "fd00:200::2", 255, "a solicitation for an address that is not a VIP")]
    [InlineData("fd00:250::10", "::", 255, "duplicate address detection (no source address)")]
    [InlineData("fd00:250::10", "fd00:200::2", 254, "a solicitation that crossed a router (hop limit below 255)")]
    public void Other_neighbour_discovery_goes_to_the_kernel(string target, string sender, byte hopLimit, string what)
    {
        Privileged.Require();
        Assert.Equal((VipAddress6, Client6), (IPAddress.Parse("fd00:250::10"), IPAddress.Parse("fd00:200::2")));
        fx.Plane.SetInterfaceMac(1, [0x02, 0x11, 0x22, 0x33, 0x44, 0x66]);
        var request = Packet.NeighbourSolicitation([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01], IPAddress.Parse(sender), IPAddress.Parse(target), hopLimit);
        var result = fx.Run(request);
        Assert.True(XdpPass == (int)result.Verdict, $"{what}: expected XDP_PASS, got {result.Verdict}");
        Assert.Equal(request, result.Packet);
    }
}
