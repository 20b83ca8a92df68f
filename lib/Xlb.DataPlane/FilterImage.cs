using System.Net;

namespace Xlb.DataPlane;

/// <summary>
/// The content of one generation's xlb_filter entry: a bit per <see cref="XlbAbi.FilterSlot"/>
/// for each VIP (destination side) and each DNAT backend (source side of its replies), IPv4
/// and IPv6 alike.
/// </summary>
public sealed class FilterImage : IEquatable<FilterImage>
{
    private readonly ulong[] _vip = new ulong[XlbAbi.FilterWords];
    private readonly ulong[] _rsrc = new ulong[XlbAbi.FilterWords];

    public void AddVip(IPAddress address) => Mark(_vip, address);

    public void AddReplySource(IPAddress address) => Mark(_rsrc, address);

    public bool MayBeVip(IPAddress address) => Has(_vip, address);

    public bool MayBeReplySource(IPAddress address) => Has(_rsrc, address);

    private static void Mark(ulong[] bits, IPAddress address)
    {
        var slot = XlbAbi.FilterSlot(address);
        bits[slot >> 6] |= 1UL << (slot & 63);
    }

    private static bool Has(ulong[] bits, IPAddress address)
    {
        var slot = XlbAbi.FilterSlot(address);
        return (bits[slot >> 6] & (1UL << (slot & 63))) != 0;
    }

    public unsafe XlbFilter ToAbi()
    {
        var f = default(XlbFilter);
        _vip.CopyTo(new Span<ulong>(f.Vip, XlbAbi.FilterWords));
        _rsrc.CopyTo(new Span<ulong>(f.Rsrc, XlbAbi.FilterWords));
        return f;
    }

    public static unsafe FilterImage From(in XlbFilter f)
    {
        var image = new FilterImage();
        fixed (ulong* vip = f.Vip, rsrc = f.Rsrc)
        {
            new ReadOnlySpan<ulong>(vip, XlbAbi.FilterWords).CopyTo(image._vip);
            new ReadOnlySpan<ulong>(rsrc, XlbAbi.FilterWords).CopyTo(image._rsrc);
        }
        return image;
    }

    public bool Equals(FilterImage? other) =>
        other is not null && _vip.AsSpan().SequenceEqual(other._vip) && _rsrc.AsSpan().SequenceEqual(other._rsrc);

    public override bool Equals(object? obj) => Equals(obj as FilterImage);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.AddBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_vip.AsSpan()));
        h.AddBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(_rsrc.AsSpan()));
        return h.ToHashCode();
    }
}
