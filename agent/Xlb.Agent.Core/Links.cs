using System.Buffers.Binary;
using System.Text;
using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>A network device as rtnetlink describes it (RTM_NEWLINK), reduced to what the agent uses.</summary>
/// <param name="Lower">IFLA_LINK: the device below (a VLAN device's parent); 0 when none.</param>
/// <param name="LowerElsewhere">The device below lives in another network namespace (IFLA_LINK_NETNSID).</param>
/// <param name="VlanProtocol">For kind "vlan": 0x8100 (802.1Q) or 0x88a8 (802.1ad).</param>
public sealed record LinkInfo(int Ifindex, string Name, byte[] Mac, string? Kind, int Lower, bool LowerElsewhere, ushort VlanId, ushort VlanProtocol);

/// <summary>A VLAN device: what the data plane needs to tag packets out of it and to answer on it.</summary>
public sealed record VlanLink(int Ifindex, string Name, int LowerIfindex, ushort Protocol, ushort Vid, byte[] Mac)
{
    public override string ToString() => $"{Name} (vlan {Vid} on ifindex {LowerIfindex})";
}

/// <summary>
/// Reads an rtnetlink link dump (the replies to RTM_GETLINK with NLM_F_DUMP), chunk by chunk as
/// the socket returns them; pure, so every byte layout is tested without a socket.
/// </summary>
public sealed class LinkDump
{
    private const int NlmsgError = 2, NlmsgDone = 3, RtmNewlink = 16;
    private const int NlHeader = 16, IfInfo = 16;
    private const int IflaAddress = 1, IflaIfname = 3, IflaLink = 5, IflaLinkinfo = 18, IflaLinkNetnsid = 37;
    private const int IflaInfoKind = 1, IflaInfoData = 2;
    private const int IflaVlanId = 1, IflaVlanProtocol = 5;

    public List<LinkInfo> Links { get; } = [];

    /// <summary>
    /// Takes the messages of one read; true once the dump is complete (NLMSG_DONE). An error
    /// answer (NLMSG_ERROR with a non-zero code) throws, with the errno.
    /// </summary>
    public bool Feed(ReadOnlySpan<byte> chunk)
    {
        while (chunk.Length >= NlHeader)
        {
            var len = (int)BinaryPrimitives.ReadUInt32LittleEndian(chunk);
            var type = BinaryPrimitives.ReadUInt16LittleEndian(chunk[4..]);
            if (len < NlHeader || len > chunk.Length)
            {
                throw new FormatException($"netlink message of {len} bytes in a read of {chunk.Length}");
            }
            var body = chunk[NlHeader..len];
            switch (type)
            {
                case NlmsgDone:
                    return true;
                case NlmsgError:
                    var errno = body.Length >= 4 ? -BinaryPrimitives.ReadInt32LittleEndian(body) : 0;
                    if (errno != 0)
                    {
                        throw new InvalidOperationException($"rtnetlink link dump failed: errno {errno}");
                    }
                    break;
                case RtmNewlink when body.Length >= IfInfo:
                    Links.Add(Link(body));
                    break;
            }
            chunk = chunk[Math.Min(Align(len), chunk.Length)..];
        }
        return false;
    }

    private static int Align(int n) => (n + 3) & ~3;

    private static LinkInfo Link(ReadOnlySpan<byte> body)
    {
        var ifindex = BinaryPrimitives.ReadInt32LittleEndian(body[4..]);
        string name = "", kind = "";
        byte[] mac = [];
        int lower = 0;
        var elsewhere = false;
        ushort vid = 0, proto = 0;
        foreach (var (type, value) in Attributes(body[IfInfo..]))
        {
            switch (type)
            {
                case IflaAddress:
                    mac = value.ToArray();
                    break;
                case IflaIfname:
                    name = CString(value);
                    break;
                case IflaLink when value.Length >= 4:
                    lower = BinaryPrimitives.ReadInt32LittleEndian(value);
                    break;
                case IflaLinkNetnsid:
                    elsewhere = true;
                    break;
                case IflaLinkinfo:
                    foreach (var (infoType, info) in Attributes(value))
                    {
                        if (infoType == IflaInfoKind)
                        {
                            kind = CString(info);
                        }
                        else if (infoType == IflaInfoData)
                        {
                            foreach (var (dataType, data) in Attributes(info))
                            {
                                if (dataType == IflaVlanId && data.Length >= 2)
                                {
                                    vid = BinaryPrimitives.ReadUInt16LittleEndian(data);
                                }
                                else if (dataType == IflaVlanProtocol && data.Length >= 2)
                                {
                                    proto = BinaryPrimitives.ReadUInt16BigEndian(data);
                                }
                            }
                        }
                    }
                    break;
            }
        }
        return new LinkInfo(ifindex, name, mac, kind.Length == 0 ? null : kind, lower, elsewhere, vid, proto);
    }

    private static string CString(ReadOnlySpan<byte> v) => Encoding.ASCII.GetString(v.IndexOf((byte)0) is var z and >= 0 ? v[..z] : v);

    /// <summary>The rtattrs of a span: (type without the nested/byte-order flags, payload).</summary>
    private static List<(int Type, byte[] Value)> Attributes(ReadOnlySpan<byte> span)
    {
        var list = new List<(int, byte[])>();
        while (span.Length >= 4)
        {
            var len = BinaryPrimitives.ReadUInt16LittleEndian(span);
            var type = BinaryPrimitives.ReadUInt16LittleEndian(span[2..]) & 0x3fff;
            if (len < 4 || len > span.Length)
            {
                break;
            }
            list.Add((type, span[4..len].ToArray()));
            span = span[Math.Min(Align(len), span.Length)..];
        }
        return list;
    }

    /// <summary>
    /// The VLAN devices the data plane must know, by ifindex: those whose device below is in this
    /// network namespace (a tag the program puts on goes out of that device), at most
    /// <see cref="XlbAbi.MaxVlans"/>; <paramref name="dropped"/> counts the rest.
    /// </summary>
    public static IReadOnlyList<VlanLink> Vlans(IEnumerable<LinkInfo> links, out int dropped)
    {
        var all = links
            .Where(l => l.Kind == "vlan" && l.Lower > 0 && !l.LowerElsewhere && l.Mac.Length == 6 &&
                        l.VlanProtocol is XlbAbi.Vlan8021Q or XlbAbi.Vlan8021Ad)
            .OrderBy(l => l.Ifindex)
            .Select(l => new VlanLink(l.Ifindex, l.Name, l.Lower, l.VlanProtocol, (ushort)(l.VlanId & 0x0fff), l.Mac))
            .ToList();
        dropped = Math.Max(0, all.Count - XlbAbi.MaxVlans);
        return all.Count > XlbAbi.MaxVlans ? all[..XlbAbi.MaxVlans] : all;
    }
}

/// <summary>Pure: VLAN devices → the contents of the data plane's two VLAN maps.</summary>
public static class VlanMaps
{
    /// <summary>xlb_vlan_out (by the VLAN device's ifindex) and xlb_vlan_in (by the tag on the device below).</summary>
    public static (Dictionary<uint, XlbVlan> Out, Dictionary<XlbVlan, XlbVlanDev> In) Of(IReadOnlyList<VlanLink> vlans)
    {
        var out_ = new Dictionary<uint, XlbVlan>();
        var in_ = new Dictionary<XlbVlan, XlbVlanDev>();
        foreach (var v in vlans)
        {
            var tag = XlbVlan.Of(v.LowerIfindex, v.Protocol, v.Vid);
            out_[(uint)v.Ifindex] = tag;
            in_[tag] = XlbVlanDev.Of(v.Ifindex, v.Mac);
        }
        return (out_, in_);
    }

    /// <summary>The VLAN devices sitting on one of <paramref name="ifindexes"/> (announcements go out on them too).</summary>
    public static IEnumerable<VlanLink> On(IReadOnlyList<VlanLink> vlans, IEnumerable<int> ifindexes)
    {
        var below = ifindexes.ToHashSet();
        return vlans.Where(v => below.Contains(v.LowerIfindex));
    }
}
