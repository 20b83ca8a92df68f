using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>One write to the data-plane maps.</summary>
public abstract record MapOp
{
    public sealed record PutBackend(uint Key, XlbBackend Value) : MapOp;
    /// <summary>Consecutive ring slots from <paramref name="Key"/> on: one write per slot.</summary>
    public sealed record PutRing(uint Key, ReadOnlyMemory<uint> Slots) : MapOp;
    public sealed record PutService(XlbSvcKey Key, XlbSvc Value) : MapOp;
    public sealed record DeleteService(XlbSvcKey Key) : MapOp;
    public sealed record PutVip(XlbVipKey Key, uint Flags) : MapOp;
    public sealed record DeleteVip(XlbVipKey Key) : MapOp;
    public sealed record PutFilter(uint Generation, FilterImage Filter) : MapOp;
    /// <summary>A FullNAT service's source addresses (xlb_snat), at generation × (MaxServices + 1) + id.</summary>
    public sealed record PutSnat(uint Key, XlbSnat Value) : MapOp;
    /// <summary>Makes a generation the one packets read: a single u32 store.</summary>
    public sealed record Flip(XlbCfg Config) : MapOp;
}

/// <summary>What the maps of one generation hold now, as read by the shell.</summary>
/// <param name="Backends">Backend slots 1..n of the generation (index 0 of the list is slot 1).</param>
/// <param name="Ring">Ring slots 0..m of the generation (not to be changed).</param>
/// <param name="Filter">The generation's filter entry.</param>
public sealed record ObservedGeneration(
    IReadOnlyDictionary<XlbVipKey, uint> Vips,
    IReadOnlyDictionary<XlbSvcKey, XlbSvc> Services,
    IReadOnlyList<XlbBackend> Backends,
    uint[] Ring,
    FilterImage Filter)
{
    /// <summary>The source addresses of its FullNAT services that have more than the VIP, by service id.</summary>
    public IReadOnlyDictionary<uint, XlbSnat> Snat { get; init; } = new Dictionary<uint, XlbSnat>();
}

/// <summary>
/// The agent's pure core: desired image + observed inactive generation → ordered operations.
/// Everything is written into the inactive generation, which no packet reads; the last
/// operation flips the active generation, so a packet sees the old revision or the new one,
/// never a mix. Backend and ring slots beyond what the new services reference are left as
/// they are: nothing can reach them.
/// </summary>
public static class MapDiff
{
    public static IReadOnlyList<MapOp> Plan(MapImage desired, ObservedGeneration observed, XlbCfg config)
    {
        var ops = new List<MapOp>();
        // Slots built one from the other share their unchanged chunks: those need no look.
        var (wantSlots, haveSlots) = (desired.Backends as Slots<XlbBackend>, observed.Backends as Slots<XlbBackend>);
        for (var i = 0; i < desired.Backends.Count; i++)
        {
            if (wantSlots is not null && haveSlots is not null && i % Slots<XlbBackend>.ChunkSize == 0 && i + Slots<XlbBackend>.ChunkSize <= Math.Min(wantSlots.Count, haveSlots.Count) && wantSlots.SharesChunk(haveSlots, i))
            {
                i += Slots<XlbBackend>.ChunkSize - 1;
                continue;
            }
            if (i >= observed.Backends.Count || !observed.Backends[i].Equals(desired.Backends[i]))
            {
                ops.Add(new MapOp.PutBackend(desired.BackendKey(i + 1), desired.Backends[i]));
            }
        }
        AddRingRuns(ops, desired, observed.Ring);
        var services = Entries(desired.Services, observed.Services);
        ops.AddRange(services.Put.Select(e => new MapOp.PutService(e.Key, e.Value)));
        ops.AddRange(services.Delete.Select(k => new MapOp.DeleteService(k)));
        var vips = Entries(desired.Vips, observed.Vips);
        ops.AddRange(vips.Put.Select(e => new MapOp.PutVip(e.Key, e.Value)));
        ops.AddRange(vips.Delete.Select(k => new MapOp.DeleteVip(k)));
        if (!observed.Filter.Equals(desired.Filter))
        {
            ops.Add(new MapOp.PutFilter(desired.Generation, desired.Filter));
        }
        foreach (var (id, snat) in desired.Snat)
        {
            if (!observed.Snat.TryGetValue(id, out var have) || have != snat)
            {
                ops.Add(new MapOp.PutSnat(MapImage.SnatKey(desired.Generation, id), snat));
            }
        }
        ops.Add(new MapOp.Flip(config with { ActiveGen = desired.Generation }));
        return ops;
    }

    /// <summary>
    /// One hash map, desired against observed: the entries to write (new or changed), in the
    /// desired order, and the keys to delete, in the observed order.
    /// </summary>
    public static (List<KeyValuePair<TKey, TValue>> Put, List<TKey> Delete) Entries<TKey, TValue>(
        IReadOnlyDictionary<TKey, TValue> desired, IReadOnlyDictionary<TKey, TValue> observed)
        where TKey : notnull
    {
        var put = desired.Where(e => !observed.TryGetValue(e.Key, out var have) || !EqualityComparer<TValue>.Default.Equals(have, e.Value)).ToList();
        var delete = observed.Keys.Where(k => !desired.ContainsKey(k)).ToList();
        return (put, delete);
    }

    /// <summary>How many map entries the operations write or delete (a ring run writes one per slot).</summary>
    public static int Writes(IReadOnlyList<MapOp> ops) => ops.Sum(o => o is MapOp.PutRing r ? r.Slots.Length : 1);

    /// <summary>
    /// The ring slots that differ, as runs of consecutive slots. Equal stretches are skipped a
    /// block at a time (vectorised compare), so an unchanged ring of millions of slots costs little.
    /// </summary>
    private static void AddRingRuns(List<MapOp> ops, MapImage desired, uint[] observed)
    {
        const int block = 256;
        var want = desired.Ring.AsSpan();
        var have = observed.AsSpan(0, Math.Min(observed.Length, want.Length));
        var runStart = -1;
        var i = 0;
        while (i < want.Length)
        {
            if (runStart < 0 && i + block <= have.Length && want.Slice(i, block).SequenceEqual(have.Slice(i, block)))
            {
                i += block;
                continue;
            }
            var differs = i >= have.Length || want[i] != have[i];
            if (differs && runStart < 0)
            {
                runStart = i;
            }
            else if (!differs && runStart >= 0)
            {
                ops.Add(new MapOp.PutRing(desired.RingKey(runStart), desired.Ring.AsMemory(runStart, i - runStart)));
                runStart = -1;
            }
            i++;
        }
        if (runStart >= 0)
        {
            ops.Add(new MapOp.PutRing(desired.RingKey(runStart), desired.Ring.AsMemory(runStart, want.Length - runStart)));
        }
    }
}
