using System.Buffers.Binary;
using System.Net;

namespace Xlb.Cli.Testbed;

/// <summary>
/// Builds and reads Ethernet/IPv4/TCP|UDP packets, with checksums computed here from scratch
/// (RFC 791, 793, 768): an implementation independent of the XDP program's incremental updates.
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
    public byte[] Payload { get; init; } = [];
    /// <summary>IPv4 UDP may be sent without a checksum (0).</summary>
    public bool UdpNoChecksum { get; init; }

    public const byte Fin = 0x01;
    public const byte Syn = 0x02;
    public const byte Rst = 0x04;
    public const byte Ack = 0x10;

    public byte[] Build()
    {
        var l4Len = (Protocol == 6 ? 20 : 8) + Payload.Length;
        var p = new byte[14 + 20 + l4Len];
        DstMac.CopyTo(p, 0);
        SrcMac.CopyTo(p, 6);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(12), 0x0800);
        var ip = p.AsSpan(14, 20);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(20 + l4Len));
        BinaryPrimitives.WriteUInt16BigEndian(ip[4..], 0x1234);
        BinaryPrimitives.WriteUInt16BigEndian(ip[6..], 0x4000);
        ip[8] = Ttl;
        ip[9] = Protocol;
        Src.GetAddressBytes().CopyTo(ip[12..]);
        Dst.GetAddressBytes().CopyTo(ip[16..]);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Checksum(ip));
        var l4 = p.AsSpan(34);
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

    public static Packet Parse(byte[] p)
    {
        var ip = p.AsSpan(14);
        var ihl = (ip[0] & 0xf) * 4;
        var l4 = ip[ihl..];
        return new Packet
        {
            DstMac = p[..6],
            SrcMac = p[6..12],
            Src = new IPAddress(ip[12..16]),
            Dst = new IPAddress(ip[16..20]),
            Protocol = ip[9],
            Ttl = ip[8],
            SrcPort = BinaryPrimitives.ReadUInt16BigEndian(l4),
            DstPort = BinaryPrimitives.ReadUInt16BigEndian(l4[2..]),
            TcpFlags = ip[9] == 6 ? l4[13] : (byte)0,
            Payload = l4[(ip[9] == 6 ? (l4[12] >> 4) * 4 : 8)..].ToArray(),
            UdpNoChecksum = ip[9] == 17 && BinaryPrimitives.ReadUInt16BigEndian(l4[6..]) == 0,
        };
    }

    /// <summary>True when the IPv4 header checksum and the TCP/UDP checksum both verify.</summary>
    public static bool ChecksumsValid(byte[] p)
    {
        var ihl = (p[14] & 0xf) * 4;
        if (Checksum(p.AsSpan(14, ihl)) != 0)
        {
            return false;
        }
        var proto = p[14 + 9];
        var l4 = p.AsSpan(14 + ihl);
        if (proto == 17 && BinaryPrimitives.ReadUInt16BigEndian(l4[6..]) == 0)
        {
            return true;
        }
        return L4Checksum(p) == 0;
    }

    /// <summary>The L4 checksum over pseudo-header and segment, as stored (0 when the stored one is right).</summary>
    private static ushort L4Checksum(byte[] p)
    {
        var ihl = (p[14] & 0xf) * 4;
        var totalLen = BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(16));
        var l4Len = totalLen - ihl;
        var pseudo = new byte[12 + l4Len];
        p.AsSpan(14 + 12, 8).CopyTo(pseudo);
        pseudo[9] = p[14 + 9];
        BinaryPrimitives.WriteUInt16BigEndian(pseudo.AsSpan(10), (ushort)l4Len);
        p.AsSpan(14 + ihl, l4Len).CopyTo(pseudo.AsSpan(12));
        return Checksum(pseudo);
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
