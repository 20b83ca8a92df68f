using System.Globalization;
using Microsoft.Extensions.Logging;
using Xlb.Hosting;
using Xlb.Agent.Bpf;
using Xlb.Crds;
using Xlb.Crds.Serialization;

namespace Xlb.Agent;

public sealed record AgentOptions
{
    /// <summary>Standalone mode: the node config file this agent applies (written by the standalone operator).</summary>
    public string? NodeConfigPath { get; init; }
    /// <summary>Standalone mode: where the agent reports what it applied; default: beside the node config, *.status.yaml.</summary>
    public string? StatusPath { get; init; }
    /// <summary>Cluster mode (instead of <see cref="NodeConfigPath"/>): the node's XlbNodeConfig through the API server.</summary>
    public ClusterAgentOptions? Cluster { get; init; }
    public required IReadOnlyList<string> Interfaces { get; init; }
    /// <summary>Fall back to generic XDP where the driver has no native XDP (reported in status).</summary>
    public bool AllowGenericXdp { get; init; }
    public string ObjectPath { get; init; } = Xlb.Agent.XdpDataPlane.DefaultObjectPath;
    /// <summary>How often the source is checked for a change (a stat, or a counter in cluster mode).</summary>
    public TimeSpan ResyncInterval { get; init; } = TimeSpan.FromMilliseconds(500);
    /// <summary>How often the live maps are re-read and compared even when nothing changed (corrects hand edits).</summary>
    public TimeSpan FullResyncInterval { get; init; } = TimeSpan.FromSeconds(30);
    public DataPlaneOptions DataPlane { get; init; } = new();
    /// <summary>
    /// On exit, detach XDP and remove the pinned maps. Off by default: the program and its maps
    /// stay, traffic keeps flowing on the last applied revision, and the next agent adopts them.
    /// </summary>
    public bool DetachOnExit { get; init; }

    /// <summary>
    /// The shutdown window. When it is longer than zero, SIGTERM starts a drain: readiness fails,
    /// new TCP connections get an RST from the data plane, established ones continue; after this
    /// long the agent exits. Zero (the default): SIGTERM is a restart, and traffic is untouched.
    /// </summary>
    public TimeSpan ShutdownTimeout { get; init; }

    /// <summary>A file whose presence starts the same drain at once (for a preStop hook); its removal ends it.</summary>
    public string? ShutdownFile { get; init; }

    /// <summary>Where /healthz, /readyz and /metrics are served; null: not served.</summary>
    public System.Net.IPEndPoint? HealthListen { get; init; }
    /// <summary>
    /// Rounds of gratuitous ARP / unsolicited neighbour advertisements when this node takes a VIP
    /// (0: none), <see cref="AnnounceInterval"/> apart.
    /// </summary>
    public int AnnounceCount { get; init; } = 3;
    public TimeSpan AnnounceInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// The connection log: a file that sampled flow events are appended to as JSON lines, or "-"
    /// for standard output; null: standard output, for the mappings that ask for a connection log
    /// of their own (the node's sample, <see cref="DataPlaneOptions.FlowEventSample"/>, is then 0).
    /// </summary>
    public string? FlowLogPath { get; init; }

    /// <summary>Where flows from the other nodes of this node's flowSync shards are taken (UDP); opened when the node config names such peers.</summary>
    public System.Net.IPEndPoint FlowSyncListen { get; init; } = new(System.Net.IPAddress.IPv6Any, Core.SyncedFlows.DefaultPort);

    /// <summary>How often the flow table is walked for flows to send to the flow-sync peers.</summary>
    public TimeSpan FlowSyncInterval { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>How often flow sync sends every flow again, not only new and busy ones (<see cref="Core.SyncedFlows.FullResendEvery"/>).</summary>
    public TimeSpan FlowSyncFullResend { get; init; } = Core.SyncedFlows.FullResendEvery;

    /// <summary>The file of the key that authenticates flow-sync datagrams (HMAC-SHA256), the same on every node, read again at every walk; null: unauthenticated.</summary>
    public string? FlowSyncKeyFile { get; init; }

    /// <summary>Push metrics over OTLP as well as serving /metrics; null: no push.</summary>
    public OtlpOptions? Otlp { get; init; }
}

/// <summary>
/// The node agent: loads and attaches the XDP program, applies its node config (a file in
/// standalone mode, its XlbNodeConfig in cluster mode) and re-applies whenever the config or the
/// maps drift. The first start fails fast if the program cannot load or attach; later, a bad
/// config keeps the last applied one and says so. The maps are pinned: a restarted agent adopts
/// them, replaces the program in place (an atomic swap for packets) and finds nothing to write.
/// On exit the program stays attached unless <see cref="AgentOptions.DetachOnExit"/> is set.
/// </summary>
public sealed partial class NodeAgent(AgentOptions options, ILogger<NodeAgent> log, TimeProvider time, Xlb.Kube.KubeClient? client = null)
{
    private long _appliedRevision;
    private string _appliedHash = "";
    private DateTimeOffset? _drainStarted;
    private IReadOnlyList<string> _unhealthy = [];
    private readonly SemaphoreSlim _wake = new(0);
    private HealthProber? _prober;
    private volatile bool _healthChanged;
    private readonly Core.DrainTracker _drains = new();
    /// <summary>When the next backend's drain timeout ends (a pass is due then even if nothing else changed).</summary>
    private DateTimeOffset? _drainExpiry;
    private long _sourceVersion = -1;
    private List<Condition> _reported = [];
    private INodeConfigSource _source = null!;
    private DateTimeOffset _lastFullResync = DateTimeOffset.MinValue;
    private L2Announcer? _announcer;
    private List<AnnounceInterface> _attachedAnnounce = [];
    private XlbNodeConfigSpec? _announced;
    private FlowLog? _flowLog;
    /// <summary>BGP sessions by neighbour address.</summary>
    private readonly Dictionary<string, BgpSpeaker> _bgp = new(StringComparer.Ordinal);
    /// <summary>Whether this agent took over a predecessor's data plane: its first BGP sessions say they restart.</summary>
    private bool _adopted;
    /// <summary>The socket toward the other LB nodes, flow sync and heartbeats: from the first config that names peers on.</summary>
    private PeerLink? _link;
    /// <summary>Why the peer socket could not be opened (it is not tried again: the port is another process's).</summary>
    private string? _linkFailed;
    private FlowSyncer? _syncer;
    private Heartbeater? _heartbeater;
    /// <summary>Cluster mode: reads the Leases of silent peers (a peer that renews keeps its VIPs).</summary>
    private LeaseWitness? _witness;
    private ResolutionProber? _resolution;
    private Task _peering = Task.CompletedTask;
    /// <summary>The standby VIPs this agent has taken over from silent peers (as of its last apply).</summary>
    private List<Core.TakenVip> _taken = [];
    /// <summary>A peer that gave back VIPs of this node's it had taken over (set by the heartbeats): announce them again at the next pass.</summary>
    private volatile string? _reannounce;
    /// <summary>Silent peers seen renewing their Lease: alive, and unreachable from here.</summary>
    private List<string> _unreachable = [];
    private CancellationToken _stopping;

    public AgentState State { get; } = new();

    public async Task RunAsync(CancellationToken ct)
    {
        await using var source = OpenSource();
        _source = source;
        using var dp = XdpDataPlane.Load(options.ObjectPath, options.DataPlane);
        if (dp.Adopted)
        {
            LogAdopted(options.DataPlane.PinRoot!, dp.ActiveGeneration);
        }
        // This agent serves: a drain left by a predecessor ends here.
        dp.SetShutdown(false);
        dp.StampAgentAlive();
        _adopted = dp.Adopted;
        State.DataPlane = dp;
        // Always open: the node's sample is 0 without FlowLogPath, but a mapping may ask for its own log.
        using var flowLog = FlowLog.Open(dp, options.FlowLogPath ?? "-", log);
        _flowLog = flowLog;
        State.FlowLog = flowLog;
        await using var endpoints = options.HealthListen is { } listen ? await AgentEndpoints.StartAsync(listen, State, ct) : null;
        using var telemetry = options.Otlp is null ? null : AgentTelemetry.Create(State);
        // Disposed first (declared last): one more export on the way out.
        using var otlp = options.Otlp is { } otlpOptions
            ? OtlpExport.Start(otlpOptions, "xlb-agent", options.Cluster?.NodeName ?? Environment.MachineName, AgentTelemetry.MeterName)
            : null;
        var attached = new List<(string If, XdpMode Mode)>();
        try
        {
            // Data planes of other builds of this instance (an upgrade's predecessor), listed once.
            var otherAbis = options.DataPlane.PinRoot is { } pinRoot ? Bpffs.OtherAbis(pinRoot) : [];
            if (!dp.Adopted)
            {
                await PrimeAsync(dp, upgrade: otherAbis.Count > 0, ct);
            }
            var macs = InterfaceMacs();
            var announceOn = new List<AnnounceInterface>();
            foreach (var ifname in options.Interfaces)
            {
                var mode = Xdp.Attach(ifname, dp.ProgramFd, options.AllowGenericXdp);
                attached.Add((ifname, mode));
                if (macs.GetValueOrDefault(ifname) is { Length: 6 } mac)
                {
                    var ifindex = Xdp.IfIndex(ifname);
                    dp.SetInterfaceMac(ifindex, mac);
                    announceOn.Add(new AnnounceInterface(ifname, ifindex, mac));
                }
                if (mode == XdpMode.Generic)
                {
                    LogGenericMode(ifname);
                }
                LogAttached(ifname, mode);
            }
            RemoveOtherAbis(otherAbis);
            var attachMode = string.Join(",", attached.Select(a => $"{a.If}={a.Mode}"));
            _announcer = new L2Announcer(log, time, announceOn, options.AnnounceCount, options.AnnounceInterval);
            _attachedAnnounce = announceOn;
            RefreshVlans(dp);
            _prober = new HealthProber(log, time, () =>
            {
                _healthChanged = true;
                _wake.Release();
            });
            using var probing = CancellationTokenSource.CreateLinkedTokenSource(ct);
            _stopping = probing.Token;
            var probes = _prober.RunAsync(probing.Token);
            var logging = flowLog?.RunAsync(probing.Token) ?? Task.CompletedTask;
            var stamping = StampAliveAsync(dp, probing.Token);
            // Level-triggered: every resync interval, and at once when a backend's health flips.
            do
            {
                await FollowShutdownFileAsync(dp);
                await ReconcileAsync(dp, attachMode, ct);
            }
            while (await WakeAsync(ct));
            if (_drainStarted is null && options.ShutdownTimeout > TimeSpan.Zero)
            {
                // At once: readiness fails, new connections get RST, and the peers hear this node is leaving.
                await BeginDrainAsync(dp, "stop requested");
            }
            await probing.CancelAsync();
            await probes;
            await stamping;
            await _peering;
            await logging;
            await _announcer.Completion;
            // A drain's start told the peers this node is leaving; so does a detach, whose program stops forwarding.
            await DrainAsync(dp);
            if (options.DetachOnExit && _heartbeater is not null)
            {
                await _heartbeater.LeaveAsync(CancellationToken.None);
            }
        }
        finally
        {
            _link?.Dispose();
            // A restart keeps the routes (graceful restart: the program forwards meanwhile); a
            // drain's end or a detach withdraws them.
            await StopBgpAsync(cease: options.DetachOnExit || _drainStarted is not null);
            if (options.DetachOnExit)
            {
                Detach(attached);
            }
            else if (attached.Count > 0)
            {
                LogLeftAttached(attached.Count);
            }
        }
        if (options.DetachOnExit && options.DataPlane.PinRoot is { } root && Directory.Exists(root))
        {
            // Unlinking a pin drops its reference; the maps go when the last user does.
            Directory.Delete(root, recursive: true);
            var instanceDir = Path.GetDirectoryName(root)!;
            if (!Directory.EnumerateFileSystemEntries(instanceDir).Any())
            {
                Directory.Delete(instanceDir);
            }
        }
    }

    /// <summary>
    /// A data plane of its own (a first start, or an upgrade to a build of another ABI) gets the
    /// node config before its program replaces whatever forwards on the interfaces: attached
    /// empty, it would drop the VIPs' traffic until the first apply. After an upgrade the agent
    /// waits up to <see cref="PrimeWait"/> for its config (a cluster's watch takes a moment);
    /// otherwise it takes what is there. The first reconcile then finds the maps written.
    /// </summary>
    private async Task PrimeAsync(XdpDataPlane dp, bool upgrade, CancellationToken ct)
    {
        var deadline = time.GetTimestamp();
        var read = _source.Read();
        while (read.Config is null && upgrade && time.GetElapsedTime(deadline) < PrimeWait)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(50), time, ct);
            read = _source.Read();
        }
        if (read.Config is not { } config)
        {
            return;
        }
        try
        {
            var result = dp.Apply(_drains.Apply(config.Spec, time.GetUtcNow()).Effective, verify: false);
            LogPrimed(config.Spec.Revision, result.Generation, result.Operations, result.Elapsed.TotalMilliseconds);
            if (result.Operations > 0)
            {
                State.Wrote(result.Elapsed.TotalMilliseconds);
            }
        }
        catch (Exception e) when (e is Core.ConfigTooLargeException or BpfException or FormatException)
        {
            // The first reconcile applies it again, and reports why it cannot.
            LogApplyFailed(config.Spec.Revision, e.Message);
        }
    }

    /// <summary>How long an agent that replaces another build's data plane waits for its node config before it attaches.</summary>
    private static readonly TimeSpan PrimeWait = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Once this build's program is attached, the pins of another ABI's data plane of this
    /// instance (the build before an upgrade) hold nothing but memory, and its connection table
    /// cannot be adopted: they are removed, and the flows they held counted in the log. Unpinned,
    /// a map goes when the last program that uses it does, and the program of that build was
    /// replaced on this agent's interfaces just now.
    /// </summary>
    private void RemoveOtherAbis(IReadOnlyList<(string Dir, int Abi)> others)
    {
        foreach (var (dir, abi) in others)
        {
            long? flows = null;
            var error = "";
            try
            {
                using var maps = new PinnedMaps(dir);
                flows = Directory.GetFiles(dir, "xlb_flows*").Sum(f => maps.CountKeys(Path.GetFileName(f)));
            }
            catch (BpfException e)
            {
                error = e.Message;
            }
            Directory.Delete(dir, recursive: true);
            if (flows is { } n)
            {
                LogRemovedOtherAbi(dir, abi, Xlb.DataPlane.XlbAbi.Version, n);
            }
            else
            {
                LogRemovedOtherAbiUncounted(dir, abi, Xlb.DataPlane.XlbAbi.Version, error);
            }
        }
    }

    /// <summary>
    /// Tells the program the agent runs, every <see cref="Xlb.DataPlane.XlbAbi.AgentStampMs"/> ms until it stops
    /// (see <see cref="XdpDataPlane.StampAgentAlive"/>): a node whose agent is gone leaves the VIPs
    /// its standbys announce to them.
    /// </summary>
    private async Task StampAliveAsync(XdpDataPlane dp, CancellationToken ct)
    {
        try
        {
            while (true)
            {
                dp.StampAgentAlive();
                await Task.Delay(TimeSpan.FromMilliseconds(Xlb.DataPlane.XlbAbi.AgentStampMs), ct);
            }
        }
        catch (OperationCanceledException)
        {
            // Stopping: the stamps end with the agent.
        }
    }

    private INodeConfigSource OpenSource()
    {
        if (options.Cluster is { } cluster)
        {
            return new KubeNodeConfigSource(client ?? throw new ArgumentException("cluster mode needs a Kubernetes client"), cluster, () => _wake.Release(), log, time);
        }
        return new FileNodeConfigSource(options.NodeConfigPath ?? throw new ArgumentException("set NodeConfigPath (standalone) or Cluster"), options.StatusPath, () => _wake.Release());
    }

    private async Task<bool> WakeAsync(CancellationToken ct)
    {
        try
        {
            await _wake.WaitAsync(options.ResyncInterval, ct);
            while (_wake.CurrentCount > 0)
            {
                await _wake.WaitAsync(0, ct);
            }
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private async Task FollowShutdownFileAsync(XdpDataPlane dp)
    {
        if (options.ShutdownFile is null)
        {
            return;
        }
        var present = File.Exists(options.ShutdownFile);
        if (present && _drainStarted is null)
        {
            await BeginDrainAsync(dp, $"{options.ShutdownFile} appeared");
        }
        else if (!present && _drainStarted is not null)
        {
            _drainStarted = null;
            State.Draining = false;
            dp.SetShutdown(false);
            _heartbeater?.Stay();
            if (_source is KubeNodeConfigSource kube)
            {
                await kube.DrainAsync(false, CancellationToken.None);
            }
            LogDrainEnded(options.ShutdownFile);
        }
    }

    private async Task BeginDrainAsync(XdpDataPlane dp, string why)
    {
        _drainStarted = time.GetUtcNow();
        State.Draining = true;
        dp.SetShutdown(true);
        LogDrainStarted(why, options.ShutdownTimeout.TotalSeconds);
        if (_heartbeater is not null)
        {
            await _heartbeater.LeaveAsync(CancellationToken.None);
        }
        if (_source is KubeNodeConfigSource kube)
        {
            await kube.DrainAsync(true, CancellationToken.None);
        }
    }

    /// <summary>On stop: hold the shutdown window (counted from its start) before exiting.</summary>
    private async Task DrainAsync(XdpDataPlane dp)
    {
        if (options.ShutdownTimeout <= TimeSpan.Zero && _drainStarted is null)
        {
            return;
        }
        if (_drainStarted is null)
        {
            await BeginDrainAsync(dp, "stop requested");
        }
        var left = options.ShutdownTimeout - (time.GetUtcNow() - _drainStarted!.Value);
        if (left > TimeSpan.Zero)
        {
            await Task.Delay(left, time, CancellationToken.None);
        }
        LogDrainDone();
    }

    private void Detach(List<(string If, XdpMode Mode)> attached)
    {
        foreach (var (ifname, mode) in attached)
        {
            try
            {
                Xdp.Detach(ifname, mode);
                LogDetached(ifname);
            }
            catch (BpfException e)
            {
                LogDetachFailed(ifname, e.Message);
            }
        }
    }


    /// <summary>
    /// One level-triggered pass: read the source, apply what it says if it is valid, report.
    /// Between full resyncs, a pass with an unchanged source and unchanged backend health costs
    /// one stat (standalone) or one counter read (cluster).
    /// </summary>
    /// <summary>
    /// How often the flow tables are read for FullNAT port pressure (<see cref="Core.NatPressure"/>),
    /// while the applied config has FullNAT listeners: a read of a million flows takes about 0.3 s here.
    /// </summary>
    private static readonly TimeSpan NatPortCheckEvery = TimeSpan.FromSeconds(10);

    private DateTimeOffset _lastNatPortCheck = DateTimeOffset.MinValue;
    private List<string> _natPressure = [];

    /// <summary>Every <see cref="NatPortCheckEvery"/>: the (VIP, backend) pairs whose FullNAT ports are nearly all held; a change is reported at once.</summary>
    private void CheckNatPorts(XdpDataPlane dp, DateTimeOffset now)
    {
        if (now - _lastNatPortCheck < NatPortCheckEvery || (_announced?.Listeners.All(l => l.NatMode != NatMode.FullNAT) ?? true) && _natPressure.Count == 0)
        {
            return;
        }
        _lastNatPortCheck = now;
        try
        {
            var (held, range) = dp.NatPorts();
            var pressure = Core.NatPressure.Of(held, range);
            if (!pressure.SequenceEqual(_natPressure, StringComparer.Ordinal))
            {
                _natPressure = pressure;
                _healthChanged = true;
            }
        }
        catch (BpfException e)
        {
            LogNatPortCheckFailed(e.Message);
        }
    }

    private List<string> _conflicts = [];

    /// <summary>
    /// The VIPs this node holds that another host announced since this node last did
    /// (<see cref="Core.VipConflicts"/>, from the claims the program notes); a change is reported at once.
    /// </summary>
    private void CheckVipClaims(XdpDataPlane dp)
    {
        try
        {
            var claims = dp.Claims();
            if (claims.Count == 0 && _conflicts.Count == 0)
            {
                return;
            }
            var held = _announced?.Vips.Where(v => v.Role == VipRole.Active).Select(v => System.Net.IPAddress.Parse(v.Address)).ToHashSet() ?? [];
            var names = _attachedAnnounce.ToDictionary(i => i.IfIndex, i => i.Name);
            var conflicts = Core.VipConflicts.Of(claims, held, _announcer?.LastAnnounced ?? new Dictionary<System.Net.IPAddress, ulong>(),
                _attachedAnnounce.Select(i => i.Mac), i => names.GetValueOrDefault(i) ?? $"ifindex {i}", XdpDataPlane.MonotonicNs());
            if (!conflicts.SequenceEqual(_conflicts, StringComparer.Ordinal))
            {
                if (conflicts.Count > 0)
                {
                    LogVipsAnnouncedElsewhere(string.Join("; ", conflicts));
                }
                _conflicts = conflicts;
                State.AnnouncedElsewhere = conflicts.Count;
                _healthChanged = true;
            }
        }
        catch (BpfException e)
        {
            LogClaimsReadFailed(e.Message);
        }
    }

    public async Task ReconcileAsync(XdpDataPlane dp, string attachMode, CancellationToken ct)
    {
        var version = _source.Version;
        var now = time.GetUtcNow();
        CheckNatPorts(dp, now);
        CheckVipClaims(dp);
        var fullResync = now - _lastFullResync >= options.FullResyncInterval;
        var drainOver = _drainExpiry is { } expiry && expiry <= now;
        if (!fullResync && !_healthChanged && !drainOver && version == _sourceVersion)
        {
            return;
        }
        _healthChanged = false;
        if (fullResync)
        {
            _lastFullResync = now;
            // VLAN devices come and go with the node's network configuration, not with ours.
            RefreshVlans(dp);
        }
        _sourceVersion = version;
        var read = _source.Read();
        if (read.Invalid is { } invalid)
        {
            State.Failed("InvalidConfig");
            await ReportAsync(attachMode, Degraded("InvalidConfig", invalid), ct);
            return;
        }
        if (read.Config is not { } config)
        {
            State.Waiting("NoNodeConfig");
            await ReportAsync(attachMode, _appliedRevision > 0 ? Holding(read.Waiting ?? "") : Waiting(read.Waiting ?? ""), ct);
            return;
        }
        try
        {
            // Backends whose drain timeout is over leave their listeners, and then their flows end.
            var drain = _drains.Apply(config.Spec, now);
            _drainExpiry = drain.NextExpiry;
            var effective = drain.Effective;
            // Standby VIPs whose active node has fallen silent are this node's now.
            StartPeers(dp, config.Spec);
            if (_heartbeater is not null)
            {
                // L2 VIPs of a node never heard: does anyone answer for them? (Core.ResolutionWitness)
                _resolution?.Configure(Core.ResolutionWitness.Probed(config.Spec, _heartbeater.SilentFor, Core.BgpRoutes.Routed(config.Spec)), _announcer?.Interfaces ?? []);
                var takeover = Core.Takeover.Apply(effective, _heartbeater.SilentFor, _witness is null ? null : _witness.Renewing, _resolution is null ? null : _resolution.UnansweredFor,
                    _taken, _syncer is { } syncer ? syncer.Owes : null);
                effective = takeover.Effective;
                _witness?.Watch(takeover.Overdue);
                NoteTakeovers(config.Spec, takeover.Taken, takeover.Unreachable);
            }
            if (_prober is not null)
            {
                _prober.Update(Core.HealthTracker.Plans(config.Spec));
                var health = Core.HealthFilter.Apply(effective, _prober.IsHealthy);
                effective = health.Effective;
                _unhealthy = health.Unhealthy;
                State.Health(health.Unhealthy, health.FailedOpen);
            }
            var result = dp.Apply(effective, verify: fullResync);
            if (result.Operations > 0)
            {
                LogApplied(config.Spec.Revision, result.Generation, result.Operations, result.Elapsed.TotalMilliseconds);
            }
            if (fullResync)
            {
                // LeastConn's counts forget flows that left without a packet (the connection log's
                // sweep takes idle flows every 10 s, and recounts when it takes any).
                dp.RecountConnections();
            }
            if (drain.Drained.Count > 0)
            {
                var ended = dp.EndFlows(drain.Drained);
                LogDrainOver(drain.Drained.Count, string.Join(", ", drain.Drained.Select(d => $"{new System.Net.IPEndPoint(d.Backend, d.BackendPort)} on {d.Listener}")), ended);
            }
            _appliedRevision = config.Spec.Revision;
            _appliedHash = config.Spec.ContentHash;
            // VIPs this node has just taken (all active ones after a start): tell the link, or the BGP neighbours.
            var routed = Core.BgpRoutes.Routed(effective);
            // Given back by a peer that had taken them: every active VIP again (the link's neighbours followed the peer's announcement).
            var announce = Interlocked.Exchange(ref _reannounce, null) is { } gaveBack
                ? AnnounceAgain(effective, gaveBack)
                : Core.Announcements.Taken(_announced, effective);
            _announcer?.Announce([.. announce.Where(v => !routed.Contains(v))], ct);
            _heartbeater?.Holding(_taken.Select(t => t.From));
            await SyncBgpAsync(effective);
            _syncer?.Configure(dp.SyncView(effective.Listeners.Where(l => l.FlowSync == true)), effective.FlowSyncPeers);
            _announced = effective;
            _flowLog?.SetConfig(effective);
            if (result.Operations > 0 || fullResync)
            {
                ResolveNeighbours(Core.DsrNeighbours.Addresses(effective));
            }
            State.Applied(config.Spec.Revision, result.Elapsed.TotalMilliseconds, result.Operations > 0);
            await ReportAsync(attachMode, Applied(config), ct);
        }
        catch (Exception e) when (e is Core.ConfigTooLargeException or BpfException or FormatException)
        {
            LogApplyFailed(config.Spec.Revision, e.Message);
            _sourceVersion = -1; // retried on the next pass, not only when the config changes
            State.Failed("ApplyFailed");
            await ReportAsync(attachMode, Degraded("ApplyFailed", $"revision {config.Spec.Revision} not applied, revision {_appliedRevision} stays: {e.Message}"), ct);
        }
    }

    /// <summary>Starts, restarts (when a neighbour's settings change) and stops sessions to match the config, and gives each its routes.</summary>
    private async Task SyncBgpAsync(XlbNodeConfigSpec effective)
    {
        var plans = Core.BgpRoutes.Desired(effective);
        foreach (var (address, speaker) in _bgp.ToList())
        {
            if (!plans.TryGetValue(address, out var plan) || !SameSession(plan.Peer, speaker.Peer))
            {
                _bgp.Remove(address);
                await speaker.StopAsync(cease: true);
            }
        }
        foreach (var (address, plan) in plans)
        {
            if (!_bgp.TryGetValue(address, out var speaker))
            {
                _bgp[address] = speaker = BgpSpeaker.Start(plan.Peer, log, time, _adopted, () =>
                {
                    _healthChanged = true; // the report says which sessions are up and what they carry
                    _wake.Release();
                });
            }
            // VIPs taken over from a silent peer go out preferred, over the routes the neighbour may still hold from it.
            speaker.SetRoutes(plan.Routes, _taken.Select(t => System.Net.IPAddress.Parse(t.Address)).Where(plan.Routes.Contains).ToHashSet());
        }
        State.Bgp = [.. _bgp.Values];
        // A session carries the VIPs of its own family: say so once when a family has VIPs and no session.
        var stranded = plans.Values.SelectMany(p => p.Routes).Distinct()
            .Where(r => !plans.Values.Any(q => q.Routes.Contains(r) && System.Net.IPAddress.Parse(q.Peer.Address).AddressFamily == r.AddressFamily))
            .Select(r => r.ToString()).Order(StringComparer.Ordinal).ToList();
        var key = string.Join(",", stranded);
        if (stranded.Count > 0 && key != _strandedWarned)
        {
            LogBgpFamilyMissing(stranded.Count, string.Join(", ", stranded.Take(5)));
        }
        _strandedWarned = key;
    }

    private string _strandedWarned = "";

    /// <summary>
    /// Opens the peer link (flow sync and heartbeats) when the config first names peers, and gives
    /// the heartbeats each revision's peers and standby VIPs. A port that cannot be bound is logged
    /// once: the node then neither synchronises flows nor detects failures itself (the operator still moves VIPs).
    /// </summary>
    private void StartPeers(XdpDataPlane dp, XlbNodeConfigSpec spec)
    {
        if (_link is null && (_linkFailed is not null || spec.FlowSyncPeers.Count == 0 && spec.FailoverPeers.Count == 0))
        {
            return;
        }
        if (_link is null)
        {
            try
            {
                _link = PeerLink.Open(options.FlowSyncListen, options.FlowSyncKeyFile is { } keyFile ? new FlowSyncKeyFile(keyFile) : null, log, time);
            }
            catch (System.Net.Sockets.SocketException e)
            {
                _linkFailed = $"cannot listen on {options.FlowSyncListen} (UDP): {e.Message}";
                LogFlowSyncFailed(options.FlowSyncListen.ToString(), e.Message);
                return;
            }
            var link = _link;
            var heartbeater = _heartbeater = new Heartbeater(link, log, time, () =>
            {
                _healthChanged = true; // a peer fell silent or was heard again: apply with the takeovers as they are now
                _wake.Release();
            }, peer =>
            {
                // A peer served this node's VIPs and gave them back: the link's neighbours may still
                // send to it (gratuitous ARP moved them), so this node announces its VIPs again.
                _reannounce = peer;
                _healthChanged = true;
                _wake.Release();
            }, peer => _syncer?.ResendAll(peer));
            var syncer = _syncer = new FlowSyncer(dp, link, options.FlowSyncInterval, options.FlowSyncFullResend, log, time, _ =>
            {
                _healthChanged = true; // a returning peer has its flows: the VIPs taken from it go back
                _wake.Release();
            });
            // Before the first heartbeat goes out: a peer that hears this node again sends it
            // every flow at once, and they must find the services the data plane holds already
            // (adopted, or written before the program was attached). The apply below configures
            // it again with what it wrote.
            syncer.Configure(dp.SyncView(spec.Listeners.Where(l => l.FlowSync == true)), spec.FlowSyncPeers);
            State.FlowSync = syncer;
            State.Heartbeats = heartbeater;
            var witness = _witness = options.Cluster is { } cluster && client is not null
                ? new LeaseWitness(client, cluster.LeaseNamespace, log, time, () =>
                {
                    _healthChanged = true; // a silent peer was seen renewing its Lease, or no longer is
                    _wake.Release();
                })
                : null;
            var prober = _resolution = new ResolutionProber(dp, log, time, () =>
            {
                _healthChanged = true; // a VIP of a never-heard node went unanswered past its takeover time, or is answered again
                _wake.Release();
            });
            _peering = Task.WhenAll(
                Task.Run(() => prober.RunAsync(_stopping), CancellationToken.None),
                Task.Run(() => link.RunAsync(_stopping), CancellationToken.None),
                Task.Run(() => heartbeater.RunAsync(_stopping), CancellationToken.None),
                Task.Run(() => syncer.RunAsync(_stopping), CancellationToken.None),
                Task.Run(() => witness?.RunAsync(_stopping) ?? Task.CompletedTask, CancellationToken.None));
        }
        _heartbeater!.Configure(spec);
    }

    /// <summary>This node's active VIPs, to announce again after <paramref name="peer"/> gave them back.</summary>
    private IReadOnlyList<System.Net.IPAddress> AnnounceAgain(XlbNodeConfigSpec effective, string peer)
    {
        var active = Core.Announcements.Taken(null, effective);
        LogAnnounceAgain(peer, active.Count);
        return active;
    }

    /// <summary>Logs the VIPs taken over from silent peers and given back to peers heard again (or seen renewing their Lease).</summary>
    private void NoteTakeovers(XlbNodeConfigSpec spec, List<Core.TakenVip> taken, List<string> unreachable)
    {
        foreach (var peer in unreachable.Except(_unreachable))
        {
            LogUnreachable(peer, options.FlowSyncListen.Port);
        }
        _unreachable = unreachable;
        // Sets: a dead peer may have held thousands of VIPs.
        var before = _taken.Select(t => t.Address).ToHashSet(StringComparer.Ordinal);
        var now = taken.Select(t => t.Address).ToHashSet(StringComparer.Ordinal);
        foreach (var t in taken.Where(t => !before.Contains(t.Address)).GroupBy(t => t.From))
        {
            var silent = t.First().Silent;
            LogTookOver(t.Count(), t.Key, t.First().Cause switch
            {
                Core.TakeoverCause.Leaving => "it is leaving",
                Core.TakeoverCause.Unheard => $"never heard, and nobody answered ARP/ND for them for {silent.TotalMilliseconds:F0} ms",
                _ => $"silent for {silent.TotalMilliseconds:F0} ms",
            }, string.Join(", ", t.Take(5).Select(v => v.Address)));
        }
        var activeHere = spec.Vips.Where(v => v.Role == VipRole.Active).Select(v => v.Address).ToHashSet(StringComparer.Ordinal);
        foreach (var g in _taken.Where(w => !now.Contains(w.Address)).GroupBy(w => (w.From, Moved: activeHere.Contains(w.Address), w.Unheard)))
        {
            var vips = string.Join(", ", g.Take(5).Select(v => v.Address));
            if (g.Key.Moved)
            {
                LogMovedHere(g.Count(), g.Key.From, vips);
            }
            else
            {
                LogGaveBack(g.Count(), g.Key.From, unreachable.Contains(g.Key.From) ? "it renews its Lease"
                    : g.Key.Unheard ? "another host answers for them, or it is heard at last" : "heard again", vips);
            }
        }
        _taken = taken;
        State.TakenOver = taken.Count;
    }

    private static bool SameSession(NodeBgpPeer a, NodeBgpPeer b) =>
        a.Address == b.Address && a.Port == b.Port && a.Asn == b.Asn && a.MyAsn == b.MyAsn && a.HoldTime == b.HoldTime;

    private async Task StopBgpAsync(bool cease)
    {
        foreach (var speaker in _bgp.Values)
        {
            await speaker.StopAsync(cease);
        }
        _bgp.Clear();
        State.Bgp = [];
    }

    private List<Condition> Applied(XlbNodeConfig config) =>
    [
        Cond("Applied", "True", "RevisionApplied", $"revision {config.Spec.Revision} is in the data plane", config),
        Cond("Ready", "True", "Forwarding", $"{config.Spec.Listeners.Count} listeners on {config.Spec.Vips.Count} VIPs", config),
        DegradedNow(config),
    ];

    /// <summary>The Degraded condition of an applied config: the first of these that holds.</summary>
    private Condition DegradedNow(XlbNodeConfig config)
    {
        if (_taken.Count > 0)
        {
            return Cond("Degraded", "True", "PeerSilent", "took over " + string.Join("; ", _taken.GroupBy(t => t.From).Select(g =>
                $"{g.Count()} VIP(s) from {g.Key} ({g.First().Cause switch
                {
                    Core.TakeoverCause.Leaving => "leaving",
                    Core.TakeoverCause.Unheard => "never heard, nobody answers ARP/ND for them",
                    _ => "no heartbeat",
                }}: {string.Join(", ", g.Take(5).Select(t => t.Address))})")), config);
        }
        if (_linkFailed is { } failed && (config.Spec.FailoverPeers.Count > 0 || config.Spec.FlowSyncPeers.Count > 0))
        {
            return Cond("Degraded", "True", "PeerPortUnavailable", $"{failed}: no heartbeats and no flow sync with the other LB nodes; this node takes no VIP over by itself (--flow-sync-listen)", config);
        }
        if (_unreachable.Count > 0)
        {
            return Cond("Degraded", "True", "PeerUnreachable", $"no heartbeat from {string.Join(", ", _unreachable)}, which renew(s) their Lease: their VIPs stay with them " +
                $"(is UDP port {options.FlowSyncListen.Port} open between the LB nodes?)", config);
        }
        if (_conflicts.Count > 0)
        {
            return Cond("Degraded", "True", "VipAnnouncedElsewhere", $"another host announces VIP(s) this node holds, so both answer for them: {string.Join("; ", _conflicts)} " +
                "(a partition between the LB nodes, or a host configured with the address)", config);
        }
        if (_heartbeater?.NeverHeard() is { Count: > 0 } unheard)
        {
            return Cond("Degraded", "True", "PeerUnheard", $"no heartbeat from {string.Join(", ", unheard)} since they became peers: this node takes their VIPs over by itself only if nobody answers ARP/ND for them (L2) " +
                $"(is UDP port {options.FlowSyncListen.Port} open between the LB nodes, and do they use the same --flow-sync-key-file?)", config);
        }
        if (_unhealthy.Count > 0)
        {
            return Cond("Degraded", "True", "BackendsUnhealthy", $"no new flows to {string.Join(", ", _unhealthy)}", config);
        }
        if (_bgp.Values.Where(b => b.State != "Established").Select(b => $"{b.Peer.Address} ({b.State}{(b.LastError is { } e ? ": " + e : "")})").ToList() is { Count: > 0 } down)
        {
            return Cond("Degraded", "True", "BgpSessionDown", $"no BGP session with {string.Join(", ", down)}", config);
        }
        if (_natPressure.Count > 0)
        {
            return Cond("Degraded", "True", "NatPortsLow", $"FullNAT ports nearly all held, new connections may wait for one (see xlb status): {string.Join("; ", _natPressure)}", config);
        }
        return Cond("Degraded", "False", "AsExpected", "", config);
    }

    private List<Condition> Degraded(string reason, string message) =>
    [
        Cond("Applied", "False", reason, message, null),
        Cond("Ready", _appliedRevision > 0 ? "True" : "False", _appliedRevision > 0 ? "Forwarding" : reason,
            _appliedRevision > 0 ? $"forwarding on revision {_appliedRevision}" : message, null),
        Cond("Degraded", "True", reason, message, null),
    ];

    private List<Condition> Waiting(string why) =>
    [
        Cond("Applied", "False", "NoNodeConfig", why, null),
        Cond("Ready", "False", "NoNodeConfig", "no node config yet", null),
        Cond("Degraded", "False", "AsExpected", "", null),
    ];

    /// <summary>A new revision is not complete yet (a chunk is missing): the applied one keeps forwarding.</summary>
    private List<Condition> Holding(string why) =>
    [
        Cond("Applied", "False", "Incomplete", why, null),
        Cond("Ready", "True", "Forwarding", $"forwarding on revision {_appliedRevision}", null),
        Cond("Degraded", "False", "AsExpected", "", null),
    ];

    /// <summary>A condition whose transition time moves only when its status does (so an unchanged report is an identical one).</summary>
    private Condition Cond(string type, string status, string reason, string message, XlbNodeConfig? config)
    {
        var was = _reported.FirstOrDefault(c => c.Type == type);
        var condition = new Condition
        {
            Type = type,
            Status = status,
            Reason = reason,
            Message = message,
            ObservedGeneration = config?.Spec.Revision,
            LastTransitionTime = was?.Status == status ? was.LastTransitionTime : time.GetUtcNow().ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
        };
        return condition;
    }

    private Task ReportAsync(string attachMode, List<Condition> conditions, CancellationToken ct)
    {
        _reported = conditions;
        return _source.ReportAsync(new XlbNodeConfigStatus
        {
            AppliedRevision = _appliedRevision,
            AppliedHash = _appliedHash,
            AttachMode = attachMode,
            UnhealthyBackends = [.. _unhealthy],
            BgpSessions = [.. _bgp.Values.OrderBy(b => b.Peer.Address, StringComparer.Ordinal).Select(b => new BgpSessionStatus
            {
                Peer = b.Peer.Address, State = b.State, AdvertisedRoutes = b.Advertised.Count, LastError = b.State == "Established" ? null : b.LastError,
            })],
            FailoverPeers = [.. (_heartbeater?.States() ?? []).Select(p => new FailoverPeerStatus
            {
                Node = p.Node,
                // A peer VIPs were taken from is silent (or leaving), whatever its three intervals say.
                State = _unreachable.Contains(p.Node) ? "Unreachable"
                    : _taken.Find(t => t.From == p.Node) is { From: not null } t ? t.Cause.ToString()
                    : p.State,
                VipsTakenOver = _taken.Count(t => t.From == p.Node),
            })],
            Conditions = conditions,
        }, ct);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "took over {Count} VIP(s) from {Peer} ({Why}): {Vips}")]
    private partial void LogTookOver(int count, string peer, string why, string vips);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Peer} no longer serves VIPs of this node's: announcing the {Count} active VIP(s) again")]
    private partial void LogAnnounceAgain(string peer, int count);

    [LoggerMessage(Level = LogLevel.Information, Message = "gave {Count} VIP(s) back to {Peer}, {Why}: {Vips}")]
    private partial void LogGaveBack(int count, string peer, string why, string vips);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Count} VIP(s) taken over from {Peer} are this node's in its config now (the operator moved them): {Vips}")]
    private partial void LogMovedHere(int count, string peer, string vips);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Peer} sends no heartbeat here but renews its Lease: it keeps its VIPs (is UDP port {Port} open between the LB nodes?)")]
    private partial void LogUnreachable(string peer, int port);

    [LoggerMessage(Level = LogLevel.Information, Message = "drain timeout over for {Count} backends ({Backends}): they left their listeners, {Flows} flows ended")]
    private partial void LogDrainOver(int count, string backends, int flows);

    [LoggerMessage(Level = LogLevel.Warning, Message = "cannot read the flow tables for NAT port use: {Error}")]
    private partial void LogNatPortCheckFailed(string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "cannot read the announcements of this node's VIPs by other hosts: {Error}")]
    private partial void LogClaimsReadFailed(string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "another host announces VIP(s) this node holds: {Conflicts}")]
    private partial void LogVipsAnnouncedElsewhere(string conflicts);

    [LoggerMessage(Level = LogLevel.Information, Message = "XDP attached to {Interface} in {Mode} mode")]
    private partial void LogAttached(string @interface, XdpMode mode);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Interface} has no native XDP: running in generic mode, which is slower")]
    private partial void LogGenericMode(string @interface);

    [LoggerMessage(Level = LogLevel.Warning, Message = "draining ({Why}): readiness fails, new connections get RST, existing ones continue; window {Seconds} s")]
    private partial void LogDrainStarted(string why, double seconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "{File} is gone: drain ended, accepting new connections")]
    private partial void LogDrainEnded(string file);

    [LoggerMessage(Level = LogLevel.Information, Message = "shutdown window over: exiting")]
    private partial void LogDrainDone();

    [LoggerMessage(Level = LogLevel.Information, Message = "adopted the pinned maps in {PinRoot}: generation {Generation} active, connection table kept")]
    private partial void LogAdopted(string pinRoot, byte generation);

    [LoggerMessage(Level = LogLevel.Information, Message = "applied revision {Revision} into generation {Generation}: {Operations} map operations in {Milliseconds:F1} ms, before attaching the program of this new data plane")]
    private partial void LogPrimed(long revision, byte generation, int operations, double milliseconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "removed {Dir}: the data plane of another build (ABI {Abi}; this one is ABI {Mine}), replaced on this agent's interfaces; its {Flows} flows are not carried over: their connections through this node start afresh")]
    private partial void LogRemovedOtherAbi(string dir, int abi, int mine, long flows);

    [LoggerMessage(Level = LogLevel.Warning, Message = "removed {Dir}: the data plane of another build (ABI {Abi}; this one is ABI {Mine}), replaced on this agent's interfaces; its flows (not counted: {Error}) are not carried over")]
    private partial void LogRemovedOtherAbiUncounted(string dir, int abi, int mine, string error);

    [LoggerMessage(Level = LogLevel.Information, Message = "exiting with XDP attached to {Count} interfaces: traffic continues on the applied revision")]
    private partial void LogLeftAttached(int count);

    [LoggerMessage(Level = LogLevel.Information, Message = "XDP detached from {Interface}")]
    private partial void LogDetached(string @interface);

    [LoggerMessage(Level = LogLevel.Error, Message = "detaching XDP from {Interface} failed: {Error}")]
    private partial void LogDetachFailed(string @interface, string error);

    [LoggerMessage(Level = LogLevel.Information, Message = "applied revision {Revision} into generation {Generation}: {Operations} map operations in {Milliseconds:F1} ms")]
    private partial void LogApplied(long revision, byte generation, int operations, double milliseconds);

    [LoggerMessage(Level = LogLevel.Error, Message = "revision {Revision} not applied: {Error}")]
    private partial void LogApplyFailed(long revision, string error);

    /// <summary>
    /// Has the kernel resolve (and keep fresh) the neighbour entries of L2 DSR backends, which
    /// the XDP program reads but never causes: an empty datagram to each backend's discard port
    /// makes the kernel ARP or solicit for it. Best effort: a failure shows as the program's
    /// drop_dsr_unresolved counter.
    /// </summary>
    private void ResolveNeighbours(IReadOnlyList<System.Net.IPAddress> backends)
    {
        foreach (var address in backends)
        {
            try
            {
                using var socket = new System.Net.Sockets.Socket(address.AddressFamily, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
                socket.Blocking = false;
                socket.SendTo([], new System.Net.IPEndPoint(address, 9));
            }
            catch (System.Net.Sockets.SocketException e)
            {
                LogNeighbourFailed(address.ToString(), e.Message);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not have the kernel resolve L2 DSR backend {Backend}: {Error}")]
    private partial void LogNeighbourFailed(string backend, string error);

    /// <summary>
    /// Tells the data plane the node's VLAN devices, from a netlink dump of its links: a route
    /// over one is sent tagged out of the device below it, and ARP/ND on one is answered with its
    /// MAC. VIPs are announced on the VLAN devices of attached interfaces as well. Best effort: a
    /// failed dump leaves the maps as they were.
    /// </summary>
    private void RefreshVlans(XdpDataPlane dp)
    {
        try
        {
            var dump = new Core.LinkDump();
            Rtnetlink.DumpLinks(dump.Feed);
            var vlans = Core.LinkDump.Vlans(dump.Links, out var dropped);
            if (dropped > 0)
            {
                LogVlansDropped(dropped, DataPlane.XlbAbi.MaxVlans);
            }
            if (dp.SetVlans(vlans) > 0)
            {
                LogVlans(vlans.Count, string.Join(", ", vlans));
            }
            if (_announcer is { } announcer)
            {
                announcer.Interfaces =
                [
                    .. _attachedAnnounce,
                    .. Core.VlanMaps.On(vlans, _attachedAnnounce.Select(a => a.IfIndex)).Select(v => new AnnounceInterface(v.Name, v.Ifindex, v.Mac)),
                ];
            }
        }
        catch (Exception e) when (e is BpfException or InvalidOperationException or FormatException)
        {
            LogVlansFailed(e.Message);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "VLAN devices known to the data plane: {Count} ({Vlans})")]
    private partial void LogVlans(int count, string vlans);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Dropped} VLAN devices beyond the data plane's {Max} are not known to it: routes over them are left to the kernel")]
    private partial void LogVlansDropped(int dropped, int max);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Count} VIP(s) are not advertised by BGP: their shards' neighbours are all of the other address family (IPv4 VIPs go to IPv4 neighbours, IPv6 VIPs to IPv6 ones): {Vips}")]
    private partial void LogBgpFamilyMissing(int count, string vips);

    [LoggerMessage(Level = LogLevel.Error, Message = "flow sync cannot listen on {Listen}: {Error}; flows are not synchronised")]
    private partial void LogFlowSyncFailed(string listen, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not read the node's VLAN devices: {Error}")]
    private partial void LogVlansFailed(string error);

    /// <summary>The MAC address of every interface in this network namespace, by name.</summary>
    private static Dictionary<string, byte[]> InterfaceMacs() =>
        System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces()
            .ToDictionary(n => n.Name, n => n.GetPhysicalAddress().GetAddressBytes(), StringComparer.Ordinal);
}
