using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Xlb.Crds;
using Xlb.Hosting;
using Xlb.Kube;
using Xlb.Operator.Core;

namespace Xlb.Operator;

public sealed record ClusterOperatorOptions
{
    /// <summary>Where agents keep their liveness Leases (one per node, labelled xlb.io/agent-node).</summary>
    public string AgentLeaseNamespace { get; init; } = "xlb-system";
    public string FieldManager { get; init; } = "xlb-operator";
    /// <summary>Null: no leader election (one replica, or tests).</summary>
    public LeaderElectionOptions? LeaderElection { get; init; }
    /// <summary>A full re-plan at least this often, whatever the events say (level-triggered healing).</summary>
    public TimeSpan Resync { get; init; } = TimeSpan.FromSeconds(30);
    public InformerOptions Informers { get; init; } = new();
    /// <summary>Node content above this many bytes of JSON goes into XlbNodeConfigChunks (every object must stay under the API server's limit, about 1.5 MiB).</summary>
    public long ChunkLimit { get; init; } = 256 * 1024;
    /// <summary>A plan that takes over this many mapping objects is followed by a compacting collection (see ClusterOperator.CompactAfterTurnover); 0: never.</summary>
    public int CompactAfterTakeOvers { get; init; } = 1000;
    /// <summary>How many independent writes (chunks, statuses) are in flight at once.</summary>
    public int WriteConcurrency { get; init; } = 8;
}

/// <summary>
/// The operator in cluster mode. Informers feed one level-triggered reconcile: every change
/// re-runs the pure <see cref="Planner"/> over the caches, and the shell writes only the
/// difference: operator-owned PortMappings for LoadBalancer Services, XlbNodeConfigs
/// (server-side apply), status subresources, Service ingress IPs and Events. User specs are
/// never written. With leader election, only the leader writes; standbys keep warm caches.
/// </summary>
public sealed partial class ClusterOperator
{
    public const string AgentNodeLabel = XlbApi.AgentNodeLabel;
    private const string PlanKey = "plan";

    private readonly KubeClient _client;
    private readonly ClusterOperatorOptions _options;
    private readonly ILogger _log;
    private readonly TimeProvider _time;
    private readonly EventRecorder _events;
    private readonly Informer<LoadBalancerPool> _pools;
    private readonly Informer<VipShard> _shards;
    private readonly Informer<PortMapping> _mappings;
    private readonly Informer<XlbNodeConfig> _configs;
    private readonly Informer<Node> _nodes;
    private readonly Informer<Namespace> _namespaces;
    private readonly Informer<Service> _services;
    private readonly Informer<EndpointSlice> _slices;
    private readonly Informer<KubeObject> _leases;
    private readonly Informer<ChunkSummary> _chunks;
    // Chunks the last PreviousAsync read whole (they had no summary); the next writes give them one.
    private readonly HashSet<string> _readWhole = new(StringComparer.Ordinal);
    private readonly HashSet<string> _reported = new(StringComparer.Ordinal);
    private readonly PlanMemo _memo = new();
    private readonly OwnWrites _own;

    /// <summary>
    /// The VipShard statuses this operator wrote, by shard, with the resourceVersion the shard had
    /// before the write. Shard status carries state forward (the failover count), and the node
    /// configs that say where VIPs were can come back through their informer before the shard
    /// does: planning on the newer configs and the older status would lose a transition.
    /// </summary>
    private readonly Dictionary<string, (string? Before, VipShardStatus Status)> _shardWrites = new(StringComparer.Ordinal);
    /// <summary>What each chunk holds that the planner reads back (VIPs; listener names and VIPs), by chunk name. Chunks never change, so this never goes stale.</summary>
    private readonly Dictionary<string, (List<NodeVip> Vips, List<Listener> Listeners)> _chunkContent = new(StringComparer.Ordinal);
    /// <summary>Each chunked head as last assembled, by node, with the content hash it was assembled for.</summary>
    private readonly Dictionary<string, (string Hash, List<NodeVip> Vips, List<Listener> Listeners)> _assembled = new(StringComparer.Ordinal);
    private WorkQueue? _queue;
    private Controller? _controller;
    private long _reconcilesBefore;
    private long _errorsBefore;
    private volatile bool _leading;
    private long _plans;
    private long _compactions;
    private long _writes;

    public ClusterOperator(KubeClient client, ClusterOperatorOptions options, ILogger log, TimeProvider time)
    {
        _client = client;
        _options = options;
        _log = log;
        _time = time;
        _own = new OwnWrites(() => _queue?.Add(PlanKey));
        _events = new EventRecorder(client, options.FieldManager, options.LeaderElection?.Identity ?? LeaderElectionOptions.DefaultIdentity(), time, log);
        var io = options.Informers;
        _pools = Watch(KubeResource.LoadBalancerPools, new Informer<LoadBalancerPool>(client, KubeResource.LoadBalancerPools, null, io, log));
        _shards = Watch(KubeResource.VipShards, new Informer<VipShard>(client, KubeResource.VipShards, null, io, log));
        _mappings = Watch(KubeResource.PortMappings, new Informer<PortMapping>(client, KubeResource.PortMappings, null, io, log));
        _configs = Watch(KubeResource.XlbNodeConfigs, new Informer<XlbNodeConfig>(client, KubeResource.XlbNodeConfigs, null, io, log));
        _nodes = Watch(KubeResource.Nodes, new Informer<Node>(client, KubeResource.Nodes, null, io, log));
        _namespaces = Watch(KubeResource.Namespaces, new Informer<Namespace>(client, KubeResource.Namespaces, null, io, log));
        _services = Watch(KubeResource.Services, new Informer<Service>(client, KubeResource.Services, null, io, log));
        _slices = Watch(KubeResource.EndpointSlices, new Informer<EndpointSlice>(client, KubeResource.EndpointSlices, null, io with { LabelSelector = EndpointSlice.ServiceNameLabel }, log));
        _leases = Watch(KubeResource.Leases, new Informer<KubeObject>(client, KubeResource.Leases, options.AgentLeaseNamespace, io with { LabelSelector = AgentNodeLabel }, log),
            e => RoutineRenewal(e, _shards.List(), _time.GetUtcNow()));
        // Chunks as metadata alone: their content is ours and content-addressed, and the planner
        // reads back only their VIPs and listener identities, which each chunk carries in its summary
        // annotation (ChunkSummaries). So a restart reads a few kilobytes per chunk, not its backends.
        _chunks = Watch(KubeResource.XlbNodeConfigChunks, new Informer<ChunkSummary>(client, KubeResource.XlbNodeConfigChunks, null,
            io with { LabelSelector = XlbNodeConfigChunk.NodeLabel, MetadataOnly = true }, log));
    }

    /// <summary>Plans run (each one a full reconcile).</summary>
    public long Plans => Interlocked.Read(ref _plans);

    /// <summary>Compacting collections run after plans that took over many objects (see <see cref="CompactAfterTurnover"/>).</summary>
    public long Compactions => Interlocked.Read(ref _compactions);
    /// <summary>Writes to the API server (applies, status updates, deletes, Service status patches).</summary>
    public long Writes => Interlocked.Read(ref _writes);
    /// <summary>The last plan, for status and tests.</summary>
    public PlanResult? LastPlan { get; private set; }
    /// <summary>Set once every informer has listed.</summary>
    public bool Synced { get; private set; }
    public int QueueDepth => _queue?.Length ?? 0;
    /// <summary>True while this replica writes (always, without leader election).</summary>
    public bool Leading => _leading;
    /// <summary>Seconds per reconcile (snapshot, plan, writes, events).</summary>
    public Histogram ReconcileDurations { get; } = Histogram.Durations();
    /// <summary>Seconds per pure plan.</summary>
    public Histogram PlanDurations { get; } = Histogram.Durations();

    /// <summary>The operator's metrics in the Prometheus text format.</summary>
    public string Metrics()
    {
        var sb = new System.Text.StringBuilder();
        var controller = _controller;
        PromText.Counter(sb, "xlb_operator_reconciles_total", "Reconciles run (each one a full plan).", Interlocked.Read(ref _reconcilesBefore) + (controller?.Reconciles ?? 0));
        PromText.Counter(sb, "xlb_operator_reconcile_errors_total", "Reconciles that failed and were retried with backoff.", Interlocked.Read(ref _errorsBefore) + (controller?.Errors ?? 0));
        ReconcileDurations.Write(sb, "xlb_operator_reconcile_duration_seconds", "Duration of a reconcile: snapshot, plan, writes and events.");
        PlanDurations.Write(sb, "xlb_operator_plan_duration_seconds", "Duration of the pure plan within a reconcile.");
        PromText.Gauge(sb, "xlb_operator_queue_depth", "Keys waiting in the work queue.", QueueDepth);
        PromText.Counter(sb, "xlb_operator_writes_total", "Writes to the API server: applies, creates, deletes, status updates.", Writes);
        PromText.Counter(sb, "xlb_operator_compactions_total", "Compacting collections after plans that took over many mapping objects.", Compactions);
        PromText.Counter(sb, "xlb_operator_write_echoes_total", "Watch events that were only the echo of this operator's own writes (no plan needed).", _own.Echoes);
        PromText.Gauge(sb, "xlb_operator_leader", "1 while this replica is the one that writes.", _leading ? 1 : 0);
        PromText.Gauge(sb, "xlb_operator_synced", "1 once every informer has listed.", Synced ? 1 : 0);
        var (hits, misses) = _memo.LastPlan;
        PromText.Gauge(sb, "xlb_operator_plan_reused", "Items of the last plan reused from the one before (mappings, listeners).", hits);
        PromText.Gauge(sb, "xlb_operator_plan_computed", "Items of the last plan computed afresh.", misses);
        PromText.Labelled(sb, "xlb_operator_objects", "gauge", "Objects in the operator's caches, by kind.", "kind",
        [
            ("LoadBalancerPool", _pools.Count), ("VipShard", _shards.Count), ("PortMapping", _mappings.Count),
            ("XlbNodeConfig", _configs.Count), ("XlbNodeConfigChunk", _chunks.Count), ("EndpointSlice", _slices.Count),
        ]);
        PromText.Gauge(sb, "xlb_operator_problems", "Objects of the last plan that are Stalled.", LastPlan?.Problems.Count ?? 0);
        return sb.ToString();
    }

    /// <summary>Every change of the informer's objects plans again, except echoes of our own writes and what <paramref name="ignore"/> says changes nothing.</summary>
    private Informer<T> Watch<T>(KubeResource resource, Informer<T> informer, Func<InformerEvent<T>, bool>? ignore = null) where T : class, IKubernetesObject
    {
        informer.AddHandler(e =>
        {
            if (!_own.IsEcho(resource, e) && ignore?.Invoke(e) != true)
            {
                _queue?.Add(PlanKey);
            }
        });
        return informer;
    }

    public async Task RunAsync(CancellationToken ct)
    {
        Task[] informers =
        [
            Run(_pools), Run(_shards), Run(_mappings), Run(_configs), Run(_nodes),
            Run(_namespaces), Run(_services), Run(_slices), Run(_leases), Run(_chunks),
        ];
        try
        {
            await Task.WhenAll(_pools.WaitForSyncAsync(ct), _shards.WaitForSyncAsync(ct), _mappings.WaitForSyncAsync(ct), _configs.WaitForSyncAsync(ct),
                _nodes.WaitForSyncAsync(ct), _namespaces.WaitForSyncAsync(ct), _services.WaitForSyncAsync(ct), _slices.WaitForSyncAsync(ct), _leases.WaitForSyncAsync(ct),
                _chunks.WaitForSyncAsync(ct));
            Synced = true;
            LogSynced();
            if (_options.LeaderElection is { } election)
            {
                var elector = new LeaderElector(_client, election, _time, _log);
                while (!ct.IsCancellationRequested)
                {
                    await elector.RunAsync(LeadAsync, ct);
                }
            }
            else
            {
                await LeadAsync(ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // Shutting down.
        }
        await Task.WhenAll(informers);

        Task Run<T>(Informer<T> informer) where T : class, IKubernetesObject =>
            Task.Run(async () =>
            {
                try
                {
                    await informer.RunAsync(ct);
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested)
                {
                    // Shutting down.
                }
            }, CancellationToken.None);
    }

    /// <summary>One leadership term: a fresh queue, one worker (the plan is global), the first plan at once.</summary>
    private async Task LeadAsync(CancellationToken ct)
    {
        using var queue = new WorkQueue(_time);
        _queue = queue;
        queue.Add(PlanKey);
        var controller = new Controller("xlb-operator", queue, ReconcileAsync, new ControllerOptions { Workers = 1 }, _log);
        _controller = controller;
        _leading = true;
        try
        {
            await controller.RunAsync(ct);
        }
        finally
        {
            _leading = false;
            _queue = null;
            _controller = null;
            Interlocked.Add(ref _reconcilesBefore, controller.Reconciles);
            Interlocked.Add(ref _errorsBefore, controller.Errors);
        }
    }

    private async Task<ReconcileResult> ReconcileAsync(string key, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        var now = _time.GetUtcNow();
        // One snapshot per reconcile: our own writes come back through the informers while we work,
        // and events compare what was seen before the plan with what the plan says.
        var shards = WithOwnShardStatuses(_shards.List());
        var pools = _pools.List();
        var services = _services.List();
        var cached = _mappings.List();

        // Services of type LoadBalancer: their PortMappings, applied when they differ; used in this plan at once.
        var owned = ServiceMappings.Desired(services, shards, cached);
        var ownedKeys = owned.Mappings.Select(m => Informer<PortMapping>.KeyOf(m.Metadata)).ToHashSet(StringComparer.Ordinal);
        var mappings = cached.Where(m => !ServiceMappings.IsOwned(m)).ToList();
        foreach (var desired in owned.Mappings)
        {
            var live = _mappings.Get(Informer<PortMapping>.KeyOf(desired.Metadata));
            if (live is null || !Same(live.Spec, desired.Spec))
            {
                await WriteAsync(KubeResource.PortMappings, desired.Metadata, () => _client.ApplyAsync<PartialObject>(KubeResource.PortMappings, ApplyBody(desired, "spec", desired.Spec), _options.FieldManager, force: true, ct: ct));
            }
            mappings.Add(live is null ? desired : live with { Spec = desired.Spec });
        }
        foreach (var stale in cached.Where(m => ServiceMappings.IsOwned(m) && !ownedKeys.Contains(Informer<PortMapping>.KeyOf(m.Metadata))))
        {
            await WriteAsync(KubeResource.PortMappings, stale.Metadata, () => _client.DeleteAsync(KubeResource.PortMappings, stale.Metadata.Namespace, stale.Metadata.Name!, stale.Metadata.Uid, ct: ct));
        }

        var renewals = AgentRenewals();
        var previous = await PreviousAsync(ct);
        var planning = Stopwatch.GetTimestamp();
        var plan = Planner.Plan(new PlanInput
        {
            Pools = pools,
            Shards = shards,
            PortMappings = mappings,
            Nodes = _nodes.List(),
            Namespaces = _namespaces.List(),
            Services = services,
            EndpointSlices = _slices.List(),
            Previous = previous,
            AgentRenewals = renewals,
            Now = now,
            ChunkLimit = _options.ChunkLimit,
            Memo = _memo,
        });
        Interlocked.Increment(ref _plans);
        LastPlan = plan;
        var planMs = Stopwatch.GetElapsedTime(planning).TotalMilliseconds;
        PlanDurations.Observe(planMs / 1000);
        var writesBefore = Writes;

        // Chunks first, heads after: an agent that sees a new head finds its chunks already there.
        // A chunk is created once and never changed (its name is its content), so a plain create does; one that exists is already right.
        await InParallelAsync(plan.Chunks.Where(c => _chunks.Get(c.Metadata.Name!) is null), async chunk =>
        {
            try
            {
                await WriteAsync(KubeResource.XlbNodeConfigChunks, chunk.Metadata, () => _client.CreateAsync<XlbNodeConfigChunk, PartialObject>(KubeResource.XlbNodeConfigChunks, Summarized(chunk), _options.FieldManager, ct));
            }
            catch (KubeApiException e) when (e.IsConflict)
            {
                // Already there.
            }
        }, ct);
        // A chunk that had to be read whole (no summary: an older operator wrote it) gets its
        // summary, so the next restart need not read it whole.
        await InParallelAsync(plan.Chunks.Where(c => _readWhole.Contains(c.Metadata.Name!) && _chunks.Get(c.Metadata.Name!) is not null), async chunk =>
        {
            if (Summarized(chunk).Metadata.Annotations?.GetValueOrDefault(ChunkSummaries.Annotation) is not { } summary)
            {
                return; // too large to summarize: read whole at each restart
            }
            var patch = new JsonObject { ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { [ChunkSummaries.Annotation] = summary } } };
            try
            {
                await WriteAsync(KubeResource.XlbNodeConfigChunks, chunk.Metadata, () => _client.MergePatchAsync<PartialObject>(KubeResource.XlbNodeConfigChunks, null, chunk.Metadata.Name!, patch, fieldManager: _options.FieldManager, ct: ct));
            }
            catch (KubeApiException e) when (e.IsNotFound)
            {
                // Gone meanwhile: the plan after this one writes it anew.
            }
        }, ct);
        _readWhole.Clear();
        foreach (var chunk in plan.Chunks)
        {
            RememberChunk(chunk.Metadata.Name!, chunk.Spec.Vips, chunk.Spec.Listeners);
        }
        var chunksMs = Stopwatch.GetElapsedTime(planning).TotalMilliseconds - planMs;
        foreach (var config in plan.NodeConfigs)
        {
            if (!previous.TryGetValue(config.Metadata.Name!, out var live) || live.Spec.ContentHash != config.Spec.ContentHash || live.Spec.Revision != config.Spec.Revision)
            {
                var body = ApplyBody(config with { Metadata = config.Metadata with { Labels = new() { [ServiceMappings.ManagedByLabel] = ServiceMappings.ManagedBy } } }, "spec", config.Spec);
                await WriteAsync(KubeResource.XlbNodeConfigs, config.Metadata, () => _client.ApplyAsync<PartialObject>(KubeResource.XlbNodeConfigs, body, _options.FieldManager, force: true, ct: ct));
                LogRendered(config.Spec.NodeName, config.Spec.Revision, config.Spec.ListenerCount, config.Spec.Chunks.Count);
            }
        }
        foreach (var gone in previous.Values.Where(c => plan.NodeConfigs.All(p => p.Metadata.Name != c.Metadata.Name) && c.Metadata.Labels?.GetValueOrDefault(ServiceMappings.ManagedByLabel) == ServiceMappings.ManagedBy))
        {
            await WriteAsync(KubeResource.XlbNodeConfigs, gone.Metadata, () => _client.DeleteAsync(KubeResource.XlbNodeConfigs, null, gone.Metadata.Name!, ct: ct));
        }
        // Chunks no head lists any more. An agent still assembling an older revision waits for the new head.
        var listed = plan.Chunks.Select(c => c.Metadata.Name!).ToHashSet(StringComparer.Ordinal);
        await InParallelAsync(_chunks.List().Where(c => !listed.Contains(c.Metadata.Name!)),
            stale => WriteAsync(KubeResource.XlbNodeConfigChunks, stale.Metadata, () => _client.DeleteAsync(KubeResource.XlbNodeConfigChunks, null, stale.Metadata.Name!, ct: ct)), ct);

        var configsMs = Stopwatch.GetElapsedTime(planning).TotalMilliseconds - planMs;
        await WriteStatusesAsync(plan, pools, shards, mappings, ct);
        await WriteServiceStatusesAsync(services, plan, ownedKeys, ct);
        var statusMs = Stopwatch.GetElapsedTime(planning).TotalMilliseconds - planMs - configsMs;
        await ReportAsync(plan, pools, shards, mappings, owned.Problems, ct);
        CompactAfterTurnover();
        ReconcileDurations.Observe(Stopwatch.GetElapsedTime(started).TotalSeconds);
        LogPlanned(plan.NodeConfigs.Count, mappings.Count, plan.Problems.Count, Stopwatch.GetElapsedTime(started).TotalMilliseconds,
            Stopwatch.GetElapsedTime(started, planning).TotalMilliseconds, planMs, configsMs, chunksMs, statusMs, Writes - writesBefore, _memo.LastContinued ? "continued" : "full", _memo.LastPlan.Hits, _memo.LastPlan.Misses);
        var untilExpiry = plan.NextExpiry is { } expiry ? expiry - now + TimeSpan.FromMilliseconds(20) : _options.Resync;
        return ReconcileResult.After(untilExpiry < _options.Resync ? untilExpiry : _options.Resync);
    }

    /// <summary>
    /// After a plan that took over at least <see cref="ClusterOperatorOptions.CompactAfterTakeOvers"/>
    /// mapping objects (the status writes of a cold start or of a bulk change come back), the
    /// objects it let go are the size of the cluster and sit in the oldest generation, where the
    /// collector leaves them until its budget runs out, while the next changes allocate on top. They
    /// are collected and compacted at once: at 10,000 mappings that takes 120-225 ms once, and the
    /// operator's peak RSS is 280-288 MiB instead of 308-309.
    /// </summary>
    private void CompactAfterTurnover()
    {
        if (_options.CompactAfterTakeOvers is > 0 and var threshold && _memo.LastTakeOvers >= threshold)
        {
            var clock = Stopwatch.GetTimestamp();
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            Interlocked.Increment(ref _compactions);
            LogCompacted(_memo.LastTakeOvers, Stopwatch.GetElapsedTime(clock).TotalMilliseconds);
        }
    }

    /// <summary>
    /// The live node configs, chunked ones assembled as far as the planner reads them. Chunk
    /// contents come from what this process wrote, else from the chunk informer, else (a chunk the
    /// informer has not seen yet) from the API server once.
    /// A head whose chunks are gone is passed as it is: its VIPs are then placed afresh.
    /// </summary>
    private async Task<Dictionary<string, XlbNodeConfig>> PreviousAsync(CancellationToken ct)
    {
        var result = new Dictionary<string, XlbNodeConfig>(StringComparer.Ordinal);
        // Keep what the heads list and what the last plan wrote (its heads may not be back through the informer yet).
        var referenced = (LastPlan?.Chunks ?? []).Select(c => c.Metadata.Name!).ToHashSet(StringComparer.Ordinal);
        // Chunks not known yet (after a restart: all of them) are read from the informer; any it has not seen are fetched a few at a time.
        var unknown = new List<string>();
        foreach (var name in _configs.List().SelectMany(h => h.Spec.Chunks).Select(c => c.Name).Where(n => !_chunkContent.ContainsKey(n)).Distinct())
        {
            if (_chunks.Get(name)?.Content() is { } content)
            {
                _chunkContent.TryAdd(name, content); // a summary's listeners are identities only already
            }
            else
            {
                unknown.Add(name); // not seen yet, or without a summary: read whole
            }
        }
        var fetched = new System.Collections.Concurrent.ConcurrentDictionary<string, XlbNodeConfigChunkSpec>(StringComparer.Ordinal);
        await Parallel.ForEachAsync(unknown, new ParallelOptions { MaxDegreeOfParallelism = _options.WriteConcurrency, CancellationToken = ct }, async (name, token) =>
        {
            if (await _client.GetAsync<XlbNodeConfigChunk>(KubeResource.XlbNodeConfigChunks, null, name, token) is { } chunk)
            {
                fetched[name] = chunk.Spec;
            }
        });
        foreach (var (name, spec) in fetched)
        {
            RememberChunk(name, spec.Vips, spec.Listeners);
            _readWhole.Add(name);
        }
        foreach (var head in _configs.List())
        {
            var name = head.Metadata.Name ?? "";
            result[name] = head;
            referenced.UnionWith(head.Spec.Chunks.Select(c => c.Name));
            if (head.Spec.Chunks.Count == 0)
            {
                continue;
            }
            if (_assembled.TryGetValue(name, out var known) && known.Hash == head.Spec.ContentHash)
            {
                result[name] = head with { Spec = head.Spec with { Vips = known.Vips, Listeners = known.Listeners } };
                continue;
            }
            var vips = new List<NodeVip>();
            var listeners = new List<Listener>();
            foreach (var part in head.Spec.Chunks)
            {
                if (!_chunkContent.TryGetValue(part.Name, out var content))
                {
                    LogChunkMissing(name, part.Name);
                    vips = null;
                    break;
                }
                vips.AddRange(content.Vips);
                listeners.AddRange(content.Listeners);
            }
            if (vips is not null)
            {
                _assembled[name] = (head.Spec.ContentHash, vips, listeners);
                result[name] = head with { Spec = head.Spec with { Vips = vips, Listeners = listeners } };
            }
        }
        foreach (var stale in _chunkContent.Keys.Where(k => !referenced.Contains(k)).ToList())
        {
            _chunkContent.Remove(stale);
        }
        foreach (var gone in _assembled.Keys.Where(k => !result.ContainsKey(k)).ToList())
        {
            _assembled.Remove(gone);
        }
        return result;
    }

    /// <summary>A chunk as it is created: with its summary annotation (see <see cref="ChunkSummaries"/>) when one fits.</summary>
    private static XlbNodeConfigChunk Summarized(XlbNodeConfigChunk chunk) =>
        ChunkSummaries.Write(chunk.Spec.Vips, chunk.Spec.Listeners) is { } summary
            ? chunk with { Metadata = chunk.Metadata with { Annotations = new(chunk.Metadata.Annotations ?? []) { [ChunkSummaries.Annotation] = summary } } }
            : chunk;

    private void RememberChunk(string name, List<NodeVip> vips, IEnumerable<Listener> listeners)
    {
        if (!_chunkContent.ContainsKey(name))
        {
            // Listener name and VIP only: what the planner reads of a previous listener.
            _chunkContent[name] = (vips, [.. listeners.Select(l => new Listener { Name = l.Name, Vip = l.Vip, Port = l.Port, Protocol = l.Protocol })]);
        }
    }

    private Dictionary<string, DateTimeOffset> AgentRenewals()
    {
        var result = new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal);
        foreach (var lease in _leases.List())
        {
            if (AgentNode(lease) is { } node && RenewTime(lease) is { } at)
            {
                result[node] = at;
            }
        }
        return result;
    }

    /// <summary>
    /// The node of an agent Lease: its holder, which the agent names after its node (the label
    /// holds a shortened name for a node whose name is longer than a label value may be).
    /// </summary>
    private static string? AgentNode(KubeObject lease) =>
        lease.Fields.TryGetValue("spec", out var spec) && spec.ValueKind == JsonValueKind.Object
        && spec.TryGetProperty("holderIdentity", out var holder) && holder.ValueKind == JsonValueKind.String && holder.GetString() is { Length: > 0 } node
            ? node
            : lease.Metadata.Labels?.GetValueOrDefault(AgentNodeLabel);

    private static DateTimeOffset? RenewTime(KubeObject lease) =>
        lease.Fields.TryGetValue("spec", out var spec) && spec.ValueKind == JsonValueKind.Object
        && spec.TryGetProperty("renewTime", out var renew) && renew.ValueKind == JsonValueKind.String
        && DateTimeOffset.TryParse(renew.GetString(), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var at) ? at : null;

    /// <summary>
    /// A renewal of an agent Lease (same node) that changes nothing a plan reads (see
    /// <see cref="Planner.RenewalChangesNothing"/>). Agents renew every few seconds; planning on
    /// each renewal would keep the operator busy for nothing.
    /// </summary>
    public static bool RoutineRenewal(InformerEvent<KubeObject> e, IEnumerable<VipShard> shards, DateTimeOffset now) =>
        e.Type == WatchEvent<KubeObject>.Modified && !e.Synthesized && e.Previous is { } before
        && AgentNode(before) == AgentNode(e.Object)
        && RenewTime(before) is { } was && RenewTime(e.Object) is { } renewed
        && Planner.RenewalChangesNothing(was, renewed, shards, now);

    private async Task WriteStatusesAsync(PlanResult plan, IReadOnlyList<LoadBalancerPool> pools, IReadOnlyList<VipShard> shards, List<PortMapping> mappings, CancellationToken ct)
    {
        foreach (var pool in pools)
        {
            if (plan.PoolStatuses.TryGetValue(pool.Metadata.Name ?? "", out var status) && !Same(pool.Status, status))
            {
                await WriteAsync(KubeResource.LoadBalancerPools, pool.Metadata, () => _client.ApplyAsync<PartialObject>(KubeResource.LoadBalancerPools, ApplyBody(pool, "status", status), _options.FieldManager, force: true, subresource: "status", ct: ct));
            }
        }
        foreach (var shard in shards)
        {
            if (plan.ShardStatuses.TryGetValue(shard.Metadata.Name ?? "", out var status) && !Same(shard.Status, status))
            {
                await WriteAsync(KubeResource.VipShards, shard.Metadata, () => _client.ApplyAsync<PartialObject>(KubeResource.VipShards, ApplyBody(shard, "status", status), _options.FieldManager, force: true, subresource: "status", ct: ct));
                _shardWrites[shard.Metadata.Name ?? ""] = (shard.Metadata.ResourceVersion, status);
            }
        }
        var changed = mappings.Where(pm => pm.Metadata.Uid is not null && plan.MappingStatuses.TryGetValue(ObjectRef.Of(pm), out var status) && !status.SameAs(pm.Status));
        await InParallelAsync(changed, pm => WriteAsync(KubeResource.PortMappings, pm.Metadata, () =>
            _client.ApplyAsync<PartialObject>(KubeResource.PortMappings, ApplyBody(pm, "status", plan.MappingStatuses[ObjectRef.Of(pm)]), _options.FieldManager, force: true, subresource: "status", ct: ct)), ct);
    }

    private async Task WriteServiceStatusesAsync(IReadOnlyList<Service> services, PlanResult plan, HashSet<string> owned, CancellationToken ct)
    {
        foreach (var svc in services.Where(ServiceMappings.IsOurs))
        {
            // An owned PortMapping has its Service's namespace and name.
            var status = owned.Contains(Informer<Service>.KeyOf(svc.Metadata))
                ? plan.MappingStatuses.GetValueOrDefault(new ObjectRef(PortMapping.KindName, svc.Metadata.Namespace, svc.Metadata.Name ?? ""))
                : null;
            var ingress = ServiceMappings.Ingress(status);
            if (Same(svc.Status?.LoadBalancer ?? new LoadBalancerStatus(), ingress))
            {
                continue;
            }
            var patch = new JsonObject { ["status"] = new JsonObject { ["loadBalancer"] = JsonSerializer.SerializeToNode(ingress, KubeJson.Options) } };
            await WriteAsync(KubeResource.Services, svc.Metadata, () => _client.MergePatchAsync<PartialObject>(KubeResource.Services, svc.Metadata.Namespace, svc.Metadata.Name!, patch, subresource: "status", ct: ct));
        }
    }

    /// <summary>Events on transitions only: a VIP allocated, a failover, an object newly stalled, a Service that cannot be served.</summary>
    private async Task ReportAsync(PlanResult plan, IReadOnlyList<LoadBalancerPool> pools, IReadOnlyList<VipShard> shards, List<PortMapping> mappings, IReadOnlyList<Problem> serviceProblems, CancellationToken ct)
    {
        foreach (var pm in mappings.Where(m => m.Metadata.Uid is not null))
        {
            if (!plan.MappingStatuses.TryGetValue(ObjectRef.Of(pm), out var now))
            {
                continue;
            }
            var regarding = Reference(pm, XlbApi.ApiVersion);
            if ((pm.Status?.Vips ?? []).Count == 0 && now.Vips.Count > 0)
            {
                await EventAsync(regarding, EventRecorder.Normal, "VipAllocated", "Allocate", $"VIP {now.Vips[0]} allocated", ct);
            }
            await StalledEventAsync(regarding, pm.Status?.Conditions, now.Conditions, ct);
        }
        foreach (var shard in shards)
        {
            if (!plan.ShardStatuses.TryGetValue(shard.Metadata.Name ?? "", out var now))
            {
                continue;
            }
            var regarding = Reference(shard, XlbApi.ApiVersion);
            if (shard.Status is { } before && now.Transitions > before.Transitions)
            {
                var moved = now.Vips.Where(v => before.Vips.FirstOrDefault(b => b.Address == v.Address) is { } was && was.ActiveNode != v.ActiveNode)
                    .Select(v => $"{v.Address} {before.Vips.First(b => b.Address == v.Address).ActiveNode} → {v.ActiveNode}");
                await EventAsync(regarding, EventRecorder.Warning, "Failover", "Failover", $"VIPs moved: {string.Join(", ", moved)}", ct);
            }
            await StalledEventAsync(regarding, shard.Status?.Conditions, now.Conditions, ct);
        }
        foreach (var pool in pools)
        {
            if (plan.PoolStatuses.TryGetValue(pool.Metadata.Name ?? "", out var now))
            {
                await StalledEventAsync(Reference(pool, XlbApi.ApiVersion), pool.Status?.Conditions, now.Conditions, ct);
            }
        }
        var current = new HashSet<string>(StringComparer.Ordinal);
        foreach (var problem in serviceProblems)
        {
            var key = problem.ToString();
            current.Add(key);
            if (_reported.Add(key))
            {
                var svc = _services.Get($"{problem.Object.Namespace}/{problem.Object.Name}");
                if (svc is not null)
                {
                    await EventAsync(Reference(svc, "v1"), EventRecorder.Warning, problem.Reason, "Allocate", problem.Message, ct);
                }
            }
        }
        _reported.IntersectWith(current);
    }

    private async Task StalledEventAsync(ObjectReference regarding, IReadOnlyList<Condition>? before, IReadOnlyList<Condition> now, CancellationToken ct)
    {
        var stalled = now.FirstOrDefault(c => c.Type == Conditions.Stalled && c.Status == "True");
        var was = before?.FirstOrDefault(c => c.Type == Conditions.Stalled);
        if (stalled is not null && (was?.Status != "True" || was.Reason != stalled.Reason))
        {
            await EventAsync(regarding, EventRecorder.Warning, stalled.Reason, "Reconcile", stalled.Message, ct);
        }
    }

    private async Task EventAsync(ObjectReference regarding, string type, string reason, string action, string note, CancellationToken ct)
    {
        try
        {
            await _events.RecordAsync(regarding, type, reason, action, note, ct);
        }
        catch (KubeApiException e)
        {
            LogEventFailed(reason, e.Message); // Events are best effort; status carries the truth.
        }
    }

    private static ObjectReference Reference(IKubernetesObject o, string apiVersion) =>
        new(apiVersion, o.Kind, o.Metadata.Namespace, o.Metadata.Name ?? "", o.Metadata.Uid);

    /// <summary>
    /// The cached shards, each with the status this operator last wrote as long as the cache still
    /// shows the shard as it was before that write. Plans run one at a time, so no lock.
    /// </summary>
    private List<VipShard> WithOwnShardStatuses(IReadOnlyList<VipShard> cached)
    {
        var result = new List<VipShard>(cached.Count);
        foreach (var shard in cached)
        {
            var name = shard.Metadata.Name ?? "";
            if (_shardWrites.TryGetValue(name, out var written))
            {
                if (written.Before == shard.Metadata.ResourceVersion)
                {
                    result.Add(shard with { Status = written.Status });
                    continue;
                }
                _shardWrites.Remove(name); // the cache has caught up (or moved on)
            }
            result.Add(shard);
        }
        if (_shardWrites.Count > result.Count)
        {
            var live = result.Select(s => s.Metadata.Name ?? "").ToHashSet(StringComparer.Ordinal);
            foreach (var gone in _shardWrites.Keys.Where(k => !live.Contains(k)).ToList())
            {
                _shardWrites.Remove(gone);
            }
        }
        return result;
    }

    /// <summary>One write to one object, counted, and known to <see cref="OwnWrites"/> so its echo does not plan again.</summary>
    private Task WriteAsync<T>(KubeResource resource, ObjectMeta target, Func<Task<T>> write)
    {
        var key = Informer<PortMapping>.KeyOf(target);
        return _own.WriteAsync(resource, key, async () =>
        {
            var result = await write();
            Interlocked.Increment(ref _writes);
            LogWrote(resource.Plural, key);
            return result switch
            {
                JsonObject o => o["metadata"]?["resourceVersion"]?.GetValue<string>() ?? "",
                IKubernetesObject k => k.Metadata.ResourceVersion ?? "",
                DeleteOutcome.Deleted => null,
                _ => "", // nothing an event could be matched against: whatever comes plans
            };
        });
    }

    /// <summary>Independent writes, a few at a time: the API server serves requests concurrently, one round trip each is the cost.</summary>
    private Task InParallelAsync<T>(IEnumerable<T> items, Func<T, Task> write, CancellationToken ct) =>
        Parallel.ForEachAsync(items, new ParallelOptions { MaxDegreeOfParallelism = _options.WriteConcurrency, CancellationToken = ct }, async (item, _) => await write(item));

    /// <summary>A server-side apply body with only what this manager owns: identity, labels, owners, and one top-level field.</summary>
    private static JsonObject ApplyBody(IKubernetesObject o, string field, object value)
    {
        var meta = new JsonObject { ["name"] = o.Metadata.Name };
        if (o.Metadata.Namespace is { } ns)
        {
            meta["namespace"] = ns;
        }
        if (field == "spec" && o.Metadata.Labels is { } labels)
        {
            meta["labels"] = JsonSerializer.SerializeToNode(labels, KubeJson.Options);
        }
        if (field == "spec" && o.Metadata.OwnerReferences is { } owners)
        {
            meta["ownerReferences"] = JsonSerializer.SerializeToNode(owners, KubeJson.Options);
        }
        return new JsonObject
        {
            ["apiVersion"] = o.ApiVersion,
            ["kind"] = o.Kind,
            ["metadata"] = meta,
            [field] = JsonSerializer.SerializeToNode(value, value.GetType(), KubeJson.Options),
        };
    }

    /// <summary>
    /// Whether two values of one type have the same JSON. Their bytes are compared: one type
    /// writes its members in one order, so equal bytes mean equal content, and a JSON tree of a
    /// shard's status (every VIP placement) costs far more to build than to compare as bytes.
    /// </summary>
    private static bool Same<T>(T? a, T? b) =>
        JsonSerializer.SerializeToUtf8Bytes(a, KubeJson.Options).AsSpan().SequenceEqual(JsonSerializer.SerializeToUtf8Bytes(b, KubeJson.Options));

    [LoggerMessage(Level = LogLevel.Information, Message = "caches synced")]
    private partial void LogSynced();

    [LoggerMessage(Level = LogLevel.Information, Message = "node {Node}: revision {Revision} with {Listeners} listeners in {Chunks} chunks (0: inline)")]
    private partial void LogRendered(string node, long revision, int listeners, int chunks);

    [LoggerMessage(Level = LogLevel.Debug, Message = "{Objects} mapping objects taken over: heap compacted in {Ms:F0} ms")]
    private partial void LogCompacted(long objects, double ms);

    [LoggerMessage(Level = LogLevel.Debug, Message = "planned {Configs} node configs from {Mappings} mappings, {Problems} problems, in {Ms:F1} ms (inputs {InputMs:F1}, plan {PlanMs:F1}, node configs {ConfigsMs:F1} (new chunks {ChunksMs:F1}), statuses {StatusMs:F1}; {Writes} writes; {Kind} plan, memo {Hits} reused, {Misses} computed)")]
    private partial void LogPlanned(int configs, int mappings, int problems, double ms, double inputMs, double planMs, double configsMs, double chunksMs, double statusMs, long writes, string kind, long hits, long misses);

    [LoggerMessage(Level = LogLevel.Debug, Message = "wrote {Resource} {Key}")]
    private partial void LogWrote(string resource, string key);

    [LoggerMessage(Level = LogLevel.Warning, Message = "node config {Node} lists chunk {Chunk}, which is gone: its VIPs are placed afresh")]
    private partial void LogChunkMissing(string node, string chunk);

    [LoggerMessage(Level = LogLevel.Warning, Message = "event {Reason} not recorded: {Error}")]
    private partial void LogEventFailed(string reason, string error);
}

/// <summary>
/// A node config chunk as the operator caches it: its metadata alone (listed and watched as
/// PartialObjectMetadata), whose summary annotation holds its VIPs and listener identities.
/// </summary>
internal sealed record ChunkSummary : IKubernetesObject
{
    public string ApiVersion { get; init; } = "";
    public string Kind { get; init; } = "";
    public ObjectMeta Metadata { get; init; } = new();

    /// <summary>The chunk's VIPs and listener identities, if it carries a summary this version reads.</summary>
    public (List<NodeVip> Vips, List<Listener> Listeners)? Content() => ChunkSummaries.Read(Metadata.Annotations?.GetValueOrDefault(ChunkSummaries.Annotation));
}
