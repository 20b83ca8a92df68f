using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Xlb.Agent.Core;

/// <summary>
/// What datagrams between agents (flow sync and heartbeats) have in common. Their header: a magic
/// number naming the kind, a version, a flags byte whose bit 0 says the datagram is authenticated,
/// and a 16-bit count. And the trailer that authenticates one: the sending time (Unix
/// milliseconds, 8 bytes) and the first 16 bytes of HMAC-SHA256, with the nodes' shared key, over
/// everything before them. A receiver takes a datagram whose tag one of its keys makes and whose
/// sending time is within <see cref="MaxClockSkew"/> of its own clock; a receiver without a key
/// takes only unauthenticated ones (a node with a key and one without say so, not guess).
/// </summary>
public static class PeerDatagrams
{
    /// <summary>The header's length: magic (4), version, flags, count (2).</summary>
    public const int HeaderBytes = 8;
    /// <summary>Header flag: a trailer (<see cref="Bytes"/>) authenticates the datagram.</summary>
    public const byte Authenticated = 1;
    /// <summary>The trailer's length.</summary>
    public const int Bytes = 8 + TagBytes;
    private const int TagBytes = 16;
    /// <summary>How far a datagram's sending time may be from the receiver's clock: replays older than this are refused.</summary>
    public static readonly TimeSpan MaxClockSkew = TimeSpan.FromSeconds(30);
    /// <summary>The shortest key an agent takes.</summary>
    public const int MinKeyBytes = 16;

    /// <summary>Writes the header into <paramref name="d"/>; <paramref name="flags"/> gets <see cref="Authenticated"/> when <paramref name="keyed"/>.</summary>
    public static void WriteHeader(Span<byte> d, uint magic, byte version, byte flags, bool keyed, ushort count)
    {
        BinaryPrimitives.WriteUInt32BigEndian(d, magic);
        d[4] = version;
        d[5] = (byte)(flags | (keyed ? Authenticated : 0));
        BinaryPrimitives.WriteUInt16BigEndian(d[6..], count);
    }

    /// <summary>
    /// The header of a datagram of kind <paramref name="what"/>: its flags and count. Throws
    /// <see cref="FormatException"/> when it is another kind or version, or authenticated when this
    /// agent has no key (<paramref name="keyed"/> false), or not when it has one.
    /// </summary>
    public static (byte Flags, ushort Count) ReadHeader(ReadOnlySpan<byte> d, uint magic, byte version, bool keyed, string what)
    {
        if (d.Length < HeaderBytes || BinaryPrimitives.ReadUInt32BigEndian(d) != magic)
        {
            throw new FormatException($"not a {what}");
        }
        if (d[4] != version)
        {
            throw new FormatException($"{what} version {d[4]}; this agent speaks {version}");
        }
        var authenticated = (d[5] & Authenticated) != 0;
        if (authenticated != keyed)
        {
            throw new FormatException(authenticated
                ? $"an authenticated {what}, and this agent has no key (--flow-sync-key-file)"
                : $"an unauthenticated {what}, and this agent takes only those its key (--flow-sync-key-file) authenticates");
        }
        return (d[5], BinaryPrimitives.ReadUInt16BigEndian(d[6..]));
    }

    /// <summary>Writes the trailer into <paramref name="d"/> at <paramref name="end"/> (the datagram's content is before it).</summary>
    public static void Seal(Span<byte> d, int end, byte[] key, long unixMs)
    {
        BinaryPrimitives.WriteInt64BigEndian(d[end..], unixMs);
        Span<byte> tag = stackalloc byte[HMACSHA256.HashSizeInBytes];
        HMACSHA256.HashData(key, d[..(end + 8)], tag);
        tag[..TagBytes].CopyTo(d[(end + 8)..]);
    }

    /// <summary>Throws <see cref="FormatException"/> unless the trailer at <paramref name="end"/> is one of <paramref name="keys"/>' and recent.</summary>
    public static void Check(ReadOnlySpan<byte> d, int end, IReadOnlyList<byte[]> keys, long nowUnixMs, string keyName)
    {
        Span<byte> tag = stackalloc byte[HMACSHA256.HashSizeInBytes];
        var known = false;
        foreach (var key in keys)
        {
            HMACSHA256.HashData(key, d[..(end + 8)], tag);
            known |= CryptographicOperations.FixedTimeEquals(tag[..TagBytes], d.Slice(end + 8, TagBytes));
        }
        if (!known)
        {
            throw new FormatException($"the datagram's tag is not this agent's {keyName}'s");
        }
        var sent = BinaryPrimitives.ReadInt64BigEndian(d[end..]);
        if (Math.Abs(nowUnixMs - sent) > (long)MaxClockSkew.TotalMilliseconds)
        {
            throw new FormatException($"the datagram was sent {(nowUnixMs - sent) / 1000.0:F0} s from now (at most {MaxClockSkew.TotalSeconds:F0} s: an old datagram again, or clocks apart)");
        }
    }
}
