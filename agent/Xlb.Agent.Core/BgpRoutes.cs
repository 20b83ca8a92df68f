using System.Net;
using System.Net.Sockets;
using Xlb.Crds;

namespace Xlb.Agent.Core;

/// <summary>What one BGP session should carry: its neighbour's settings and the host routes for it.</summary>
public sealed record BgpSessionPlan(NodeBgpPeer Peer, IReadOnlySet<IPAddress> Routes);

/// <summary>Which VIPs a node advertises to which neighbour, and how a session is agreed. Pure.</summary>
public static class BgpRoutes
{
    /// <summary>
    /// Per neighbour (by address): the VIPs this node holds as active of the shards that neighbour
    /// carries. Standby VIPs are not advertised: the operator makes the standby active when the
    /// active node dies, and its routes follow.
    /// </summary>
    public static Dictionary<string, BgpSessionPlan> Desired(XlbNodeConfigSpec spec)
    {
        var active = new Dictionary<string, List<IPAddress>>(StringComparer.Ordinal);
        foreach (var vip in spec.Vips)
        {
            if (vip.Role == VipRole.Active)
            {
                if (!active.TryGetValue(vip.Shard, out var list))
                {
                    active[vip.Shard] = list = [];
                }
                list.Add(IPAddress.Parse(vip.Address));
            }
        }
        var plans = new Dictionary<string, BgpSessionPlan>(StringComparer.Ordinal);
        foreach (var peer in spec.BgpPeers)
        {
            var routes = new HashSet<IPAddress>();
            foreach (var shard in peer.Shards)
            {
                routes.UnionWith(active.GetValueOrDefault(shard) ?? []);
            }
            plans[peer.Address] = new BgpSessionPlan(peer, routes);
        }
        return plans;
    }

    /// <summary>The VIPs of shards some neighbour carries: announced by BGP, so not by gratuitous ARP.</summary>
    public static HashSet<IPAddress> Routed(XlbNodeConfigSpec spec)
    {
        var shards = spec.BgpPeers.SelectMany(p => p.Shards).ToHashSet(StringComparer.Ordinal);
        return [.. spec.Vips.Where(v => shards.Contains(v.Shard)).Select(v => IPAddress.Parse(v.Address))];
    }

    /// <summary>
    /// The routes of <paramref name="family"/> to go from <paramref name="advertised"/> (each with
    /// whether it went out preferred) to <paramref name="desired"/>, of which
    /// <paramref name="preferred"/> are VIPs taken over (<see cref="BgpRouteAttributes.Preferred"/>):
    /// to advertise plainly, to advertise preferred (a route whose preference changed goes again:
    /// the new one replaces it), and to withdraw; each in address order.
    /// </summary>
    public static (IPAddress[] Announce, IPAddress[] AnnouncePreferred, IPAddress[] Withdraw) Diff(IReadOnlyDictionary<IPAddress, bool> advertised,
        IReadOnlySet<IPAddress> desired, IReadOnlySet<IPAddress> preferred, AddressFamily family) =>
        ([.. desired.Where(a => a.AddressFamily == family && !preferred.Contains(a) && (!advertised.TryGetValue(a, out var was) || was)).Order(AddressOrder.Instance)],
         [.. desired.Where(a => a.AddressFamily == family && preferred.Contains(a) && (!advertised.TryGetValue(a, out var was) || !was)).Order(AddressOrder.Instance)],
         [.. advertised.Keys.Where(a => a.AddressFamily == family && !desired.Contains(a)).Order(AddressOrder.Instance)]);

    /// <summary>
    /// The session's terms from the neighbour's OPEN: the hold time (the smaller offer; 0 when
    /// either offers 0) and whether AS_PATH carries four-octet numbers. A neighbour in another AS
    /// than configured is refused with "bad peer AS" (RFC 4271 6.2).
    /// </summary>
    public static (int HoldTime, bool FourOctetAs) Agree(BgpOpen theirs, NodeBgpPeer peer, int ourHoldTime)
    {
        if (theirs.Asn != peer.Asn)
        {
            throw new BgpProtocolException(2, 2, $"the neighbour says it is AS {theirs.Asn}; its configuration says AS {peer.Asn}");
        }
        if (peer.MyAsn > ushort.MaxValue && !theirs.FourOctetAs)
        {
            throw new BgpProtocolException(2, 7, $"our AS {peer.MyAsn} needs four-octet AS numbers, which the neighbour does not speak");
        }
        var hold = theirs.HoldTime == 0 || ourHoldTime == 0 ? 0 : Math.Min(theirs.HoldTime, ourHoldTime);
        return (hold, theirs.FourOctetAs);
    }

    /// <summary>Addresses in byte order, IPv4 before IPv6.</summary>
    private sealed class AddressOrder : IComparer<IPAddress>
    {
        public static readonly AddressOrder Instance = new();

        public int Compare(IPAddress? x, IPAddress? y)
        {
            var (a, b) = (x!.GetAddressBytes(), y!.GetAddressBytes());
            return a.Length != b.Length ? a.Length.CompareTo(b.Length) : a.AsSpan().SequenceCompareTo(b);
        }
    }
}
