using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Xlb.Agent.Core;
using Xlb.Crds;

namespace Xlb.Tests.Unit;

/// <summary>BGP messages against byte layouts written out by hand from RFC 4271, 4760, 6793 and 4724; and which routes go to which neighbour.</summary>
public class BgpWireTests
{
    private static readonly byte[] Marker = [.. Enumerable.Repeat((byte)0xff, 16)];

    private static byte[] Header(int length, byte type) => [.. Marker, (byte)(length >> 8), (byte)length, type];

    [Fact]
    public void An_OPEN_carries_version_AS_hold_time_identifier_and_the_three_capabilities()
    {
        var open = BgpWire.Open(new BgpOpen(65001, 9, IPAddress.Parse("10.0.0.1"), [BgpFamily.IPv4Unicast], FourOctetAs: true, GracefulRestart: (120, false, true)));
        byte[] expected =
        [
            .. Header(51, 1),
            4, 0xfd, 0xe9, 0, 9, 10, 0, 0, 1,
            22, 2, 20,                         // one optional parameter: capabilities, 20 bytes
            1, 4, 0, 1, 0, 1,                  // multiprotocol IPv4 unicast
            65, 4, 0, 0, 0xfd, 0xe9,           // four-octet AS 65001
            64, 6, 0, 120, 0, 1, 1, 0x80,      // graceful restart 120 s, IPv4 unicast with forwarding kept
        ];
        Assert.Equal(expected, open);
        var parsed = BgpWire.ParseOpen(open.AsSpan(BgpWire.HeaderLength));
        Assert.Equal((65001L, 9, "10.0.0.1", true), (parsed.Asn, parsed.HoldTime, parsed.RouterId.ToString(), parsed.FourOctetAs));
        Assert.Equal([BgpFamily.IPv4Unicast], parsed.Families);
        Assert.Equal((120, false, true), parsed.GracefulRestart);
    }

    [Fact]
    public void A_four_octet_AS_goes_in_the_capability_and_AS_TRANS_in_the_header_field()
    {
        var open = BgpWire.Open(new BgpOpen(4200000001, 90, IPAddress.Parse("192.0.2.1"), [BgpFamily.IPv6Unicast], FourOctetAs: true, GracefulRestart: (120, true, true)));
        Assert.Equal(BgpWire.AsTrans, BinaryPrimitives.ReadUInt16BigEndian(open.AsSpan(20)));
        var parsed = BgpWire.ParseOpen(open.AsSpan(BgpWire.HeaderLength));
        Assert.Equal(4200000001L, parsed.Asn);
        Assert.Equal([BgpFamily.IPv6Unicast], parsed.Families);
        Assert.Equal((120, true, true), parsed.GracefulRestart);
        // Restart flag set: the capability's first bit.
        Assert.Equal(0x80, open[^6] & 0x80);
    }

    [Fact]
    public void Bad_headers_and_OPENs_are_refused_with_the_RFCs_codes()
    {
        var keepalive = BgpWire.Keepalive();
        Assert.Equal([.. Header(19, 4)], keepalive);
        Assert.Equal((BgpMessageType.Keepalive, 19), BgpWire.ReadHeader(keepalive));

        var badMarker = (byte[])keepalive.Clone();
        badMarker[3] = 0;
        Assert.Equal((1, 1), Codes(() => BgpWire.ReadHeader(badMarker)));
        Assert.Equal((1, 2), Codes(() => BgpWire.ReadHeader(Header(20, 4))));
        Assert.Equal((1, 2), Codes(() => BgpWire.ReadHeader(Header(4097, 2))));
        Assert.Equal((1, 3), Codes(() => BgpWire.ReadHeader(Header(19, 9))));

        byte[] open = [4, 0xfd, 0xe8, 0, 2, 10, 0, 0, 2, 0];
        Assert.Equal((2, 6), Codes(() => BgpWire.ParseOpen(open)));
        open[0] = 3;
        Assert.Equal((2, 1), Codes(() => BgpWire.ParseOpen(open)));
        byte[] overlong = [4, 0xfd, 0xe8, 0, 9, 10, 0, 0, 2, 4, 2, 2, 1, 4];
        Assert.Equal((2, 0), Codes(() => BgpWire.ParseOpen(overlong)));

        var notification = BgpWire.Notification(6, 2);
        Assert.Equal([.. Header(21, 3), 6, 2], notification);
        Assert.Equal("6/2 (cease: administrative shutdown)", BgpWire.ParseNotification(notification.AsSpan(19)).ToString());
    }

    private static (int, int) Codes(Action action)
    {
        var e = Assert.Throws<BgpProtocolException>(action);
        return (e.Code, e.Subcode);
    }

    [Fact]
    public void An_external_IPv4_UPDATE_has_origin_path_next_hop_and_the_host_route()
    {
        var attributes = new BgpRouteAttributes(65001, Internal: false, FourOctetAs: true, IPAddress.Parse("10.200.0.1"));
        var update = Assert.Single(BgpWire.Updates([IPAddress.Parse("10.250.0.30")], [], attributes));
        byte[] expected =
        [
            .. Header(55, 2),
            0, 0,                                   // no withdrawn routes
            0, 27,                                  // path attributes
            0x40, 1, 1, 0,                          // ORIGIN IGP
            0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9,     // AS_PATH: AS_SEQUENCE of one four-octet AS
            0x40, 3, 4, 10, 200, 0, 1,              // NEXT_HOP
            0x80, 4, 4, 0, 0, 0, 100,               // MULTI_EXIT_DISC 100
            32, 10, 250, 0, 30,                     // 10.250.0.30/32
        ];
        Assert.Equal(expected, update);
        // A VIP taken over from a silent peer: MED 0, so the neighbour prefers it to the silent node's route.
        var taken = Assert.Single(BgpWire.Updates([IPAddress.Parse("10.250.0.30")], [], attributes with { Preferred = true }));
        Assert.Equal([.. expected[..^12], 0x80, 4, 4, 0, 0, 0, 0, .. expected[^5..]], taken);

        var withdraw = Assert.Single(BgpWire.Updates([], [IPAddress.Parse("10.250.0.30")], attributes));
        Assert.Equal([.. Header(28, 2), 0, 5, 32, 10, 250, 0, 30, 0, 0], withdraw);
        Assert.Equal([.. Header(23, 2), 0, 0, 0, 0], BgpWire.EndOfRib(BgpFamily.IPv4Unicast));
    }

    [Fact]
    public void An_internal_IPv6_UPDATE_carries_the_route_in_MP_REACH_NLRI_and_LOCAL_PREF()
    {
        var attributes = new BgpRouteAttributes(65001, Internal: true, FourOctetAs: true, IPAddress.Parse("fd00:200::1"));
        var update = Assert.Single(BgpWire.Updates([IPAddress.Parse("fd00:250::30")], [], attributes));
        byte[] nextHop = IPAddress.Parse("fd00:200::1").GetAddressBytes();
        byte[] vip = IPAddress.Parse("fd00:250::30").GetAddressBytes();
        byte[] attrs =
        [
            0x40, 1, 1, 0,
            0x40, 2, 0,                              // AS_PATH empty: internal
            0x80, 14, 38, 0, 2, 1, 16, .. nextHop, 0, 128, .. vip,
            0x40, 5, 4, 0, 0, 0, 100,                // LOCAL_PREF 100
        ];
        Assert.Equal([.. Header(19 + 4 + attrs.Length, 2), 0, 0, 0, (byte)attrs.Length, .. attrs], update);
        // Taken over from a silent peer: LOCAL_PREF 200.
        var taken = Assert.Single(BgpWire.Updates([IPAddress.Parse("fd00:250::30")], [], attributes with { Preferred = true }));
        Assert.Equal([.. update[..^1], 200], taken);

        var withdraw = Assert.Single(BgpWire.Updates([], [IPAddress.Parse("fd00:250::30")], attributes));
        Assert.Equal([.. Header(19 + 4 + 23, 2), 0, 0, 0, 23, 0x80, 15, 20, 0, 2, 1, 128, .. vip], withdraw);
        Assert.Equal([.. Header(29, 2), 0, 0, 0, 6, 0x80, 15, 3, 0, 2, 1], BgpWire.EndOfRib(BgpFamily.IPv6Unicast));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Many_routes_are_split_into_messages_within_the_size_limit_and_none_is_lost(bool v6)
    {
        var routes = Enumerable.Range(0, 3000)
            .Select(i => v6 ? new IPAddress([0xfd, 0, 2, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (byte)(i >> 8), (byte)i]) : new IPAddress([10, 250, (byte)(i >> 8), (byte)i]))
            .ToList();
        var attributes = new BgpRouteAttributes(65001, Internal: false, FourOctetAs: false, v6 ? IPAddress.Parse("fd00:200::1") : IPAddress.Parse("10.200.0.1"));
        foreach (var (announce, withdraw) in new[] { (routes, new List<IPAddress>()), ([], routes) })
        {
            var messages = BgpWire.Updates(announce, withdraw, attributes);
            Assert.True(messages.Count > 1);
            var seen = new List<IPAddress>();
            foreach (var m in messages)
            {
                Assert.True(m.Length <= BgpWire.MaxMessageLength);
                Assert.Equal((BgpMessageType.Update, m.Length), BgpWire.ReadHeader(m));
                seen.AddRange(HostRoutes(m, v6));
            }
            Assert.Equal(routes, seen);
        }
    }

    /// <summary>The /32 or /128 prefixes of an UPDATE, read with the RFCs' layout: withdrawn, NLRI, and the MP attributes.</summary>
    private static List<IPAddress> HostRoutes(byte[] m, bool v6)
    {
        var body = m.AsSpan(19);
        var withdrawnLength = BinaryPrimitives.ReadUInt16BigEndian(body);
        var attrsLength = BinaryPrimitives.ReadUInt16BigEndian(body[(2 + withdrawnLength)..]);
        var routes = Prefixes(body.Slice(2, withdrawnLength));
        var attrs = body.Slice(4 + withdrawnLength, attrsLength);
        routes.AddRange(Prefixes(body[(4 + withdrawnLength + attrsLength)..]));
        while (attrs.Length > 0)
        {
            var extended = (attrs[0] & 0x10) != 0;
            var length = extended ? BinaryPrimitives.ReadUInt16BigEndian(attrs[2..]) : attrs[2];
            var value = attrs.Slice(extended ? 4 : 3, length);
            if (attrs[1] == 14)
            {
                routes.AddRange(Prefixes(value[(5 + value[3])..]));
            }
            else if (attrs[1] == 15)
            {
                routes.AddRange(Prefixes(value[3..]));
            }
            attrs = attrs[((extended ? 4 : 3) + length)..];
        }
        Assert.All(routes, r => Assert.Equal(v6 ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork, r.AddressFamily));
        return routes;
    }

    private static List<IPAddress> Prefixes(ReadOnlySpan<byte> nlri)
    {
        var list = new List<IPAddress>();
        while (nlri.Length > 0)
        {
            var bytes = (nlri[0] + 7) / 8;
            Assert.True(nlri[0] is 32 or 128);
            list.Add(new IPAddress(nlri.Slice(1, bytes)));
            nlri = nlri[(1 + bytes)..];
        }
        return list;
    }

    private static NodeBgpPeer Peer(string address, params string[] shards) =>
        new() { Address = address, Asn = 65000, MyAsn = 65001, HoldTime = new Duration(TimeSpan.FromSeconds(9)), Shards = [.. shards] };

    [Fact]
    public void A_neighbour_gets_the_active_VIPs_of_the_shards_it_carries_and_nothing_else()
    {
        var spec = new XlbNodeConfigSpec
        {
            NodeName = "n",
            Vips =
            [
                new NodeVip { Address = "192.0.2.1", Role = VipRole.Active, Shard = "east" },
                new NodeVip { Address = "192.0.2.2", Role = VipRole.Standby, Shard = "east" },
                new NodeVip { Address = "2001:db8::1", Role = VipRole.Active, Shard = "east" },
                new NodeVip { Address = "192.0.2.3", Role = VipRole.Active, Shard = "west" },
                new NodeVip { Address = "192.0.2.4", Role = VipRole.Active, Shard = "lan" },
            ],
            BgpPeers = [Peer("10.0.0.1", "east", "west"), Peer("10.0.0.2", "west")],
        };
        var plans = BgpRoutes.Desired(spec);
        Assert.Equal(["192.0.2.1", "192.0.2.3", "2001:db8::1"], plans["10.0.0.1"].Routes.Select(r => r.ToString()).Order());
        Assert.Equal(["192.0.2.3"], plans["10.0.0.2"].Routes.Select(r => r.ToString()));
        // Shards with a neighbour are routed: no gratuitous ARP for them, standby ones included.
        Assert.Equal(["192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1"], BgpRoutes.Routed(spec).Select(r => r.ToString()).Order());

        var advertised = new Dictionary<IPAddress, bool> { [IPAddress.Parse("192.0.2.9")] = false, [IPAddress.Parse("192.0.2.1")] = false };
        var (announce, preferred, withdraw) = BgpRoutes.Diff(advertised, plans["10.0.0.1"].Routes, new HashSet<IPAddress>(), AddressFamily.InterNetwork);
        Assert.Equal(["192.0.2.3"], announce.Select(a => a.ToString()));
        Assert.Empty(preferred);
        Assert.Equal(["192.0.2.9"], withdraw.Select(a => a.ToString()));

        // 192.0.2.1 is taken over: it goes again, preferred; given back, it goes again, plainly.
        var taken = new HashSet<IPAddress> { IPAddress.Parse("192.0.2.1") };
        advertised = new Dictionary<IPAddress, bool> { [IPAddress.Parse("192.0.2.1")] = false, [IPAddress.Parse("192.0.2.3")] = false };
        (announce, preferred, withdraw) = BgpRoutes.Diff(advertised, plans["10.0.0.1"].Routes, taken, AddressFamily.InterNetwork);
        Assert.Empty(announce);
        Assert.Equal(["192.0.2.1"], preferred.Select(a => a.ToString()));
        Assert.Empty(withdraw);
        advertised[IPAddress.Parse("192.0.2.1")] = true;
        (announce, preferred, withdraw) = BgpRoutes.Diff(advertised, plans["10.0.0.1"].Routes, taken, AddressFamily.InterNetwork);
        Assert.Empty(announce.Concat(preferred).Concat(withdraw));
        (announce, preferred, withdraw) = BgpRoutes.Diff(advertised, plans["10.0.0.1"].Routes, new HashSet<IPAddress>(), AddressFamily.InterNetwork);
        Assert.Equal(["192.0.2.1"], announce.Select(a => a.ToString()));
        Assert.Empty(preferred.Concat(withdraw));
    }

    [Fact]
    public void A_session_takes_the_smaller_hold_time_and_refuses_a_neighbour_in_another_AS()
    {
        var peer = Peer("10.0.0.1");
        BgpOpen Theirs(long asn, int hold, bool four = true) => new(asn, hold, IPAddress.Parse("10.0.0.1"), [BgpFamily.IPv4Unicast], four);
        Assert.Equal((9, true), BgpRoutes.Agree(Theirs(65000, 90), peer, 9));
        Assert.Equal((3, false), BgpRoutes.Agree(Theirs(65000, 3, four: false), peer, 9));
        Assert.Equal((0, true), BgpRoutes.Agree(Theirs(65000, 0), peer, 9));
        var e = Assert.Throws<BgpProtocolException>(() => BgpRoutes.Agree(Theirs(65099, 90), peer, 9));
        Assert.Equal((2, 2), (e.Code, e.Subcode));
        Assert.Contains("AS 65099", e.Message, StringComparison.Ordinal);
        var big = peer with { MyAsn = 4200000001 };
        Assert.Equal((2, 7), Codes(() => BgpRoutes.Agree(Theirs(65000, 90, four: false), big, 9)));
    }
}
