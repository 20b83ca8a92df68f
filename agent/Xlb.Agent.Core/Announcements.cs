using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Xlb.Crds;

namespace Xlb.Agent.Core;

/// <summary>
/// L2 announcements when this node takes a VIP: a gratuitous ARP (RFC 5227 announcement) for
/// IPv4 and an unsolicited neighbour advertisement (RFC 4861 7.2.6) for IPv6, so switches and
/// neighbours move the VIP to this node's MAC at once instead of when their entries age out.
/// </summary>
public static class Announcements
{
    /// <summary>
    /// The VIPs <paramref name="after"/> holds as active that <paramref name="before"/> did not
    /// (all of them when nothing was applied before), in the order of <paramref name="after"/>.
    /// </summary>
    public static IReadOnlyList<IPAddress> Taken(XlbNodeConfigSpec? before, XlbNodeConfigSpec after)
    {
        var held = before?.Vips.Where(v => v.Role == VipRole.Active).Select(v => IPAddress.Parse(v.Address)).ToHashSet() ?? [];
        return [.. after.Vips.Where(v => v.Role == VipRole.Active).Select(v => IPAddress.Parse(v.Address)).Where(a => !held.Contains(a)).Distinct()];
    }

    /// <summary>The announcement frame for <paramref name="vip"/> from an interface with MAC <paramref name="mac"/>.</summary>
    public static byte[] Frame(ReadOnlySpan<byte> mac, IPAddress vip) =>
        vip.AddressFamily == AddressFamily.InterNetwork ? GratuitousArp(mac, vip) : UnsolicitedAdvert(mac, vip);

    /// <summary>
    /// An ARP announcement: a broadcast request whose sender and target address are both the
    /// VIP (target MAC zero), which every host with an entry for the VIP takes as an update.
    /// </summary>
    public static byte[] GratuitousArp(ReadOnlySpan<byte> mac, IPAddress vip)
    {
        var f = ArpRequest(mac, vip);
        vip.GetAddressBytes().CopyTo(f, 28);
        return f;
    }

    /// <summary>
    /// An ARP probe (RFC 5227 2.1.1): a broadcast request for <paramref name="vip"/> with sender
    /// address 0.0.0.0, so the host that holds it answers and nobody's cache takes this node's MAC
    /// for any address (<see cref="ResolutionWitness"/>).
    /// </summary>
    public static byte[] ArpProbe(ReadOnlySpan<byte> mac, IPAddress vip) => ArpRequest(mac, vip);

    /// <summary>A broadcast ARP request from <paramref name="mac"/> for <paramref name="vip"/>, sender address 0.0.0.0.</summary>
    private static byte[] ArpRequest(ReadOnlySpan<byte> mac, IPAddress vip)
    {
        var f = new byte[42];
        f.AsSpan(0, 6).Fill(0xff);
        mac.CopyTo(f.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x0806);
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(14), 1);      // Ethernet
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(16), 0x0800); // IPv4
        f[18] = 6;
        f[19] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(20), 1);      // request
        mac.CopyTo(f.AsSpan(22));
        vip.GetAddressBytes().CopyTo(f, 38);
        return f;
    }

    /// <summary>
    /// An unsolicited neighbour advertisement to all nodes (ff02::1): flag Override, not
    /// Solicited, with the target link-layer address option; hop limit 255 as RFC 4861 demands.
    /// </summary>
    public static byte[] UnsolicitedAdvert(ReadOnlySpan<byte> mac, IPAddress vip)
    {
        var f = NdFrame([0x33, 0x33, 0, 0, 0, 1], mac, vip.GetAddressBytes(), IPAddress.Parse("ff02::1").GetAddressBytes());
        f[IcmpAt] = 136;       // neighbour advertisement
        f[IcmpAt + 4] = 0x20;  // Override
        vip.GetAddressBytes().CopyTo(f, IcmpAt + 8);
        f[IcmpAt + 24] = 2;    // target link-layer address option, one 8-byte unit
        f[IcmpAt + 25] = 1;
        mac.CopyTo(f.AsSpan(IcmpAt + 26));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(IcmpAt + 2), Icmp6Checksum(f.AsSpan(22, 16), f.AsSpan(38, 16), f.AsSpan(IcmpAt)));
        return f;
    }

    /// <summary>
    /// A neighbour solicitation for <paramref name="vip"/> (RFC 4861 4.3) from this node's
    /// link-local address <paramref name="source"/> on the interface, to the VIP's solicited-node
    /// multicast group, with the source link-layer address option: the form a holder of the VIP
    /// answers with a solicited advertisement (<see cref="ResolutionWitness"/>). Not the duplicate
    /// address detection form (unspecified source), which the program leaves to the kernel.
    /// </summary>
    public static byte[] NeighbourProbe(ReadOnlySpan<byte> mac, IPAddress source, IPAddress vip)
    {
        var target = vip.GetAddressBytes();
        var f = NdFrame([0x33, 0x33, 0xff, target[13], target[14], target[15]], mac, source.GetAddressBytes(),
            [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, target[13], target[14], target[15]]);
        f[IcmpAt] = 135;       // neighbour solicitation
        target.CopyTo(f, IcmpAt + 8);
        f[IcmpAt + 24] = 1;    // source link-layer address option, one 8-byte unit
        f[IcmpAt + 25] = 1;
        mac.CopyTo(f.AsSpan(IcmpAt + 26));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(IcmpAt + 2), Icmp6Checksum(f.AsSpan(22, 16), f.AsSpan(38, 16), f.AsSpan(IcmpAt)));
        return f;
    }

    /// <summary>Where the ICMPv6 message of an <see cref="NdFrame"/> starts.</summary>
    private const int IcmpAt = 14 + 40;

    /// <summary>
    /// A frame for a neighbour discovery message of 32 bytes (one link-layer option): the Ethernet
    /// and IPv6 headers written (hop limit 255, as RFC 4861 demands), the message left zero.
    /// </summary>
    private static byte[] NdFrame(ReadOnlySpan<byte> dstMac, ReadOnlySpan<byte> srcMac, ReadOnlySpan<byte> src, ReadOnlySpan<byte> dst)
    {
        var f = new byte[IcmpAt + 32];
        dstMac.CopyTo(f);
        srcMac.CopyTo(f.AsSpan(6));
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(12), 0x86dd);
        f[14] = 0x60;
        BinaryPrimitives.WriteUInt16BigEndian(f.AsSpan(18), 32);
        f[20] = 58;  // ICMPv6
        f[21] = 255; // hop limit
        src.CopyTo(f.AsSpan(22));
        dst.CopyTo(f.AsSpan(38));
        return f;
    }

    /// <summary>The ICMPv6 checksum (RFC 4443 2.3) over the pseudo-header and the message.</summary>
    private static ushort Icmp6Checksum(ReadOnlySpan<byte> src, ReadOnlySpan<byte> dst, ReadOnlySpan<byte> message)
    {
        uint sum = 0;
        static uint Words(ReadOnlySpan<byte> b)
        {
            uint s = 0;
            for (var i = 0; i + 1 < b.Length; i += 2)
            {
                s += BinaryPrimitives.ReadUInt16BigEndian(b[i..]);
            }
            return b.Length % 2 == 1 ? s + ((uint)b[^1] << 8) : s;
        }
        sum += Words(src) + Words(dst) + (uint)message.Length + 58 + Words(message);
        while (sum >> 16 != 0)
        {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        return (ushort)~sum;
    }
}
