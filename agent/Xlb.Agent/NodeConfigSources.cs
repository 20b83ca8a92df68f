using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Hosting;
using Xlb.Kube;

namespace Xlb.Agent;

/// <summary>What the agent's source says now: a config to apply, or why there is none to apply.</summary>
public sealed record NodeConfigRead(XlbNodeConfig? Config, string? Invalid = null, string? Waiting = null);

/// <summary>Where the agent's desired state comes from: a file (standalone) or the API server (cluster).</summary>
public interface INodeConfigSource : IAsyncDisposable
{
    /// <summary>Changes whenever <see cref="Read"/> may return something new (cheap to ask).</summary>
    long Version { get; }
    NodeConfigRead Read();
    /// <summary>Where the agent reports what it applied.</summary>
    Task ReportAsync(XlbNodeConfigStatus status, CancellationToken ct);
}

/// <summary>
/// Standalone mode: the node config file the standalone operator writes, and a status file beside
/// it. A change of the file wakes the agent at once (<paramref name="changed"/>, by inotify); the
/// agent's periodic pass is the fallback.
/// </summary>
public sealed class FileNodeConfigSource(string path, string? statusPath, Action? changed = null) : INodeConfigSource
{
    private readonly FileSystemWatcher? _watcher = Watch(path, changed);

    private static FileSystemWatcher? Watch(string path, Action? changed)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (changed is null || dir is null || !Directory.Exists(dir))
        {
            return null;
        }
        // The file is replaced by rename (atomic writes): watch the folder for its name.
        var watcher = new FileSystemWatcher(dir, Path.GetFileName(path))
        {
            NotifyFilter = NotifyFilters.FileName | NotifyFilters.LastWrite | NotifyFilters.Size,
        };
        watcher.Changed += (_, _) => changed();
        watcher.Created += (_, _) => changed();
        watcher.Renamed += (_, _) => changed();
        watcher.EnableRaisingEvents = true;
        return watcher;
    }

    public long Version
    {
        get
        {
            var info = new FileInfo(path);
            return info.Exists ? info.LastWriteTimeUtc.Ticks ^ info.Length : 0;
        }
    }

    public NodeConfigRead Read()
    {
        if (!File.Exists(path))
        {
            return new NodeConfigRead(null, Waiting: $"waiting for {path}");
        }
        var set = Manifests.Read(File.ReadAllText(path), path);
        if (set.Errors.Count > 0)
        {
            return new NodeConfigRead(null, Invalid: string.Join("; ", set.Errors));
        }
        return set.NodeConfigs.Count == 1
            ? new NodeConfigRead(set.NodeConfigs[0])
            : new NodeConfigRead(null, Invalid: $"{path} holds {set.NodeConfigs.Count} XlbNodeConfigs; expected one");
    }

    public Task ReportAsync(XlbNodeConfigStatus status, CancellationToken ct)
    {
        var yaml = Yaml.Write(System.Text.Json.JsonSerializer.SerializeToNode(status, XlbJson.Info<XlbNodeConfigStatus>()));
        AtomicFile.Write(statusPath ?? Path.ChangeExtension(path, ".status.yaml"), yaml);
        return Task.CompletedTask;
    }

    public ValueTask DisposeAsync()
    {
        _watcher?.Dispose();
        return ValueTask.CompletedTask;
    }
}

public sealed record ClusterAgentOptions
{
    public required string NodeName { get; init; }
    /// <summary>Where the agent's liveness Lease (xlb-agent-NODE) lives; the operator reads it there.</summary>
    public string LeaseNamespace { get; init; } = "xlb-system";
    /// <summary>How often the Lease is renewed: well inside the shards' detection window (interval × multiplier).</summary>
    public TimeSpan LeaseRenewInterval { get; init; } = TimeSpan.FromMilliseconds(500);
    public string FieldManager { get; init; } = "xlb-agent";
}

/// <summary>
/// Cluster mode: watches this node's XlbNodeConfig only (field selector on its name) and its
/// chunks (label selector), assembles a chunked revision only when every chunk is present with
/// the listed hash, reports status by server-side apply on the status subresource, and renews the
/// node's liveness Lease. A drain deletes the Lease, so the operator moves the VIPs at once.
/// </summary>
public sealed partial class KubeNodeConfigSource : INodeConfigSource
{
    private readonly KubeClient _client;
    private readonly ClusterAgentOptions _options;
    private readonly ILogger _log;
    private readonly TimeProvider _time;
    private readonly Informer<XlbNodeConfig> _head;
    private readonly Informer<XlbNodeConfigChunk> _chunks;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _informers;
    private readonly Task _lease;
    private readonly Action _changed;
    private long _version;
    private string? _lastReported;
    private volatile bool _draining;
    private bool _leaseHeld;

    public KubeNodeConfigSource(KubeClient client, ClusterAgentOptions options, Action changed, ILogger log, TimeProvider time)
    {
        (_client, _options, _changed, _log, _time) = (client, options, changed, log, time);
        _head = new Informer<XlbNodeConfig>(client, KubeResource.XlbNodeConfigs, null, new InformerOptions { FieldSelector = $"metadata.name={options.NodeName}" }, log);
        _chunks = new Informer<XlbNodeConfigChunk>(client, KubeResource.XlbNodeConfigChunks, null, new InformerOptions { LabelSelector = $"{XlbNodeConfigChunk.NodeLabel}={XlbApi.NodeLabelValue(options.NodeName)}", PageSize = XlbNodeConfigChunk.ListPageSize }, log);
        _head.AddHandler(_ => Bump());
        _chunks.AddHandler(_ => Bump());
        _informers = Task.WhenAll(RunQuietly(_head.RunAsync), RunQuietly(_chunks.RunAsync), RunQuietly(async ct =>
        {
            // An empty list raises no event: the end of the first list is a change of its own.
            await Task.WhenAll(_head.WaitForSyncAsync(ct), _chunks.WaitForSyncAsync(ct));
            Bump();
        }));
        _lease = RunQuietly(RenewAsync);
    }

    public string LeaseName => XlbApi.AgentLeaseName(_options.NodeName);

    public long Version => Interlocked.Read(ref _version);

    private void Bump()
    {
        Interlocked.Increment(ref _version);
        _changed();
    }

    public NodeConfigRead Read()
    {
        if (!_head.HasSynced || !_chunks.HasSynced)
        {
            return new NodeConfigRead(null, Waiting: "listing this node's XlbNodeConfig");
        }
        if (_head.Get(_options.NodeName) is not { } head)
        {
            return new NodeConfigRead(null, Waiting: $"no XlbNodeConfig {_options.NodeName} yet");
        }
        var spec = NodeConfigContent.Assemble(head.Spec, name => _chunks.Get(name)?.Spec, out var incomplete);
        return spec is null ? new NodeConfigRead(null, Waiting: incomplete) : new NodeConfigRead(head with { Spec = spec });
    }

    public async Task ReportAsync(XlbNodeConfigStatus status, CancellationToken ct)
    {
        var body = new JsonObject
        {
            ["apiVersion"] = XlbApi.ApiVersion,
            ["kind"] = XlbNodeConfig.KindName,
            ["metadata"] = new JsonObject { ["name"] = _options.NodeName },
            ["status"] = KubeJson.ToNode(status),
        };
        var text = body.ToJsonString();
        if (text == _lastReported || _head.Get(_options.NodeName) is null)
        {
            return; // Unchanged, or no object to report on yet.
        }
        try
        {
            await _client.ApplyAsync<PartialObject>(KubeResource.XlbNodeConfigs, body, _options.FieldManager, force: true, subresource: "status", ct: ct);
            _lastReported = text;
        }
        catch (Exception e) when (e is KubeApiException or HttpRequestException)
        {
            LogReportFailed(e.Message); // Reported again on the next pass.
        }
    }

    /// <summary>Stop renewing and delete the Lease: the operator fails this node's VIPs over now rather than after the detection window.</summary>
    public async Task DrainAsync(bool draining, CancellationToken ct)
    {
        _draining = draining;
        if (draining)
        {
            try
            {
                await _client.DeleteAsync(KubeResource.Leases, _options.LeaseNamespace, LeaseName, ct: ct);
                _leaseHeld = false;
                LogLeaseReleased(LeaseName);
            }
            catch (Exception e) when (e is KubeApiException or HttpRequestException)
            {
                LogLeaseFailed(e.Message);
            }
        }
    }

    private async Task RenewAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            if (!_draining)
            {
                try
                {
                    var now = _time.GetUtcNow();
                    var spec = new JsonObject
                    {
                        ["holderIdentity"] = _options.NodeName,
                        ["leaseDurationSeconds"] = Math.Max(1, (int)Math.Ceiling(_options.LeaseRenewInterval.TotalSeconds * 3)),
                        ["renewTime"] = MicroTime.Format(now),
                    };
                    if (!_leaseHeld)
                    {
                        spec["acquireTime"] = MicroTime.Format(now);
                    }
                    await _client.ApplyAsync<PartialObject>(KubeResource.Leases, new JsonObject
                    {
                        ["apiVersion"] = "coordination.k8s.io/v1",
                        ["kind"] = "Lease",
                        ["metadata"] = new JsonObject
                        {
                            ["name"] = LeaseName,
                            ["namespace"] = _options.LeaseNamespace,
                            ["labels"] = new JsonObject { [XlbApi.AgentNodeLabel] = XlbApi.NodeLabelValue(_options.NodeName) },
                        },
                        ["spec"] = spec,
                    }, _options.FieldManager, force: true, ct: ct);
                    if (!_leaseHeld)
                    {
                        LogLeaseAcquired(LeaseName, _options.LeaseNamespace);
                    }
                    _leaseHeld = true;
                }
                catch (Exception e) when (e is KubeApiException or HttpRequestException)
                {
                    LogLeaseFailed(e.Message);
                }
            }
            await Task.Delay(_options.LeaseRenewInterval, _time, ct);
        }
    }

    private Task RunQuietly(Func<CancellationToken, Task> run) => Task.Run(async () =>
    {
        try
        {
            await run(_stop.Token);
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            // Stopping.
        }
    });

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _informers;
        await _lease;
        _stop.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "status not reported: {Error}")]
    private partial void LogReportFailed(string error);

    [LoggerMessage(Level = LogLevel.Information, Message = "liveness Lease {Namespace}/{Lease} held")]
    private partial void LogLeaseAcquired(string lease, string @namespace);

    [LoggerMessage(Level = LogLevel.Information, Message = "liveness Lease {Lease} released: the operator moves this node's VIPs now")]
    private partial void LogLeaseReleased(string lease);

    [LoggerMessage(Level = LogLevel.Warning, Message = "liveness Lease not renewed: {Error}")]
    private partial void LogLeaseFailed(string error);
}
