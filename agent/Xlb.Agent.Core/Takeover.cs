using Xlb.Crds;

namespace Xlb.Agent.Core;

/// <summary>
/// A VIP a standby has taken over: from which node, silent for how long (<see cref="TimeSpan.MaxValue"/>: it left).
/// <paramref name="Unheard"/>: a node never heard, and <paramref name="Silent"/> is how long nobody answered ARP for the VIP (<see cref="ResolutionWitness"/>).
/// </summary>
public readonly record struct TakenVip(string Address, string From, TimeSpan Silent, bool Unheard = false)
{
    /// <summary>Why it was taken: its node is leaving, was never heard (and nobody answered for the VIP), or fell silent.</summary>
    public TakeoverCause Cause => Silent == TimeSpan.MaxValue ? TakeoverCause.Leaving : Unheard ? TakeoverCause.Unheard : TakeoverCause.Silent;
}

/// <summary>Why a standby took a VIP (<see cref="TakenVip.Cause"/>); the names are those `xlb status` and the node status show.</summary>
public enum TakeoverCause
{
    Silent,
    Leaving,
    Unheard,
}

/// <summary>
/// What agent-to-agent failure detection makes of a node config: the config to apply, the VIPs
/// taken over, and the peers that are silent here but renew their Lease (so their VIPs stay with them).
/// </summary>
public sealed record TakeoverResult(XlbNodeConfigSpec Effective, List<TakenVip> Taken, List<string> Unreachable)
{
    /// <summary>The peers past a takeover time: whose Leases are worth watching.</summary>
    public IEnumerable<string> Overdue => Taken.Select(t => t.From).Concat(Unreachable).Distinct();
}

/// <summary>What agent-to-agent failure detection makes of a node config.</summary>
public static class Takeover
{
    /// <summary>
    /// The config with each standby VIP whose active node has been silent for at least the VIP's
    /// takeoverAfter turned active here (so the data plane answers for it, and it is announced),
    /// and the VIPs so taken. A VIP without takeoverAfter or active node (its active node has no
    /// address), or whose active node has never been heard, is left to the operator; so is one
    /// whose silent node is seen <paramref name="renewing"/> its Lease (cluster mode): it lives,
    /// and only the path between the LB nodes is broken, where taking its VIPs would make two
    /// nodes answer for them. A VIP of an active node never heard is taken when nobody has
    /// answered for it (<paramref name="unanswered"/>, by address: <see cref="ResolutionWitness"/>)
    /// for its takeoverAfter. A VIP taken before (<paramref name="previous"/>) from a node that is
    /// heard again stays taken while this node is <paramref name="handingBack"/> that node its
    /// connections (flow sync sends it every flow first). Unchanged when nothing is taken.
    /// </summary>
    public static TakeoverResult Apply(XlbNodeConfigSpec spec, Func<string, TimeSpan?> silentFor, Func<string, bool>? renewing = null,
        Func<string, TimeSpan?>? unanswered = null, IReadOnlyList<TakenVip>? previous = null, Func<string, bool>? handingBack = null)
    {
        // Each peer is asked about once: the answers change on other threads (a heartbeat comes, a
        // hand-back ends), and a peer's VIPs are taken, kept or given back together.
        silentFor = OncePerPeer(silentFor);
        renewing = renewing is null ? null : OncePerPeer(renewing);
        handingBack = handingBack is null ? null : OncePerPeer(handingBack);
        Dictionary<string, TakenVip>? before = null;
        if (previous is { Count: > 0 } && handingBack is not null)
        {
            foreach (var t in previous)
            {
                if (handingBack(t.From))
                {
                    (before ??= new(StringComparer.Ordinal))[t.Address] = t;
                }
            }
        }
        List<TakenVip>? taken = null;
        List<NodeVip>? vips = null;
        var unreachable = new List<string>();
        for (var i = 0; i < spec.Vips.Count; i++)
        {
            var v = spec.Vips[i];
            if (v.Role != VipRole.Standby || v.ActiveNode is not { } from || v.TakeoverAfter is not { } after)
            {
                continue;
            }
            if (before is not null && before.TryGetValue(v.Address, out var held) && held.From == from)
            {
                vips ??= [.. spec.Vips];
                vips[i] = v with { Role = VipRole.Active };
                (taken ??= []).Add(held);
                continue;
            }
            var silent = silentFor(from);
            if (silent is null && unanswered?.Invoke(v.Address) is { } quiet && quiet >= after.Value)
            {
                vips ??= [.. spec.Vips];
                vips[i] = v with { Role = VipRole.Active };
                (taken ??= []).Add(new TakenVip(v.Address, from, quiet, Unheard: true));
                continue;
            }
            if (silent >= after.Value)
            {
                // A peer that said it is leaving is taken from whatever its Lease says (a drain deletes it, but perhaps not yet).
                if (silent.Value != TimeSpan.MaxValue && renewing?.Invoke(from) == true)
                {
                    if (!unreachable.Contains(from))
                    {
                        unreachable.Add(from);
                    }
                    continue;
                }
                vips ??= [.. spec.Vips];
                vips[i] = v with { Role = VipRole.Active };
                (taken ??= []).Add(new TakenVip(v.Address, from, silent.Value));
            }
        }
        return new TakeoverResult(vips is null ? spec : spec with { Vips = vips }, taken ?? [], unreachable);
    }

    /// <summary><paramref name="ask"/>, asked at most once per peer: later questions get the first answer.</summary>
    private static Func<string, T> OncePerPeer<T>(Func<string, T> ask)
    {
        var answers = new Dictionary<string, T>(StringComparer.Ordinal);
        return peer =>
        {
            if (!answers.TryGetValue(peer, out var answer))
            {
                answers[peer] = answer = ask(peer);
            }
            return answer;
        };
    }
}

/// <summary>
/// Cluster mode: whether a peer that sends no heartbeat here still renews its Lease, as this
/// agent sees the Lease's renewTime move (its own clock only: the nodes' clocks need not agree).
/// A peer counts as renewing from the first change seen after watching began until
/// <see cref="Stale"/> passes without one; a Lease that is gone (a drain deletes it) is not renewing.
/// </summary>
public sealed class LeaseEvidence
{
    /// <summary>How long a renewal counts: the operator's own shortest Lease window.</summary>
    public static readonly TimeSpan Stale = TimeSpan.FromSeconds(3);

    private readonly Dictionary<string, (bool Seen, string? RenewTime, long? ChangedMs)> _peers = new(StringComparer.Ordinal);

    /// <summary>The peers watched from now on (those silent past a takeover time); the others are forgotten.</summary>
    public void Watch(IEnumerable<string> peers)
    {
        var keep = peers.ToHashSet(StringComparer.Ordinal);
        foreach (var gone in _peers.Keys.Where(p => !keep.Contains(p)).ToList())
        {
            _peers.Remove(gone);
        }
        foreach (var peer in keep)
        {
            _peers.TryAdd(peer, (false, null, null));
        }
    }

    /// <summary>The peers watched.</summary>
    public IReadOnlyCollection<string> Watched => _peers.Keys;

    /// <summary>A read of <paramref name="peer"/>'s Lease: its renewTime, null when there is no such Lease.</summary>
    public void Observe(string peer, string? renewTime, long nowMs)
    {
        if (!_peers.TryGetValue(peer, out var p))
        {
            return;
        }
        _peers[peer] = renewTime is null ? (true, null, null)
            : p.Seen && p.RenewTime != renewTime ? (true, renewTime, nowMs)
            : p with { Seen = true, RenewTime = renewTime };
    }

    /// <summary>Whether <paramref name="peer"/> renewed its Lease while watched, within <see cref="Stale"/>.</summary>
    public bool Renewing(string peer, long nowMs) =>
        _peers.TryGetValue(peer, out var p) && p.ChangedMs is { } changed && nowMs - changed <= Stale.TotalMilliseconds;
}
