using System.Net;
using System.Text.Json;
using Xlb.Crds;
using Xlb.Crds.Serialization;

namespace Xlb.Operator.Core;

/// <summary>
/// What one plan may reuse from the last: per mapping its validation, resolved backends and
/// status; per listener its rendering and digest; per VIP its item; per mapping and node the
/// digest of its listeners; per chunk bucket its chunk; and the last plan itself, for the next
/// to continue from (see <c>Planner.Continue</c>). An entry is reused only when the very objects
/// it was computed from (same references: informer caches replace an object when it changes)
/// are the inputs again, or, for a mapping, its shard and its pool, objects with the same spec;
/// and a status only when everything else it is made of is equal. So a plan with a memo equals a
/// plan without one; it is only faster when little changed. Entries a full plan did not use are
/// dropped at its end. One plan at a time: not thread-safe.
/// </summary>
public sealed class PlanMemo
{
    private long _plan;

    internal sealed class MappingEntry
    {
        /// <summary>The object last validated; a later object with the same spec takes its place (see <see cref="Mapping"/>).</summary>
        public required PortMapping Object { get; set; }
        public required VipShard Shard { get; set; }
        public required LoadBalancerPool Pool { get; set; }
        public required Dictionary<string, string>? NamespaceLabels { get; init; }
        public required Service? Service { get; init; }
        public required EndpointSlice[] Slices { get; init; }
        public required (string Reason, string Message)? Error { get; init; }
        public required Planner.ValidMapping? Valid { get; set; }
        /// <summary>A hash of the spec's JSON (the first 128 bits of its SHA-256), once a later object had to be compared with it.</summary>
        public UInt128? SpecHash { get; set; }
        public long Used { get; set; }
        /// <summary>The status last computed for this entry, with what else it was computed from.</summary>
        public (Planner.StatusKey Key, PortMappingStatus Status, DateTimeOffset? StampedAt)? Status { get; set; }
    }

    internal sealed class ListenerEntry
    {
        public required object Backends { get; init; }
        public required IPAddress Vip { get; init; }
        /// <summary>The listener with its digest.</summary>
        public required Chunking.Item Item { get; init; }
        public long Used { get; set; }
    }

    internal sealed class VipEntry
    {
        public required Chunking.Item Item { get; init; }
        public long Used { get; set; }
    }

    /// <summary>Something made from a list of items, valid while the items are the same (by their digest arrays).</summary>
    internal sealed class ItemsEntry<T>
    {
        public required byte[][] Digests { get; init; }
        public required T Value { get; init; }
        public long Used { get; set; }
    }

    private readonly Dictionary<string, MappingEntry> _mappings = new(StringComparer.Ordinal);
    private readonly Dictionary<(string Mapping, string Port, string? Node), ListenerEntry> _listeners = [];
    private readonly Dictionary<(string Address, VipRole Role, string Shard, string? ActiveNode, Duration? TakeoverAfter), VipEntry> _vips = [];
    private readonly Dictionary<(string Node, int Buckets, int Index), ItemsEntry<XlbNodeConfigChunk>> _buckets = [];
    private readonly Dictionary<(string Mapping, string Node), ItemsEntry<string>> _mappingDigests = [];

    /// <summary>Entries reused in the last plan, and entries computed afresh (for metrics and tests).</summary>
    public (long Hits, long Misses) LastPlan { get; private set; }

    /// <summary>Whether the last plan continued from the one before (only what changed was planned again) rather than planning everything.</summary>
    public bool LastContinued { get; private set; }

    /// <summary>
    /// Mapping objects the last plan took over: new objects of an unchanged spec (the operator's own
    /// status writes come back so), each replacing the one the memo held.
    /// </summary>
    public long LastTakeOvers { get; private set; }

    /// <summary>What the last plan leaves for the next to continue from; null when it must plan everything.</summary>
    internal Planner.PlanState? State { get; set; }

    private long _hits;
    private long _misses;
    private long _takeOvers;
    private bool _continued;

    internal void Begin()
    {
        _plan++;
        _hits = _misses = _takeOvers = 0;
        _continued = false;
    }

    /// <summary>This plan continued from the last, reusing <paramref name="mappings"/> mappings whole. It saw only what changed, so nothing is swept.</summary>
    internal void Continued(long mappings)
    {
        _continued = true;
        _hits += mappings;
    }

    internal void End()
    {
        LastContinued = _continued;
        LastTakeOvers = _takeOvers;
        if (_continued)
        {
            LastPlan = (_hits, _misses);
            return;
        }
        Sweep(_mappings, e => e.Used);
        Sweep(_listeners, e => e.Used);
        Sweep(_vips, e => e.Used);
        Sweep(_buckets, e => e.Used);
        Sweep(_mappingDigests, e => e.Used);
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

    /// <summary>
    /// The entry of a mapping whose inputs are the very objects it was computed from. A new mapping
    /// object with the same spec (its status or metadata changed: the operator's own status writes
    /// come back so) still validates the same way: it takes the entry over, and only the status
    /// computed for the old object is dropped.
    /// </summary>
    internal MappingEntry? Mapping(string key, PortMapping pm, VipShard shard, LoadBalancerPool pool, Dictionary<string, string>? labels, Service? service, List<EndpointSlice>? slices)
    {
        if (_mappings.TryGetValue(key, out var e) && SameSpec(e.Shard, shard) && SameSpec(e.Pool, pool)
            && ReferenceEquals(e.NamespaceLabels, labels) && ReferenceEquals(e.Service, service) && SameRefs(e.Slices, slices)
            && (ReferenceEquals(e.Object, pm) || TakeOver(e, pm)))
        {
            (e.Shard, e.Pool) = (shard, pool);
            e.Used = _plan;
            _hits++;
            return e;
        }
        _misses++;
        return null;
    }

    // A shard's or pool's spec as JSON, per object: their status changes with every allocation and placement, and validation reads only the spec.
    private readonly System.Runtime.CompilerServices.ConditionalWeakTable<object, byte[]> _specs = [];

    internal bool SameSpec(VipShard a, VipShard b) =>
        ReferenceEquals(a, b) || SpecOf(a, a.Spec).AsSpan().SequenceEqual(SpecOf(b, b.Spec));

    internal bool SameSpec(LoadBalancerPool a, LoadBalancerPool b) =>
        ReferenceEquals(a, b) || SpecOf(a, a.Spec).AsSpan().SequenceEqual(SpecOf(b, b.Spec));

    private byte[] SpecOf<T>(object owner, T spec) => _specs.GetValue(owner, _ => JsonSerializer.SerializeToUtf8Bytes(spec, XlbJson.Info<T>()));

    /// <summary>The first 128 bits of the SHA-256 of a spec's JSON: what a spec is compared by, kept in 16 bytes per mapping rather than its JSON.</summary>
    private static UInt128 SpecHash(PortMappingSpec spec)
    {
        Span<byte> hash = stackalloc byte[32];
        NodeConfigContent.JsonSha256(spec, XlbJson.Info<PortMappingSpec>(), hash);
        return System.Buffers.Binary.BinaryPrimitives.ReadUInt128LittleEndian(hash);
    }

    private bool TakeOver(MappingEntry e, PortMapping pm)
    {
        e.SpecHash ??= SpecHash(e.Object.Spec);
        if (!ReferenceEquals(pm.Spec, e.Object.Spec) && SpecHash(pm.Spec) != e.SpecHash)
        {
            return false;
        }
        e.Object = pm;
        _takeOvers++;
        e.Valid = e.Valid is null ? null : e.Valid with { Object = pm };
        // The operator's own status write, come back: the object now carries the very status
        // computed for the old one, transition times included, and computing it again from this
        // object gives it again, at any time. Any other status is computed afresh. The object's
        // instance is kept, and the one computed before is let go (one copy of each status, not two).
        e.Status = e.Status is { } known && pm.Status is { } carried && known.Status.SameAs(carried) ? (known.Key, carried, null) : null;
        return true;
    }

    /// <summary>
    /// The status computed last time for this mapping, when its entry was reused in this plan and
    /// the rest of what the status is made of is equal. A status that stamped a condition
    /// transition with the plan's time is reused only at that same time.
    /// </summary>
    internal PortMappingStatus? Status(string key, PortMapping pm, Planner.StatusKey statusKey, DateTimeOffset now)
    {
        if (_mappings.TryGetValue(key, out var e) && e.Used == _plan && ReferenceEquals(e.Object, pm)
            && e.Status is { } known && known.Key == statusKey && (known.StampedAt is null || known.StampedAt == now))
        {
            Interlocked.Increment(ref _hits);
            return known.Status;
        }
        Interlocked.Increment(ref _misses);
        return null;
    }

    internal void RememberStatus(string key, PortMapping pm, Planner.StatusKey statusKey, PortMappingStatus status, DateTimeOffset now)
    {
        if (_mappings.TryGetValue(key, out var e) && e.Used == _plan && ReferenceEquals(e.Object, pm))
        {
            var stamp = Conditions.Stamp(now);
            e.Status = (statusKey, status, status.Conditions.Any(c => c.LastTransitionTime == stamp) ? now : null);
        }
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

    // Nodes are rendered in parallel: the VIP, chunk and mapping-digest entries are looked up and
    // added under this lock, and made outside it.
    private readonly Lock _renderGate = new();

    /// <summary>A node config's VIP with its digest: the same item as last plan for the same address, role, shard, and (standby) active node and takeover time.</summary>
    internal Chunking.Item Vip(string address, VipRole role, string shard, string? activeNode, Duration? takeoverAfter)
    {
        var key = (address, role, shard, activeNode, takeoverAfter);
        VipEntry? e;
        lock (_renderGate)
        {
            if (_vips.TryGetValue(key, out e))
            {
                e.Used = _plan;
                return e.Item;
            }
        }
        var item = Planner.VipItem(address, role, shard, activeNode, takeoverAfter);
        lock (_renderGate)
        {
            if (!_vips.TryGetValue(key, out e))
            {
                _vips[key] = e = new VipEntry { Item = item };
            }
            e.Used = _plan;
            return e.Item;
        }
    }

    /// <summary>The chunk of one bucket: the same object as last plan while the bucket holds the same items.</summary>
    internal XlbNodeConfigChunk Chunk(string node, int buckets, int index, IReadOnlyList<Chunking.Item> items) =>
        Reuse(_buckets, (node, buckets, index), items, () => Chunking.Chunk(node, items));

    /// <summary>One mapping's listener digest on one node (see <see cref="Planner.MappingDigest"/>), reused while its listeners are the same objects.</summary>
    internal string MappingDigest(string mapping, string node, IReadOnlyList<Chunking.Item> items) =>
        Reuse(_mappingDigests, (mapping, node), items, () => Planner.MappingDigest(items));

    private T Reuse<TKey, T>(Dictionary<TKey, ItemsEntry<T>> entries, TKey key, IReadOnlyList<Chunking.Item> items, Func<T> make) where TKey : notnull
    {
        lock (_renderGate)
        {
            if (entries.TryGetValue(key, out var known) && SameDigests(known.Digests, items))
            {
                known.Used = _plan;
                return known.Value;
            }
        }
        var e = new ItemsEntry<T> { Digests = [.. items.Select(i => i.Digest.Sha256)], Value = make(), Used = _plan };
        lock (_renderGate)
        {
            entries[key] = e;
        }
        return e.Value;
    }

    private static bool SameDigests(byte[][] known, IReadOnlyList<Chunking.Item> items)
    {
        if (known.Length != items.Count)
        {
            return false;
        }
        for (var i = 0; i < known.Length; i++)
        {
            if (!ReferenceEquals(known[i], items[i].Digest.Sha256))
            {
                return false;
            }
        }
        return true;
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
