using System.Net;
using Xlb.Crds;

namespace Xlb.Agent.Core;

/// <summary>
/// Whether anyone answers for the standby VIPs whose active node this agent has never heard.
/// A peer never heard may be dead, or alive behind a closed port or with another flow-sync key:
/// heartbeats cannot tell, so nothing is taken from it on their word (<see cref="PeerLiveness"/>).
/// Address resolution can: in L2 mode the active node answers ARP and ND for its VIPs on the segment the
/// standby shares with it, so the agent asks (an ARP probe, or a neighbour solicitation from its
/// link-local address, every so often: <see cref="Probed"/>),
/// the program notes every answer from another host (xlb_vip_claims), and a VIP nobody has
/// answered for during its takeover time is taken (<see cref="Takeover.Apply"/>). A live active
/// node answers each probe, and so keeps its VIPs however its heartbeats fare; a host that
/// announces such a VIP after it was taken (the active node's agent starting at last) gets it
/// back, since its announcement is an answer too. Pure: the clock and the claims are given.
/// </summary>
public sealed class ResolutionWitness
{
    /// <summary>Per VIP probed: since when nobody has answered for it (CLOCK_MONOTONIC ns).</summary>
    private readonly Dictionary<IPAddress, ulong> _unansweredSince = [];

    /// <summary>
    /// The VIPs worth probing in <paramref name="spec"/> (the node config as the operator wrote it,
    /// before any takeover): standby here, announced by L2 (not in <paramref name="routed"/>),
    /// with a takeover time, and of an active node never heard (<paramref name="silentFor"/> null),
    /// each with its takeover time; in address order.
    /// </summary>
    public static List<(IPAddress Vip, TimeSpan After)> Probed(XlbNodeConfigSpec spec, Func<string, TimeSpan?> silentFor, IReadOnlySet<IPAddress> routed)
    {
        var probed = new List<(IPAddress, TimeSpan)>();
        foreach (var v in spec.Vips)
        {
            if (v.Role == VipRole.Standby && v.ActiveNode is { } from && v.TakeoverAfter is { } after && silentFor(from) is null
                && IPAddress.TryParse(v.Address, out var vip) && !routed.Contains(vip))
            {
                probed.Add((vip, after.Value));
            }
        }
        return probed;
    }

    /// <summary>The VIPs probed from now on: new ones are unanswered since <paramref name="nowNs"/>, gone ones are forgotten.</summary>
    public void Probe(IEnumerable<IPAddress> vips, ulong nowNs)
    {
        var keep = vips.ToHashSet();
        foreach (var gone in _unansweredSince.Keys.Where(v => !keep.Contains(v)).ToList())
        {
            _unansweredSince.Remove(gone);
        }
        foreach (var vip in keep)
        {
            _unansweredSince.TryAdd(vip, nowNs);
        }
    }

    /// <summary>
    /// <paramref name="vips"/> could not be asked for everywhere (a probe not sent): they are
    /// unanswered afresh from <paramref name="nowNs"/>, as silence where nobody was asked proves nothing.
    /// </summary>
    public void Restart(IEnumerable<IPAddress> vips, ulong nowNs)
    {
        foreach (var vip in vips)
        {
            if (_unansweredSince.ContainsKey(vip))
            {
                _unansweredSince[vip] = nowNs;
            }
        }
    }

    /// <summary>
    /// The link-local address of interface <paramref name="ifindex"/> that a neighbour solicitation
    /// can come from, from the text of /proc/net/if_inet6 (address, ifindex, prefix length, scope
    /// and flags in hex, name): scope link (0x20), neither tentative (0x40) nor failed in duplicate
    /// address detection (0x08); null when it has none.
    /// </summary>
    public static IPAddress? LinkLocal(string ifInet6, int ifindex)
    {
        foreach (var line in ifInet6.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length >= 6 && f[0].Length == 32 && int.TryParse(f[1], System.Globalization.NumberStyles.HexNumber, null, out var index) && index == ifindex
                && int.TryParse(f[3], System.Globalization.NumberStyles.HexNumber, null, out var scope) && scope == 0x20
                && int.TryParse(f[4], System.Globalization.NumberStyles.HexNumber, null, out var flags) && (flags & 0x48) == 0)
            {
                return new IPAddress(Convert.FromHexString(f[0]));
            }
        }
        return null;
    }

    /// <summary>
    /// The answers and announcements the program noted (each VIP's last, <see cref="VipClaim.SeenNs"/>):
    /// a VIP answered after it became unanswered is unanswered only from then on. Announcements
    /// from one of <paramref name="ownMacs"/> are this node's own.
    /// </summary>
    public void Observe(IEnumerable<VipClaim> claims, IEnumerable<byte[]> ownMacs)
    {
        var own = ownMacs.Select(Convert.ToHexString).ToHashSet(StringComparer.Ordinal);
        foreach (var c in claims)
        {
            if (_unansweredSince.TryGetValue(c.Vip, out var since) && c.SeenNs > since && !own.Contains(Convert.ToHexString(c.Mac)))
            {
                _unansweredSince[c.Vip] = c.SeenNs;
            }
        }
    }

    /// <summary>How long nobody has answered for <paramref name="address"/>; null when it is not probed.</summary>
    public TimeSpan? UnansweredFor(string address, ulong nowNs) =>
        IPAddress.TryParse(address, out var vip) && _unansweredSince.TryGetValue(vip, out var since)
            ? TimeSpan.FromTicks((long)((nowNs > since ? nowNs - since : 0) / 100))
            : null;
}
