using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Xlb.Crds;

namespace Xlb.Kube;

public sealed record InformerOptions
{
    public string? LabelSelector { get; init; }
    public string? FieldSelector { get; init; }
    public int PageSize { get; init; } = 500;
    /// <summary>List and watch each object's metadata alone (PartialObjectMetadata; see <see cref="ListOptions.MetadataOnly"/>).</summary>
    public bool MetadataOnly { get; init; }
    /// <summary>A watch that delivers nothing (not even a bookmark) for this long is restarted.</summary>
    public TimeSpan Watchdog { get; init; } = TimeSpan.FromMinutes(2);
    /// <summary>Asked of the server per watch; client-go uses 5–10 minutes.</summary>
    public TimeSpan WatchTimeout { get; init; } = TimeSpan.FromMinutes(5);
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>A change seen by an informer. Previous is set for updates; Synthesized marks deletes inferred from a relist.</summary>
public sealed record InformerEvent<T>(string Type, T Object, T? Previous = null, bool Synthesized = false) where T : class;

/// <summary>
/// List, then watch from the list's resourceVersion with bookmarks, into a cache keyed
/// "namespace/name". A watch that ends resumes from the last resourceVersion seen; a 410 (as a
/// status or as an ERROR event in the stream) relists, and objects missing from the new list are
/// reported as synthesized deletes; a silent watch is restarted by a watchdog. Handlers run on
/// the informer's loop, in order, and must be quick (map the object to a queue key).
/// </summary>
public sealed partial class Informer<T> where T : class, IKubernetesObject
{
    private readonly KubeClient _client;
    private readonly KubeResource _resource;
    private readonly string? _namespace;
    private readonly InformerOptions _options;
    private readonly ILogger _log;
    private readonly ConcurrentDictionary<string, T> _cache = new(StringComparer.Ordinal);
    private readonly TaskCompletionSource _synced = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<Action<InformerEvent<T>>> _handlers = [];

    public Informer(KubeClient client, KubeResource resource, string? ns = null, InformerOptions? options = null, ILogger? logger = null)
    {
        (_client, _resource, _namespace) = (client, resource, ns);
        _options = options ?? new InformerOptions();
        _log = logger ?? NullLogger.Instance;
    }

    /// <summary>The resourceVersion of the last list, event or bookmark applied to the cache.</summary>
    public string? ResourceVersion { get; private set; }
    public bool HasSynced => _synced.Task.IsCompleted;
    /// <summary>How many times the informer has listed (the first list included).</summary>
    public int Lists { get; private set; }
    /// <summary>How many watches the informer has opened.</summary>
    public int Watches { get; private set; }

    public static string KeyOf(ObjectMeta meta) => meta.Namespace is { Length: > 0 } ns ? $"{ns}/{meta.Name}" : meta.Name ?? "";

    public void AddHandler(Action<InformerEvent<T>> handler) => _handlers.Add(handler);

    public Task WaitForSyncAsync(CancellationToken ct) => _synced.Task.WaitAsync(ct);

    public T? Get(string key) => _cache.TryGetValue(key, out var obj) ? obj : null;

    public IReadOnlyList<T> List() => [.. _cache.Values];

    /// <summary>How many objects the cache holds (no copy).</summary>
    public int Count => _cache.Count;

    public async Task RunAsync(CancellationToken ct)
    {
        var failures = 0;
        while (!ct.IsCancellationRequested)
        {
            try
            {
                await RelistAsync(ct);
                failures = 0;
                while (await WatchOnceAsync(ct))
                {
                    failures = 0;
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is KubeApiException or HttpRequestException or System.Text.Json.JsonException or IOException)
            {
                failures++;
                var wait = TimeSpan.FromMilliseconds(Math.Min(_options.MaxBackoff.TotalMilliseconds, 100 * Math.Pow(2, failures)));
                LogFailed(_log, _resource.Plural, e.Message, wait.TotalMilliseconds);
                try
                {
                    await Task.Delay(wait, ct);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private async Task RelistAsync(CancellationToken ct)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var list = await _client.ListAllAsync<T>(_resource, _namespace,
            new ListOptions { LabelSelector = _options.LabelSelector, FieldSelector = _options.FieldSelector, Limit = _options.PageSize, MetadataOnly = _options.MetadataOnly }, ct);
        Lists++;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var obj in list.Items)
        {
            var key = KeyOf(obj.Metadata);
            seen.Add(key);
            Upsert(key, obj);
        }
        foreach (var key in _cache.Keys.Where(k => !seen.Contains(k)).ToList())
        {
            if (_cache.TryRemove(key, out var gone))
            {
                Raise(new InformerEvent<T>(WatchEvent<T>.Deleted, gone, Synthesized: true));
            }
        }
        ResourceVersion = list.ResourceVersion;
        LogListed(_log, _resource.Plural, list.Items.Count, System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        _synced.TrySetResult();
    }

    private void Upsert(string key, T obj)
    {
        if (_cache.TryGetValue(key, out var old))
        {
            _cache[key] = obj;
            if (old.Metadata.ResourceVersion != obj.Metadata.ResourceVersion)
            {
                Raise(new InformerEvent<T>(WatchEvent<T>.Modified, obj, old));
            }
        }
        else
        {
            _cache[key] = obj;
            Raise(new InformerEvent<T>(WatchEvent<T>.Added, obj));
        }
    }

    /// <summary>One watch. True: resume watching from ResourceVersion. False: the resourceVersion expired, relist.</summary>
    private async Task<bool> WatchOnceAsync(CancellationToken ct)
    {
        using var watch = CancellationTokenSource.CreateLinkedTokenSource(ct);
        watch.CancelAfter(_options.Watchdog);
        Watches++;
        try
        {
            var options = new WatchOptions
            {
                ResourceVersion = ResourceVersion,
                LabelSelector = _options.LabelSelector,
                MetadataOnly = _options.MetadataOnly,
                FieldSelector = _options.FieldSelector,
                Timeout = _options.WatchTimeout,
            };
            await foreach (var e in _client.WatchAsync<T>(_resource, _namespace, options, watch.Token))
            {
                watch.CancelAfter(_options.Watchdog);
                switch (e.Type)
                {
                    case WatchEvent<T>.Added or WatchEvent<T>.Modified:
                        Upsert(KeyOf(e.Object!.Metadata), e.Object);
                        break;
                    case WatchEvent<T>.Deleted:
                        var key = KeyOf(e.Object!.Metadata);
                        _cache.TryRemove(key, out _);
                        Raise(new InformerEvent<T>(WatchEvent<T>.Deleted, e.Object));
                        break;
                    case WatchEvent<T>.Error:
                        var error = KubeApiException.FromStatus(e.Status, System.Net.HttpStatusCode.InternalServerError, $"watch {_resource.Plural}");
                        if (error.IsExpired)
                        {
                            LogExpired(_log, _resource.Plural, ResourceVersion);
                            return false;
                        }
                        throw error;
                }
                if (e.ResourceVersion is { Length: > 0 } rv)
                {
                    ResourceVersion = rv;
                }
            }
            return true;
        }
        catch (KubeApiException e) when (e.IsExpired)
        {
            LogExpired(_log, _resource.Plural, ResourceVersion);
            return false;
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            LogSilent(_log, _resource.Plural, _options.Watchdog.TotalSeconds);
            return true;
        }
        catch (Exception e) when (!ct.IsCancellationRequested && e is HttpRequestException or IOException)
        {
            // The stream broke (connection reset, server gone): resume from the last resourceVersion.
            LogBroken(_log, _resource.Plural, e.Message);
            await Task.Delay(TimeSpan.FromMilliseconds(100), ct);
            return true;
        }
    }

    private void Raise(InformerEvent<T> e)
    {
        foreach (var handler in _handlers)
        {
            handler(e);
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "informer for {Resource}: listed {Count} objects in {Ms:F0} ms")]
    private static partial void LogListed(ILogger log, string resource, int count, double ms);

    [LoggerMessage(Level = LogLevel.Warning, Message = "informer for {Resource}: {Why}; retrying in {DelayMs:0} ms")]
    private static partial void LogFailed(ILogger logger, string resource, string why, double delayMs);

    [LoggerMessage(Level = LogLevel.Information, Message = "informer for {Resource}: resourceVersion {Rv} expired (410), relisting")]
    private static partial void LogExpired(ILogger logger, string resource, string? rv);

    [LoggerMessage(Level = LogLevel.Warning, Message = "informer for {Resource}: watch silent for {Seconds} s, restarting it")]
    private static partial void LogSilent(ILogger logger, string resource, double seconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "informer for {Resource}: watch stream broke ({Why}), resuming")]
    private static partial void LogBroken(ILogger logger, string resource, string why);
}
