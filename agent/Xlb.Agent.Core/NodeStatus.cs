using System.Globalization;
using System.Net;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>What a reader found in a node's pinned maps (the active generation), read by a shell.</summary>
public sealed record DataPlaneContents
{
    public required XlbCfg Config { get; init; }
    public required IReadOnlyDictionary<XlbVipKey, uint> Vips { get; init; }
    public required IReadOnlyDictionary<XlbSvcKey, XlbSvc> Services { get; init; }
    /// <summary>Each service's ring: the backend index in every slot.</summary>
    public required IReadOnlyDictionary<XlbSvcKey, uint[]> Rings { get; init; }
    /// <summary>The backends the rings name, by index.</summary>
    public required IReadOnlyDictionary<uint, XlbBackend> Backends { get; init; }
    /// <summary>Per-service counters (summed over CPUs), by service id.</summary>
    public required IReadOnlyDictionary<uint, XlbSvcStats> ServiceCounters { get; init; }
    /// <summary>Per-backend counters (summed over CPUs), by backend index.</summary>
    public IReadOnlyDictionary<uint, XlbSvcStats> BackendCounters { get; init; } = new Dictionary<uint, XlbSvcStats>();
    /// <summary>LeastConn's open-flow counts (xlb_backend_conns), by backend index.</summary>
    public IReadOnlyDictionary<uint, long> OpenFlowCounts { get; init; } = new Dictionary<uint, long>();
    public required IReadOnlyDictionary<XlbStat, ulong> Reasons { get; init; }
    public required IReadOnlyList<KeyValuePair<XlbFlowKey, XlbFlow>> Flows { get; init; }
    /// <summary>The data plane's clock (CLOCK_MONOTONIC, ns) when the flows were read.</summary>
    public required ulong NowNs { get; init; }
    /// <summary>Other hosts' last announcements of this node's VIPs (xlb_vip_claims).</summary>
    public IReadOnlyList<VipClaim> Claims { get; init; } = [];
    /// <summary>The agent's last stamp (xlb_agent_seen, CLOCK_MONOTONIC ns); 0 when it never stamped.</summary>
    public ulong AgentSeenNs { get; init; }
    /// <summary>The services' options (xlb_svc_opts) by service id: their own idle timeouts.</summary>
    public IReadOnlyDictionary<uint, XlbSvcOpts> ServiceOptions { get; init; } = new Dictionary<uint, XlbSvcOpts>();
    /// <summary>The source addresses beyond the VIP (xlb_snat) of the FullNAT services that have them, by service id.</summary>
    public IReadOnlyDictionary<uint, XlbSnat> Snat { get; init; } = new Dictionary<uint, XlbSnat>();
}

/// <summary>Which flows to list: all, or those with an address (client, VIP or backend) and/or a port.</summary>
public sealed record FlowFilter(IPAddress? Address = null, int? Port = null, int Limit = 1000)
{
    /// <summary>Parses ADDR, :PORT, ADDR:PORT or [V6ADDR]:PORT.</summary>
    public static FlowFilter Parse(string text, int limit)
    {
        if (IPAddress.TryParse(text, out var bare))
        {
            return new FlowFilter(bare, null, limit);
        }
        if (text.StartsWith(':') && int.TryParse(text[1..], NumberStyles.None, CultureInfo.InvariantCulture, out var onlyPort) && onlyPort is > 0 and < 65536)
        {
            return new FlowFilter(null, onlyPort, limit);
        }
        if (IPEndPoint.TryParse(text, out var ep) && ep.Port > 0)
        {
            return new FlowFilter(ep.Address, ep.Port, limit);
        }
        throw new FormatException($"flow filter '{text}': expected ADDRESS, :PORT, ADDRESS:PORT or [IPv6]:PORT");
    }
}

public sealed record NodeStatusReport
{
    public required int Generation { get; init; }
    public required bool ShuttingDown { get; init; }
    /// <summary>The data plane's per-CPU limits as its config map holds them (0: none).</summary>
    public DataPlaneLimits Limits { get; init; } = new(0, 0);
    /// <summary>Whether established flows' packets are served from the per-CPU flow cache (--no-flow-cache: false).</summary>
    public bool FlowCache { get; init; }
    public string? Node { get; init; }
    public long? Revision { get; init; }
    public required IReadOnlyList<VipStatus> Vips { get; init; }
    public required IReadOnlyList<ServiceStatus> Services { get; init; }
    /// <summary>Packets by verdict reason since the maps were created.</summary>
    public required IReadOnlyDictionary<string, ulong> Counters { get; init; }
    /// <summary>Flows in the table, live ones only, filtered; null when not asked for.</summary>
    public IReadOnlyList<FlowStatus>? Flows { get; init; }
    /// <summary>Live flows matching the filter that the limit left out.</summary>
    public int FlowsOmitted { get; init; }
    /// <summary>FullNAT source ports toward each backend (--nat-ports).</summary>
    public int NatPortRange { get; init; }
    /// <summary>The agent's BGP sessions as its status reports them (with --node-config, from the status file beside it); null when not known.</summary>
    public IReadOnlyList<BgpSessionStatus>? BgpSessions { get; init; }
    /// <summary>The agent's failover peers as its status reports them; null when not known.</summary>
    public IReadOnlyList<FailoverPeerStatus>? FailoverPeers { get; init; }
}

/// <summary>New DSR flows entered into the flow tables, and ICMP "too big" answers sent, per CPU per second (0: no limit).</summary>
public sealed record DataPlaneLimits(uint NewFlowCap, uint IcmpRate);

/// <summary>
/// A VIP in the node's maps: active (this node answers ARP/ND for it) or standby; the host that
/// last announced it too, within a minute or since the agent was last seen (its MAC, how long
/// ago); and whether the node has left it to that host, its agent being silent (yielded in xdp/xlb.c).
/// </summary>
public sealed record VipStatus(string Address, string Role, string? AnnouncedBy = null, bool LeftToIt = false);

public sealed record ServiceStatus
{
    public string? Name { get; init; }
    public required string Vip { get; init; }
    public required int Port { get; init; }
    public required string Protocol { get; init; }
    public required string Mode { get; init; }
    public required string Algorithm { get; init; }
    public required uint RingSize { get; init; }
    public required ulong Packets { get; init; }
    public required ulong Bytes { get; init; }
    public required ulong ReplyPackets { get; init; }
    public required ulong ReplyBytes { get; init; }
    public required ulong NewFlows { get; init; }
    public required int ActiveFlows { get; init; }
    public required IReadOnlyList<BackendStatus> Backends { get; init; }
}

/// <summary>
/// A backend of a service: <c>active</c> (takes new flows), <c>draining</c> (keeps its flows,
/// gets no new ones), or <c>unhealthy</c> (out of the ring by this node's health checks; known
/// only from the node config and the agent's status).
/// </summary>
public sealed record BackendStatus
{
    public required string Address { get; init; }
    public required int Port { get; init; }
    public required string State { get; init; }
    public int? Weight { get; init; }
    public required int RingSlots { get; init; }
    /// <summary>Share of new flows, in percent of the ring.</summary>
    public required double Share { get; init; }
    public required int ActiveFlows { get; init; }
    /// <summary>Packets this node sent to the backend, for all the services it serves; null when it is not in the ring.</summary>
    public ulong? Packets { get; init; }
    /// <summary>Flows this node bound to the backend, for all its services; null when it is not in the ring.</summary>
    public ulong? NewFlows { get; init; }
    /// <summary>
    /// LeastConn services: the open flows the program counts for the backend (over every LeastConn
    /// service it serves), which it compares for each new flow; null for the other algorithms.
    /// </summary>
    public long? OpenFlows { get; init; }
    /// <summary>
    /// FullNAT services: the NAT ports held toward this backend from the service's VIP (by every
    /// live FullNAT flow of that VIP to it, whichever its service), of the range's
    /// <see cref="NodeStatusReport.NatPortRange"/>; null in the other modes.
    /// </summary>
    public int? NatPorts { get; init; }
    /// <summary>Of <see cref="NatPorts"/>, those of connections that have ended at both ends: free again 2 s after, or 65 s if the backend closed first.</summary>
    public int? NatPortsEnded { get; init; }
}

public sealed record FlowStatus
{
    public required string Protocol { get; init; }
    public required string Client { get; init; }
    public required string Vip { get; init; }
    public required string Backend { get; init; }
    /// <summary>The source port toward the backend (FullNAT); null in the other modes.</summary>
    public int? NatPort { get; init; }
    public required string State { get; init; }
    public required string Mode { get; init; }
    public string? Service { get; init; }
    public required double IdleSeconds { get; init; }
    /// <summary>True: a copy another LB node sent (flow sync); absent: this node's own flow.</summary>
    public bool? Copy { get; init; }
}

/// <summary>Pure: the maps' contents (plus, when known, the node config and the agent's status) → a report.</summary>
public static class NodeStatus
{
    public static string ModeName(byte mode) => mode switch
    {
        XlbAbi.ModeFullNat => "FullNAT",
        XlbAbi.ModeDnat => "DNAT",
        XlbAbi.ModeDsrL2 => "DSR-L2",
        XlbAbi.ModeDsrIpip => "DSR-IPIP",
        _ => $"mode-{mode}",
    };

    /// <summary>The slots of a service's ring that hold backend indexes: all, but the first half of LeastConn's (its weights follow).</summary>
    public static uint[] BackendSlots(XlbSvc svc, uint[] ring) => svc.Algo == XlbAbi.AlgoLeastConn ? ring[..(ring.Length / 2)] : ring;

    public static string AlgorithmName(byte algo) => algo switch
    {
        XlbAbi.AlgoMaglev => "Maglev",
        XlbAbi.AlgoSourceHash => "SourceHash",
        XlbAbi.AlgoRoundRobin => "RoundRobin",
        XlbAbi.AlgoLeastConn => "LeastConn",
        _ => $"algo-{algo}",
    };

    public static string ProtocolName(byte proto) => proto switch { XlbAbi.ProtoTcp => "TCP", XlbAbi.ProtoUdp => "UDP", _ => proto.ToString(CultureInfo.InvariantCulture) };

    private static string Endpoint(IPAddress a, int port) => new IPEndPoint(a, port).ToString();

    /// <summary>
    /// Is the flow past its idle timeout (as the program judges it)? 0 s: no timeout. A service's
    /// own idle timeout (<paramref name="options"/>, by service id: xlb_svc_opts) holds for its
    /// established and UDP flows.
    /// </summary>
    public static bool Expired(XlbCfg cfg, XlbFlowKey key, XlbFlow flow, ulong nowNs, IReadOnlyDictionary<uint, XlbSvcOpts>? options = null)
    {
        var seconds = key.Proto == XlbAbi.ProtoUdp ? cfg.UdpTimeoutS
            : flow.State == XlbAbi.FlowEstablished ? cfg.TcpEstablishedTimeoutS
            : flow.State == XlbAbi.FlowClosing ? cfg.TcpClosingTimeoutS
            : cfg.TcpNewTimeoutS;
        if ((key.Proto == XlbAbi.ProtoUdp || flow.State == XlbAbi.FlowEstablished) && options is not null &&
            options.TryGetValue(flow.SvcId, out var own) && own.IdleS != 0)
        {
            seconds = own.IdleS;
        }
        return seconds != 0 && nowNs > flow.LastSeenNs && nowNs - flow.LastSeenNs > seconds * 1_000_000_000UL;
    }

    /// <summary>
    /// Flows not past their idle timeout, counted by service id and by backend index (a flow's
    /// next-hop slot without the generation: <paramref name="backendSlots"/> is a power of two).
    /// </summary>
    public static (Dictionary<uint, int> ByServiceId, Dictionary<int, int> ByBackendIndex) ActiveFlowCounts(
        XlbCfg cfg, IEnumerable<KeyValuePair<XlbFlowKey, XlbFlow>> flows, ulong nowNs, int backendSlots, IReadOnlyDictionary<uint, XlbSvcOpts>? options = null)
    {
        var bySvc = new Dictionary<uint, int>();
        var byIndex = new Dictionary<int, int>();
        foreach (var (k, f) in flows)
        {
            if (!Expired(cfg, k, f, nowNs, options))
            {
                var index = (int)f.NhSlot & (backendSlots - 1);
                bySvc[f.SvcId] = bySvc.GetValueOrDefault(f.SvcId) + 1;
                byIndex[index] = byIndex.GetValueOrDefault(index) + 1;
            }
        }
        return (bySvc, byIndex);
    }

    /// <summary>A VIP's status, with the announcement of it by another host that the program noted (see <see cref="VipStatus"/>).</summary>
    private static VipStatus Vip(DataPlaneContents maps, XlbVipKey key, bool active)
    {
        var address = key.Addr.ToAddress(key.Family);
        var claim = active ? maps.Claims.FirstOrDefault(c => c.Vip.Equals(address)) : null;
        if (claim is null)
        {
            return new VipStatus(address.ToString(), active ? "active" : "standby");
        }
        var now = maps.NowNs;
        var ago = now > claim.SeenNs ? (now - claim.SeenNs) / 1_000_000_000 : 0;
        // The program's rule: announced since the agent's last stamp, and the agent silent for XlbAbi.AgentSilentNs.
        var silent = maps.AgentSeenNs < now && now - maps.AgentSeenNs > XlbAbi.AgentSilentNs;
        var leftToIt = silent && claim.SeenNs > maps.AgentSeenNs;
        if (!leftToIt && ago > VipConflicts.Recent.TotalSeconds)
        {
            return new VipStatus(address.ToString(), "active");
        }
        return new VipStatus(address.ToString(), "active", string.Create(CultureInfo.InvariantCulture, $"{claim.MacText} {ago} s ago"), leftToIt);
    }

    /// <summary>Has the connection ended at both ends (a RST, or a FIN each way)? Its NAT port is then free soon (nat_port_free in xdp/xlb.c).</summary>
    public static bool Ended(byte flags) =>
        (flags & XlbAbi.FlowReset) != 0 || (flags & (XlbAbi.FlowFinClient | XlbAbi.FlowFinBackend)) == (XlbAbi.FlowFinClient | XlbAbi.FlowFinBackend);

    /// <summary>
    /// The NAT ports live FullNAT flows hold, by the tuple the port is unique in (VIP, family,
    /// protocol, backend, backend port): how many, how many of them by connections that ended, and
    /// by TCP handshakes not (yet) completed, which give their port up after 2 quiet seconds
    /// (nat_port_free in xdp/xlb.c): a SYN flood holds ports so.
    /// </summary>
    public static Dictionary<(Addr16 Source, byte Family, byte Proto, Addr16 Backend, ushort BackendPortBe), NatPortUse> NatPortsHeld(
        IEnumerable<KeyValuePair<XlbFlowKey, XlbFlow>> live, IReadOnlyDictionary<uint, XlbSnat>? snat = null)
    {
        var held = new Dictionary<(Addr16, byte, byte, Addr16, ushort), NatPortUse>();
        foreach (var (k, f) in live)
        {
            if (f.Mode == XlbAbi.ModeFullNat)
            {
                var at = (SourceOf(k, f, snat), k.Family, k.Proto, f.Backend, f.BackendPortBe);
                var use = held.GetValueOrDefault(at);
                held[at] = new NatPortUse(use.Held + 1, use.Ended + (Ended(f.Flags) ? 1 : 0),
                    use.HalfOpen + (k.Proto == XlbAbi.ProtoTcp && f.State == XlbAbi.FlowNew ? 1 : 0));
            }
        }
        return held;
    }

    /// <summary>The source address a FullNAT flow took toward its backend: the VIP, or one of its service's source addresses (<see cref="XlbFlow.Snat"/>).</summary>
    public static Addr16 SourceOf(XlbFlowKey key, XlbFlow flow, IReadOnlyDictionary<uint, XlbSnat>? snat) =>
        flow.Snat != 0 && snat is not null && snat.TryGetValue(flow.SvcId, out var sources) && sources.At(flow.Snat - 1) is { } source ? source : key.Daddr;

    public static NodeStatusReport Build(DataPlaneContents maps, XlbNodeConfigSpec? spec, IReadOnlyCollection<string>? unhealthy, FlowFilter? flowFilter)
    {
        var cfg = maps.Config;
        var live = maps.Flows.Where(f => !Expired(cfg, f.Key, f.Value, maps.NowNs, maps.ServiceOptions)).ToList();
        var natPorts = NatPortsHeld(live, maps.Snat);
        var listeners = spec?.Listeners.ToDictionary(l => (IPAddress.Parse(l.Vip), l.Port, MapImage.ProtoOf(l.Protocol))) ?? [];
        var unhealthySet = unhealthy?.ToHashSet(StringComparer.Ordinal) ?? [];

        var services = new List<ServiceStatus>();
        var names = new Dictionary<uint, string>();
        foreach (var (key, svc) in maps.Services.OrderBy(s => s.Key.Vip.ToAddress(s.Key.Family).ToString(), StringComparer.Ordinal).ThenBy(s => Net.FromBe(s.Key.PortBe)).ThenBy(s => s.Key.Proto))
        {
            var vip = key.Vip.ToAddress(key.Family);
            var port = Net.FromBe(key.PortBe);
            var listener = listeners.GetValueOrDefault((vip, port, key.Proto));
            if (listener is not null)
            {
                names[svc.Id] = listener.Name;
            }
            var flows = live.Where(f => f.Value.SvcId == svc.Id).ToList();
            var flowsTo = flows.GroupBy(f => new IPEndPoint(f.Value.Backend.ToAddress(key.Family), Net.FromBe(f.Value.BackendPortBe)))
                .ToDictionary(g => g.Key, g => g.Count());
            var configured = (listener?.Backends ?? []).GroupBy(b => new IPEndPoint(IPAddress.Parse(b.Address), b.Port)).ToDictionary(g => g.Key, g => g.First());
            var ring = BackendSlots(svc, maps.Rings.GetValueOrDefault(key) ?? []);
            var backends = new List<BackendStatus>();
            var inRing = new HashSet<IPEndPoint>();
            foreach (var slots in ring.GroupBy(i => i).OrderBy(g => g.Key))
            {
                if (!maps.Backends.TryGetValue(slots.Key, out var be))
                {
                    continue;
                }
                var ep = new IPEndPoint(be.Addr.ToAddress(be.Family), Net.FromBe(be.PortBe));
                var count = slots.Count();
                var beCounters = maps.BackendCounters.GetValueOrDefault(slots.Key);
                // Each source address (the VIP and the service's others) has a port range of its own toward the backend.
                var ports = natPorts.GetValueOrDefault((key.Vip, key.Family, key.Proto, be.Addr, be.PortBe));
                var sources = maps.Snat.GetValueOrDefault(svc.Id);
                for (var i = 0; i < sources.Count; i++)
                {
                    var more = natPorts.GetValueOrDefault((sources.At(i)!.Value, key.Family, key.Proto, be.Addr, be.PortBe));
                    ports = new NatPortUse(ports.Held + more.Held, ports.Ended + more.Ended, ports.HalfOpen + more.HalfOpen);
                }
                inRing.Add(ep);
                backends.Add(new BackendStatus
                {
                    Address = ep.Address.ToString(),
                    Port = ep.Port,
                    State = (be.Flags & XlbAbi.BackendDraining) != 0 ? "draining" : "active",
                    Weight = configured.TryGetValue(ep, out var named) ? named.Weight : null,
                    RingSlots = count,
                    Share = Math.Round(100.0 * count / Math.Max(1, ring.Length), 2),
                    ActiveFlows = flowsTo.GetValueOrDefault(ep),
                    Packets = beCounters.Packets,
                    NewFlows = beCounters.NewFlows,
                    OpenFlows = svc.Algo == XlbAbi.AlgoLeastConn ? maps.OpenFlowCounts.GetValueOrDefault(slots.Key) : null,
                    NatPorts = svc.Mode == XlbAbi.ModeFullNat ? ports.Held : null,
                    NatPortsEnded = svc.Mode == XlbAbi.ModeFullNat ? ports.Ended : null,
                });
            }
            // Backends the node config names that are not in the ring: draining ones with no
            // slot left, and those this node's health checks took out.
            foreach (var (ep, b) in configured.Where(c => !inRing.Contains(c.Key)))
            {
                backends.Add(new BackendStatus
                {
                    Address = ep.Address.ToString(),
                    Port = ep.Port,
                    State = unhealthySet.Contains(ep.ToString()) ? "unhealthy" : b.Draining ? "draining" : "absent",
                    Weight = b.Weight,
                    RingSlots = 0,
                    Share = 0,
                    ActiveFlows = flowsTo.GetValueOrDefault(ep),
                });
            }
            var counters = maps.ServiceCounters.GetValueOrDefault(svc.Id);
            services.Add(new ServiceStatus
            {
                Name = listener?.Name,
                Vip = vip.ToString(),
                Port = port,
                Protocol = ProtocolName(key.Proto),
                Mode = ModeName(svc.Mode),
                Algorithm = AlgorithmName(svc.Algo),
                RingSize = svc.RingSize,
                Packets = counters.Packets,
                Bytes = counters.Bytes,
                ReplyPackets = counters.ReplyPackets,
                ReplyBytes = counters.ReplyBytes,
                NewFlows = counters.NewFlows,
                ActiveFlows = flows.Count,
                Backends = backends,
            });
        }

        List<FlowStatus>? flowList = null;
        var omitted = 0;
        if (flowFilter is not null)
        {
            var matching = live.Where(f => Matches(f.Key, f.Value, flowFilter)).OrderBy(f => f.Value.LastSeenNs).Reverse().ToList();
            omitted = Math.Max(0, matching.Count - flowFilter.Limit);
            flowList = [.. matching.Take(flowFilter.Limit).Select(f => Flow(f.Key, f.Value, maps.NowNs, names))];
        }

        return new NodeStatusReport
        {
            NatPortRange = cfg.NatPortMax >= cfg.NatPortMin && cfg.NatPortMax != 0 ? cfg.NatPortMax - cfg.NatPortMin + 1 : 0,
            Generation = (int)(cfg.ActiveGen & 1),
            ShuttingDown = (cfg.Flags & XlbAbi.CfgShutdown) != 0,
            Limits = new DataPlaneLimits(cfg.NewFlowCap, cfg.IcmpRate),
            FlowCache = (cfg.Flags & XlbAbi.CfgNoFlowCache) == 0,
            Node = spec?.NodeName,
            Revision = spec?.Revision,
            Vips = [.. maps.Vips.OrderBy(v => v.Key.Family).ThenBy(v => v.Key.Addr.ToAddress(v.Key.Family).ToString(), StringComparer.Ordinal)
                .Select(v => Vip(maps, v.Key, (v.Value & XlbAbi.VipActive) != 0))],
            Services = services,
            Counters = maps.Reasons.Where(r => r.Value > 0).OrderBy(r => r.Key).ToDictionary(r => r.Key.SnakeName(), r => r.Value),
            Flows = flowList,
            FlowsOmitted = omitted,
        };
    }

    private static bool Matches(XlbFlowKey k, XlbFlow f, FlowFilter filter)
    {
        var client = k.Saddr.ToAddress(k.Family);
        var vip = k.Daddr.ToAddress(k.Family);
        var backend = f.Backend.ToAddress(k.Family);
        var (cport, vport, bport) = (Net.FromBe(k.SportBe), Net.FromBe(k.DportBe), Net.FromBe(f.BackendPortBe));
        return filter switch
        {
            { Address: { } a, Port: { } p } => (client.Equals(a) && cport == p) || (vip.Equals(a) && vport == p) || (backend.Equals(a) && bport == p),
            { Address: { } a } => client.Equals(a) || vip.Equals(a) || backend.Equals(a),
            { Port: { } p } => cport == p || vport == p || bport == p,
            _ => true,
        };
    }

    private static FlowStatus Flow(XlbFlowKey k, XlbFlow f, ulong nowNs, Dictionary<uint, string> names) => new()
    {
        Protocol = ProtocolName(k.Proto),
        Client = Endpoint(k.Saddr.ToAddress(k.Family), Net.FromBe(k.SportBe)),
        Vip = Endpoint(k.Daddr.ToAddress(k.Family), Net.FromBe(k.DportBe)),
        Backend = Endpoint(f.Backend.ToAddress(k.Family), Net.FromBe(f.BackendPortBe)),
        NatPort = f.Mode == XlbAbi.ModeFullNat ? Net.FromBe(f.NatPortBe) : null,
        State = k.Proto == XlbAbi.ProtoUdp ? "udp" : f.State switch { XlbAbi.FlowEstablished => "established", XlbAbi.FlowClosing => "closing", _ => "new" },
        Mode = ModeName(f.Mode),
        Service = names.GetValueOrDefault(f.SvcId),
        IdleSeconds = Math.Round(nowNs > f.LastSeenNs ? (nowNs - f.LastSeenNs) / 1e9 : 0, 1),
        Copy = (f.Flags & XlbAbi.FlowSynced) != 0 ? true : null,
    };
}

/// <summary>FullNAT ports held toward one backend from one VIP: all, those of ended connections, those of handshakes not completed.</summary>
public readonly record struct NatPortUse(int Held, int Ended, int HalfOpen);
