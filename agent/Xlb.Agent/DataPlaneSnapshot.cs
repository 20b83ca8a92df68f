using Xlb.Agent.Bpf;
using Xlb.Agent.Core;
using Xlb.DataPlane;

namespace Xlb.Agent;

/// <summary>
/// Reads a running data plane's pinned maps (no program is loaded, nothing is written): the
/// shell under `xlb status`. The active generation only; the rings of its services by batch.
/// </summary>
public static class DataPlaneSnapshot
{
    /// <summary>Everything, flow table included (active flows are counted from it).</summary>
    public static DataPlaneContents Read(string pinRoot)
    {
        if (!File.Exists(Path.Combine(pinRoot, "xlb_config")))
        {
            throw new DirectoryNotFoundException($"no XLB data plane is pinned at {pinRoot} (is the agent running with this --bpffs and --instance, and of this version, ABI {XlbAbi.Version}?)");
        }
        using var maps = new PinnedMaps(pinRoot);
        var config = maps.Open<uint, XlbCfg>("xlb_config");
        var vipMap = maps.Open<XlbVipKey, uint>("xlb_vips");
        var serviceMap = maps.Open<XlbSvcKey, XlbSvc>("xlb_services");
        var backendMap = maps.Open<uint, XlbBackend>("xlb_backends");
        var ringMap = maps.Open<uint, uint>("xlb_rings");
        var statMap = maps.Open<uint, ulong>("xlb_stats");
        var svcStatMap = maps.Open<uint, XlbSvcStats>("xlb_svc_stats");
        var backendStatMap = maps.Open<uint, XlbSvcStats>("xlb_backend_stats");
        config.TryLookup(0, out var cfg);
        var gen = (byte)(cfg.ActiveGen & 1);
        var capacity = DataPlaneCapacity.Of(cfg);

        var vips = vipMap.Entries(k => k.Gen == gen);
        var services = serviceMap.Entries(k => k.Gen == gen);
        var rings = new Dictionary<XlbSvcKey, uint[]>();
        var backends = new Dictionary<uint, XlbBackend>();
        foreach (var (k, svc) in services)
        {
            var ring = ringMap.ReadArray((uint)(gen * capacity.RingSlots) + svc.RingOff, (int)svc.RingSize);
            rings[k] = ring;
            foreach (var index in NodeStatus.BackendSlots(svc, ring).Distinct().Where(i => i > 0 && !backends.ContainsKey(i)))
            {
                if (backendMap.TryLookup((uint)(gen * capacity.BackendSlots) + index, out var be))
                {
                    backends[index] = be;
                }
            }
        }
        // Service ids and backend indexes are dense from 1: one batch read each.
        var svcSums = services.Count == 0 ? [] : svcStatMap.PerCpuSums(1, (int)services.Values.Max(s => s.Id), XlbSvcStats.Add);
        var backendSums = backends.Count == 0 ? [] : backendStatMap.PerCpuSums(1, (int)backends.Keys.Max(), XlbSvcStats.Add);
        var flows = XdpDataPlane.FlowTable(maps.Open<XlbFlowKey, XlbFlow>("xlb_flows"), maps.Open<XlbFlowKey, XlbFlow>("xlb_flows_new"));
        return new DataPlaneContents
        {
            Config = cfg,
            Vips = vips,
            Services = services,
            Rings = rings,
            Backends = backends,
            ServiceCounters = services.Values.ToDictionary(s => s.Id, s => svcSums[s.Id - 1]),
            BackendCounters = backends.Keys.ToDictionary(i => i, i => backendSums[i - 1]),
            OpenFlowCounts = OpenFlowCounts(maps, backends.Keys),
            Reasons = XdpDataPlane.SumReasons(statMap),
            Flows = [.. flows],
            NowNs = XdpDataPlane.MonotonicNs(),
            ServiceOptions = ServiceOptions(maps, services.Values.Select(s => s.Id)),
            Snat = File.Exists(Path.Combine(pinRoot, "xlb_snat")) ? XdpDataPlane.ReadSnat(maps.Open<uint, XlbSnat>("xlb_snat"), gen, services.Values) : [],
            // Pins of a data plane before these maps have none: nothing noted, no stamp.
            Claims = File.Exists(Path.Combine(pinRoot, "xlb_vip_claims")) ? XdpDataPlane.ReadClaims(maps.Open<XlbVipKey, XlbClaim>("xlb_vip_claims")) : [],
            AgentSeenNs = File.Exists(Path.Combine(pinRoot, "xlb_agent_seen")) && maps.Open<uint, ulong>("xlb_agent_seen").TryLookup(0, out var seen) ? seen : 0,
        };
    }

    /// <summary>The options (xlb_svc_opts) of these services, by id.</summary>
    private static Dictionary<uint, XlbSvcOpts> ServiceOptions(PinnedMaps maps, IEnumerable<uint> ids)
    {
        var options = maps.Open<uint, XlbSvcOpts>("xlb_svc_opts");
        return ids.Distinct().ToDictionary(id => id, id => options.TryLookup(id, out var o) ? o : default);
    }

    /// <summary>LeastConn's counts of these backends, or none when the pins are of a data plane without them.</summary>
    private static Dictionary<uint, long> OpenFlowCounts(PinnedMaps maps, IEnumerable<uint> backends)
    {
        if (!File.Exists(Path.Combine(maps.PinRoot, "xlb_backend_conns")))
        {
            return [];
        }
        var conns = maps.Open<uint, long>("xlb_backend_conns");
        return backends.ToDictionary(i => i, i => conns.TryLookup(i, out var n) ? n : 0);
    }
}
