using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Xlb.Agent.Core;

/// <summary>
/// The trailer that authenticates a datagram between agents (flow sync and heartbeats): the
/// sending time (Unix milliseconds, 8 bytes) and the first 16 bytes of HMAC-SHA256, with the
/// nodes' shared key, over everything before them. A receiver takes a datagram whose tag one of
/// its keys makes and whose sending time is within <see cref="MaxClockSkew"/> of its own clock.
/// </summary>
public static class PeerAuth
{
    /// <summary>The trailer's length.</summary>
    public const int Bytes = 8 + TagBytes;
    private const int TagBytes = 16;
    /// <summary>How far a datagram's sending time may be from the receiver's clock: replays older than this are refused.</summary>
    public static readonly TimeSpan MaxClockSkew = TimeSpan.FromSeconds(30);
    /// <summary>The shortest key an agent takes.</summary>
    public const int MinKeyBytes = 16;

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
