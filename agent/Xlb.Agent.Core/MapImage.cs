using System.Net;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>
/// What one configuration generation of the data-plane maps must hold for a node config.
/// Backends are numbered from 1 (0 marks an empty ring slot), and a backend keeps its number from
/// one revision to the next (slots no backend holds are empty, <c>default</c>); each service's ring (a Maglev
/// table, or a round-robin cycle) occupies [RingOff, RingOff + RingSize) of the generation's
/// ring array, and keeps that span from one revision to the next while its size stays. The
/// filter marks the VIPs and the DNAT backends of this generation.
/// </summary>
/// <param name="Ring">Ring slots 0..n of the generation; not to be changed once built.</param>
public sealed record MapImage(
    byte Generation,
    IReadOnlyDictionary<XlbVipKey, uint> Vips,
    IReadOnlyDictionary<XlbSvcKey, XlbSvc> Services,
    IReadOnlyList<XlbBackend> Backends,
    uint[] Ring,
    FilterImage Filter)
{
    /// <summary>The sizes of the maps this image was built for.</summary>
    public DataPlaneCapacity Capacity { get; init; } = DataPlaneCapacity.Default;

    /// <summary>
    /// Each service's affinity timeout and connection-log sample by service id (xlb_svc_opts): one
    /// for every service, zeros for those that ask for neither. Not generation-scoped (a service
    /// keeps its id).
    /// </summary>
    public IReadOnlyDictionary<uint, XlbSvcOpts> ServiceOptions { get; init; } = new Dictionary<uint, XlbSvcOpts>();

    /// <summary>
    /// The source addresses of the FullNAT services that have more than the VIP
    /// (<see cref="XlbAbi.SvcSnat"/>), by service id; generation-scoped in the maps
    /// (<see cref="SnatKey"/>), so they change with the flip.
    /// </summary>
    public IReadOnlyDictionary<uint, XlbSnat> Snat { get; init; } = new Dictionary<uint, XlbSnat>();

    /// <summary>The xlb_snat slot of service <paramref name="id"/> in generation <paramref name="generation"/>.</summary>
    public static uint SnatKey(byte generation, uint id) => (uint)(generation * (XlbAbi.MaxServices + 1)) + id;

    /// <summary>The key of backend slot <paramref name="index"/> (1-based) in this generation.</summary>
    public uint BackendKey(int index) => (uint)(Generation * Capacity.BackendSlots + index);

    public uint RingKey(int slot) => (uint)(Generation * Capacity.RingSlots + slot);

    /// <summary>
    /// The same content in another generation: only the keys of the hash maps carry the
    /// generation (array slots derive it from <see cref="Generation"/>), so the Maglev tables
    /// are not built again.
    /// </summary>
    public MapImage WithGeneration(byte generation) =>
        generation == Generation
            ? this
            : this with
            {
                Generation = generation,
                Vips = Vips.ToDictionary(v => v.Key with { Gen = generation }, v => v.Value),
                Services = Services.ToDictionary(s => s.Key with { Gen = generation }, s => s.Value),
            };

    /// <summary>This image's services by generation-free key (ids and ring spans), for the next build.</summary>
    public IReadOnlyDictionary<XlbSvcKey, XlbSvc> ServiceBasis() => BasisOf(Services);

    /// <summary>A generation's services by generation-free key (ids and ring spans): the basis the next build carries over.</summary>
    public static Dictionary<XlbSvcKey, XlbSvc> BasisOf(IReadOnlyDictionary<XlbSvcKey, XlbSvc> services) =>
        services.ToDictionary(s => s.Key with { Gen = 0 }, s => s.Value);

    /// <summary>The number of the last backend slot in use (slot 1 first); 0 when none is.</summary>
    public static int LastUsedSlot(IReadOnlyList<XlbBackend> slots)
    {
        var last = slots.Count;
        while (last > 0 && slots[last - 1].Family == 0)
        {
            last--;
        }
        return last;
    }

    /// <summary>What the maps of this generation hold once the image is written: the diff's view of them.</summary>
    public ObservedGeneration AsObserved() => new(Vips, Services, Backends, Ring, Filter) { Snat = Snat };

    /// <summary>The index of every backend of this image, for the next build.</summary>
    public IReadOnlyDictionary<XlbBackend, int> BackendIndexes() => IndexesOf(Backends);

    /// <summary>The index of every backend in a generation's backend slots (slot 1 first); empty slots are skipped.</summary>
    public static Dictionary<XlbBackend, int> IndexesOf(IReadOnlyList<XlbBackend> slots)
    {
        var result = new Dictionary<XlbBackend, int>();
        for (var i = 0; i < slots.Count; i++)
        {
            if (slots[i].Family != 0)
            {
                result.TryAdd(slots[i], i + 1);
            }
        }
        return result;
    }

    /// <summary>Builds the image of <paramref name="spec"/> for generation <paramref name="generation"/>.</summary>
    /// <param name="previous">
    /// The services of the revision before (keyed with generation 0). A service keeps its id, so
    /// its counters stay its own (new services get the lowest free ids), and its ring span while
    /// its ring keeps its size, so a change elsewhere rewrites none of its slots.
    /// </param>
    /// <param name="backendIndexes">
    /// The backend indexes of the revision before: a backend keeps its index, so its counters
    /// (by index) stay its own and a flow's index keeps naming its backend. A new backend takes
    /// the lowest index that no backend of this revision or the one before holds.
    /// </param>
    /// <param name="capacity">The sizes of the maps; the defaults when null.</param>
    /// <param name="memo">
    /// Listeners compiled by earlier builds (backends in the ABI's form, ring tables), reused when
    /// a listener's backends are unchanged; null: everything is compiled afresh.
    /// </param>
    /// <exception cref="ConfigTooLargeException">The config needs more than the maps hold.</exception>
    public static MapImage Build(XlbNodeConfigSpec spec, byte generation, IReadOnlyDictionary<XlbSvcKey, XlbSvc>? previous = null,
        IReadOnlyDictionary<XlbBackend, int>? backendIndexes = null, DataPlaneCapacity? capacity = null, ListenerMemo? memo = null) =>
        new ImageBuilder(capacity, memo).Build(spec, generation, previous, backendIndexes);

    /// <summary>The IP protocol number of a listener's protocol, as the maps key it.</summary>
    public static byte ProtoOf(L4Protocol protocol) => protocol == L4Protocol.TCP ? XlbAbi.ProtoTcp : XlbAbi.ProtoUdp;
}

public sealed class ConfigTooLargeException : Exception
{
    public ConfigTooLargeException(string message)
        : base(message)
    {
    }

    public ConfigTooLargeException()
    {
    }

    public ConfigTooLargeException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
