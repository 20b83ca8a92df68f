using System.Buffers.Binary;
using System.Text;
using Xlb.Agent.Core;
using Xlb.DataPlane;

namespace Xlb.Tests.Unit;

/// <summary>
/// The agent's reading of an rtnetlink link dump, on messages laid out as the kernel lays them
/// (include/uapi/linux/netlink.h, rtnetlink.h, if_link.h): 4-byte aligned messages and attributes,
/// nested link info, the VLAN id in host order and its protocol in network order.
/// </summary>
public class LinkDumpTests
{
    private static byte[] Attr(int type, ReadOnlySpan<byte> value)
    {
        var a = new byte[(4 + value.Length + 3) & ~3];
        BinaryPrimitives.WriteUInt16LittleEndian(a, (ushort)(4 + value.Length));
        BinaryPrimitives.WriteUInt16LittleEndian(a.AsSpan(2), (ushort)type);
        value.CopyTo(a.AsSpan(4));
        return a;
    }

    private static byte[] Str(int type, string s) => Attr(type, Encoding.ASCII.GetBytes(s + "\0"));

    private static byte[] U32(int type, int v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(b, v);
        return Attr(type, b);
    }

    private static byte[] Message(int type, params byte[][] parts)
    {
        var body = parts.SelectMany(p => p).ToArray();
        var m = new byte[16 + body.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(m, (uint)m.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(4), (ushort)type);
        body.CopyTo(m, 16);
        return m;
    }

    private static byte[] IfInfo(int index)
    {
        var b = new byte[16];
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(4), index);
        return b;
    }

    /// <summary>An RTM_NEWLINK for a VLAN device, its link info nested (with NLA_F_NESTED set, as the kernel sends it).</summary>
    private static byte[] Vlan(int index, string name, int lower, ushort vid, ushort proto, byte last, bool elsewhere = false)
    {
        var id = new byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(id, vid);
        var tpid = new byte[2];
        BinaryPrimitives.WriteUInt16BigEndian(tpid, proto);
        var data = Attr(2 | 0x8000, [.. Attr(1, id), .. Attr(5, tpid)]);
        var linkInfo = Attr(18 | 0x8000, [.. Str(1, "vlan"), .. data]);
        byte[][] parts = [IfInfo(index), Attr(1, [2, 0, 0, 0, 0, last]), Str(3, name), U32(5, lower), linkInfo];
        return Message(16, elsewhere ? [.. parts, U32(37, 1)] : parts);
    }

    private static readonly byte[] Done = Message(3, new byte[4]);

    [Fact]
    public void Vlan_devices_are_read_with_their_parent_id_protocol_and_mac_across_reads()
    {
        var dump = new LinkDump();
        var first = Message(16, IfInfo(1), Attr(1, new byte[6]), Str(3, "lo"));
        var eth = Message(16, IfInfo(2), Attr(1, [2, 0, 0, 0, 0, 2]), Str(3, "eth0"), Attr(18, Str(1, "veth")), U32(5, 9), U32(37, 0));
        Assert.False(dump.Feed([.. first, .. eth]));
        Assert.False(dump.Feed([.. Vlan(7, "eth0.100", 2, 100, XlbAbi.Vlan8021Q, 7), .. Vlan(5, "eth0.200", 2, 200, XlbAbi.Vlan8021Ad, 5)]));
        Assert.False(dump.Feed(Vlan(8, "moved", 3, 300, XlbAbi.Vlan8021Q, 8, elsewhere: true)));
        Assert.True(dump.Feed(Done));

        Assert.Equal(["lo", "eth0", "eth0.100", "eth0.200", "moved"], dump.Links.Select(l => l.Name));
        Assert.Equal((2, "veth", 9, true), (dump.Links[1].Ifindex, dump.Links[1].Kind, dump.Links[1].Lower, dump.Links[1].LowerElsewhere));
        Assert.Null(dump.Links[0].Kind);

        var vlans = LinkDump.Vlans(dump.Links, out var dropped);
        Assert.Equal(0, dropped);
        // By ifindex; a VLAN whose parent is in another namespace cannot be reached through it.
        Assert.Equal(["eth0.200", "eth0.100"], vlans.Select(v => v.Name));
        Assert.Equal((5, 2, XlbAbi.Vlan8021Ad, (ushort)200), (vlans[0].Ifindex, vlans[0].LowerIfindex, vlans[0].Protocol, vlans[0].Vid));
        Assert.Equal((7, 2, XlbAbi.Vlan8021Q, (ushort)100), (vlans[1].Ifindex, vlans[1].LowerIfindex, vlans[1].Protocol, vlans[1].Vid));
        Assert.Equal(new byte[] { 2, 0, 0, 0, 0, 7 }, vlans[1].Mac);
    }

    [Fact]
    public void An_error_answer_throws_with_its_errno_and_a_bad_length_is_refused()
    {
        var error = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(error, -1);
        var e = Assert.Throws<InvalidOperationException>(() => new LinkDump().Feed(Message(2, error)));
        Assert.Contains("errno 1", e.Message);
        // An acknowledgement (error 0) is not a failure.
        Assert.False(new LinkDump().Feed(Message(2, new byte[4])));

        var bad = Message(16, IfInfo(1));
        BinaryPrimitives.WriteUInt32LittleEndian(bad, 4096);
        Assert.Throws<FormatException>(() => new LinkDump().Feed(bad));
    }

    [Fact]
    public void No_more_vlans_than_the_data_plane_holds_are_taken_the_rest_are_counted()
    {
        var links = Enumerable.Range(1, XlbAbi.MaxVlans + 3)
            .Select(i => new LinkInfo(i + 10, $"v{i}", [2, 0, 0, 0, 0, 1], "vlan", 2, false, (ushort)(i % 4095), XlbAbi.Vlan8021Q))
            .Append(new LinkInfo(99999, "odd", [2, 0, 0, 0, 0, 1], "vlan", 2, false, 5, 0x9100))
            .Reverse();
        var vlans = LinkDump.Vlans(links, out var dropped);
        Assert.Equal(XlbAbi.MaxVlans, vlans.Count);
        Assert.Equal(3, dropped);
        Assert.Equal(11, vlans[0].Ifindex);
        Assert.DoesNotContain(vlans, v => v.Name == "odd");
    }
}
