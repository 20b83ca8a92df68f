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
        config.TryLookup(0, out var cfg);
        var gen = (byte)(cfg.ActiveGen & 1);

        var vips = new Dictionary<XlbVipKey, uint>();
        foreach (var k in vipMap.Keys().Where(k => k.Gen == gen))
        {
            if (vipMap.TryLookup(k, out var v))
            {
                vips[k] = v;
            }
        }
        var services = new Dictionary<XlbSvcKey, XlbSvc>();
        var rings = new Dictionary<XlbSvcKey, uint[]>();
        var counters = new Dictionary<uint, XlbSvcStats>();
        var backends = new Dictionary<uint, XlbBackend>();
        foreach (var k in serviceMap.Keys().Where(k => k.Gen == gen))
        {
            if (!serviceMap.TryLookup(k, out var svc))
            {
                continue;
            }
            services[k] = svc;
            var ring = ringMap.ReadArray((uint)(gen * XlbAbi.RingCapacity) + svc.RingOff, (int)svc.RingSize);
            rings[k] = ring;
            foreach (var index in ring.Distinct().Where(i => !backends.ContainsKey(i)))
            {
                if (backendMap.TryLookup((uint)(gen * XlbAbi.MaxBackends) + index, out var be))
                {
                    backends[index] = be;
                }
            }
            counters[svc.Id] = svcStatMap.PerCpuLookup(svc.Id).Aggregate(default(XlbSvcStats), (a, b) => new XlbSvcStats
            {
                Packets = a.Packets + b.Packets,
                Bytes = a.Bytes + b.Bytes,
                ReplyPackets = a.ReplyPackets + b.ReplyPackets,
                ReplyBytes = a.ReplyBytes + b.ReplyBytes,
                NewFlows = a.NewFlows + b.NewFlows,
            });
        }
        var reasons = new Dictionary<XlbStat, ulong>();
        for (var i = 0; i < (int)XlbStat.Count; i++)
        {
            reasons[(XlbStat)i] = statMap.PerCpuLookup((uint)i).Aggregate(0UL, (a, b) => a + b);
        }
        var flowList = new List<KeyValuePair<XlbFlowKey, XlbFlow>>();
        var flowMap = maps.Open<XlbFlowKey, XlbFlow>("xlb_flows");
        foreach (var k in flowMap.Keys())
        {
            if (flowMap.TryLookup(k, out var f))
            {
                flowList.Add(new(k, f));
            }
        }
        return new DataPlaneContents
        {
            Config = cfg,
            Vips = vips,
            Services = services,
            Rings = rings,
            Backends = backends,
            ServiceCounters = counters,
            Reasons = reasons,
            Flows = flowList,
            // bpf_ktime_get_coarse_ns counts CLOCK_MONOTONIC, as Stopwatch does on Linux.
            NowNs = (ulong)(System.Diagnostics.Stopwatch.GetTimestamp() * (1e9 / System.Diagnostics.Stopwatch.Frequency)),
        };
    }
}
