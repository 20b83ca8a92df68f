using System.Net;
using Xlb.Agent;
using Xlb.Agent.Core;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;
using static Xlb.Tests.Bpf.DataPlaneFixture;

namespace Xlb.Tests.Bpf;

/// <summary>
/// A node whose agent is gone keeps its program, which would go on answering ARP and neighbour
/// solicitations for the VIPs its last configuration holds, beside the standby that took them
/// over. The program notes other hosts' announcements of its VIPs, and yields a VIP announced
/// since its agent last stamped, once the agent has been silent two seconds. While the agent runs,
/// an announcement changes nothing.
/// </summary>
public sealed class VipClaimTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    // BPF_PROG_TEST_RUN runs the program as if the packet came in on lo (ifindex 1).
    private static readonly byte[] Own = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    private static readonly byte[] OtherOwn = [0x02, 0x11, 0x22, 0x33, 0x44, 0x66];
    private static readonly byte[] Standby = [0x02, 0x5b, 0x00, 0x00, 0x00, 0x02];
    private static readonly byte[] Asker = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    private static readonly byte[] ActiveElsewhere = [0x02, 0x5b, 0x00, 0x00, 0x00, 0x01];

    /// <summary>The ARP reply of <paramref name="mac"/>, which holds <paramref name="vip"/>, to a probe (sender 0.0.0.0) from <paramref name="asker"/>.</summary>
    private static byte[] ArpReply(byte[] mac, IPAddress vip, byte[] asker)
    {
        var f = Announcements.ArpProbe(mac, vip);
        asker.CopyTo(f, 0);
        f[21] = 2; // reply
        vip.GetAddressBytes().CopyTo(f, 28);
        asker.CopyTo(f, 32);
        new byte[4].CopyTo(f, 38);
        return f;
    }

    [Fact]
    public void A_vip_another_host_announced_is_left_to_it_once_the_agent_is_silent_and_taken_back_when_it_stamps_again()
    {
        Privileged.Require();
        const string Unclaimed = "10.250.0.13";
        var spec = Spec(1);
        spec = spec with { Vips = [.. spec.Vips, new Xlb.Crds.NodeVip { Address = Unclaimed, Role = Xlb.Crds.VipRole.Active, Shard = "s" }] };
        var (plane, run) = fx.PrivatePlane(null, spec);
        using var owned = plane;
        plane.SetInterfaceMac(1, Own);
        plane.StampAgentAlive();
        bool Answers(IPAddress vip)
        {
            var ask = vip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork
                ? Packet.ArpRequest(Asker, Client, vip)
                : Packet.NeighbourSolicitation(Asker, Client6, vip);
            var result = run(ask);
            Assert.True(result.Verdict is XdpRedirect or XdpPass, $"verdict {result.Verdict}");
            return result.Verdict == XdpRedirect;
        }

        // Our own announcements (from this interface, or from another of this node's on the same
        // segment), and another host's ARP probe (sender 0.0.0.0): nothing noted.
        plane.SetInterfaceMac(2, OtherOwn);
        Assert.Equal(XdpPass, (int)run(Announcements.GratuitousArp(Own, VipAddress)).Verdict);
        Assert.Equal(XdpPass, (int)run(Announcements.GratuitousArp(OtherOwn, VipAddress)).Verdict);
        Assert.Equal(XdpPass, (int)run(Announcements.UnsolicitedAdvert(OtherOwn, VipAddress6)).Verdict);
        Assert.Equal(XdpPass, (int)run(Announcements.ArpProbe(Asker, IPAddress.Parse(StandbyVip))).Verdict);
        Assert.Empty(plane.Claims());

        // The answer to this node's ARP probe for a VIP it stands by for, from the VIP's active node
        // (ResolutionWitness): noted, and passed on.
        var asked = XdpDataPlane.MonotonicNs();
        Assert.Equal(XdpPass, (int)run(ArpReply(ActiveElsewhere, IPAddress.Parse(StandbyVip), Own)).Verdict);
        var answer = Assert.Single(plane.Claims());
        Assert.Equal(IPAddress.Parse(StandbyVip), answer.Vip);
        Assert.Equal(ActiveElsewhere, answer.Mac);
        Assert.InRange(answer.SeenNs, asked - 20_000_000, XdpDataPlane.MonotonicNs());

        // The agent runs (its last stamp a moment ago), and the standby announces two VIPs (a
        // gratuitous ARP, an unsolicited advertisement): noted, passed on; and as the agent and its
        // peers settle who holds the VIPs, this node still answers for them.
        plane.StampAgentAlive();
        var before = XdpDataPlane.MonotonicNs();
        Assert.Equal(XdpPass, (int)run(Announcements.GratuitousArp(Standby, VipAddress)).Verdict);
        Assert.Equal(XdpPass, (int)run(Announcements.UnsolicitedAdvert(Standby, VipAddress6)).Verdict);
        Assert.True(Answers(VipAddress));
        Assert.True(Answers(VipAddress6));
        var claims = plane.Claims().Where(c => !c.Vip.Equals(IPAddress.Parse(StandbyVip))).OrderBy(c => c.Vip.AddressFamily).ToList();
        Assert.Equal([VipAddress, VipAddress6], claims.Select(c => c.Vip));
        Assert.All(claims, c =>
        {
            Assert.Equal(Standby, c.Mac);
            Assert.Equal(1, c.IfIndex);
        });
        Assert.All(claims, c => Assert.InRange(c.SeenNs, before - 20_000_000, XdpDataPlane.MonotonicNs()));

        // The agent's last stamp was before those announcements, and more than two seconds ago: the
        // node leaves those two VIPs to the standby, and still answers for the one nobody announced.
        plane.StampAgentAlive(before - 3_000_000_000);
        Assert.False(Answers(VipAddress));
        Assert.False(Answers(VipAddress6));
        Assert.True(Answers(IPAddress.Parse(Unclaimed)));

        // The agent stamps again: the node answers again.
        plane.StampAgentAlive();
        Assert.True(Answers(VipAddress));
        Assert.True(Answers(VipAddress6));

        // Silent again, but the announcements came while it still stamped: nothing to yield to.
        Thread.Sleep(2200);
        Assert.True(Answers(VipAddress));
        Assert.True(Answers(VipAddress6));
    }
}
