using System.Net;
using Xlb.Crds;

namespace Xlb.Operator.Core;

/// <summary>
/// What one plan may reuse from the last: per mapping its validation and resolved backends, per
/// listener its rendering and digest, per chunk bucket its hash. An entry is reused only when the
/// very objects it was computed from (same references: informer caches replace an object when it
/// changes) are the inputs again, so a plan with a memo equals a plan without one; it is only
/// faster when little changed. Entries a plan did not use are dropped at its end. One plan at a
/// time: not thread-safe.
/// </summary>
public sealed class PlanMemo
{
    private long _plan;

    internal sealed class MappingEntry
    {
        public required PortMapping Object { get; init; }
        public required VipShard Shard { get; init; }
        public required LoadBalancerPool Pool { get; init; }
        public required Dictionary<string, string>? NamespaceLabels { get; init; }
        public required Service? Service { get; init; }
        public required EndpointSlice[] Slices { get; init; }
        public required (string Reason, string Message)? Error { get; init; }
        public required Planner.ValidMapping? Valid { get; init; }
        public long Used { get; set; }
    }

    internal sealed class ListenerEntry
    {
        public required object Backends { get; init; }
        public required IPAddress Vip { get; init; }
        public required Listener Listener { get; init; }
        public required NodeConfigContent.ItemDigest Digest { get; init; }
        public long Used { get; set; }
    }

    internal sealed class DigestEntry
    {
        public required NodeConfigContent.ItemDigest Digest { get; init; }
        public long Used { get; set; }
    }

    internal sealed class BucketEntry
    {
        public required byte[][] Digests { get; init; }
        public required string Hash { get; init; }
        public long Used { get; set; }
    }

    private readonly Dictionary<string, MappingEntry> _mappings = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Mapping, string Port, string? Node), ListenerEntry> _listeners = [];
    private readonly Dictionary<string, DigestEntry> _vips = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Node, int Buckets, int Index), BucketEntry> _buckets = [];

    /// <summary>Entries reused in the last plan, and entries computed afresh (for metrics and tests).</summary>
    public (long Hits, long Misses) LastPlan { get; private set; }
    private long _hits;
    private long _misses;

    internal void Begin()
    {
        _plan++;
        _hits = _misses = 0;
    }

    internal void End()
    {
        Sweep(_mappings, e => e.Used);
        Sweep(_listeners, e => e.Used);
        Sweep(_vips, e => e.Used);
        Sweep(_buckets, e => e.Used);
        LastPlan = (_hits, _misses);
    }

    private void Sweep<TKey, TValue>(Dictionary<TKey, TValue> entries, Func<TValue, long> used) where TKey : notnull
    {
        foreach (var (key, value) in entries)
        {
            if (used(value) != _plan)
            {
                entries.Remove(key);
            }
        }
    }

    internal MappingEntry? Mapping(string key, PortMapping pm, VipShard shard, LoadBalancerPool pool, Dictionary<string, string>? labels, Service? service, List<EndpointSlice>? slices)
    {
        if (_mappings.TryGetValue(key, out var e) && ReferenceEquals(e.Object, pm) && ReferenceEquals(e.Shard, shard) && ReferenceEquals(e.Pool, pool)
            && ReferenceEquals(e.NamespaceLabels, labels) && ReferenceEquals(e.Service, service) && SameRefs(e.Slices, slices))
        {
            e.Used = _plan;
            _hits++;
            return e;
        }
        _misses++;
        return null;
    }

    internal void Remember(string key, MappingEntry entry)
    {
        entry.Used = _plan;
        _mappings[key] = entry;
    }

    internal ListenerEntry? Listener((string, string, string?) key, object backends, IPAddress vip)
    {
        if (_listeners.TryGetValue(key, out var e) && ReferenceEquals(e.Backends, backends) && e.Vip.Equals(vip))
        {
            e.Used = _plan;
            _hits++;
            return e;
        }
        _misses++;
        return null;
    }

    internal void Remember((string, string, string?) key, ListenerEntry entry)
    {
        entry.Used = _plan;
        _listeners[key] = entry;
    }

    internal NodeConfigContent.ItemDigest Vip(NodeVip vip)
    {
        var key = $"{vip.Address}|{vip.Role}|{vip.Shard}";
        if (!_vips.TryGetValue(key, out var e))
        {
            _vips[key] = e = new DigestEntry { Digest = NodeConfigContent.Digest(vip) };
        }
        e.Used = _plan;
        return e.Digest;
    }

    internal string Bucket(string node, int buckets, int index, IReadOnlyList<Chunking.Item> items)
    {
        var key = (node, buckets, index);
        if (_buckets.TryGetValue(key, out var e) && e.Digests.Length == items.Count && items.Select((item, i) => ReferenceEquals(item.Digest.Sha256, e.Digests[i])).All(same => same))
        {
            e.Used = _plan;
            return e.Hash;
        }
        var digests = items.Select(i => i.Digest.Sha256).ToArray();
        _buckets[key] = e = new BucketEntry { Digests = digests, Hash = NodeConfigContent.Hash(digests), Used = _plan };
        return e.Hash;
    }

    private static bool SameRefs(EndpointSlice[] a, List<EndpointSlice>? b)
    {
        if (a.Length != (b?.Count ?? 0))
        {
            return false;
        }
        for (var i = 0; i < a.Length; i++)
        {
            if (!ReferenceEquals(a[i], b![i]))
            {
                return false;
            }
        }
        return true;
    }
}
