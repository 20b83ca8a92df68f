using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>One write to the data-plane maps.</summary>
public abstract record MapOp
{
    public sealed record PutBackend(uint Key, XlbBackend Value) : MapOp;
    public sealed record PutRingSlot(uint Key, uint BackendIndex) : MapOp;
    public sealed record PutService(XlbSvcKey Key, XlbSvc Value) : MapOp;
    public sealed record DeleteService(XlbSvcKey Key) : MapOp;
    public sealed record PutVip(XlbVipKey Key, uint Flags) : MapOp;
    public sealed record DeleteVip(XlbVipKey Key) : MapOp;
    public sealed record PutFilter(uint Generation, FilterImage Filter) : MapOp;
    /// <summary>Makes a generation the one packets read: a single u32 store.</summary>
    public sealed record Flip(XlbCfg Config) : MapOp;
}

/// <summary>What the maps of one generation hold now, as read by the shell.</summary>
/// <param name="Backends">Backend slots 1..n of the generation (index 0 of the list is slot 1).</param>
/// <param name="Ring">Ring slots 0..m of the generation.</param>
/// <param name="Filter">The generation's filter entry.</param>
public sealed record ObservedGeneration(
    IReadOnlyDictionary<XlbVipKey, uint> Vips,
    IReadOnlyDictionary<XlbSvcKey, XlbSvc> Services,
    IReadOnlyList<XlbBackend> Backends,
    IReadOnlyList<uint> Ring,
    FilterImage Filter);

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
        for (var i = 0; i < desired.Backends.Count; i++)
        {
            if (i >= observed.Backends.Count || !observed.Backends[i].Equals(desired.Backends[i]))
            {
                ops.Add(new MapOp.PutBackend(desired.BackendKey(i + 1), desired.Backends[i]));
            }
        }
        for (var i = 0; i < desired.Ring.Count; i++)
        {
            if (i >= observed.Ring.Count || observed.Ring[i] != desired.Ring[i])
            {
                ops.Add(new MapOp.PutRingSlot(desired.RingKey(i), desired.Ring[i]));
            }
        }
        foreach (var (key, value) in desired.Services)
        {
            if (!observed.Services.TryGetValue(key, out var have) || have != value)
            {
                ops.Add(new MapOp.PutService(key, value));
            }
        }
        foreach (var key in observed.Services.Keys.Where(k => !desired.Services.ContainsKey(k)))
        {
            ops.Add(new MapOp.DeleteService(key));
        }
        foreach (var (key, flags) in desired.Vips)
        {
            if (!observed.Vips.TryGetValue(key, out var have) || have != flags)
            {
                ops.Add(new MapOp.PutVip(key, flags));
            }
        }
        foreach (var key in observed.Vips.Keys.Where(k => !desired.Vips.ContainsKey(k)))
        {
            ops.Add(new MapOp.DeleteVip(key));
        }
        if (!observed.Filter.Equals(desired.Filter))
        {
            ops.Add(new MapOp.PutFilter(desired.Generation, desired.Filter));
        }
        ops.Add(new MapOp.Flip(config with { ActiveGen = desired.Generation }));
        return ops;
    }
}
