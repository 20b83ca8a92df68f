using System.Buffers.Binary;
using System.Net;
using Xlb.Agent.Bpf;
using Xlb.Cli.Testbed;
using Xlb.DataPlane;
using Xlb.Tests.Support;
using static Xlb.Tests.Bpf.DataPlaneFixture;

namespace Xlb.Tests.Bpf;

/// <summary>
/// Packets too big for the way to their backend (the links are 1,500 bytes; IPIP adds 20 or 40):
/// an ICMP "fragmentation needed" or "packet too big" goes back to the client, so path MTU
/// discovery works through the balancer; IPv4 without DF is fragmented by the kernel (NAT) or
/// dropped (DSR, which nothing fragments).
/// </summary>
public sealed class PathMtuTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private const int LinkMtu = 1500, Quote = 512;
    private static int s_port = 33000;

    private static ushort NextClientPort() => (ushort)Interlocked.Increment(ref s_port);

    /// <summary>A TCP packet of <paramref name="l3Length"/> bytes from its IP header on, to VIP:port.</summary>
    private static byte[] Big(bool v6, int port, int l3Length, bool dontFragment = true) => new Packet
    {
        Src = v6 ? Client6 : Client, Dst = v6 ? VipAddress6 : VipAddress, SrcPort = NextClientPort(), DstPort = (ushort)port,
        TcpFlags = Packet.Ack, Payload = [.. Enumerable.Range(0, l3Length - (v6 ? 40 : 20) - 20).Select(i => (byte)i)],
        DontFragment = dontFragment,
    }.Build();

    private ulong Stat(XlbStat s) => fx.Plane.Stats()[s];

    /// <summary>Asserts that <paramref name="reply"/> is the ICMP "too big" for <paramref name="input"/> with <paramref name="mtu"/>.</summary>
    private static void AssertTooBig(byte[] input, TestRunResult reply, bool v6, int mtu)
    {
        // Out of the interface it came in on (a redirect: on veth, XDP_TX would not wake the peer).
        Assert.Equal(XdpRedirect, (int)reply.Verdict);
        var p = reply.Packet;
        var ipLen = v6 ? 40 : 20;
        Assert.Equal(14 + ipLen + 8 + Quote, p.Length);
        // Back where it came from.
        Assert.Equal(input[6..12], p[..6]);
        Assert.Equal(input[..6], p[6..12]);
        var icmp = p.AsSpan(14 + ipLen);
        if (v6)
        {
            Assert.Equal(0x86dd, BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(12)));
            Assert.Equal(58, p[14 + 6]);
            Assert.Equal(8 + Quote, BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(14 + 4)));
            Assert.Equal((VipAddress6, Client6), (new IPAddress(p.AsSpan(14 + 8, 16)), new IPAddress(p.AsSpan(14 + 24, 16))));
            Assert.Equal((2, 0), (icmp[0], icmp[1]));
            Assert.Equal((uint)mtu, BinaryPrimitives.ReadUInt32BigEndian(icmp[4..]));
            var check = (byte[])p.Clone();
            Packet.SetIcmp6Checksum(check);
            Assert.Equal(check, p);
        }
        else
        {
            Assert.Equal(0x0800, BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(12)));
            Assert.Equal(0, Packet.Checksum(p.AsSpan(14, 20)));
            Assert.Equal(1, p[14 + 9]);
            Assert.Equal(20 + 8 + Quote, BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(14 + 2)));
            Assert.Equal((VipAddress, Client), (new IPAddress(p.AsSpan(14 + 12, 4)), new IPAddress(p.AsSpan(14 + 16, 4))));
            Assert.Equal((3, 4), (icmp[0], icmp[1]));
            Assert.Equal(mtu, BinaryPrimitives.ReadUInt16BigEndian(icmp[6..]));
            Assert.Equal(0, Packet.Checksum(icmp));
        }
        // The client's own packet, as it sent it, from its IP header on.
        Assert.Equal(input.AsSpan(14, Quote).ToArray(), icmp[8..].ToArray());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_full_size_packet_to_an_ipip_service_is_answered_with_too_big_and_the_mtu_less_the_outer_header(bool v6)
    {
        Privileged.Require();
        var outer = v6 ? 40 : 20;
        var before = Stat(XlbStat.TxIcmpTooBig);
        var input = Big(v6, DsrIpipPort, LinkMtu);
        AssertTooBig(input, fx.Run(input), v6, LinkMtu - outer);
        Assert.Equal(before + 1, Stat(XlbStat.TxIcmpTooBig));

        // One that fits with the outer header goes through, encapsulated, to the last byte.
        var fits = fx.Run(Big(v6, DsrIpipPort, LinkMtu - outer));
        Assert.Equal(XdpRedirect, (int)fits.Verdict);
        Assert.Equal(14 + LinkMtu, fits.Packet.Length);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Each_cpu_sends_at_most_its_icmp_rate_of_too_big_answers_a_second_and_drops_the_packets_past_it(bool v6)
    {
        Privileged.Require();
        const uint Rate = 3;
        var (plane, _) = fx.PrivatePlane(new Xlb.Agent.DataPlaneOptions { IcmpRate = Rate }, Spec(1, 2));
        using var owned = plane;
        var burst = Enumerable.Range(0, 8).Select(_ => Big(v6, DsrIpipPort, LinkMtu)).ToList();
        // A burst is judged only when it ran well inside one second (the limit's window); a
        // stalled machine runs it again, a few times at most.
        for (var attempt = 0; ; attempt++)
        {
            var before = (Sent: plane.Stats()[XlbStat.TxIcmpTooBig], Limited: plane.Stats()[XlbStat.DropIcmpLimited]);
            var (results, took) = Netns.Run(fx.Topology.Lb, () =>
            {
                // The limit is counted per CPU: stay on one.
                OneCpu.Pin();
                // Past any window an earlier attempt opened.
                Thread.Sleep(1100);
                var clock = System.Diagnostics.Stopwatch.StartNew();
                var got = burst.Select(p => TestRun.Xdp(plane.ProgramFd, p)).ToList();
                return (got, clock.Elapsed);
            });
            if (took > TimeSpan.FromMilliseconds(500) && attempt < 3)
            {
                continue;
            }
            Assert.True(took < TimeSpan.FromMilliseconds(500), $"every burst of 8 packets took {took.TotalMilliseconds:F0} ms");
            for (var i = 0; i < burst.Count; i++)
            {
                if (i < Rate)
                {
                    AssertTooBig(burst[i], results[i], v6, LinkMtu - (v6 ? 40 : 20));
                }
                else
                {
                    Assert.Equal(XdpDrop, (int)results[i].Verdict);
                }
            }
            var stats = plane.Stats();
            Assert.Equal((before.Sent + Rate, before.Limited + (ulong)burst.Count - Rate), (stats[XlbStat.TxIcmpTooBig], stats[XlbStat.DropIcmpLimited]));
            break;
        }
    }

    [Fact]
    public void Ipv4_without_df_too_big_for_dsr_is_dropped_and_for_nat_is_left_to_the_kernel_to_fragment()
    {
        Privileged.Require();
        var dropped = Stat(XlbStat.DropTooBig);
        Assert.Equal(XdpDrop, (int)fx.Run(Big(false, DsrIpipPort, LinkMtu, dontFragment: false)).Verdict);
        Assert.Equal(dropped + 1, Stat(XlbStat.DropTooBig));

        var passed = Stat(XlbStat.PassTooBig);
        var result = fx.Run(Big(false, 80, LinkMtu + 100, dontFragment: false));
        Assert.Equal(XdpPass, (int)result.Verdict);
        Assert.Equal(passed + 1, Stat(XlbStat.PassTooBig));
        // Translated, for the kernel to forward in fragments.
        Assert.InRange(LbTopology.BackendIndexOf(Packet.Parse(result.Packet).Dst), 1, 2);
        Assert.True(Packet.ChecksumsValid(result.Packet));
    }

    [Theory]
    [InlineData(false, 80)]
    [InlineData(true, 80)]
    [InlineData(false, DnatPort)]
    [InlineData(false, DsrL2Port)]
    [InlineData(true, DsrL2Port)]
    public void A_packet_longer_than_the_link_is_answered_with_too_big_before_any_translation(bool v6, int port)
    {
        Privileged.Require();
        var input = Big(v6, port, LinkMtu + 100);
        AssertTooBig(input, fx.Run(input), v6, LinkMtu);
        // Up to the link's MTU, forwarded.
        Assert.Equal(XdpRedirect, (int)fx.Run(Big(v6, port, LinkMtu)).Verdict);
    }
}
