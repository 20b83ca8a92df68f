using System.Buffers.Binary;
using System.Net;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;
using static Xlb.Tests.Bpf.DataPlaneFixture;

namespace Xlb.Tests.Bpf;

/// <summary>The XDP program, packet by packet, through BPF_PROG_TEST_RUN and the agent's real apply path.</summary>
public class PacketTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private static int s_port = 20000;

    private static ushort NextClientPort() => (ushort)Interlocked.Increment(ref s_port);

    private static Packet Syn(ushort clientPort, int vipPort = 80, byte proto = 6) =>
        new() { Src = Client, Dst = VipAddress, SrcPort = clientPort, DstPort = (ushort)vipPort, Protocol = proto, Payload = proto == 17 ? [1, 2, 3, 4, 5] : [] };

    [Fact]
    public void A_syn_to_the_vip_leaves_fullnatted_toward_a_backend_with_valid_checksums()
    {
        Privileged.Require();
        var result = fx.Run(Syn(NextClientPort()).Build());
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        Assert.True(Packet.ChecksumsValid(result.Packet), "IP or TCP checksum is wrong after the rewrite");
        var output = Packet.Parse(result.Packet);
        Assert.Equal(VipAddress, output.Src);
        var backend = LbTopology.BackendIndexOf(output.Dst);
        Assert.InRange(backend, 1, 2);
        Assert.Equal(8080, output.DstPort);
        Assert.InRange(output.SrcPort, 40000, 59999);
        Assert.Equal(63, output.Ttl);
        Assert.Equal(Packet.Syn, output.TcpFlags);
        // Next hop from the FIB: the backend's MAC, sent from the LB's interface toward it.
        Assert.Equal(MacBytes(LbTopology.Mac(fx.Topology.Backends[backend - 1], "eth0")), output.DstMac);
        Assert.Equal(MacBytes(LbTopology.Mac(fx.Topology.Lb, LbTopology.BackendIfOnLb(backend))), output.SrcMac);
    }

    [Fact]
    public void Packets_of_one_connection_keep_their_backend_and_nat_port_and_replies_come_back_translated()
    {
        Privileged.Require();
        var port = NextClientPort();
        var first = Packet.Parse(fx.Run(Syn(port).Build()).Packet);
        var again = fx.Run((Syn(port) with { TcpFlags = Packet.Ack, Payload = [7, 7, 7] }).Build());
        Assert.Equal(XdpRedirect, (int)again.Verdict);
        var second = Packet.Parse(again.Packet);
        Assert.Equal((first.Dst, first.SrcPort), (second.Dst, second.SrcPort));
        Assert.Equal([7, 7, 7], second.Payload);

        var reply = new Packet { Src = first.Dst, Dst = VipAddress, SrcPort = 8080, DstPort = first.SrcPort, TcpFlags = Packet.Syn | Packet.Ack };
        var back = fx.Run(reply.Build());
        Assert.Equal(XdpRedirect, (int)back.Verdict);
        Assert.True(Packet.ChecksumsValid(back.Packet));
        var translated = Packet.Parse(back.Packet);
        Assert.Equal((VipAddress, (ushort)80, Client, port), (translated.Src, translated.SrcPort, translated.Dst, translated.DstPort));
        Assert.Equal(MacBytes(LbTopology.Mac(fx.Topology.Client, "eth0")), translated.DstMac);
    }

    [Fact]
    public void A_reply_longer_than_the_client_links_mtu_is_answered_too_big_to_its_backend_even_after_shorter_ones_were_forwarded()
    {
        Privileged.Require();
        var port = NextClientPort();
        var first = Packet.Parse(fx.Run(Syn(port).Build()).Packet);
        Packet Reply(int payload) => new() { Src = first.Dst, Dst = VipAddress, SrcPort = 8080, DstPort = first.SrcPort, TcpFlags = Packet.Ack, Payload = new byte[payload] };

        // Short replies are forwarded; the next hop toward the client is then cached.
        Assert.Equal(XdpRedirect, (int)fx.Run(Reply(100).Build()).Verdict);
        Assert.Equal(XdpRedirect, (int)fx.Run(Reply(100).Build()).Verdict);
        // 1,640 bytes (DF set) do not fit the client link's MTU (1,500), cached answer or not: the
        // backend hears "fragmentation needed", from the VIP, of its own packet as it sent it.
        var tooBig = fx.Plane.Stats()[Xlb.DataPlane.XlbStat.TxIcmpTooBig];
        var input = Reply(1600).Build();
        var big = fx.Run(input);
        Assert.Equal(XdpRedirect, (int)big.Verdict);
        Assert.Equal(tooBig + 1, fx.Plane.Stats()[Xlb.DataPlane.XlbStat.TxIcmpTooBig]);
        Assert.Equal((VipAddress, first.Dst), (new IPAddress(big.Packet.AsSpan(14 + 12, 4)), new IPAddress(big.Packet.AsSpan(14 + 16, 4))));
        Assert.Equal((3, 4, 1500), (big.Packet[34], big.Packet[35], BinaryPrimitives.ReadUInt16BigEndian(big.Packet.AsSpan(34 + 6))));
        Assert.Equal(input.AsSpan(14, 512).ToArray(), big.Packet.AsSpan(34 + 8).ToArray());
        // Without DF it is translated and left to the kernel, which forwards it in fragments.
        var passed = fx.Run((Reply(1600) with { DontFragment = false }).Build());
        Assert.Equal(XdpPass, (int)passed.Verdict);
        Assert.Equal(Client, Packet.Parse(passed.Packet).Dst);
        // A reply that fits is forwarded again, with the client's MAC.
        var small = fx.Run(Reply(1400).Build());
        Assert.Equal(XdpRedirect, (int)small.Verdict);
        Assert.Equal(MacBytes(LbTopology.Mac(fx.Topology.Client, "eth0")), Packet.Parse(small.Packet).DstMac);
    }

    [Fact]
    public void New_connections_spread_over_all_backends()
    {
        Privileged.Require();
        var seen = Enumerable.Range(0, 64)
            .Select(_ => LbTopology.BackendIndexOf(Packet.Parse(fx.Run(Syn(NextClientPort()).Build()).Packet).Dst))
            .ToHashSet();
        Assert.Equal([1, 2], seen.Order());
    }

    [Fact]
    public void Udp_is_translated_and_an_absent_udp_checksum_stays_absent()
    {
        Privileged.Require();
        var withSum = fx.Run(Syn(NextClientPort(), 53, proto: 17).Build());
        Assert.Equal(XdpRedirect, (int)withSum.Verdict);
        Assert.True(Packet.ChecksumsValid(withSum.Packet));
        Assert.False(Packet.Parse(withSum.Packet).UdpNoChecksum);
        Assert.Equal(5353, Packet.Parse(withSum.Packet).DstPort);

        var noSum = fx.Run((Syn(NextClientPort(), 53, proto: 17) with { UdpNoChecksum = true }).Build());
        Assert.Equal(XdpRedirect, (int)noSum.Verdict);
        Assert.True(Packet.Parse(noSum.Packet).UdpNoChecksum);
        Assert.True(Packet.ChecksumsValid(noSum.Packet));
    }

    [Theory]
    [InlineData("10.201.1.2", 80, "an address that is not a VIP")]
    [InlineData(Vip, 99, "a VIP port with no listener")]
    [InlineData(Vip, 53, "a UDP listener port, but TCP")]
    public void Traffic_that_is_not_a_service_passes_untouched(string dst, int port, string what)
    {
        Privileged.Require();
        var packet = (Syn(NextClientPort(), port) with { Dst = IPAddress.Parse(dst) }).Build();
        var result = fx.Run(packet);
        Assert.True(XdpPass == (int)result.Verdict, $"{what}: expected XDP_PASS, got {result.Verdict}");
        Assert.Equal(packet, result.Packet);
    }

    [Fact]
    public void An_arp_request_for_an_active_vip_is_answered_with_the_interfaces_mac()
    {
        Privileged.Require();
        // BPF_PROG_TEST_RUN runs the program as if the packet came in on lo (ifindex 1).
        byte[] own = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        fx.Plane.SetInterfaceMac(1, own);
        byte[] client = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        var before = fx.Plane.Stats()[Xlb.DataPlane.XlbStat.TxArpReply];
        var result = fx.Run(Packet.ArpRequest(client, Client, VipAddress));
        Assert.Equal(XdpRedirect, (int)result.Verdict);
        var r = result.Packet;
        Assert.Equal(client, r[..6]);
        Assert.Equal(own, r[6..12]);
        Assert.Equal(2, r[21]); // reply
        Assert.Equal(own, r[22..28]);
        Assert.Equal(VipAddress, new IPAddress(r[28..32]));
        Assert.Equal(client, r[32..38]);
        Assert.Equal(Client, new IPAddress(r[38..42]));
        Assert.Equal(before + 1, fx.Plane.Stats()[Xlb.DataPlane.XlbStat.TxArpReply]);
    }

    [Theory]
    [InlineData("10.201.1.2", "not a VIP")]
    [InlineData(StandbyVip, "a VIP this node stands by for")]
    [InlineData(Vip, "a gratuitous announcement of the VIP by another host")]
    public void Other_arp_goes_to_the_kernel(string target, string what)
    {
        Privileged.Require();
        fx.Plane.SetInterfaceMac(1, [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
        var sender = what.Contains("gratuitous", StringComparison.Ordinal) ? Vip : LbTopology.ClientAddress;
        var request = Packet.ArpRequest([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee], IPAddress.Parse(sender), IPAddress.Parse(target));
        var result = fx.Run(request);
        Assert.True(XdpPass == (int)result.Verdict, $"{what}: expected XDP_PASS, got {result.Verdict}");
        Assert.Equal(request, result.Packet);
    }

    [Fact]
    public void Non_ip_frames_pass()
    {
        Privileged.Require();
        var arp = new byte[42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        Assert.Equal(XdpPass, (int)fx.Run(arp).Verdict);
    }

    [Theory]
    // The datagram (tot_len) is longer than the frame: the kernel's IP layer drops it.
    [InlineData(Vip, 14 + 20 + 10, XdpPass)]
    [InlineData("10.201.1.2", 14 + 20 + 10, XdpPass)]
    [InlineData(Vip, 14 + 12, XdpPass)]
    // The kernel's test run refuses frames shorter than an Ethernet header; 14 bytes is IPv4 with no IP header.
    [InlineData(Vip, 14, XdpPass)]
    public void Truncated_packets_are_never_forwarded(string dst, int length, int verdict)
    {
        Privileged.Require();
        var full = (Syn(NextClientPort()) with { Dst = IPAddress.Parse(dst) }).Build();
        var result = fx.Run(full[..length]);
        Assert.Equal(verdict, (int)result.Verdict);
    }

    [Fact]
    public void An_l4_header_beyond_the_datagram_is_dropped_even_when_the_frame_holds_bytes_there()
    {
        Privileged.Require();
        var packet = Syn(NextClientPort()).Build();
        // tot_len says 30: 10 bytes of TCP header; the rest of the frame is padding.
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(16), 30);
        var before = fx.Plane.Stats()[Xlb.DataPlane.XlbStat.DropTruncatedL4];
        Assert.Equal(XdpDrop, (int)fx.Run(packet).Verdict);
        Assert.Equal(before + 1, fx.Plane.Stats()[Xlb.DataPlane.XlbStat.DropTruncatedL4]);
    }

    [Fact]
    public void A_new_revision_moves_new_connections_while_established_ones_keep_their_backend()
    {
        Privileged.Require();
        // Find a connection that lands on backend 1 under the current revision.
        ushort port;
        Packet before;
        do
        {
            port = NextClientPort();
            before = Packet.Parse(fx.Run(Syn(port).Build()).Packet);
        }
        while (LbTopology.BackendIndexOf(before.Dst) != 1);

        var applied = fx.Plane.Apply(Spec(2));
        try
        {
            Assert.True(applied.Operations > 1);
            Assert.Equal(applied.Generation, fx.Plane.ActiveGeneration);
            var established = Packet.Parse(fx.Run((Syn(port) with { TcpFlags = Packet.Ack }).Build()).Packet);
            Assert.Equal(before.Dst, established.Dst);
            Assert.All(Enumerable.Range(0, 16), _ =>
                Assert.Equal(2, LbTopology.BackendIndexOf(Packet.Parse(fx.Run(Syn(NextClientPort()).Build()).Packet).Dst)));
        }
        finally
        {
            fx.Plane.Apply(Spec(1, 2));
        }
    }

    [Fact]
    public void A_draining_backend_gets_no_new_flows_while_its_flows_continue()
    {
        Privileged.Require();
        ushort port;
        Packet before;
        do
        {
            port = NextClientPort();
            before = Packet.Parse(fx.Run(Syn(port).Build()).Packet);
        }
        while (LbTopology.BackendIndexOf(before.Dst) != 2);

        var draining = Spec(1, 2);
        var web = draining.Listeners[0];
        draining.Listeners[0] = web with { Backends = [web.Backends[0], web.Backends[1] with { Draining = true }] };
        fx.Plane.Apply(draining);
        try
        {
            var established = fx.Run((Syn(port) with { TcpFlags = Packet.Ack, Payload = [1] }).Build());
            Assert.Equal(XdpRedirect, (int)established.Verdict);
            Assert.Equal(before.Dst, Packet.Parse(established.Packet).Dst);
            Assert.All(Enumerable.Range(0, 32), _ =>
                Assert.Equal(1, LbTopology.BackendIndexOf(Packet.Parse(fx.Run(Syn(NextClientPort()).Build()).Packet).Dst)));
        }
        finally
        {
            fx.Plane.Apply(Spec(1, 2));
        }
    }

    [Fact]
    public void In_the_shutdown_window_a_new_syn_is_answered_with_rst_and_established_flows_continue()
    {
        Privileged.Require();
        var establishedPort = NextClientPort();
        var established = Packet.Parse(fx.Run(Syn(establishedPort).Build()).Packet);
        fx.Plane.SetShutdown(true);
        try
        {
            var syn = Syn(NextClientPort()) with { SrcMac = [2, 0, 0, 0, 0, 7], DstMac = [2, 0, 0, 0, 0, 8] };
            var result = fx.Run(syn.Build());
            // Back out of the ingress interface by redirect (XDP_TX does not wake a veth peer without XDP).
            Assert.Equal(XdpRedirect, (int)result.Verdict);
            Assert.Equal(54, result.Packet.Length);
            Assert.True(Packet.ChecksumsValid(result.Packet), "RST checksums are wrong");
            var rst = Packet.Parse(result.Packet);
            Assert.Equal(Packet.Rst | Packet.Ack, rst.TcpFlags);
            Assert.Equal((VipAddress, (ushort)80, Client, syn.SrcPort), (rst.Src, rst.SrcPort, rst.Dst, rst.DstPort));
            Assert.Equal(syn.DstMac, rst.SrcMac);
            Assert.Equal(syn.SrcMac, rst.DstMac);
            // RFC 793: the RST acknowledges the SYN: ack = seq + 1 (the builder's seq is 1000).
            Assert.Equal(1001u, System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(result.Packet.AsSpan(14 + 20 + 8)));

            var more = fx.Run((Syn(establishedPort) with { TcpFlags = Packet.Ack }).Build());
            Assert.Equal(XdpRedirect, (int)more.Verdict);
            Assert.Equal(established.Dst, Packet.Parse(more.Packet).Dst);
            Assert.Equal(XdpRedirect, (int)fx.Run(Syn(NextClientPort(), 53, proto: 17).Build()).Verdict);
        }
        finally
        {
            fx.Plane.SetShutdown(false);
        }
        Assert.Equal(XdpRedirect, (int)fx.Run(Syn(NextClientPort()).Build()).Verdict);
    }

    [Fact]
    public void A_resync_restores_a_service_that_was_deleted_from_the_live_map_by_hand()
    {
        Privileged.Require();
        var gen = fx.Plane.ActiveGeneration;
        var key = fx.Plane.Services.Keys().Single(k => k.Gen == gen && k.PortBe == Xlb.DataPlane.Net.Be(80) && k.Family == Xlb.DataPlane.XlbAbi.FamilyV4);
        Assert.True(fx.Plane.Services.Delete(key));
        Assert.Equal(XdpPass, (int)fx.Run(Syn(NextClientPort()).Build()).Verdict);

        var resync = fx.Plane.Apply(Spec(1, 2));
        Assert.True(resync.Operations > 0, "the resync did not notice the missing service");
        Assert.Equal(XdpRedirect, (int)fx.Run(Syn(NextClientPort()).Build()).Verdict);
    }

    [Fact]
    public void Reapplying_the_same_config_writes_nothing()
    {
        Privileged.Require();
        var gen = fx.Plane.ActiveGeneration;
        var result = fx.Plane.Apply(Spec(1, 2));
        Assert.Equal(0, result.Operations);
        Assert.Equal(gen, fx.Plane.ActiveGeneration);
    }
}
