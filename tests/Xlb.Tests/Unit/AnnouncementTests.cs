using System.Net;
using Xlb.Agent.Core;
using Xlb.Cli.Testbed;
using Xlb.Crds;

namespace Xlb.Tests.Unit;

public class AnnouncementTests
{
    private static readonly byte[] Mac = [0x02, 0x10, 0x20, 0x30, 0x40, 0x50];

    private static XlbNodeConfigSpec Spec(params (string Address, VipRole Role)[] vips) => new()
    {
        NodeName = "lb-1",
        Vips = [.. vips.Select(v => new NodeVip { Address = v.Address, Role = v.Role, Shard = "s" })],
    };

    [Fact]
    public void After_a_start_every_active_vip_is_taken_and_no_standby_one()
    {
        var taken = Announcements.Taken(null, Spec(("10.0.0.1", VipRole.Active), ("10.0.0.2", VipRole.Standby), ("fd00::1", VipRole.Active)));
        Assert.Equal([IPAddress.Parse("10.0.0.1"), IPAddress.Parse("fd00::1")], taken);
    }

    [Fact]
    public void Only_vips_that_became_active_are_taken()
    {
        var before = Spec(("10.0.0.1", VipRole.Active), ("10.0.0.2", VipRole.Standby), ("10.0.0.3", VipRole.Active));
        var after = Spec(("10.0.0.1", VipRole.Active), ("10.0.0.2", VipRole.Active), ("10.0.0.3", VipRole.Standby), ("10.0.0.4", VipRole.Active));
        Assert.Equal([IPAddress.Parse("10.0.0.2"), IPAddress.Parse("10.0.0.4")], Announcements.Taken(before, after));
        Assert.Empty(Announcements.Taken(after, after));
    }

    [Fact]
    public void The_probes_for_a_vip_are_the_requests_any_host_sends_byte_for_byte()
    {
        // The testbed's own builders (independent of the agent's) give the same frames: an ARP
        // request from 0.0.0.0, and a solicitation from a link-local address with a checksum of its own.
        var vip = IPAddress.Parse("10.250.0.7");
        Assert.Equal(Packet.ArpRequest(Mac, IPAddress.Any, vip), Announcements.ArpProbe(Mac, vip));
        var vip6 = IPAddress.Parse("fd00:250::1:2:3");
        var source = IPAddress.Parse("fe80::10:20ff:fe30:4050");
        Assert.Equal(Packet.NeighbourSolicitation(Mac, source, vip6), Announcements.NeighbourProbe(Mac, source, vip6));
    }

    [Fact]
    public void A_probe_for_an_IPv6_vip_comes_from_a_usable_link_local_address_of_its_interface()
    {
        const string IfInet6 = """
            fd000220000000000000000000000002 02 40 00 80     eth0
            fe800000000000000000000000000001 02 40 20 c0     eth0
            fe800000000000000000000000000002 02 40 20 80     eth0
            fe8000000000000000000000000000aa 03 40 20 88     eth1
            00000000000000000000000000000001 01 80 10 80       lo
            """;
        Assert.Equal(IPAddress.Parse("fe80::2"), ResolutionWitness.LinkLocal(IfInet6, 2)); // the first is tentative (0x40)
        Assert.Null(ResolutionWitness.LinkLocal(IfInet6, 3)); // failed its duplicate address detection (0x08)
        Assert.Null(ResolutionWitness.LinkLocal(IfInet6, 1)); // host scope only
        Assert.Null(ResolutionWitness.LinkLocal(IfInet6, 4));
    }

    [Fact]
    public void A_gratuitous_arp_is_a_broadcast_request_for_the_vip_from_the_vip()
    {
        var f = Announcements.Frame(Mac, IPAddress.Parse("10.250.0.7"));
        Assert.Equal(42, f.Length);
        Assert.Equal(Enumerable.Repeat((byte)0xff, 6), f[..6]);
        Assert.Equal(Mac, f[6..12]);
        Assert.Equal([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1], f[12..22]);
        Assert.Equal(Mac, f[22..28]);
        Assert.Equal([10, 250, 0, 7], f[28..32]);
        Assert.Equal(new byte[6], f[32..38]);
        Assert.Equal([10, 250, 0, 7], f[38..42]);
    }

    [Fact]
    public void An_unsolicited_advertisement_goes_to_all_nodes_with_override_and_the_mac()
    {
        var vip = IPAddress.Parse("fd00:250::7");
        var f = Announcements.Frame(Mac, vip);
        Assert.Equal(14 + 40 + 32, f.Length);
        Assert.Equal([0x33, 0x33, 0, 0, 0, 1], f[..6]);
        Assert.Equal(Mac, f[6..12]);
        Assert.Equal((58, 255), (f[20], f[21]));
        Assert.Equal(vip, new IPAddress(f[22..38]));
        Assert.Equal(IPAddress.Parse("ff02::1"), new IPAddress(f[38..54]));
        Assert.Equal(136, f[54]);
        Assert.Equal(0x20, f[58]); // override; neither router nor solicited
        Assert.Equal(vip, new IPAddress(f[62..78]));
        Assert.Equal((2, 1), (f[78], f[79]));
        Assert.Equal(Mac, f[80..86]);
        // The checksum, verified by the testbed's own implementation.
        Assert.True(Packet.ChecksumsValid(f));
    }
}
