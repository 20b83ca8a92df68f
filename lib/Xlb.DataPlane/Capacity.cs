using System.Numerics;

namespace Xlb.DataPlane;

/// <summary>
/// How much one configuration generation of the data plane holds: backend slots (a power of two,
/// slot 0 unused) and Maglev ring slots. The agent sizes the maps by it before the program loads
/// and tells the program through xlb_cfg; the defaults are the compiled sizes.
/// </summary>
public sealed record DataPlaneCapacity
{
    public static DataPlaneCapacity Default { get; } = new() { BackendSlots = XlbAbi.MaxBackends, RingSlots = XlbAbi.RingCapacity };

    /// <summary>The largest generation the 32-bit slot keys allow (two generations side by side).</summary>
    public const int MaxSlots = 1 << 30;

    /// <summary>Backend slots per generation, a power of two; <see cref="MaxBackends"/> of them are usable.</summary>
    public int BackendSlots { get; private init; }

    /// <summary>Ring slots per generation: the Maglev tables (and round-robin cycles) of all services together.</summary>
    public int RingSlots { get; private init; }

    /// <summary>Distinct backends a generation holds (slot 0 marks an empty ring slot).</summary>
    public int MaxBackends => BackendSlots - 1;

    /// <summary>A capacity for at least <paramref name="backends"/> distinct backends and <paramref name="ringSlots"/> ring slots.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Below one backend or ring slot, or beyond <see cref="MaxSlots"/>.</exception>
    public static DataPlaneCapacity For(int backends, int ringSlots)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(backends, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(backends, MaxSlots - 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(ringSlots, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ringSlots, MaxSlots);
        return new() { BackendSlots = (int)BitOperations.RoundUpToPowerOf2((uint)backends + 1), RingSlots = ringSlots };
    }

    /// <summary>The capacity a running program was told of (0 in xlb_cfg: the defaults).</summary>
    public static DataPlaneCapacity Of(XlbCfg cfg) => new()
    {
        BackendSlots = cfg.BackendSlots == 0 ? XlbAbi.MaxBackends : (int)cfg.BackendSlots,
        RingSlots = cfg.RingSlots == 0 ? XlbAbi.RingCapacity : (int)cfg.RingSlots,
    };

    /// <summary>The map sizes this capacity asks for, by map name (both generations where a map holds both).</summary>
    public IReadOnlyDictionary<string, uint> MapSizes() => new Dictionary<string, uint>
    {
        ["xlb_backends"] = (uint)BackendSlots * XlbAbi.Generations,
        ["xlb_nexthops"] = (uint)BackendSlots * XlbAbi.Generations,
        ["xlb_backend_stats"] = (uint)BackendSlots,
        ["xlb_backend_conns"] = (uint)BackendSlots,
        ["xlb_rings"] = (uint)RingSlots * XlbAbi.Generations,
    };
}
