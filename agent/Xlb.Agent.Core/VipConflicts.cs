using System.Globalization;
using System.Net;

namespace Xlb.Agent.Core;

/// <summary>Another host's last announcement of a VIP this node holds, as the program noted it: its MAC, the interface it came in on, when (CLOCK_MONOTONIC ns).</summary>
public sealed record VipClaim(IPAddress Vip, byte[] Mac, int IfIndex, ulong SeenNs)
{
    /// <summary>The MAC as people write it: 02:5b:00:00:00:02.</summary>
    public string MacText => string.Join(':', Mac.Select(b => b.ToString("x2", CultureInfo.InvariantCulture)));
}

/// <summary>
/// VIPs this node holds that another host announces as its own: two nodes answering for one VIP
/// (a partition between LB nodes, which in standalone mode nothing else settles), or a host
/// configured with the address. For the node config's Degraded condition. Pure: from the claims
/// the program noted (xlb_vip_claims), the VIPs held, and when this node last announced each.
/// </summary>
public static class VipConflicts
{
    /// <summary>Announcements older than this are history, not a conflict.</summary>
    public static readonly TimeSpan Recent = TimeSpan.FromSeconds(60);

    /// <summary>
    /// One line per VIP held here that another host announced within <see cref="Recent"/> and after
    /// this node last announced it (so a standby that took a VIP over and gave it back, after which
    /// this node announced it again, is not one), sorted. Announcements from one of
    /// <paramref name="ownMacs"/> are this node's own, heard on another of its interfaces on the
    /// same segment.
    /// </summary>
    public static List<string> Of(IEnumerable<VipClaim> claims, IReadOnlySet<IPAddress> held, IReadOnlyDictionary<IPAddress, ulong> lastAnnounced,
        IEnumerable<byte[]> ownMacs, Func<int, string> interfaceName, ulong nowNs)
    {
        var own = ownMacs.Select(m => Convert.ToHexString(m)).ToHashSet(StringComparer.Ordinal);
        var recent = (ulong)Recent.Ticks * 100;
        var lines = new List<string>();
        foreach (var c in claims)
        {
            if (!held.Contains(c.Vip) || own.Contains(Convert.ToHexString(c.Mac)) || (c.SeenNs < nowNs && nowNs - c.SeenNs > recent) ||
                (lastAnnounced.TryGetValue(c.Vip, out var ours) && ours >= c.SeenNs))
            {
                continue;
            }
            lines.Add($"{c.Vip} by {c.MacText} on {interfaceName(c.IfIndex)}");
        }
        lines.Sort(StringComparer.Ordinal);
        return lines;
    }
}
