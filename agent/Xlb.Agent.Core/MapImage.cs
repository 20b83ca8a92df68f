using System.Net;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>
/// What one configuration generation of the data-plane maps must hold for a node config.
/// Backends are numbered from 1 (0 marks an empty ring slot); each service's Maglev ring
/// occupies [RingOff, RingOff + RingSize) of the generation's ring array.
/// </summary>
public sealed record MapImage(
    byte Generation,
    IReadOnlyDictionary<XlbVipKey, uint> Vips,
    IReadOnlyDictionary<XlbSvcKey, XlbSvc> Services,
    IReadOnlyList<XlbBackend> Backends,
    IReadOnlyList<uint> Ring)
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

    /// <summary>Builds the image of <paramref name="spec"/> for generation <paramref name="generation"/>.</summary>
    /// <exception cref="ConfigTooLargeException">The config needs more than the maps hold.</exception>
    public static MapImage Build(XlbNodeConfigSpec spec, byte generation)
    {
        var vips = new Dictionary<XlbVipKey, uint>();
        var services = new Dictionary<XlbSvcKey, XlbSvc>();
        var backends = new List<XlbBackend>();
        var backendIndex = new Dictionary<XlbBackend, int>();
        var ring = new List<uint>();

        foreach (var vip in spec.Vips)
        {
            var address = IPAddress.Parse(vip.Address);
            vips[new XlbVipKey { Addr = Addr16.From(address), Family = Net.Family(address), Gen = generation }] = 0;
        }

        var nextId = 1u;
        foreach (var listener in spec.Listeners.OrderBy(l => l.Name, StringComparer.Ordinal))
        {
            var vip = IPAddress.Parse(listener.Vip);
            var key = new XlbSvcKey
            {
                Vip = Addr16.From(vip),
                PortBe = Net.Be(listener.Port),
                Proto = listener.Protocol == L4Protocol.TCP ? XlbAbi.ProtoTcp : XlbAbi.ProtoUdp,
                Family = Net.Family(vip),
                Gen = generation,
            };
            var members = listener.Backends
                .Select(b => (Backend: ToBackend(b), Weight: b.Draining ? 0 : b.Weight))
                .ToList();
            var ids = new List<int>(members.Count);
            foreach (var (be, _) in members)
            {
                if (!backendIndex.TryGetValue(be, out var idx))
                {
                    backends.Add(be);
                    idx = backends.Count;
                    backendIndex[be] = idx;
                }
                ids.Add(idx);
            }
            var size = Maglev.DefaultSize;
            var table = Maglev.Build([.. members.Select(m => new MaglevBackend(BackendIdentity(m.Backend), m.Weight))], size);
            var svc = new XlbSvc { Id = nextId++, RingOff = (uint)ring.Count, RingSize = (uint)table.Length };
            ring.AddRange(table.Select(i => (uint)ids[i]));
            services[key] = svc;
        }

        if (services.Count > XlbAbi.MaxServices)
        {
            throw new ConfigTooLargeException($"{services.Count} listeners; the data plane holds {XlbAbi.MaxServices}");
        }
        if (backends.Count >= XlbAbi.MaxBackends)
        {
            throw new ConfigTooLargeException($"{backends.Count} distinct backends; the data plane holds {XlbAbi.MaxBackends - 1}");
        }
        if (ring.Count > XlbAbi.RingCapacity)
        {
            throw new ConfigTooLargeException($"Maglev rings need {ring.Count} slots; the data plane holds {XlbAbi.RingCapacity}");
        }
        return new MapImage(generation, vips, services, backends, ring);
    }

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
