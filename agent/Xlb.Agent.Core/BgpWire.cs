using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Xlb.Agent.Core;

/// <summary>The four BGP-4 message types (RFC 4271 4.1).</summary>
public enum BgpMessageType : byte
{
    Open = 1,
    Update = 2,
    Notification = 3,
    Keepalive = 4,
}

/// <summary>An address family and sub-family (RFC 4760): IPv4 unicast is 1/1, IPv6 unicast 2/1.</summary>
public readonly record struct BgpFamily(ushort Afi, byte Safi)
{
    public static readonly BgpFamily IPv4Unicast = new(1, 1);
    public static readonly BgpFamily IPv6Unicast = new(2, 1);

    public static BgpFamily Of(AddressFamily family) => family == AddressFamily.InterNetwork ? IPv4Unicast : IPv6Unicast;
}

/// <summary>
/// An OPEN message (RFC 4271 4.2) with the capabilities XLB speaks: multiprotocol (RFC 4760),
/// four-octet AS numbers (RFC 6793) and graceful restart (RFC 4724, as the restarting speaker).
/// </summary>
/// <param name="Asn">The speaker's AS number (four octets when the capability is there).</param>
/// <param name="HoldTime">Seconds; 0 or at least 3.</param>
/// <param name="RouterId">The BGP identifier, an IPv4 address.</param>
/// <param name="Families">The families of the multiprotocol capability.</param>
/// <param name="FourOctetAs">Whether the four-octet AS capability is there.</param>
/// <param name="GracefulRestart">The graceful-restart capability: restart time in seconds, whether this is a restart (R), and whether forwarding state was kept (F, for every family); null: absent.</param>
public sealed record BgpOpen(long Asn, int HoldTime, IPAddress RouterId, IReadOnlyList<BgpFamily> Families, bool FourOctetAs,
    (int RestartTime, bool Restarting, bool ForwardingKept)? GracefulRestart = null);

/// <summary>A NOTIFICATION (RFC 4271 4.5): why a session ends.</summary>
public sealed record BgpNotification(byte Code, byte Subcode, byte[] Data)
{
    public override string ToString() => $"{Code}/{Subcode} ({Describe(Code, Subcode)})";

    /// <summary>The RFC's names for the codes XLB sends or is likely to get.</summary>
    public static string Describe(byte code, byte subcode) => (code, subcode) switch
    {
        (1, _) => "message header error",
        (2, 2) => "bad peer AS",
        (2, 3) => "bad BGP identifier",
        (2, 6) => "unacceptable hold time",
        (2, 7) => "unsupported capability",
        (2, _) => "OPEN message error",
        (3, _) => "UPDATE message error",
        (4, _) => "hold timer expired",
        (5, _) => "finite state machine error",
        (6, 2) => "cease: administrative shutdown",
        (6, 3) => "cease: peer de-configured",
        (6, 4) => "cease: administrative reset",
        (6, 5) => "cease: connection rejected",
        (6, 7) => "cease: connection collision resolution",
        (6, _) => "cease",
        _ => "unknown",
    };
}

/// <summary>A message this side cannot accept: the session ends with this NOTIFICATION.</summary>
public sealed class BgpProtocolException(byte code, byte subcode, string message) : Exception(message)
{
    public byte Code { get; } = code;
    public byte Subcode { get; } = subcode;
}

/// <summary>What every route this speaker advertises carries.</summary>
/// <param name="MyAsn">Our AS number.</param>
/// <param name="Internal">Internal BGP (the neighbour is in our AS): no AS of ours in the path, LOCAL_PREF 100.</param>
/// <param name="FourOctetAs">Both sides have the four-octet AS capability: AS_PATH carries four-octet numbers.</param>
/// <param name="NextHop">Where the neighbour sends the traffic: our address on the session.</param>
/// <param name="Preferred">
/// Routes of VIPs this node took over from a silent peer: LOCAL_PREF 200 instead of 100 (internal
/// BGP), MULTI_EXIT_DISC 0 instead of 100 (external). The neighbour then prefers them to the silent
/// node's routes, which it keeps until that session's hold time passes (and, as a graceful-restart
/// helper, longer): a hung node's traffic moves when its VIPs are taken, not when its session ends.
/// </param>
public sealed record BgpRouteAttributes(long MyAsn, bool Internal, bool FourOctetAs, IPAddress NextHop, bool Preferred = false);

/// <summary>
/// BGP-4 messages to and from bytes (RFC 4271, 4760, 6793, 4724). Pure: the speaker's sockets
/// live in the agent. Only what an announcer needs is parsed from the neighbour: OPEN, the
/// header and NOTIFICATION; its UPDATEs are read past (XLB takes no routes).
/// </summary>
public static class BgpWire
{
    public const int HeaderLength = 19;
    public const int MaxMessageLength = 4096;
    /// <summary>The AS number an OPEN carries for a four-octet AS (RFC 6793).</summary>
    public const ushort AsTrans = 23456;

    public static byte[] Keepalive() => Message(BgpMessageType.Keepalive, []);

    public static byte[] Notification(byte code, byte subcode, ReadOnlySpan<byte> data = default) =>
        Message(BgpMessageType.Notification, [code, subcode, .. data]);

    public static byte[] Open(BgpOpen open)
    {
        var caps = new List<byte>();
        foreach (var family in open.Families)
        {
            caps.AddRange([1, 4, (byte)(family.Afi >> 8), (byte)family.Afi, 0, family.Safi]);
        }
        if (open.FourOctetAs)
        {
            caps.AddRange([65, 4, (byte)(open.Asn >> 24), (byte)(open.Asn >> 16), (byte)(open.Asn >> 8), (byte)open.Asn]);
        }
        if (open.GracefulRestart is { } gr)
        {
            var flagsAndTime = (gr.Restarting ? 0x8000 : 0) | (gr.RestartTime & 0x0fff);
            caps.AddRange([64, (byte)(2 + 4 * open.Families.Count), (byte)(flagsAndTime >> 8), (byte)flagsAndTime]);
            foreach (var family in open.Families)
            {
                caps.AddRange([(byte)(family.Afi >> 8), (byte)family.Afi, family.Safi, (byte)(gr.ForwardingKept ? 0x80 : 0)]);
            }
        }
        if (caps.Count > 253)
        {
            throw new ArgumentException("too many capabilities for one optional parameter", nameof(open));
        }
        var body = new List<byte> { 4 };
        var asn2 = open.Asn > ushort.MaxValue ? AsTrans : (ushort)open.Asn;
        body.AddRange([(byte)(asn2 >> 8), (byte)asn2, (byte)(open.HoldTime >> 8), (byte)open.HoldTime]);
        body.AddRange(V4Bytes(open.RouterId));
        // One optional parameter of type 2 (capabilities) holding them all (RFC 5492).
        body.AddRange(caps.Count == 0 ? [0] : [(byte)(caps.Count + 2), 2, (byte)caps.Count, .. caps]);
        return Message(BgpMessageType.Open, [.. body]);
    }

    /// <summary>The header's type and length; a header that is not one is a protocol error (RFC 4271 6.1).</summary>
    public static (BgpMessageType Type, int Length) ReadHeader(ReadOnlySpan<byte> header)
    {
        for (var i = 0; i < 16; i++)
        {
            if (header[i] != 0xff)
            {
                throw new BgpProtocolException(1, 1, "the message header's marker is not all ones");
            }
        }
        var length = BinaryPrimitives.ReadUInt16BigEndian(header[16..]);
        var type = (BgpMessageType)header[18];
        var least = type switch
        {
            BgpMessageType.Open => 29,
            BgpMessageType.Update => 23,
            BgpMessageType.Notification => 21,
            BgpMessageType.Keepalive => 19,
            _ => throw new BgpProtocolException(1, 3, $"message type {header[18]} is not one of BGP-4's"),
        };
        if (length < least || length > MaxMessageLength || type == BgpMessageType.Keepalive && length != 19)
        {
            throw new BgpProtocolException(1, 2, $"a {type} message of {length} bytes");
        }
        return (type, length);
    }

    /// <summary>An OPEN's body (after the header).</summary>
    public static BgpOpen ParseOpen(ReadOnlySpan<byte> body)
    {
        if (body.Length < 10)
        {
            throw new BgpProtocolException(1, 2, "OPEN too short");
        }
        if (body[0] != 4)
        {
            throw new BgpProtocolException(2, 1, $"BGP version {body[0]}; this speaker knows version 4");
        }
        long asn = BinaryPrimitives.ReadUInt16BigEndian(body[1..]);
        var hold = BinaryPrimitives.ReadUInt16BigEndian(body[3..]);
        if (hold is 1 or 2)
        {
            throw new BgpProtocolException(2, 6, $"hold time {hold} s (it must be 0 or at least 3)");
        }
        var routerId = new IPAddress(body.Slice(5, 4));
        var optLength = body[9];
        if (10 + optLength != body.Length)
        {
            throw new BgpProtocolException(2, 0, "the optional parameters' length does not match the message");
        }
        var families = new List<BgpFamily>();
        var fourOctet = false;
        (int, bool, bool)? gr = null;
        var opts = body[10..];
        while (opts.Length > 0)
        {
            if (opts.Length < 2 || opts.Length < 2 + opts[1])
            {
                throw new BgpProtocolException(2, 0, "an optional parameter runs past the message");
            }
            var type = opts[0];
            var value = opts.Slice(2, opts[1]);
            opts = opts[(2 + opts[1])..];
            if (type != 2)
            {
                continue; // not capabilities (authentication, RFC 4271's only other, is obsolete)
            }
            while (value.Length > 0)
            {
                if (value.Length < 2 || value.Length < 2 + value[1])
                {
                    throw new BgpProtocolException(2, 0, "a capability runs past its parameter");
                }
                var code = value[0];
                var cap = value.Slice(2, value[1]);
                value = value[(2 + value[1])..];
                switch (code)
                {
                    case 1 when cap.Length == 4:
                        families.Add(new BgpFamily(BinaryPrimitives.ReadUInt16BigEndian(cap), cap[3]));
                        break;
                    case 65 when cap.Length == 4:
                        fourOctet = true;
                        asn = BinaryPrimitives.ReadUInt32BigEndian(cap);
                        break;
                    case 64 when cap.Length >= 2:
                        var word = BinaryPrimitives.ReadUInt16BigEndian(cap);
                        gr = (word & 0x0fff, (word & 0x8000) != 0, cap.Length >= 6 && (cap[5] & 0x80) != 0);
                        break;
                }
            }
        }
        return new BgpOpen(asn, hold, routerId, families, fourOctet, gr);
    }

    public static BgpNotification ParseNotification(ReadOnlySpan<byte> body) =>
        body.Length < 2 ? throw new BgpProtocolException(1, 2, "NOTIFICATION too short") : new BgpNotification(body[0], body[1], body[2..].ToArray());

    /// <summary>
    /// UPDATE messages that withdraw <paramref name="withdraw"/> and advertise
    /// <paramref name="announce"/> as host routes (/32, /128) of one family, each message within
    /// the 4,096-byte limit. IPv4 in the message's own fields; IPv6 in MP_REACH_NLRI /
    /// MP_UNREACH_NLRI (RFC 4760). None when both are empty.
    /// </summary>
    public static List<byte[]> Updates(IReadOnlyList<IPAddress> announce, IReadOnlyList<IPAddress> withdraw, BgpRouteAttributes attributes)
    {
        var messages = new List<byte[]>();
        var family = (announce.Count > 0 ? announce[0] : withdraw.Count > 0 ? withdraw[0] : null)?.AddressFamily;
        if (family is null)
        {
            return messages;
        }
        if (announce.Concat(withdraw).Any(a => a.AddressFamily != family))
        {
            throw new ArgumentException("one family per call");
        }
        var v4 = family == AddressFamily.InterNetwork;
        var prefixBytes = v4 ? 5 : 17;
        // Room for prefixes besides the header, the two length fields and the attributes (MP attributes with an extended length).
        var common = Attributes(attributes, reach: null);
        var room = MaxMessageLength - HeaderLength - 4 - common.Length - (v4 ? 0 : 4 + 5 + 16 + 1);
        foreach (var batch in withdraw.Chunk(room / prefixBytes))
        {
            messages.Add(v4
                ? Update(Nlri(batch), [], [])
                : Update([], Attribute(0x80, 15, [0, 2, 1, .. Nlri(batch)]), []));
        }
        foreach (var batch in announce.Chunk(room / prefixBytes))
        {
            messages.Add(v4
                ? Update([], Attributes(attributes, reach: null), Nlri(batch))
                : Update([], Attributes(attributes, reach: batch), []));
        }
        return messages;
    }

    /// <summary>The End-of-RIB marker of a family (RFC 4724 2): an empty UPDATE for IPv4, an empty MP_UNREACH_NLRI otherwise.</summary>
    public static byte[] EndOfRib(BgpFamily family) =>
        family == BgpFamily.IPv4Unicast ? Update([], [], []) : Update([], Attribute(0x80, 15, [(byte)(family.Afi >> 8), (byte)family.Afi, family.Safi]), []);

    private static byte[] Update(byte[] withdrawn, byte[] attributes, byte[] nlri)
    {
        var body = new byte[4 + withdrawn.Length + attributes.Length + nlri.Length];
        BinaryPrimitives.WriteUInt16BigEndian(body, (ushort)withdrawn.Length);
        withdrawn.CopyTo(body, 2);
        BinaryPrimitives.WriteUInt16BigEndian(body.AsSpan(2 + withdrawn.Length), (ushort)attributes.Length);
        attributes.CopyTo(body, 4 + withdrawn.Length);
        nlri.CopyTo(body, 4 + withdrawn.Length + attributes.Length);
        return Message(BgpMessageType.Update, body);
    }

    /// <summary>ORIGIN IGP, AS_PATH, NEXT_HOP (IPv4), MULTI_EXIT_DISC (external BGP), MP_REACH_NLRI with the prefixes (IPv6), LOCAL_PREF (internal BGP).</summary>
    private static byte[] Attributes(BgpRouteAttributes a, IPAddress[]? reach)
    {
        var list = new List<byte>();
        list.AddRange(Attribute(0x40, 1, [0]));
        if (a.Internal)
        {
            list.AddRange(Attribute(0x40, 2, []));
        }
        else if (a.FourOctetAs)
        {
            list.AddRange(Attribute(0x40, 2, [2, 1, (byte)(a.MyAsn >> 24), (byte)(a.MyAsn >> 16), (byte)(a.MyAsn >> 8), (byte)a.MyAsn]));
        }
        else
        {
            list.AddRange(Attribute(0x40, 2, [2, 1, (byte)(a.MyAsn >> 8), (byte)a.MyAsn]));
        }
        if (reach is null && a.NextHop.AddressFamily == AddressFamily.InterNetwork)
        {
            list.AddRange(Attribute(0x40, 3, V4Bytes(a.NextHop)));
        }
        if (!a.Internal)
        {
            list.AddRange(Attribute(0x80, 4, [0, 0, 0, a.Preferred ? (byte)0 : (byte)100]));
        }
        if (reach is not null)
        {
            list.AddRange(Attribute(0x80, 14, [0, 2, 1, 16, .. a.NextHop.GetAddressBytes(), 0, .. Nlri(reach)]));
        }
        if (a.Internal)
        {
            list.AddRange(Attribute(0x40, 5, [0, 0, 0, a.Preferred ? (byte)200 : (byte)100]));
        }
        return [.. list];
    }

    /// <summary>A path attribute: flags, type, one length octet, or two with the extended-length flag.</summary>
    private static byte[] Attribute(byte flags, byte type, byte[] value) =>
        value.Length > 255
            ? [(byte)(flags | 0x10), type, (byte)(value.Length >> 8), (byte)value.Length, .. value]
            : [flags, type, (byte)value.Length, .. value];

    /// <summary>Host-route prefixes: the length (32 or 128) and the whole address.</summary>
    private static byte[] Nlri(IPAddress[] addresses)
    {
        var list = new List<byte>();
        foreach (var a in addresses)
        {
            var bytes = a.GetAddressBytes();
            list.Add((byte)(bytes.Length * 8));
            list.AddRange(bytes);
        }
        return [.. list];
    }

    private static byte[] V4Bytes(IPAddress a) =>
        a.AddressFamily == AddressFamily.InterNetwork ? a.GetAddressBytes() : throw new ArgumentException($"{a} is not an IPv4 address");

    private static byte[] Message(BgpMessageType type, byte[] body)
    {
        var m = new byte[HeaderLength + body.Length];
        m.AsSpan(0, 16).Fill(0xff);
        BinaryPrimitives.WriteUInt16BigEndian(m.AsSpan(16), (ushort)m.Length);
        m[18] = (byte)type;
        body.CopyTo(m, HeaderLength);
        return m;
    }
}
