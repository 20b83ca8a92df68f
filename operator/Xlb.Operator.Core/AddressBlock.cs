using System.Net;
using System.Net.Sockets;
using System.Numerics;

namespace Xlb.Operator.Core;

/// <summary>An inclusive range of addresses of one family, parsed from "a.b.c.d/n" or "first-last".</summary>
public sealed record AddressBlock(IPAddress First, IPAddress Last)
{
    // Get-only: the bounds' numbers below are computed once, and a `with` must not leave them behind.
    public IPAddress First { get; } = First;
    public IPAddress Last { get; } = Last;

    // A plan asks every pool whether it offers each VIP: as numbers, without an allocation.
    private readonly UInt128 _first = Number(First), _last = Number(Last);

    public AddressFamily Family => First.AddressFamily;

    public static bool TryParse(string text, out AddressBlock block, out string error)
    {
        block = null!;
        text = text.Trim();
        var dash = text.IndexOf('-', StringComparison.Ordinal);
        if (dash > 0)
        {
            if (!IPAddress.TryParse(text[..dash].Trim(), out var first) || !IPAddress.TryParse(text[(dash + 1)..].Trim(), out var last))
            {
                error = $"'{text}' is not an address range (first-last)";
                return false;
            }
            if (first.AddressFamily != last.AddressFamily || Number(first) > Number(last))
            {
                error = $"'{text}': the range must run from a lower to a higher address of one family";
                return false;
            }
            block = new AddressBlock(first, last);
            error = "";
            return true;
        }
        if (IPNetwork.TryParse(text, out var net))
        {
            if (!net.BaseAddress.Equals(TruncateTo(IPAddress.Parse(text.Split('/')[0]), net.PrefixLength)))
            {
                error = $"'{text}' has host bits set; did you mean {net}?";
                return false;
            }
            var bits = net.BaseAddress.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
            var hostBits = bits - net.PrefixLength;
            var start = Number(net.BaseAddress);
            var end = start + (hostBits == 128 ? UInt128.MaxValue : (UInt128.One << hostBits) - 1);
            // IPv4 networks larger than /31 keep their network and broadcast addresses back.
            if (bits == 32 && net.PrefixLength < 31)
            {
                start += 1;
                end -= 1;
            }
            block = new AddressBlock(Address(start, net.BaseAddress.AddressFamily), Address(end, net.BaseAddress.AddressFamily));
            error = "";
            return true;
        }
        if (IPAddress.TryParse(text, out var single))
        {
            block = new AddressBlock(single, single);
            error = "";
            return true;
        }
        error = $"'{text}' is neither a CIDR, a range nor an address";
        return false;
    }

    public bool Contains(IPAddress a) =>
        a.AddressFamily == Family && Number(a) is var n && n >= _first && n <= _last;

    public bool Overlaps(AddressBlock other) =>
        other.Family == Family && other._first <= _last && _first <= other._last;

    public BigInteger Size => (BigInteger)(_last - _first) + 1;

    /// <summary>How many addresses the two blocks have in common.</summary>
    public BigInteger OverlapSize(AddressBlock other) =>
        Overlaps(other) ? (BigInteger)(UInt128.Min(_last, other._last) - UInt128.Max(_first, other._first)) + 1 : BigInteger.Zero;

    public IEnumerable<IPAddress> Addresses()
    {
        for (var i = _first; i <= _last; i++)
        {
            yield return Address(i, Family);
            if (i == UInt128.MaxValue)
            {
                yield break;
            }
        }
    }

    /// <summary>An address as an unsigned number (IPv4 in the low 32 bits).</summary>
    public static UInt128 Number(IPAddress a)
    {
        Span<byte> bytes = stackalloc byte[16];
        a.TryWriteBytes(bytes, out var written);
        var n = UInt128.Zero;
        for (var i = 0; i < written; i++)
        {
            n = n << 8 | bytes[i];
        }
        return n;
    }

    /// <summary>The address of a number (<see cref="Number"/>'s inverse).</summary>
    public static IPAddress Address(UInt128 n, AddressFamily family)
    {
        Span<byte> bytes = stackalloc byte[16];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt128BigEndian(bytes, n);
        return new IPAddress(bytes[(family == AddressFamily.InterNetwork ? 12 : 0)..]);
    }

    private static IPAddress TruncateTo(IPAddress a, int prefix)
    {
        var bytes = a.GetAddressBytes();
        for (var i = 0; i < bytes.Length; i++)
        {
            var keep = Math.Clamp(prefix - (i * 8), 0, 8);
            bytes[i] &= (byte)(0xff << (8 - keep));
        }
        return new IPAddress(bytes);
    }
}
