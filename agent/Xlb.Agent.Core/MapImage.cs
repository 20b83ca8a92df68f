using System.Net;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>
/// What one configuration generation of the data-plane maps must hold for a node config.
/// Backends are numbered from 1 (0 marks an empty ring slot), and a backend keeps its number from
/// one revision to the next (slots no backend holds are empty, <c>default</c>); each service's ring (a Maglev
/// table, or a round-robin cycle) occupies [RingOff, RingOff + RingSize) of the generation's
/// ring array. The filter marks the VIPs and the DNAT backends of this generation.
/// </summary>
public sealed record MapImage(
    byte Generation,
    IReadOnlyDictionary<XlbVipKey, uint> Vips,
    IReadOnlyDictionary<XlbSvcKey, XlbSvc> Services,
    IReadOnlyList<XlbBackend> Backends,
    IReadOnlyList<uint> Ring,
    FilterImage Filter)
{
    /// <summary>The key of backend slot <paramref name="index"/> (1-based) in this generation.</summary>
    public uint BackendKey(int index) => (uint)(Generation * XlbAbi.MaxBackends + index);

    public uint RingKey(int slot) => (uint)(Generation * XlbAbi.RingCapacity + slot);

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

    /// <summary>The service ids of this image by service (generation-free key), for the next build.</summary>
    public IReadOnlyDictionary<XlbSvcKey, uint> ServiceIds() => Services.ToDictionary(s => s.Key with { Gen = 0 }, s => s.Value.Id);

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
    /// <param name="ids">
    /// Service ids in use (keyed with generation 0): a service keeps its id across revisions, so
    /// its counters stay its own. New services get the lowest free ids.
    /// </param>
    /// <param name="backendIndexes">
    /// The backend indexes of the revision before: a backend keeps its index, so its counters
    /// (by index) stay its own and a flow's index keeps naming its backend. A new backend takes
    /// the lowest index that no backend of this revision or the one before holds.
    /// </param>
    /// <exception cref="ConfigTooLargeException">The config needs more than the maps hold.</exception>
    public static MapImage Build(XlbNodeConfigSpec spec, byte generation, IReadOnlyDictionary<XlbSvcKey, uint>? ids = null,
        IReadOnlyDictionary<XlbBackend, int>? backendIndexes = null)
    {
        var vips = new Dictionary<XlbVipKey, uint>();
        var services = new Dictionary<XlbSvcKey, XlbSvc>();
        // Each listener's backends in the ABI's form, converted once.
        var converted = new Dictionary<Listener, XlbBackend[]>(ReferenceEqualityComparer.Instance);
        foreach (var listener in spec.Listeners)
        {
            converted.TryAdd(listener, [.. listener.Backends.Select(ToBackend)]);
        }
        var backendIndex = AssignBackendIndexes(spec.Listeners.Select(l => converted[l]), backendIndexes);
        var backends = new List<XlbBackend>(backendIndex.Count == 0 ? 0 : backendIndex.Values.Max());
        foreach (var (be, idx) in backendIndex)
        {
            while (backends.Count < idx)
            {
                backends.Add(default);
            }
            backends[idx - 1] = be;
        }
        var ring = new List<uint>();
        var filter = new FilterImage();

        foreach (var vip in spec.Vips)
        {
            var address = IPAddress.Parse(vip.Address);
            // The node that holds a VIP answers ARP for it; a standby stays quiet until it takes over.
            vips[new XlbVipKey { Addr = Addr16.From(address), Family = Net.Family(address), Gen = generation }] =
                vip.Role == VipRole.Active ? XlbAbi.VipActive : 0;
            filter.AddVip(address);
        }

        var keys = spec.Listeners.OrderBy(l => l.Name, StringComparer.Ordinal).Select(l => (Listener: l, Key: KeyOf(l, generation))).ToList();
        var assigned = new Dictionary<XlbSvcKey, uint>();
        foreach (var (_, key) in keys)
        {
            if (ids?.GetValueOrDefault(key with { Gen = 0 }) is > 0 and <= XlbAbi.MaxServices and var id)
            {
                assigned[key] = id;
            }
        }
        var taken = assigned.Values.ToHashSet();
        var nextFree = 1u;
        foreach (var (listener, key) in keys)
        {
            var vip = IPAddress.Parse(listener.Vip);
            filter.AddVip(vip);
            var abi = converted[listener];
            var members = listener.Backends
                .Select((b, i) => (Backend: abi[i], Weight: b.Draining ? 0 : b.Weight))
                .ToList();
            var indexes = new List<int>(members.Count);
            foreach (var (be, _) in members)
            {
                indexes.Add(backendIndex[be]);
            }
            var mode = ModeOf(listener);
            var algo = AlgoOf(listener.Algorithm);
            var table = algo == XlbAbi.AlgoRoundRobin
                ? RoundRobin.Cycle([.. members.Select(m => listener.Algorithm == SchedulingAlgorithm.RoundRobin && m.Weight > 0 ? 1 : m.Weight)])
                : Maglev.Build([.. members.Select(m => new MaglevBackend(BackendIdentity(m.Backend), m.Weight))], Maglev.DefaultSize);
            if (mode == XlbAbi.ModeDnat)
            {
                // Replies of DNAT backends come through this node with the client as destination.
                foreach (var (be, _) in members)
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
            var svc = new XlbSvc { Id = id, RingOff = (uint)ring.Count, RingSize = (uint)table.Length, Mode = mode, Algo = algo };
            ring.AddRange(table.Select(i => (uint)indexes[i]));
            services[key] = svc;
        }

        if (services.Count > XlbAbi.MaxServices)
        {
            throw new ConfigTooLargeException($"{services.Count} listeners; the data plane holds {XlbAbi.MaxServices}");
        }
        if (backends.Count >= XlbAbi.MaxBackends)
        {
            throw new ConfigTooLargeException($"{backendIndex.Count} distinct backends; the data plane holds {XlbAbi.MaxBackends - 1}");
        }
        if (ring.Count > XlbAbi.RingCapacity)
        {
            throw new ConfigTooLargeException($"Maglev rings need {ring.Count} slots; the data plane holds {XlbAbi.RingCapacity}");
        }
        return new MapImage(generation, vips, services, backends, ring, filter);
    }

    /// <summary>
    /// Every distinct backend of the spec and its index: the one it had, or the lowest index that
    /// neither a backend kept here nor one of the revision before holds (a removed backend's index
    /// rests for one revision: its flows, still draining, count to it). Only when that runs out
    /// are rested indexes used.
    /// </summary>
    private static Dictionary<XlbBackend, int> AssignBackendIndexes(IEnumerable<XlbBackend[]> listeners, IReadOnlyDictionary<XlbBackend, int>? before)
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
                if (before?.GetValueOrDefault(be) is > 0 and < XlbAbi.MaxBackends and var idx && held.Add(idx))
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
                if (next >= XlbAbi.MaxBackends && pass == 0)
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

    private static XlbSvcKey KeyOf(Listener listener, byte generation)
    {
        var vip = IPAddress.Parse(listener.Vip);
        return new XlbSvcKey
        {
            Vip = Addr16.From(vip),
            PortBe = Net.Be(listener.Port),
            Proto = listener.Protocol == L4Protocol.TCP ? XlbAbi.ProtoTcp : XlbAbi.ProtoUdp,
            Family = Net.Family(vip),
            Gen = generation,
        };
    }

    private static byte ModeOf(Listener listener) => listener.NatMode switch
    {
        NatMode.DNAT => XlbAbi.ModeDnat,
        NatMode.DSR => listener.DsrEncapsulation == DsrEncapsulation.L2 ? XlbAbi.ModeDsrL2 : XlbAbi.ModeDsrIpip,
        _ => XlbAbi.ModeFullNat,
    };

    /// <summary>
    /// The data plane's algorithm. LeastConn is refused by the operator; a node config written by
    /// hand that asks for it gets weighted round robin.
    /// </summary>
    private static byte AlgoOf(SchedulingAlgorithm algorithm) => algorithm switch
    {
        SchedulingAlgorithm.SourceHash => XlbAbi.AlgoSourceHash,
        SchedulingAlgorithm.RoundRobin or SchedulingAlgorithm.WeightedRoundRobin or SchedulingAlgorithm.LeastConn => XlbAbi.AlgoRoundRobin,
        _ => XlbAbi.AlgoMaglev,
    };

    private static XlbBackend ToBackend(NodeBackend b)
    {
        var address = IPAddress.Parse(b.Address);
        return new XlbBackend { Addr = Addr16.From(address), PortBe = Net.Be(b.Port), Family = Net.Family(address) };
    }

    /// <summary>The Maglev identity of a backend: the same on every node, whatever its index here.</summary>
    private static string BackendIdentity(XlbBackend b) => $"{b.Addr.ToAddress(b.Family)}:{Net.FromBe(b.PortBe)}";
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
