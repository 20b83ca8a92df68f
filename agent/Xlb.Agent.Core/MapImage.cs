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
    public IReadOnlyDictionary<XlbSvcKey, XlbSvc> ServiceBasis() => Services.ToDictionary(s => s.Key with { Gen = 0 }, s => s.Value);

    /// <summary>What the maps of this generation hold once the image is written: the diff's view of them.</summary>
    public ObservedGeneration AsObserved() => new(Vips, Services, Backends, Ring, Filter);

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
        IReadOnlyDictionary<XlbBackend, int>? backendIndexes = null, DataPlaneCapacity? capacity = null, ListenerMemo? memo = null)
    {
        capacity ??= DataPlaneCapacity.Default;
        memo ??= new ListenerMemo();
        var vips = new Dictionary<XlbVipKey, uint>();
        var services = new Dictionary<XlbSvcKey, XlbSvc>();
        var compiled = new Dictionary<Listener, CompiledListener>(ReferenceEqualityComparer.Instance);
        foreach (var listener in spec.Listeners)
        {
            compiled.TryAdd(listener, memo.Compile(listener));
        }
        memo.Sweep();
        var backendIndex = AssignBackendIndexes(spec.Listeners.Select(l => compiled[l].Backends), backendIndexes, capacity.BackendSlots);
        var backends = new XlbBackend[backendIndex.Count == 0 ? 0 : backendIndex.Values.Max()];
        foreach (var (be, idx) in backendIndex)
        {
            backends[idx - 1] = be;
        }
        var filter = new FilterImage();

        foreach (var vip in spec.Vips)
        {
            var address = IPAddress.Parse(vip.Address);
            // The node that holds a VIP answers ARP for it; a standby stays quiet until it takes over.
            vips[new XlbVipKey { Addr = Addr16.From(address), Family = Net.Family(address), Gen = generation }] =
                vip.Role == VipRole.Active ? XlbAbi.VipActive : 0;
            filter.AddVip(address);
        }

        // Two listeners on one VIP, port and protocol (a hand-written config): the later one by name holds the service.
        var keys = spec.Listeners.OrderBy(l => l.Name, StringComparer.Ordinal).Select(l => (Listener: l, Key: KeyOf(l, generation)))
            .GroupBy(k => k.Key).Select(g => g.Last()).ToList();
        var assigned = new Dictionary<XlbSvcKey, uint>();
        foreach (var (_, key) in keys)
        {
            if (previous?.GetValueOrDefault(key with { Gen = 0 }).Id is > 0 and <= XlbAbi.MaxServices and var id)
            {
                assigned[key] = id;
            }
        }
        var taken = assigned.Values.ToHashSet();
        var nextFree = 1u;
        var spans = RingSpans.Assign([.. keys.Select(k => (k.Key with { Gen = 0 }, compiled[k.Listener].Table.Length))], previous, capacity.RingSlots);
        var ring = new uint[spans.End];
        foreach (var (listener, key) in keys)
        {
            var vip = IPAddress.Parse(listener.Vip);
            filter.AddVip(vip);
            var c = compiled[listener];
            if (c.Mode == XlbAbi.ModeDnat)
            {
                // Replies of DNAT backends come through this node with the client as destination.
                foreach (var be in c.Backends)
                {
                    filter.AddReplySource(be.Addr.ToAddress(be.Family));
                }
            }
            if (!assigned.TryGetValue(key, out var id))
            {
                while (taken.Contains(nextFree))
                {
                    nextFree++;
                }
                id = nextFree;
                taken.Add(id);
            }
            var offset = spans.Offsets[key with { Gen = 0 }];
            var indexes = new uint[c.Backends.Length];
            for (var i = 0; i < indexes.Length; i++)
            {
                indexes[i] = (uint)backendIndex[c.Backends[i]];
            }
            var table = c.Table;
            for (var slot = 0; slot < table.Length; slot++)
            {
                ring[offset + slot] = indexes[table[slot]];
            }
            services[key] = new XlbSvc { Id = id, RingOff = (uint)offset, RingSize = (uint)table.Length, Mode = c.Mode, Algo = c.Algo };
        }

        if (services.Count > XlbAbi.MaxServices)
        {
            throw new ConfigTooLargeException($"{services.Count} listeners; the data plane holds {XlbAbi.MaxServices}");
        }
        if (backendIndex.Count > 0 && backendIndex.Values.Max() > capacity.MaxBackends)
        {
            throw new ConfigTooLargeException($"{backendIndex.Count} distinct backends; the data plane holds {capacity.MaxBackends} (agent option --max-backends)");
        }
        return new MapImage(generation, vips, services, backends, ring, filter) { Capacity = capacity };
    }

    /// <summary>
    /// Every distinct backend of the spec and its index: the one it had, or the lowest index that
    /// neither a backend kept here nor one of the revision before holds (a removed backend's index
    /// rests for one revision: its flows, still draining, count to it). Only when that runs out
    /// are rested indexes used.
    /// </summary>
    private static Dictionary<XlbBackend, int> AssignBackendIndexes(IEnumerable<XlbBackend[]> listeners, IReadOnlyDictionary<XlbBackend, int>? before, int slots)
    {
        var result = new Dictionary<XlbBackend, int>();
        var fresh = new List<XlbBackend>();
        var seen = new HashSet<XlbBackend>();
        var held = new HashSet<int>();
        foreach (var listener in listeners)
        {
            foreach (var be in listener)
            {
                if (!seen.Add(be))
                {
                    continue;
                }
                if (before?.GetValueOrDefault(be) is > 0 and var idx && idx < slots && held.Add(idx))
                {
                    result[be] = idx;
                }
                else
                {
                    fresh.Add(be);
                }
            }
        }
        var resting = before?.Values.ToHashSet() ?? [];
        var next = 1;
        var pass = 0;
        foreach (var be in fresh)
        {
            while (held.Contains(next) || (pass == 0 && resting.Contains(next)))
            {
                next++;
                if (next >= slots && pass == 0)
                {
                    // Out of unused indexes: take rested ones as well.
                    (next, pass) = (1, 1);
                }
            }
            held.Add(next);
            result[be] = next;
        }
        return result;
    }

    /// <summary>The IP protocol number of a listener's protocol, as the maps key it.</summary>
    public static byte ProtoOf(L4Protocol protocol) => protocol == L4Protocol.TCP ? XlbAbi.ProtoTcp : XlbAbi.ProtoUdp;

    private static XlbSvcKey KeyOf(Listener listener, byte generation)
    {
        var vip = IPAddress.Parse(listener.Vip);
        return new XlbSvcKey
        {
            Vip = Addr16.From(vip),
            PortBe = Net.Be(listener.Port),
            Proto = ProtoOf(listener.Protocol),
            Family = Net.Family(vip),
            Gen = generation,
        };
    }
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
