using Xlb.Agent.Bpf;
using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Agent;

/// <summary>Settings of the data plane that do not come from the node config.</summary>
public sealed record DataPlaneOptions
{
    /// <summary>FullNAT source ports toward backends, inclusive. Must not hold a VIP service port.</summary>
    public ushort NatPortMin { get; init; } = 40000;
    public ushort NatPortMax { get; init; } = 59999;

    /// <summary>
    /// Where the maps are pinned (on bpffs). A data plane loaded with the same pin root adopts the
    /// live maps, connection table included, so a restarted agent changes nothing for traffic.
    /// Null: private maps, gone with the process (tests, one-shot tools).
    /// </summary>
    public string? PinRoot { get; init; }

    /// <summary>Idle timeouts of flows by state; past them a packet of the tuple is a new flow.</summary>
    public FlowTimeouts Timeouts { get; init; } = new();

    /// <summary>Outer source address of IPv4 DSR IPIP packets (this node's address). Null: the VIP.</summary>
    public System.Net.IPAddress? EncapSource { get; init; }

    /// <summary>Outer source address of IPv6-in-IPv6 DSR packets (this node's address). Null: the VIP.</summary>
    public System.Net.IPAddress? EncapSource6 { get; init; }

    /// <summary>Flow events (the connection log): 0 none, N one flow in N, chosen by flow hash (1: every flow).</summary>
    public uint FlowEventSample { get; init; }

    /// <summary>
    /// SYN-flood relief: how many new flows of DSR services (Maglev or source hash) one CPU enters
    /// into the flow tables per second. Past it, until the second is over, further such flows are
    /// forwarded by the consistent hash alone, without state: an insert costs about ten times the
    /// rest of a new flow's path. NAT modes and round robin always keep state. 0: no cap.
    /// </summary>
    public uint NewFlowCap { get; init; } = DefaultNewFlowCap;

    /// <summary>The default <see cref="NewFlowCap"/>: far above what one CPU sees of real new connections.</summary>
    public const uint DefaultNewFlowCap = 100_000;

    /// <summary>
    /// ICMP "too big" answers (path MTU discovery) one CPU sends per second; past it, until the
    /// second is over, the packets they would answer are dropped (a forged sender cannot turn the
    /// balancer into a source of ICMP at its packet rate). 0: no limit.
    /// </summary>
    public uint IcmpRate { get; init; } = DefaultIcmpRate;

    /// <summary>The default <see cref="IcmpRate"/>: the kernel's own default for all its ICMP (net.ipv4.icmp_msgs_per_sec).</summary>
    public const uint DefaultIcmpRate = 1000;

    /// <summary>
    /// How many backends and ring slots a configuration generation holds; the maps are sized by it
    /// at load. Pinned maps keep their size: adopting them takes the same capacity.
    /// </summary>
    public DataPlaneCapacity Capacity { get; init; } = DataPlaneCapacity.Default;

    /// <summary>
    /// Serve the packets of established flows from each CPU's flow cache, a copy of the flow taken
    /// at most one jiffy ago, instead of a flow-table lookup per packet (see xdp/xlb.c). False:
    /// every packet looks its flow up in the table.
    /// </summary>
    public bool FlowCache { get; init; } = true;
}

/// <summary>
/// Flow idle timeouts. TCP: New until a packet without SYN follows the SYN, Closing once a FIN or
/// RST is seen either way. The defaults are those of Linux IPVS, which users of L4 balancers know.
/// </summary>
public sealed record FlowTimeouts
{
    public TimeSpan TcpNew { get; init; } = TimeSpan.FromSeconds(120);
    public TimeSpan TcpEstablished { get; init; } = TimeSpan.FromSeconds(900);
    public TimeSpan TcpClosing { get; init; } = TimeSpan.FromSeconds(120);
    public TimeSpan Udp { get; init; } = TimeSpan.FromSeconds(300);
}

/// <summary>What <see cref="XdpDataPlane.Census"/> counts: live flows per service and backend, FullNAT ports held per backend (and of ended connections), and the NAT port range.</summary>
public sealed record FlowCensus(
    IReadOnlyDictionary<XlbSvcKey, int> ByService, IReadOnlyDictionary<XlbBackend, int> ByBackend,
    IReadOnlyDictionary<XlbBackend, NatPortUse> NatPortsByBackend, int NatPortRange);

/// <summary>What one apply did.</summary>
public sealed record ApplyResult(byte Generation, int Operations, TimeSpan Elapsed);

/// <summary>What flow sync works from: see <see cref="XdpDataPlane.SyncView"/>.</summary>
public sealed record FlowSyncView(byte Generation, IReadOnlyDictionary<XlbSvcKey, XlbSvc> ServicesByKey, IReadOnlyList<XlbBackend> Backends, IReadOnlySet<uint> Services, uint BackendSlots)
{
    /// <summary>The source addresses of the generation's services that have more than the VIP, by id.</summary>
    public IReadOnlyDictionary<uint, XlbSnat> Snat { get; init; } = new Dictionary<uint, XlbSnat>();
}

/// <summary>
/// The loaded XDP object and its maps: the thin shell around <see cref="MapDiff"/>.
/// Reads the inactive generation, writes the difference, flips.
/// </summary>
public sealed class XdpDataPlane : IDisposable
{
    public const string ProgramName = "xlb_xdp";

    private readonly BpfObject _obj;
    private readonly BpfMap<XlbVipKey, uint> _vips;
    private readonly BpfMap<XlbSvcKey, XlbSvc> _services;
    private readonly BpfMap<uint, XlbBackend> _backends;
    private readonly BpfMap<uint, uint> _rings;
    private readonly BpfMap<uint, XlbCfg> _config;
    private readonly BpfMap<uint, ulong> _stats;
    private readonly BpfMap<uint, XlbFilter> _filter;
    private readonly BpfMap<uint, XlbSvcStats> _svcStats;
    private readonly BpfMap<uint, XlbSvcStats> _backendStats;
    private readonly BpfMap<uint, XlbIfmac> _ifmacs;
    private readonly BpfMap<uint, XlbVlan> _vlanOut;
    private readonly BpfMap<XlbVlan, XlbVlanDev> _vlanIn;
    private readonly DataPlaneOptions _options;
    private readonly BpfMap<uint, ulong> _eventStats;
    private readonly int _eventsFd;
    private readonly BpfMap<uint, uint> _flowEpoch;
    private readonly BpfMap<uint, ulong> _agentSeen;
    private readonly BpfMap<XlbVipKey, XlbClaim> _claims;
    private readonly BpfMap<XlbIfmac, uint> _ownMacs;
    private readonly Lock _flowEpochLock = new();
    private readonly BpfCounterArray _conns;
    private readonly BpfMap<uint, XlbSvcOpts> _svcOpts;
    private readonly BpfMap<uint, XlbSnat> _snat;

    /// <summary>What xlb_svc_opts holds, as last written (null: unknown, written in full).</summary>
    private Dictionary<uint, XlbSvcOpts>? _optsWritten;
    private readonly Lock _recountLock = new();

    /// <summary>Whether the last apply had a LeastConn listener (null: none yet; an adopted data plane may have some).</summary>
    private bool? _leastConn;

    /// <summary>
    /// Builds each revision's image on the last one (an unchanged listener is neither compiled
    /// nor filled again), or from scratch over what the maps hold at a full resync.
    /// </summary>
    private readonly ImageBuilder _builder;

    /// <summary>
    /// What each generation's maps hold, as this data plane last read or wrote them; null:
    /// unknown (read before the next diff). See <see cref="Apply"/>'s verify.
    /// </summary>
    private readonly ObservedGeneration?[] _known = new ObservedGeneration?[XlbAbi.Generations];

    /// <summary>
    /// The active generation's backend slots (slot 1 first; never changed once set, so readers on
    /// other threads need no lock); read from the maps on first use (an adopted data plane has some).
    /// </summary>
    private IReadOnlyList<XlbBackend>? _backendSlots;

    private XdpDataPlane(BpfObject obj, DataPlaneOptions options, bool adopted)
    {
        _obj = obj;
        Adopted = adopted;
        _options = options;
        _builder = new ImageBuilder(options.Capacity);
        // Each typed view checks its key and value sizes against the object's BTF: an ABI drift fails here.
        _vips = obj.Map<XlbVipKey, uint>("xlb_vips");
        _services = obj.Map<XlbSvcKey, XlbSvc>("xlb_services");
        _backends = obj.Map<uint, XlbBackend>("xlb_backends");
        _rings = obj.Map<uint, uint>("xlb_rings");
        _config = obj.Map<uint, XlbCfg>("xlb_config");
        _stats = obj.Map<uint, ulong>("xlb_stats");
        _filter = obj.Map<uint, XlbFilter>("xlb_filter");
        _svcStats = obj.Map<uint, XlbSvcStats>("xlb_svc_stats");
        _backendStats = obj.Map<uint, XlbSvcStats>("xlb_backend_stats");
        _ifmacs = obj.Map<uint, XlbIfmac>("xlb_ifmacs");
        _vlanOut = obj.Map<uint, XlbVlan>("xlb_vlan_out");
        _vlanIn = obj.Map<XlbVlan, XlbVlanDev>("xlb_vlan_in");
        obj.Map<uint, XlbNexthop>("xlb_nexthops");
        Flows = obj.Map<XlbFlowKey, XlbFlow>("xlb_flows");
        ReverseNat = obj.Map<XlbFlowKey, XlbRnat>("xlb_rnat");
        NewFlows = obj.Map<XlbFlowKey, XlbFlow>("xlb_flows_new");
        NewReverseNat = obj.Map<XlbFlowKey, XlbRnat>("xlb_rnat_new");
        ProgramFd = obj.ProgramFd(ProgramName);
        var t = options.Timeouts;
        var adoptedConfig = ReadConfig();
        _config.Update(0, adoptedConfig with
        {
            // The shutdown flag is the adopted data plane's own; the flow cache is this option's.
            Flags = options.FlowCache ? adoptedConfig.Flags & ~XlbAbi.CfgNoFlowCache : adoptedConfig.Flags | XlbAbi.CfgNoFlowCache,
            NatPortMin = options.NatPortMin,
            NatPortMax = options.NatPortMax,
            EncapSrcBe = options.EncapSource is { } src ? BitConverter.ToUInt32(src.GetAddressBytes()) : 0,
            EncapSrc6 = options.EncapSource6 is { } src6 ? Addr16.From(src6) : default,
            TcpNewTimeoutS = Seconds(t.TcpNew),
            TcpEstablishedTimeoutS = Seconds(t.TcpEstablished),
            TcpClosingTimeoutS = Seconds(t.TcpClosing),
            UdpTimeoutS = Seconds(t.Udp),
            EventSample = options.FlowEventSample,
            NewFlowCap = options.NewFlowCap,
            IcmpRate = options.IcmpRate,
            BackendSlots = (uint)options.Capacity.BackendSlots,
            RingSlots = (uint)options.Capacity.RingSlots,
        });
        _flowEpoch = obj.Map<uint, uint>("xlb_flow_epoch");
        _eventStats = obj.Map<uint, ulong>("xlb_event_stats");
        _eventsFd = obj.MapFd("xlb_events");
        _conns = obj.CounterArray("xlb_backend_conns");
        _svcOpts = obj.Map<uint, XlbSvcOpts>("xlb_svc_opts");
        _snat = obj.Map<uint, XlbSnat>("xlb_snat");
        _agentSeen = obj.Map<uint, ulong>("xlb_agent_seen");
        _claims = obj.Map<XlbVipKey, XlbClaim>("xlb_vip_claims");
        _ownMacs = obj.Map<XlbIfmac, uint>("xlb_own_macs");
    }

    public int ProgramFd { get; }

    /// <summary>The sizes of the configuration maps.</summary>
    public DataPlaneCapacity Capacity => _options.Capacity;

    /// <summary>True when the maps were already pinned and this instance took them over.</summary>
    public bool Adopted { get; }
    /// <summary>Admitted flows: those that have shown a second packet (see <see cref="NewFlows"/>).</summary>
    public BpfMap<XlbFlowKey, XlbFlow> Flows { get; }

    /// <summary>Flows seen once so far (a SYN, a first datagram): a flood of new flows churns only these.</summary>
    public BpfMap<XlbFlowKey, XlbFlow> NewFlows { get; }

    /// <summary>The live service map, both generations (for inspection; applies go through <see cref="Apply"/>).</summary>
    public BpfMap<XlbSvcKey, XlbSvc> Services => _services;
    public BpfMap<XlbFlowKey, XlbRnat> ReverseNat { get; }

    /// <summary>The reverse translations of <see cref="NewFlows"/>.</summary>
    public BpfMap<XlbFlowKey, XlbRnat> NewReverseNat { get; }

    /// <summary>A flow as the program finds it: admitted first, then new.</summary>
    public bool TryFindFlow(XlbFlowKey key, out XlbFlow flow) => Flows.TryLookup(key, out flow) || NewFlows.TryLookup(key, out flow);

    /// <summary>A reverse translation as the program finds it: an admitted flow's first, then a new flow's.</summary>
    public bool TryFindReverseNat(XlbFlowKey key, out XlbRnat rnat) => ReverseNat.TryLookup(key, out rnat) || NewReverseNat.TryLookup(key, out rnat);

    /// <summary>
    /// Ends the flows of backends whose drain is over, on their listeners: their entries leave both
    /// flow tables, so the next packet of such a flow is a new flow (to a backend the listener still
    /// has). Their reverse translations are left to go stale (the program sees their flow gone).
    /// One walk of each table; returns how many flows ended. Entries are deleted by key: a flow of
    /// such a tuple that its next packet began afresh during the walk (it had idled out) ends too,
    /// and its next packet starts it again.
    /// </summary>
    public int EndFlows(IReadOnlyCollection<DrainedBackend> drained)
    {
        if (drained.Count == 0)
        {
            return 0;
        }
        var ends = drained
            .Select(d => (Vip: Addr16.From(d.Vip), Port: Net.Be(d.Port), Proto: MapImage.ProtoOf(d.Protocol),
                Backend: Addr16.From(d.Backend), BackendPort: Net.Be(d.BackendPort)))
            .ToHashSet();
        bool Ends(XlbFlowKey k, XlbFlow f) => ends.Contains((k.Daddr, k.DportBe, k.Proto, f.Backend, f.BackendPortBe));
        var ended = 0;
        foreach (var table in new[] { Flows, NewFlows })
        {
            foreach (var key in table.Entries(Ends).Keys)
            {
                ended += table.Delete(key) ? 1 : 0;
            }
        }
        if (ended > 0)
        {
            FlowTableChanged();
            RecountConnections();
        }
        return ended;
    }

    /// <summary>
    /// Deletes the flows past their idle timeout (and <see cref="IdleFlows.Grace"/>) that no
    /// packet came for, from both flow tables: how many, and the close events the program would
    /// have sent for them (sampled as it samples them; see <see cref="IdleFlows"/>).
    /// </summary>
    public (int Swept, List<XlbFlowEvent> Closed) SweepIdleFlows()
    {
        var cfg = ReadConfig();
        var now = MonotonicNs();
        var swept = 0;
        var closed = new List<XlbFlowEvent>();
        foreach (var table in new[] { Flows, NewFlows })
        {
            var options = ServiceOptions();
            foreach (var (key, flow) in table.Entries((k, f) => IdleFlows.Sweepable(cfg, k, f, now, options)))
            {
                // Read again just before the delete: a packet since has made it another flow.
                if (table.TryLookup(key, out var again) && again.LastSeenNs == flow.LastSeenNs && table.Delete(key))
                {
                    swept++;
                    if (IdleFlows.CloseEvent(cfg, key, flow, now, _optsWritten?.GetValueOrDefault(flow.SvcId).LogSample ?? 0) is { } e)
                    {
                        closed.Add(e);
                    }
                }
            }
        }
        if (swept > 0)
        {
            FlowTableChanged();
            RecountConnections();
        }
        return (swept, closed);
    }

    /// <summary>
    /// What flow sync needs of the active generation, taken on the agent's loop after an apply
    /// (the receiver works from it on its own thread): the generation, its services by
    /// generation-free key, its backend slots, and the ids of the services of
    /// <paramref name="synchronised"/> listeners.
    /// </summary>
    public FlowSyncView SyncView(IEnumerable<Listener> synchronised)
    {
        var gen = ActiveGeneration;
        var services = MapImage.BasisOf(_known[gen]?.Services ?? ReadServices(gen));
        var ids = new HashSet<uint>();
        foreach (var l in synchronised)
        {
            var vip = System.Net.IPAddress.Parse(l.Vip);
            var key = new XlbSvcKey { Vip = Addr16.From(vip), PortBe = Net.Be((ushort)l.Port), Proto = MapImage.ProtoOf(l.Protocol), Family = vip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? XlbAbi.FamilyV4 : XlbAbi.FamilyV6 };
            if (services.TryGetValue(key, out var svc))
            {
                ids.Add(svc.Id);
            }
        }
        return new FlowSyncView(gen, services, _backendSlots ?? ReadBackendSlots(gen), ids, (uint)Capacity.BackendSlots) { Snat = SnatOf(gen) };
    }

    /// <summary>The admitted flows of the view's services that saw a packet at or after <paramref name="sinceNs"/> (0: all); with <paramref name="copies"/>, the copies from peers too.</summary>
    public List<SyncedFlow> SyncableFlows(FlowSyncView view, ulong sinceNs, bool copies = false)
    {
        if (view.Services.Count == 0)
        {
            return [];
        }
        return SyncedFlows.Select(Flows.Entries((_, f) => view.Services.Contains(f.SvcId) && f.LastSeenNs >= sinceNs), view.Services, sinceNs, MonotonicNs(), copies);
    }

    /// <summary>
    /// Writes flows a peer sent into the admitted-flow table and their reverse translations (see
    /// <see cref="SyncedFlows.Import"/>); a packet of such a flow then goes where it went on the peer.
    /// Returns how many were written and how many left out.
    /// </summary>
    public (int Written, int Skipped) ImportFlows(FlowSyncView view, IReadOnlyList<SyncedFlow> flows)
    {
        // A flow of this node's own is never replaced by a peer's copy (its state and counted flag are the ones that hold).
        var (written, reverse, skipped) = SyncedFlows.Import(flows, view.ServicesByKey, view.Backends, view.Services, view.Generation, view.BackendSlots, MonotonicNs(),
            isOwn: k => Flows.TryLookup(k, out var have) && (have.Flags & XlbAbi.FlowSynced) == 0, snat: view.Snat);
        if (written.Count == 0)
        {
            return (0, skipped);
        }
        // Reverse translations first: the flow's replies are translated from the moment its packets are forwarded.
        if (reverse.Count > 0)
        {
            ReverseNat.UpdateBatch([.. reverse.Select(r => r.Key)], [.. reverse.Select(r => r.Value)]);
        }
        Flows.UpdateBatch([.. written.Select(w => w.Key)], [.. written.Select(w => w.Value)]);
        // A per-CPU copy of an older flow under the same key must not outlive it.
        FlowTableChanged();
        return (written.Count, skipped);
    }

    /// <summary>Where the build puts the XDP object: beside the binaries, or XLB_XDP_OBJECT.</summary>
    public static string DefaultObjectPath =>
        Environment.GetEnvironmentVariable("XLB_XDP_OBJECT") is { Length: > 0 } p ? p : Path.Combine(AppContext.BaseDirectory, "xdp", "xlb.o");

    public static XdpDataPlane Load(string objectPath, DataPlaneOptions? options = null)
    {
        options ??= new DataPlaneOptions();
        var adopted = false;
        if (options.PinRoot is not null)
        {
            Directory.CreateDirectory(options.PinRoot);
            adopted = File.Exists(Path.Combine(options.PinRoot, "xlb_config"));
            if (adopted)
            {
                RequirePinnedCapacity(options.PinRoot, options.Capacity);
            }
        }
        return new(BpfObject.Load(objectPath, options.PinRoot, 0, options.Capacity.MapSizes()), options, adopted);
    }

    /// <summary>
    /// Pinned maps of another size cannot be adopted (libbpf refuses them with a bare EINVAL):
    /// say which size they have and how to proceed.
    /// </summary>
    private static void RequirePinnedCapacity(string pinRoot, DataPlaneCapacity wanted)
    {
        using var maps = new PinnedMaps(pinRoot);
        foreach (var (name, size) in wanted.MapSizes())
        {
            if (!File.Exists(Path.Combine(pinRoot, name)))
            {
                continue;
            }
            var pinned = maps.MaxEntries(name);
            if (pinned != size)
            {
                throw new BpfException(
                    $"the data plane pinned at {pinRoot} has {name} of {pinned} entries, this agent asks for {size}: start it with the capacity " +
                    "the running data plane has (--max-backends, --ring-slots), or remove the pins to start afresh (every connection then loses its flow state)");
            }
        }
    }

    private static uint Seconds(TimeSpan t) => (uint)Math.Clamp(Math.Ceiling(t.TotalSeconds), 1, uint.MaxValue);

    public XlbCfg ReadConfig() => _config.TryLookup(0, out var cfg) ? cfg : default;

    public byte ActiveGeneration => (byte)(ReadConfig().ActiveGen & 1);

    /// <summary>
    /// The shutdown window: while set, a new TCP connection to a VIP gets an RST from the data plane
    /// and existing connections carry on. Survives applies (the flip keeps the flags).
    /// </summary>
    /// <summary>
    /// Tells the program the MAC of an interface it is attached to: ARP requests for active VIPs
    /// that arrive there are answered with it.
    /// </summary>
    public void SetInterfaceMac(int ifindex, ReadOnlySpan<byte> mac)
    {
        _ifmacs.Update((uint)ifindex, XlbIfmac.Of(mac));
        _ownMacs.Update(XlbIfmac.Of(mac), (uint)ifindex);
    }

    /// <summary>
    /// Tells the program the node's VLAN devices (all of them: the maps are made equal to
    /// <paramref name="vlans"/>): a route over one is sent tagged out of the device below it, and
    /// ARP and neighbour solicitations for active VIPs on one are answered with its MAC. Returns
    /// how many entries changed.
    /// </summary>
    public int SetVlans(IReadOnlyList<VlanLink> vlans)
    {
        var (outWanted, inWanted) = VlanMaps.Of(vlans);
        // Their MACs are this node's: its announcements heard through them are no claims.
        foreach (var vlan in vlans.Where(v => v.Mac.Length == 6))
        {
            _ownMacs.Update(XlbIfmac.Of(vlan.Mac), (uint)vlan.Ifindex);
        }
        var outDiff = MapDiff.Entries(outWanted, _vlanOut.Entries());
        var inDiff = MapDiff.Entries(inWanted, _vlanIn.Entries());
        // Additions first, removals after: a packet never finds a device half gone.
        foreach (var (ifindex, tag) in outDiff.Put)
        {
            _vlanOut.Update(ifindex, tag);
        }
        foreach (var (tag, dev) in inDiff.Put)
        {
            _vlanIn.Update(tag, dev);
        }
        var deleted = outDiff.Delete.Count(k => _vlanOut.Delete(k)) + inDiff.Delete.Count(k => _vlanIn.Delete(k));
        return outDiff.Put.Count + inDiff.Put.Count + deleted;
    }

    public void SetShutdown(bool on)
    {
        var cfg = ReadConfig();
        _config.Update(0, cfg with { Flags = on ? cfg.Flags | XlbAbi.CfgShutdown : cfg.Flags & ~XlbAbi.CfgShutdown });
    }

    /// <summary>
    /// Applies <paramref name="spec"/> atomically: into the inactive generation, then one flip.
    /// When the active generation already holds exactly this content, nothing is written
    /// (<see cref="ApplyResult.Operations"/> is 0): a periodic resync is free when nothing drifted.
    /// </summary>
    /// <param name="verify">
    /// True: read both generations from the maps and diff against what they hold (at start, and
    /// on the periodic full resync, which corrects maps changed by hand). False: diff against what
    /// this data plane last read or wrote there, which is what they hold unless someone else
    /// writes them; a large config then costs its build and its changes, not a read of every slot.
    /// </param>
    public ApplyResult Apply(XlbNodeConfigSpec spec, bool verify = true)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        _leastConn = spec.Listeners.Any(l => l.Algorithm == SchedulingAlgorithm.LeastConn);
        var cfg = ReadConfig();
        var active = (byte)(cfg.ActiveGen & 1);
        if (verify)
        {
            Array.Clear(_known);
        }
        // The active generation's services are read once: their ids and ring spans carry over,
        // and they are half of what decides whether anything changed.
        var activeKnown = _known[active];
        MapImage current;
        if (activeKnown is not null && _builder.HasBasis)
        {
            // The builder's last image is what the active generation holds.
            current = _builder.Next(spec, active);
        }
        else
        {
            var activeServices = activeKnown?.Services ?? ReadServices(active);
            current = _builder.BuildFromSlots(spec, active, MapImage.BasisOf(activeServices), _backendSlots ??= ReadBackendSlots(active));
        }
        try
        {
            // Before any flip: a service keeps its id, so the generation in force reads the same timeouts.
            WriteServiceOptions(current.ServiceOptions, verify);
            var activeView = activeKnown ?? ReadGeneration(active, current.Backends.Count, current.Ring.Length);
            if (MapDiff.Plan(current, activeView, cfg) is [MapOp.Flip])
            {
                _known[active] = current.AsObserved();
                if (activeKnown is not null)
                {
                    _builder.Recycle(activeKnown.Ring);
                }
                return new ApplyResult(active, 0, System.Diagnostics.Stopwatch.GetElapsedTime(started));
            }
            var target = (byte)(1 - active);
            var image = current.WithGeneration(target);
            var observed = _known[target] ?? ReadGeneration(target, image.Backends.Count, image.Ring.Length);
            var ops = MapDiff.Plan(image, observed, cfg);
            // A backend new to its index starts its counters from zero (before the flip: nothing counts there yet).
            foreach (var (_, index) in _builder.Renumbered)
            {
                _backendStats.PerCpuClear((uint)index);
            }
            // Until the writes are done, the target generation holds something between the two.
            _known[target] = null;
            Execute(ops);
            _known[target] = image.AsObserved();
            _builder.Recycle(observed.Ring);
            _backendSlots = image.Backends;
            return new ApplyResult(target, MapDiff.Writes(ops), System.Diagnostics.Stopwatch.GetElapsedTime(started));
        }
        catch
        {
            // The active generation still holds the revision before: the builder's last image is not what it holds.
            _builder.Forget();
            _backendSlots = null;
            throw;
        }
    }

    private Dictionary<XlbSvcKey, XlbSvc> ReadServices(byte gen) => _services.Entries(k => k.Gen == gen);

    /// <summary>The live contents of one generation, as far as a new image of the given size reaches.</summary>
    /// <param name="services">The generation's services when already read.</param>
    public ObservedGeneration ReadGeneration(byte gen, int backendCount, int ringCount, IReadOnlyDictionary<XlbSvcKey, XlbSvc>? services = null)
    {
        var vips = _vips.Entries(k => k.Gen == gen);
        services ??= ReadServices(gen);
        // Array ranges by batch: a few syscalls for what would otherwise be one per entry.
        var backends = _backends.ReadArray((uint)(gen * Capacity.BackendSlots) + 1, backendCount);
        var ring = _rings.ReadArray((uint)(gen * Capacity.RingSlots), ringCount);
        _filter.TryLookup(gen, out var filter);
        return new ObservedGeneration(vips, services, backends, ring, FilterImage.From(filter)) { Snat = ReadSnat(_snat, gen, services.Values) };
    }

    /// <summary>The source addresses (xlb_snat) in generation <paramref name="gen"/> of those of <paramref name="services"/> that have them (<see cref="XlbAbi.SvcSnat"/>), by id.</summary>
    internal static Dictionary<uint, XlbSnat> ReadSnat(BpfMap<uint, XlbSnat> map, byte gen, IEnumerable<XlbSvc> services)
    {
        var snat = new Dictionary<uint, XlbSnat>();
        foreach (var svc in services)
        {
            if ((svc.Flags & XlbAbi.SvcSnat) != 0 && map.TryLookup(MapImage.SnatKey(gen, svc.Id), out var sources))
            {
                snat[svc.Id] = sources;
            }
        }
        return snat;
    }

    /// <summary>
    /// Writes the operations map by map, each map's entries in one batch (a few syscalls for
    /// millions of ring slots), and the flip last. Within the inactive generation the order of
    /// the writes does not matter: no packet reads it until the flip.
    /// </summary>
    private void Execute(IReadOnlyList<MapOp> ops)
    {
        var backends = new Batch<uint, XlbBackend>();
        var services = new Batch<XlbSvcKey, XlbSvc>();
        var vips = new Batch<XlbVipKey, uint>();
        var snat = new Batch<uint, XlbSnat>();
        var goneServices = new List<XlbSvcKey>();
        var goneVips = new List<XlbVipKey>();
        var ringSlots = ops.OfType<MapOp.PutRing>().Sum(r => r.Slots.Length);
        var ringKeys = new uint[ringSlots];
        var ringValues = new uint[ringSlots];
        var at = 0;
        MapOp.PutFilter? filter = null;
        MapOp.Flip? flip = null;
        foreach (var op in ops)
        {
            switch (op)
            {
                case MapOp.PutBackend b: backends.Add(b.Key, b.Value); break;
                case MapOp.PutRing r:
                    r.Slots.Span.CopyTo(ringValues.AsSpan(at));
                    for (var i = 0; i < r.Slots.Length; i++)
                    {
                        ringKeys[at + i] = r.Key + (uint)i;
                    }
                    at += r.Slots.Length;
                    break;
                case MapOp.PutService s: services.Add(s.Key, s.Value); break;
                case MapOp.DeleteService s: goneServices.Add(s.Key); break;
                case MapOp.PutVip v: vips.Add(v.Key, v.Flags); break;
                case MapOp.DeleteVip v: goneVips.Add(v.Key); break;
                case MapOp.PutFilter f: filter = f; break;
                case MapOp.PutSnat n: snat.Add(n.Key, n.Value); break;
                case MapOp.Flip f: flip = f; break;
                default: throw new InvalidOperationException($"unknown map operation {op}");
            }
        }
        backends.WriteTo(_backends);
        _rings.UpdateBatch(ringKeys, ringValues);
        services.WriteTo(_services);
        _services.DeleteBatch(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(goneServices));
        vips.WriteTo(_vips);
        snat.WriteTo(_snat);
        _vips.DeleteBatch(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(goneVips));
        if (filter is not null)
        {
            _filter.Update(filter.Generation, filter.Filter.ToAbi());
        }
        if (flip is not null)
        {
            _config.Update(0, flip.Config);
        }
    }

    /// <summary>
    /// The services' options (xlb_svc_opts), by service id: those that differ from what was last
    /// written, and every id not written before (a pin may hold the options of an id's former
    /// service); all of them at a full resync. Ids no service holds any more go to zeros.
    /// </summary>
    private void WriteServiceOptions(IReadOnlyDictionary<uint, XlbSvcOpts> options, bool all)
    {
        var known = all ? null : _optsWritten;
        var batch = new Batch<uint, XlbSvcOpts>();
        foreach (var (id, value) in options)
        {
            if (known is null || !known.TryGetValue(id, out var was) || was != value)
            {
                batch.Add(id, value);
            }
        }
        foreach (var (id, value) in _optsWritten ?? [])
        {
            if (value != default && !options.ContainsKey(id))
            {
                batch.Add(id, default);
            }
        }
        _optsWritten = null;
        batch.WriteTo(_svcOpts);
        _optsWritten = new Dictionary<uint, XlbSvcOpts>(options);
    }

    /// <summary>Keys and values gathered for one batch write.</summary>
    private sealed class Batch<TKey, TValue>
        where TKey : unmanaged
        where TValue : unmanaged
    {
        private readonly List<TKey> _keys = [];
        private readonly List<TValue> _values = [];

        public void Add(TKey key, TValue value)
        {
            _keys.Add(key);
            _values.Add(value);
        }

        public void WriteTo(BpfMap<TKey, TValue> map) =>
            map.UpdateBatch(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_keys), System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_values));
    }

    /// <summary>Packet counters per reason, summed over CPUs.</summary>
    public IReadOnlyDictionary<XlbStat, ulong> Stats() => SumReasons(_stats);

    /// <summary>The reason counters of an xlb_stats map, summed over CPUs.</summary>
    internal static Dictionary<XlbStat, ulong> SumReasons(BpfMap<uint, ulong> stats)
    {
        var result = new Dictionary<XlbStat, ulong>();
        for (var i = 0; i < (int)XlbStat.Count; i++)
        {
            result[(XlbStat)i] = stats.PerCpuSum((uint)i, Add);
        }
        return result;
    }

    /// <summary>
    /// Makes every CPU's flow cache stale (see <see cref="DataPlaneOptions.FlowCache"/>), so that
    /// the next packet of each flow reads the flow table: after a change to <see cref="Flows"/>
    /// made from here. The data plane's own changes (ended, swept and cleared flows) do it; a
    /// change made without it reaches the program at the next jiffy.
    /// </summary>
    /// <summary>
    /// Tells the program the agent is alive (xlb_agent_seen, on CLOCK_MONOTONIC): the agent does
    /// so every <see cref="XlbAbi.AgentStampMs"/> ms while it runs. Silent for a second, the program
    /// leaves a VIP that another host has announced since to that host (yielded in xdp/xlb.c).
    /// </summary>
    public void StampAgentAlive(ulong? nowNs = null) => _agentSeen.Update(0, nowNs ?? MonotonicNs());

    /// <summary>Announcements of VIPs this node holds by other hosts, as the program noted them: the last one of each VIP.</summary>
    public IReadOnlyList<VipClaim> Claims() => ReadClaims(_claims);

    /// <summary>The claims map's entries (this data plane's, or a pinned one's).</summary>
    public static IReadOnlyList<VipClaim> ReadClaims(BpfMap<XlbVipKey, XlbClaim> claims) =>
        [.. claims.Entries((XlbVipKey _) => true).Select(c => new VipClaim(c.Key.Addr.ToAddress(c.Key.Family), c.Value.MacBytes(), (int)c.Value.Ifindex, c.Value.SeenNs))];

    /// <summary>The services' options as last written, or as the maps hold them (an adopted data plane before its first apply).</summary>
    private IReadOnlyDictionary<uint, XlbSvcOpts> ServiceOptions() =>
        _optsWritten ?? _svcOpts.ReadArray(0, XlbAbi.MaxServices + 1).Select((o, id) => (Id: (uint)id, Options: o)).Where(o => o.Options != default).ToDictionary(o => o.Id, o => o.Options);

    public void FlowTableChanged()
    {
        lock (_flowEpochLock)
        {
            _flowEpoch.TryLookup(0, out var epoch);
            _flowEpoch.Update(0, unchecked(epoch + 1));
        }
    }

    /// <summary>Forgets every flow and reverse translation: each connection's next packet is a new flow.</summary>
    /// <returns>How many flow entries were removed.</returns>
    public int ClearFlows()
    {
        var removed = Flows.Keys().Count(k => Flows.Delete(k)) + NewFlows.Keys().Count(k => NewFlows.Delete(k));
        FlowTableChanged();
        RecountConnections();
        foreach (var map in new[] { ReverseNat, NewReverseNat })
        {
            foreach (var k in map.Keys())
            {
                map.Delete(k);
            }
        }
        return removed;
    }

    /// <summary>Counters of the active generation's services, summed over CPUs.</summary>
    public IReadOnlyDictionary<XlbSvcKey, XlbSvcStats> ServiceStats()
    {
        var result = new Dictionary<XlbSvcKey, XlbSvcStats>();
        var services = ReadServices(ActiveGeneration);
        // Ids are dense from 1: one batch read of 1..max rather than a syscall per service.
        var sums = services.Count == 0 ? [] : _svcStats.PerCpuSums(1, (int)services.Values.Max(v => v.Id), XlbSvcStats.Add);
        foreach (var (k, svc) in services)
        {
            result[k] = sums[svc.Id - 1];
        }
        return result;
    }

    /// <summary>
    /// A consumer of the program's flow events (see <see cref="DataPlaneOptions.FlowEventSample"/>);
    /// poll it from one thread. Events wait in the ring buffer while nobody polls, and are lost
    /// (counted) once it is full.
    /// </summary>
    public BpfRingBuffer OpenFlowEvents(Action<XlbFlowEvent> onEvent) =>
        new(_eventsFd, record =>
        {
            if (record.Length >= System.Runtime.CompilerServices.Unsafe.SizeOf<XlbFlowEvent>())
            {
                onEvent(System.Runtime.InteropServices.MemoryMarshal.Read<XlbFlowEvent>(record));
            }
        }, _obj);

    /// <summary>Flow events the program sent, and those lost to a full ring buffer, summed over CPUs.</summary>
    public (ulong Sent, ulong Lost) FlowEventCounts() =>
        (_eventStats.PerCpuSum(XlbAbi.EventsSent, Add), _eventStats.PerCpuSum(XlbAbi.EventsLost, Add));

    /// <summary>Counters of the active generation's backends, summed over CPUs.</summary>
    public IReadOnlyDictionary<XlbBackend, XlbSvcStats> BackendStats()
    {
        var slots = _backendSlots ?? ReadBackendSlots(ActiveGeneration);
        // Indexes are dense from 1: one batch read of 1..last rather than a syscall per backend.
        var last = MapImage.LastUsedSlot(slots);
        var sums = last == 0 ? [] : _backendStats.PerCpuSums(1, last, XlbSvcStats.Add);
        return BySlot(slots, last, i => sums[i]);
    }

    /// <summary>The NAT ports live FullNAT flows hold, per source address (the VIP or one of its service's) and backend (<see cref="NodeStatus.NatPortsHeld"/>), and the range they come from: one read of the flow tables.</summary>
    public (Dictionary<(Addr16 Source, byte Family, byte Proto, Addr16 Backend, ushort BackendPortBe), NatPortUse> Held, int Range) NatPorts()
    {
        var cfg = ReadConfig();
        var now = MonotonicNs();
        var options = ServiceOptions();
        return (NodeStatus.NatPortsHeld(FlowTable(Flows, NewFlows).Where(f => !NodeStatus.Expired(cfg, f.Key, f.Value, now, options)), SnatOf((byte)(cfg.ActiveGen & 1))), cfg.NatPortMax - cfg.NatPortMin + 1);
    }

    /// <summary>The source addresses of a generation's services that have them (as last written, or read), by id.</summary>
    private IReadOnlyDictionary<uint, XlbSnat> SnatOf(byte gen) => _known[gen]?.Snat ?? ReadSnat(_snat, gen, ReadServices(gen).Values);

    /// <summary>
    /// One read of the flow tables (both, by batch: a new flow's entry shadowed by an admitted one
    /// counts once): flows not past their idle timeout per service (of the active generation) and
    /// per backend, and the FullNAT ports held toward each backend from the source address (the VIP
    /// or one of its service's) that holds most of them there (a port serves one connection per
    /// source address and backend at a time), with how many of those are of ended connections.
    /// </summary>
    public FlowCensus Census()
    {
        var cfg = ReadConfig();
        var now = MonotonicNs();
        var table = FlowTable(Flows, NewFlows);
        var options = ServiceOptions();
        var (bySvc, byIndex) = NodeStatus.ActiveFlowCounts(cfg, table, now, Capacity.BackendSlots, options);
        var services = ReadServices((byte)(cfg.ActiveGen & 1)).ToDictionary(s => s.Key, s => bySvc.GetValueOrDefault(s.Value.Id));
        var slots = _backendSlots ?? ReadBackendSlots((byte)(cfg.ActiveGen & 1));
        var nat = new Dictionary<XlbBackend, NatPortUse>();
        foreach (var ((_, family, _, addr, portBe), ports) in NodeStatus.NatPortsHeld(table.Where(f => !NodeStatus.Expired(cfg, f.Key, f.Value, now, options)), SnatOf((byte)(cfg.ActiveGen & 1))))
        {
            var backend = new XlbBackend { Addr = addr, PortBe = portBe, Family = family };
            if (ports.Held > nat.GetValueOrDefault(backend).Held)
            {
                nat[backend] = ports;
            }
        }
        return new FlowCensus(services, BySlot(slots, MapImage.LastUsedSlot(slots), i => byIndex.GetValueOrDefault(i + 1)), nat, cfg.NatPortMax - cfg.NatPortMin + 1);
    }

    /// <summary>
    /// Both flow tables as the program sees them: it looks in the admitted flows first, so a new
    /// flow's entry under the same key is shadowed.
    /// </summary>
    internal static Dictionary<XlbFlowKey, XlbFlow> FlowTable(BpfMap<XlbFlowKey, XlbFlow> admitted, BpfMap<XlbFlowKey, XlbFlow> fresh)
    {
        var flows = admitted.Entries();
        foreach (var (k, f) in fresh.Entries())
        {
            flows.TryAdd(k, f);
        }
        return flows;
    }

    /// <summary>The program's clock: bpf_ktime_get_coarse_ns counts CLOCK_MONOTONIC, as Stopwatch does on Linux.</summary>
    public static ulong MonotonicNs() => (ulong)(System.Diagnostics.Stopwatch.GetTimestamp() * (1e9 / System.Diagnostics.Stopwatch.Frequency));

    /// <summary>A generation's backend slots (slot 1 first), all of them, by batch.</summary>
    private XlbBackend[] ReadBackendSlots(byte gen) => _backends.ReadArray((uint)(gen * Capacity.BackendSlots) + 1, Capacity.MaxBackends);

    /// <summary>A value per backend of the slots, from its slot's position (0-based); a backend in two slots (maps edited by hand) keeps its first.</summary>
    private static Dictionary<XlbBackend, T> BySlot<T>(IReadOnlyList<XlbBackend> slots, int last, Func<int, T> value)
    {
        var result = new Dictionary<XlbBackend, T>(last);
        for (var i = 0; i < last; i++)
        {
            if (slots[i].Family != 0)
            {
                result.TryAdd(slots[i], value(i));
            }
        }
        return result;
    }

    private static ulong Add(ulong a, ulong b) => a + b;

    /// <summary>LeastConn's counts of open flows, by backend of the active generation.</summary>
    public IReadOnlyDictionary<XlbBackend, long> OpenFlowCounts()
    {
        var slots = _backendSlots ?? ReadBackendSlots(ActiveGeneration);
        return BySlot(slots, MapImage.LastUsedSlot(slots), i => _conns.Read(i + 1));
    }

    /// <summary>
    /// Makes LeastConn's open-flow counts what the flow tables hold (<see cref="OpenFlows"/>): the
    /// flows that left without a packet (swept, evicted, ended, cleared) stop counting. The counts
    /// are read, the tables walked, and the differences added atomically, beside the program's own
    /// adds. Skipped when no LeastConn listener was applied and every count is zero.
    /// </summary>
    /// <returns>How many backends' counts changed.</returns>
    public int RecountConnections()
    {
        lock (_recountLock)
        {
            var before = new long[Math.Min(_conns.Length, Capacity.BackendSlots)];
            var any = false;
            for (var i = 0; i < before.Length; i++)
            {
                before[i] = _conns.Read(i);
                any |= before[i] != 0;
            }
            if (!any && _leastConn == false)
            {
                return 0;
            }
            var counted = OpenFlows.Count(FlowTable(Flows, NewFlows).Values, Capacity.BackendSlots);
            var corrections = OpenFlows.Corrections(before, counted);
            foreach (var (index, delta) in corrections)
            {
                _conns.Add(index, delta);
            }
            return corrections.Count;
        }
    }

    public void Dispose()
    {
        _conns.Dispose();
        _obj.Dispose();
    }
}
