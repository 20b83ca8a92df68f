using System.Net;
using Xlb.Crds;
using static Xlb.Operator.Core.Planner;

namespace Xlb.Operator.Core;

/// <summary>
/// VIP allocation. Nothing already handed out can be taken by a newcomer, so the passes run in
/// order of seniority: addresses a mapping held before (recorded in its status, or in the last
/// node configs), then explicit requests, then automatic ones. Mappings with the same shareKey in
/// a pool that allows sharing share one address when their ports do not clash.
/// </summary>
internal static class Ipam
{
    /// <param name="Unrecorded">The mappings whose status records no VIP.</param>
    /// <param name="FromConfigs">Whether one of those took its previous address from the node configs.</param>
    internal sealed record Result(Dictionary<ValidMapping, IPAddress> Assigned, Dictionary<string, IPAddress> Held, HashSet<string> Unrecorded, bool FromConfigs);

    private sealed class Holder(string shard, string? shareKey)
    {
        public string Shard { get; } = shard;
        public string? ShareKey { get; } = shareKey;
        public List<ValidMapping> Members { get; } = [];
    }

    public static Result Allocate(List<ValidMapping> mappings, PlanInput input, List<Problem> problems)
    {
        var assigned = new Dictionary<ValidMapping, IPAddress>(mappings.Count);
        var taken = new Dictionary<IPAddress, Holder>(mappings.Count);
        var groups = new Dictionary<(string Shard, string Key), IPAddress>();
        var failed = new HashSet<ValidMapping>();
        var (previous, unrecorded, fromConfigs) = PreviousVips(input);

        // Invalid mappings keep what they held: a typo in a spec must not give its VIP away.
        var valid = mappings.Select(m => m.Key).ToHashSet(StringComparer.Ordinal);
        var held = new Dictionary<string, IPAddress>(StringComparer.Ordinal);
        foreach (var pm in input.PortMappings)
        {
            var key = KeyOf(pm);
            if (!valid.Contains(key) && previous.TryGetValue(key, out var address) && !taken.ContainsKey(address))
            {
                taken[address] = new Holder("", null);
                held[key] = address;
            }
        }

        // Source addresses (spec.nat.sourceAddresses) are no VIP's: they are taken before any VIP is.
        var sources = new Dictionary<IPAddress, List<ValidMapping>>();
        foreach (var m in mappings.Where(m => m.Sources.Count > 0).OrderBy(m => m.Key, StringComparer.Ordinal))
        {
            foreach (var source in m.Sources)
            {
                if (!sources.TryGetValue(source, out var users))
                {
                    sources[source] = users = [];
                }
                users.Add(m);
            }
        }

        string? Conflict(ValidMapping m, IPAddress a)
        {
            if (sources.TryGetValue(a, out var users))
            {
                return $"{a} is a source address of PortMapping {users[0].Key} (spec.nat.sourceAddresses)";
            }
            if (!taken.TryGetValue(a, out var holder))
            {
                return null;
            }
            var other = holder.Members.FirstOrDefault();
            if (other is null)
            {
                return $"{a} is held by a PortMapping that is not programmed";
            }
            if (m.ShareKey is null || holder.ShareKey != m.ShareKey || holder.Shard != m.Shard.Name)
            {
                return $"{a} is used by PortMapping {other.Key}; to share it, give both the same spec.shareKey";
            }
            if (!m.Shard.Pool.Pool.Spec.Sharing.AllowSharedVips)
            {
                return $"{a} is used by PortMapping {other.Key} and LoadBalancerPool {m.Shard.Pool.Name} does not allow shared VIPs (spec.sharing.allowSharedVips)";
            }
            var clash = holder.Members.FirstOrDefault(h => h.Ports.Any(p => m.Ports.Any(q => p.Port == q.Port && p.Protocol == q.Protocol)));
            return clash is null ? null : $"{a} is shared with PortMapping {clash.Key}, which already uses a port this mapping asks for";
        }

        void Take(ValidMapping m, IPAddress a)
        {
            if (!taken.TryGetValue(a, out var holder))
            {
                taken[a] = holder = new Holder(m.Shard.Name, m.ShareKey);
                if (m.ShareKey is not null)
                {
                    groups.TryAdd((m.Shard.Name, m.ShareKey), a);
                }
            }
            holder.Members.Add(m);
            assigned[m] = a;
        }

        // 1. What each mapping held before, where it still may.
        foreach (var m in mappings)
        {
            if (previous.TryGetValue(m.Key, out var before) && m.Shard.Pool.Offers(before) && (m.RequestedVip is null || m.RequestedVip.Equals(before)) && Conflict(m, before) is null)
            {
                Take(m, before);
            }
        }
        // 2. Explicit requests.
        foreach (var m in mappings.Where(m => m.RequestedVip is not null && !assigned.ContainsKey(m)))
        {
            if (Conflict(m, m.RequestedVip!) is { } why)
            {
                problems.Add(new Problem(ObjectRef.Of(m.Object), "VipConflict", $"spec.vip {why}"));
                failed.Add(m);
                continue;
            }
            Take(m, m.RequestedVip!);
        }
        // 3. Automatic: join the shareKey group if it has an address, else the next free address.
        var cursors = new Dictionary<string, IEnumerator<IPAddress>>(StringComparer.Ordinal);
        try
        {
            foreach (var m in mappings.Where(m => m.RequestedVip is null && !assigned.ContainsKey(m)))
            {
                var pool = m.Shard.Pool;
                if (m.ShareKey is not null && groups.TryGetValue((m.Shard.Name, m.ShareKey), out var group))
                {
                    if (Conflict(m, group) is { } why)
                    {
                        problems.Add(new Problem(ObjectRef.Of(m.Object), "VipConflict", why));
                        continue;
                    }
                    Take(m, group);
                    continue;
                }
                if (pool.Pool.Spec.Disabled || !pool.Pool.Spec.AutoAssign)
                {
                    problems.Add(new Problem(ObjectRef.Of(m.Object), "PoolNotAssignable",
                        $"LoadBalancerPool {pool.Name} is {(pool.Pool.Spec.Disabled ? "disabled" : "not autoAssign")}: set spec.vip to an address of it"));
                    continue;
                }
                if (!cursors.TryGetValue(pool.Name, out var cursor))
                {
                    cursors[pool.Name] = cursor = pool.Blocks.SelectMany(b => b.Addresses()).Where(pool.Offers).GetEnumerator();
                }
                // Addresses behind the cursor are taken for good in this pass, so the scan is linear overall.
                IPAddress? free = null;
                while (cursor.MoveNext())
                {
                    if (!taken.ContainsKey(cursor.Current) && !sources.ContainsKey(cursor.Current))
                    {
                        free = cursor.Current;
                        break;
                    }
                }
                if (free is null)
                {
                    problems.Add(new Problem(ObjectRef.Of(m.Object), "PoolExhausted", $"LoadBalancerPool {pool.Name} has no free address left"));
                    continue;
                }
                Take(m, free);
            }
        }
        finally
        {
            foreach (var c in cursors.Values)
            {
                c.Dispose();
            }
        }
        SourceConflicts(sources, assigned, problems);
        return new Result(assigned, held, unrecorded, fromConfigs);
    }

    /// <summary>
    /// A source address moves with the VIP of the mappings that list it, so it is of that VIP's
    /// family and no two VIPs share it (the first mapping by name keeps it). A mapping that breaks
    /// either is not programmed, and is told why.
    /// </summary>
    private static void SourceConflicts(Dictionary<IPAddress, List<ValidMapping>> sources, Dictionary<ValidMapping, IPAddress> assigned, List<Problem> problems)
    {
        var vipOf = new Dictionary<IPAddress, (IPAddress Vip, ValidMapping By)>();
        foreach (var m in sources.Values.SelectMany(u => u).Distinct().OrderBy(m => m.Key, StringComparer.Ordinal).ToList())
        {
            if (!assigned.TryGetValue(m, out var vip))
            {
                continue;
            }
            (string Reason, string Message)? why = null;
            foreach (var source in m.Sources)
            {
                if (source.AddressFamily != vip.AddressFamily)
                {
                    why = ("InvalidSpec", $"spec.nat.sourceAddresses: {source} is not of the family of the VIP {vip}");
                    break;
                }
                if (vipOf.TryGetValue(source, out var first) && !first.Vip.Equals(vip))
                {
                    why = ("SourceAddressConflict", $"spec.nat.sourceAddresses: {source} is a source address of PortMapping {first.By.Key} on VIP {first.Vip}; a source address moves with one VIP");
                    break;
                }
            }
            if (why is { } problem)
            {
                problems.Add(new Problem(ObjectRef.Of(m.Object), problem.Reason, problem.Message));
                assigned.Remove(m);
                continue;
            }
            foreach (var source in m.Sources)
            {
                vipOf.TryAdd(source, (vip, m));
            }
        }
    }

    /// <summary>The address each mapping held: its status first (the record), else the last node configs; the mappings without a record; and whether one of those found its address in the configs.</summary>
    private static (Dictionary<string, IPAddress> Vips, HashSet<string> Unrecorded, bool FromConfigs) PreviousVips(PlanInput input)
    {
        var result = new Dictionary<string, IPAddress>(input.PortMappings.Count, StringComparer.Ordinal);
        var unrecorded = new HashSet<string>(StringComparer.Ordinal);
        foreach (var pm in input.PortMappings)
        {
            if (StatusVip(pm) is { } vip)
            {
                result[KeyOf(pm)] = vip;
            }
            else
            {
                unrecorded.Add(KeyOf(pm));
            }
        }
        if (unrecorded.Count == 0)
        {
            return (result, unrecorded, false); // every mapping has its record; the node configs could only add mappings that are gone
        }
        var fromConfigs = false;
        foreach (var listener in input.Previous.Values.OrderBy(c => c.Metadata.Name, StringComparer.Ordinal).SelectMany(c => c.Spec.Listeners))
        {
            var cut = listener.Name.LastIndexOf('/');
            if (cut > 0 && IPAddress.TryParse(listener.Vip, out var vip) && result.TryAdd(listener.Name[..cut], vip))
            {
                fromConfigs |= unrecorded.Contains(listener.Name[..cut]);
            }
        }
        return (result, unrecorded, fromConfigs);
    }
}
