using System.Buffers.Binary;
using System.Net;

namespace Xlb.Cli.Testbed;

/// <summary>
/// Builds and reads Ethernet/IPv4|IPv6/TCP|UDP packets, with checksums computed here from scratch
/// (RFC 791, 793, 768, 8200): an implementation independent of the XDP program's incremental
/// updates. The family follows <see cref="Src"/>.
/// </summary>
public sealed record Packet
{
    public byte[] DstMac { get; init; } = [2, 0, 0, 0, 0, 2];
    public byte[] SrcMac { get; init; } = [2, 0, 0, 0, 0, 1];
    public required IPAddress Src { get; init; }
    public required IPAddress Dst { get; init; }
    public byte Protocol { get; init; } = 6;
    public ushort SrcPort { get; init; }
    public ushort DstPort { get; init; }
    public byte TcpFlags { get; init; } = Syn;
    public byte Ttl { get; init; } = 64;
    /// <summary>IPv4: the DF bit (set, as TCP sends with path MTU discovery).</summary>
    public bool DontFragment { get; init; } = true;
    public byte[] Payload { get; init; } = [];
    /// <summary>IPv4 UDP may be sent without a checksum (0).</summary>
    public bool UdpNoChecksum { get; init; }

    /// <summary>
    /// IPv6 extension headers between the fixed header and L4, in order: the header type and its
    /// bytes (a multiple of 8; the next-header and length bytes are filled in).
    /// </summary>
    public IReadOnlyList<(byte Type, byte[] Bytes)> Extensions { get; init; } = [];

    public bool IsV6 => Src.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6;

    public const byte Fin = 0x01;
    public const byte Syn = 0x02;
    public const byte Rst = 0x04;
    public const byte Ack = 0x10;

    public byte[] Build()
    {
        var l4Len = (Protocol == 6 ? 20 : 8) + Payload.Length;
        var extLen = Extensions.Sum(e => e.Bytes.Length);
        var ipLen = IsV6 ? 40 + extLen : 20;
        var p = new byte[14 + ipLen + l4Len];
        DstMac.CopyTo(p, 0);
        SrcMac.CopyTo(p, 6);
        var ip = p.AsSpan(14, ipLen);
        if (IsV6)
        {
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(12), 0x86dd);
            BinaryPrimitives.WriteUInt32BigEndian(ip, 0x6000_0000);
            BinaryPrimitives.WriteUInt16BigEndian(ip[4..], (ushort)(extLen + l4Len));
            ip[6] = Extensions.Count > 0 ? Extensions[0].Type : Protocol;
            ip[7] = Ttl;
            Src.GetAddressBytes().CopyTo(ip[8..]);
            Dst.GetAddressBytes().CopyTo(ip[24..]);
            var at = 40;
            for (var i = 0; i < Extensions.Count; i++)
            {
                var e = Extensions[i].Bytes;
                e.CopyTo(ip[at..]);
                ip[at] = i + 1 < Extensions.Count ? Extensions[i + 1].Type : Protocol;
                ip[at + 1] = (byte)(e.Length / 8 - 1);
                at += e.Length;
            }
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(12), 0x0800);
            ip[0] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + l4Len));
            BinaryPrimitives.WriteUInt16BigEndian(ip[4..], 0x1234);
            BinaryPrimitives.WriteUInt16BigEndian(ip[6..], DontFragment ? (ushort)0x4000 : (ushort)0);
            ip[8] = Ttl;
            ip[9] = Protocol;
            Src.GetAddressBytes().CopyTo(ip[12..]);
            Dst.GetAddressBytes().CopyTo(ip[16..]);
            BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Checksum(ip));
        }
        var l4 = p.AsSpan(14 + ipLen);
        BinaryPrimitives.WriteUInt16BigEndian(l4, SrcPort);
        BinaryPrimitives.WriteUInt16BigEndian(l4[2..], DstPort);
        if (Protocol == 6)
        {
            BinaryPrimitives.WriteUInt32BigEndian(l4[4..], 1000);
            l4[12] = 0x50;
            l4[13] = TcpFlags;
            BinaryPrimitives.WriteUInt16BigEndian(l4[14..], 65535);
            Payload.CopyTo(l4[20..]);
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(l4[4..], (ushort)l4Len);
            Payload.CopyTo(l4[8..]);
        }
        if (!(Protocol == 17 && UdpNoChecksum))
        {
            var sum = L4Checksum(p);
            BinaryPrimitives.WriteUInt16BigEndian(l4[(Protocol == 6 ? 16 : 6)..], Protocol == 17 && sum == 0 ? (ushort)0xffff : sum);
        }
        return p;
    }

    private static bool IsIpv6Frame(ReadOnlySpan<byte> p) => BinaryPrimitives.ReadUInt16BigEndian(p[12..]) == 0x86dd;

    /// <summary>Where L3 starts, where L4 starts, and the L4 protocol, for IPv4 or IPv6 (extension headers walked).</summary>
    private static (int L4, byte Proto) Layout(ReadOnlySpan<byte> p)
    {
        if (!IsIpv6Frame(p))
        {
            return (14 + (p[14] & 0xf) * 4, p[14 + 9]);
        }
        var next = p[14 + 6];
        var at = 14 + 40;
        while (next is 0 or 43 or 60 or 44)
        {
            var len = next == 44 ? 8 : (p[at + 1] + 1) * 8;
            next = p[at];
            at += len;
        }
        return (at, next);
    }

    public static Packet Parse(byte[] p)
    {
        var v6 = IsIpv6Frame(p);
        var ip = p.AsSpan(14);
        var (l4At, proto) = Layout(p);
        var l4 = p.AsSpan(l4At);
        return new Packet
        {
            DstMac = p[..6],
            SrcMac = p[6..12],
            Src = v6 ? new IPAddress(ip[8..24]) : new IPAddress(ip[12..16]),
            Dst = v6 ? new IPAddress(ip[24..40]) : new IPAddress(ip[16..20]),
            Protocol = proto,
            Ttl = v6 ? ip[7] : ip[8],
            SrcPort = BinaryPrimitives.ReadUInt16BigEndian(l4),
            DstPort = BinaryPrimitives.ReadUInt16BigEndian(l4[2..]),
            TcpFlags = proto == 6 ? l4[13] : (byte)0,
            Payload = l4[(proto == 6 ? (l4[12] >> 4) * 4 : 8)..].ToArray(),
            UdpNoChecksum = proto == 17 && BinaryPrimitives.ReadUInt16BigEndian(l4[6..]) == 0,
        };
    }

    /// <summary>The frame with a VLAN tag (TPID <paramref name="tpid"/>, VLAN id <paramref name="vid"/>) after its MACs.</summary>
    public static byte[] Tagged(ReadOnlySpan<byte> frame, ushort tpid, ushort vid)
    {
        var p = new byte[frame.Length + 4];
        frame[..12].CopyTo(p);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(12), tpid);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(14), vid);
        frame[12..].CopyTo(p.AsSpan(16));
        return p;
    }

    /// <summary>The TPID and VLAN id of a tagged frame (802.1Q or 802.1ad); null when it has no tag.</summary>
    public static (ushort Tpid, ushort Vid)? TagOf(ReadOnlySpan<byte> frame)
    {
        var tpid = BinaryPrimitives.ReadUInt16BigEndian(frame[12..]);
        return tpid is 0x8100 or 0x88a8 ? (tpid, (ushort)(BinaryPrimitives.ReadUInt16BigEndian(frame[14..]) & 0x0fff)) : null;
    }

    /// <summary>The frame without its (one) VLAN tag; the frame itself when it has none.</summary>
    public static byte[] Untagged(byte[] frame) => TagOf(frame) is null ? frame : [.. frame.AsSpan(0, 12), .. frame.AsSpan(16)];

    /// <summary>True when the IPv4 header checksum (IPv6 has none) and the TCP/UDP checksum both verify.</summary>
    public static bool ChecksumsValid(byte[] p)
    {
        var v6 = IsIpv6Frame(p);
        if (!v6 && Checksum(p.AsSpan(14, (p[14] & 0xf) * 4)) != 0)
        {
            return false;
        }
        var (l4At, proto) = Layout(p);
        if (!v6 && proto == 17 && BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(l4At + 6)) == 0)
        {
            return true;
        }
        return L4Checksum(p) == 0;
    }

    /// <summary>The L4 checksum over pseudo-header and segment, as stored (0 when the stored one is right).</summary>
    private static ushort L4Checksum(byte[] p)
    {
        var v6 = IsIpv6Frame(p);
        var (l4At, proto) = Layout(p);
        var l3End = v6 ? 14 + 40 + BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(18)) : 14 + BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(16));
        var l4Len = l3End - l4At;
        // Pseudo-header: RFC 793 (source, destination, zero, protocol, length) or RFC 8200 8.1.
        var addrLen = v6 ? 32 : 8;
        var pseudo = new byte[addrLen + (v6 ? 8 : 4) + l4Len];
        p.AsSpan(v6 ? 14 + 8 : 14 + 12, addrLen).CopyTo(pseudo);
        if (v6)
        {
            BinaryPrimitives.WriteUInt32BigEndian(pseudo.AsSpan(32), (uint)l4Len);
            pseudo[39] = proto;
        }
        else
        {
            pseudo[9] = proto;
            BinaryPrimitives.WriteUInt16BigEndian(pseudo.AsSpan(10), (ushort)l4Len);
        }
        p.AsSpan(l4At, l4Len).CopyTo(pseudo.AsSpan(addrLen + (v6 ? 8 : 4)));
        return Checksum(pseudo);
    }

    /// <summary>An Ethernet broadcast ARP request (RFC 826) from <paramref name="senderMac"/>/<paramref name="sender"/> for <paramref name="target"/>.</summary>
    public static byte[] ArpRequest(ReadOnlySpan<byte> senderMac, IPAddress sender, IPAddress target)
    {
        var p = new byte[42];
        p.AsSpan(0, 6).Fill(0xff);
        senderMac.CopyTo(p.AsSpan(6));
        (p[12], p[13]) = (0x08, 0x06);
        byte[] head = [0, 1, 0x08, 0x00, 6, 4, 0, 1]; // Ethernet, IPv4, request
        head.CopyTo(p, 14);
        senderMac.CopyTo(p.AsSpan(22));
        sender.GetAddressBytes().CopyTo(p, 28);
        target.GetAddressBytes().CopyTo(p, 38);
        return p;
    }

    /// <summary>
    /// A neighbour solicitation (RFC 4861 4.3) for <paramref name="target"/>, to its
    /// solicited-node group, with the sender's link-layer address option and a valid checksum.
    /// </summary>
    public static byte[] NeighbourSolicitation(ReadOnlySpan<byte> senderMac, IPAddress sender, IPAddress target, byte hopLimit = 255)
    {
        var t = target.GetAddressBytes();
        var p = new byte[14 + 40 + 32];
        byte[] group = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
        group.CopyTo(p, 0);
        senderMac.CopyTo(p.AsSpan(6));
        (p[12], p[13], p[14]) = (0x86, 0xdd, 0x60);
        p[19] = 32;
        (p[20], p[21]) = (58, hopLimit);
        sender.GetAddressBytes().CopyTo(p, 22);
        IPAddress.Parse("ff02::1:ff00:0").GetAddressBytes().CopyTo(p, 38);
        t.AsSpan(13).CopyTo(p.AsSpan(38 + 13));
        p[54] = 135;
        t.CopyTo(p, 62);
        (p[78], p[79]) = (1, 1); // source link-layer address option, 8 bytes
        senderMac.CopyTo(p.AsSpan(80));
        SetIcmp6Checksum(p);
        return p;
    }

    /// <summary>Writes the ICMPv6 checksum of a frame (over the pseudo-header, as for TCP and UDP).</summary>
    public static void SetIcmp6Checksum(byte[] p)
    {
        var at = Layout(p).L4 + 2;
        p.AsSpan(at, 2).Clear();
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(at), L4Checksum(p));
    }

    public static ushort Checksum(ReadOnlySpan<byte> data)
    {
        uint sum = 0;
        for (var i = 0; i + 1 < data.Length; i += 2)
        {
            sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        }
        if (data.Length % 2 == 1)
        {
            sum += (uint)data[^1] << 8;
        }
        while (sum >> 16 != 0)
        {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        return (ushort)~sum;
    }
}
