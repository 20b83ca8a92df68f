using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Runtime.CompilerServices;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Xlb.Crds;

namespace Xlb.Kube;

public sealed record ListOptions
{
    public string? LabelSelector { get; init; }
    public string? FieldSelector { get; init; }
    /// <summary>Page size; 0 asks for everything at once.</summary>
    public int Limit { get; init; }
    public string? Continue { get; init; }
    /// <summary>
    /// Only each object's metadata (API Concepts, "Receiving resources as metadata"): the server
    /// sends PartialObjectMetadata items, so spec and status are neither sent nor read. Read them
    /// into a type that has only what metadata holds.
    /// </summary>
    public bool MetadataOnly { get; init; }
}

public sealed record WatchOptions
{
    /// <summary>Resume after this resourceVersion; null starts with a synthetic ADDED per existing object.</summary>
    public string? ResourceVersion { get; init; }
    public bool AllowBookmarks { get; init; } = true;
    public string? LabelSelector { get; init; }
    public string? FieldSelector { get; init; }
    /// <summary>The server ends the stream after this long (client-go picks 5–10 minutes).</summary>
    public TimeSpan? Timeout { get; init; }
    /// <summary>Events carry PartialObjectMetadata objects (see <see cref="ListOptions.MetadataOnly"/>).</summary>
    public bool MetadataOnly { get; init; }
}

/// <summary>
/// A list (or one page of it). <paramref name="RemainingItemCount"/> is the server's count of the
/// items past this page: an estimate, absent on the last page and whenever selectors were used.
/// </summary>
public sealed record KubeList<T>(List<T> Items, string ResourceVersion, string? Continue, long? RemainingItemCount = null);

/// <summary>One watch event. Object is null for BOOKMARK and ERROR; Status is set for ERROR.</summary>
public sealed record WatchEvent<T>(string Type, T? Object, string? ResourceVersion, JsonObject? Status)
{
    public const string Added = "ADDED";
    public const string Modified = "MODIFIED";
    public const string Deleted = "DELETED";
    public const string Bookmark = "BOOKMARK";
    public const string Error = "ERROR";
}

/// <summary>What a delete did: the object is gone, or it waits for its finalizers.</summary>
public enum DeleteOutcome
{
    Deleted,
    Pending,
    NotFound,
}

public sealed record RetryPolicy
{
    public int MaxAttempts { get; init; } = 5;
    public TimeSpan BaseDelay { get; init; } = TimeSpan.FromMilliseconds(200);
    public TimeSpan MaxDelay { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>A server's Retry-After is honoured up to this long.</summary>
    public TimeSpan MaxRetryAfter { get; init; } = TimeSpan.FromSeconds(60);
}

public sealed record KubeClientOptions
{
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(30);
    public RetryPolicy Retry { get; init; } = new();
    public string UserAgent { get; init; } = "xlb";
}

/// <summary>
/// A typed REST client for the Kubernetes API: JSON over HTTP/1.1 or 2, one HttpClient per
/// connection. Retries 429 and 5xx with exponential backoff and jitter, honouring
/// Retry-After; a create is retried only when the server said so (429, 503), since a lost
/// response may hide a create that happened. Every call takes a CancellationToken and has a
/// timeout (a watch has none: it ends when its token is cancelled or the server ends it).
/// </summary>
public sealed partial class KubeClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly KubeClientOptions _options;
    private readonly ILogger _log;

    public KubeConnection Connection { get; }

    public KubeClient(KubeConnection connection, KubeClientOptions? options = null, ILogger? logger = null)
    {
        Connection = connection;
        _options = options ?? new KubeClientOptions();
        _log = logger ?? NullLogger.Instance;
        var handler = new SocketsHttpHandler
        {
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(1),
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
            SslOptions = new SslClientAuthenticationOptions
            {
                TargetHost = connection.TlsServerName,
                RemoteCertificateValidationCallback = ValidateServer,
                ClientCertificates = connection.ClientCertificate is { } cert ? [cert] : null,
            },
        };
        _http = new HttpClient(handler) { BaseAddress = connection.Server, Timeout = Timeout.InfiniteTimeSpan };
        _http.DefaultRequestHeaders.UserAgent.ParseAdd(_options.UserAgent);
    }

    private bool ValidateServer(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        if (Connection.InsecureSkipTlsVerify)
        {
            return true;
        }
        if (Connection.CertificateAuthority is not { Count: > 0 } roots || certificate is null)
        {
            return errors == SslPolicyErrors.None;
        }
        if ((errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0)
        {
            return false;
        }
        using var custom = new X509Chain();
        custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        custom.ChainPolicy.CustomTrustStore.AddRange(roots);
        custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        return custom.Build(new X509Certificate2(certificate));
    }

    public void Dispose() => _http.Dispose();

    public async Task<T?> GetAsync<T>(KubeResource r, string? ns, string name, CancellationToken ct = default) where T : class
    {
        try
        {
            return await SendReadAsync<T>(HttpMethod.Get, r.Path(ns, name), null, null, idempotent: true, ct);
        }
        catch (KubeApiException e) when (e.IsNotFound)
        {
            return null;
        }
    }

    public async Task<KubeList<T>> ListAsync<T>(KubeResource r, string? ns, ListOptions? options = null, CancellationToken ct = default)
    {
        options ??= new ListOptions();
        var query = Query(
            ("labelSelector", options.LabelSelector),
            ("fieldSelector", options.FieldSelector),
            ("limit", options.Limit > 0 ? options.Limit.ToString(CultureInfo.InvariantCulture) : null),
            ("continue", options.Continue));
        // Streamed from the socket into the item type: a page of EndpointSlices is megabytes.
        var page = await SendReadAsync<ListBody<T>>(HttpMethod.Get, r.Path(ns) + query, null, null, idempotent: true, ct, options.MetadataOnly ? MetadataListAccept : null);
        return new KubeList<T>(page.Items ?? [], page.Metadata?.ResourceVersion ?? "", page.Metadata?.Continue is { Length: > 0 } c ? c : null, page.Metadata?.RemainingItemCount);
    }

    /// <summary>
    /// Every page of a list, as one consistent snapshot. A continue token that expired between
    /// pages (410) starts the list over, since mixing snapshots could resurrect deleted objects.
    /// </summary>
    public async Task<KubeList<T>> ListAllAsync<T>(KubeResource r, string? ns, ListOptions? options = null, CancellationToken ct = default)
    {
        options ??= new ListOptions { Limit = 500 };
        for (var attempt = 1; ; attempt++)
        {
            var items = new List<T>();
            string? token = null;
            try
            {
                while (true)
                {
                    var page = await ListAsync<T>(r, ns, options with { Continue = token }, ct);
                    items.AddRange(page.Items);
                    token = page.Continue;
                    if (token is null)
                    {
                        return page with { Items = items };
                    }
                }
            }
            catch (KubeApiException e) when (e.IsExpired && token is not null && attempt < 5)
            {
                LogContinueExpired(_log, r.Plural, attempt);
            }
        }
    }

    public Task<T> CreateAsync<T>(KubeResource r, T obj, string? fieldManager = null, CancellationToken ct = default) =>
        CreateAsync<T, T>(r, obj, fieldManager, ct);

    /// <summary>A create whose answer is read as <typeparamref name="TResult"/> (<see cref="PartialObject"/>: its metadata only).</summary>
    public async Task<TResult> CreateAsync<T, TResult>(KubeResource r, T obj, string? fieldManager = null, CancellationToken ct = default)
    {
        var (body, meta) = Body(obj);
        using (body)
        {
            return await SendReadAsync<TResult>(HttpMethod.Post, r.Path(r.Namespaced ? meta.Namespace ?? Connection.Namespace : null) + Query(("fieldManager", fieldManager)),
                body.Written, JsonContentType, idempotent: false, ct);
        }
    }

    /// <summary>PUT: fails with 409 Conflict when metadata.resourceVersion is stale.</summary>
    public Task<T> ReplaceAsync<T>(KubeResource r, T obj, string? fieldManager = null, CancellationToken ct = default) =>
        PutAsync(r, obj, null, fieldManager, ct);

    /// <summary>PUT to /status: only the status of <paramref name="obj"/> is taken.</summary>
    public Task<T> ReplaceStatusAsync<T>(KubeResource r, T obj, string? fieldManager = null, CancellationToken ct = default) =>
        PutAsync(r, obj, "status", fieldManager, ct);

    private async Task<T> PutAsync<T>(KubeResource r, T obj, string? subresource, string? fieldManager, CancellationToken ct)
    {
        var (body, meta) = Body(obj);
        using (body)
        {
            var path = r.Path(r.Namespaced ? meta.Namespace ?? Connection.Namespace : null, meta.Name ?? throw new ArgumentException("metadata.name is required"), subresource);
            return await SendReadAsync<T>(HttpMethod.Put, path + Query(("fieldManager", fieldManager)), body.Written, JsonContentType, idempotent: true, ct);
        }
    }

    /// <summary>
    /// Server-side apply: the server merges <paramref name="config"/> (the fields this manager
    /// wants, nothing else) and records <paramref name="fieldManager"/> as their owner. Without
    /// <paramref name="force"/> a field owned by another manager with another value is a 409.
    /// </summary>
    public async Task<T> ApplyAsync<T>(KubeResource r, object config, string fieldManager, bool force = false, string? subresource = null, CancellationToken ct = default)
    {
        var body = KubeJson.ToNode(config);
        body["apiVersion"] ??= r.ApiVersion;
        body["kind"] ??= r.Kind;
        var meta = KubeJson.Metadata(body);
        var path = r.Path(r.Namespaced ? meta.Namespace ?? Connection.Namespace : null, meta.Name ?? throw new ArgumentException("metadata.name is required"), subresource);
        using var bytes = PooledBuffer.Json(body, KubeJson.Options);
        return await SendReadAsync<T>(HttpMethod.Patch, path + Query(("fieldManager", fieldManager), ("force", force ? "true" : null)),
            bytes.Written, "application/apply-patch+yaml", idempotent: true, ct);
    }

    /// <summary>JSON merge patch (RFC 7386): null deletes a field, objects merge, everything else replaces.</summary>
    public async Task<T> MergePatchAsync<T>(KubeResource r, string? ns, string name, JsonNode patch, string? subresource = null, string? fieldManager = null, CancellationToken ct = default)
    {
        return await SendReadAsync<T>(HttpMethod.Patch, r.Path(ns, name, subresource) + Query(("fieldManager", fieldManager)),
            JsonSerializer.SerializeToUtf8Bytes(patch, KubeJson.Options), "application/merge-patch+json", idempotent: true, ct);
    }

    /// <summary>Adds a finalizer (if absent). Returns the object as stored; null if it does not exist.</summary>
    public Task<JsonObject?> AddFinalizerAsync(KubeResource r, string? ns, string name, string finalizer, CancellationToken ct = default) =>
        EditFinalizersAsync(r, ns, name, list => list.Contains(finalizer) ? null : [.. list, finalizer], ct);

    /// <summary>Removes a finalizer (if present); removing the last one lets a deleted object go.</summary>
    public Task<JsonObject?> RemoveFinalizerAsync(KubeResource r, string? ns, string name, string finalizer, CancellationToken ct = default) =>
        EditFinalizersAsync(r, ns, name, list => list.Contains(finalizer) ? [.. list.Where(f => f != finalizer)] : null, ct);

    /// <summary>
    /// Read, edit, write the finalizer list with the read resourceVersion as a precondition (a
    /// merge patch replaces lists whole, so another writer's finalizer must never be lost);
    /// a conflict reads again.
    /// </summary>
    private async Task<JsonObject?> EditFinalizersAsync(KubeResource r, string? ns, string name, Func<List<string>, List<string>?> edit, CancellationToken ct)
    {
        for (var attempt = 1; ; attempt++)
        {
            var current = await GetAsync<JsonObject>(r, ns, name, ct);
            if (current is null)
            {
                return null;
            }
            var list = (current["metadata"]?["finalizers"] as JsonArray ?? []).Select(f => f!.GetValue<string>()).ToList();
            if (edit(list) is not { } next)
            {
                return current;
            }
            var patch = new JsonObject
            {
                ["metadata"] = new JsonObject
                {
                    ["resourceVersion"] = current["metadata"]!["resourceVersion"]!.DeepClone(),
                    ["finalizers"] = next.Count == 0 ? null : new JsonArray([.. next.Select(f => (JsonNode)f)]),
                },
            };
            try
            {
                return await MergePatchAsync<JsonObject>(r, ns, name, patch, ct: ct);
            }
            catch (KubeApiException e) when (e.IsConflict && attempt < 5)
            {
                // Someone else wrote in between: read again.
            }
            catch (KubeApiException e) when (e.IsNotFound)
            {
                return null;
            }
        }
    }

    /// <summary>Deletes an object; with a uid or resourceVersion precondition the server refuses (409) to delete anything else.</summary>
    public async Task<DeleteOutcome> DeleteAsync(KubeResource r, string? ns, string name, string? uid = null, string? resourceVersion = null, CancellationToken ct = default)
    {
        var options = new JsonObject { ["kind"] = "DeleteOptions", ["apiVersion"] = "v1", ["propagationPolicy"] = "Background" };
        if (uid is not null || resourceVersion is not null)
        {
            var pre = new JsonObject();
            if (uid is not null)
            {
                pre["uid"] = uid;
            }
            if (resourceVersion is not null)
            {
                pre["resourceVersion"] = resourceVersion;
            }
            options["preconditions"] = pre;
        }
        try
        {
            var body = await SendAsync(HttpMethod.Delete, r.Path(ns, name), JsonSerializer.SerializeToUtf8Bytes(options, KubeJson.Options), JsonContentType, idempotent: true, ct);
            var left = body.Length == 0 ? null : Read<PartialObject>(body);
            return left is null || left.Kind == "Status" || left.Metadata.DeletionTimestamp is null ? DeleteOutcome.Deleted : DeleteOutcome.Pending;
        }
        catch (KubeApiException e) when (e.IsNotFound)
        {
            return DeleteOutcome.NotFound;
        }
    }

    /// <summary>
    /// A raw watch stream. A 410 arrives either as the response status or, from a watch cache,
    /// as an ERROR event inside a 200 stream; both reach the caller (the first as an exception,
    /// the second as an event). The stream ends when the server ends it.
    /// </summary>
    public async IAsyncEnumerable<WatchEvent<T>> WatchAsync<T>(KubeResource r, string? ns, WatchOptions options, [EnumeratorCancellation] CancellationToken ct = default)
    {
        var query = Query(
            ("watch", "true"),
            ("allowWatchBookmarks", options.AllowBookmarks ? "true" : null),
            ("resourceVersion", options.ResourceVersion),
            ("labelSelector", options.LabelSelector),
            ("fieldSelector", options.FieldSelector),
            ("timeoutSeconds", options.Timeout is { } t ? ((int)t.TotalSeconds).ToString(CultureInfo.InvariantCulture) : null));
        using var response = await SendRawAsync(HttpMethod.Get, r.Path(ns) + query, null, null, idempotent: true, streaming: true, ct, options.MetadataOnly ? MetadataAccept : null);
        await using var stream = await response.Content.ReadAsStreamAsync(ct);
        // Each line is read as bytes and its object deserialized straight from them: no text, no JSON tree.
        var lines = new LineReader(stream);
        while (await lines.ReadLineAsync(ct) is { } line)
        {
            if (line.IsEmpty)
            {
                continue;
            }
            var (type, obj) = WatchFrame(line.Span);
            yield return Event<T>(type, line[obj]);
        }
    }

    private static WatchEvent<T> Event<T>(string type, ReadOnlyMemory<byte> obj)
    {
        switch (type)
        {
            case WatchEvent<T>.Error:
                return new WatchEvent<T>(type, default, null, obj.IsEmpty ? null : JsonNode.Parse(obj.Span) as JsonObject);
            case WatchEvent<T>.Bookmark:
                return new WatchEvent<T>(type, default, obj.IsEmpty ? null : ResourceVersionOf(obj.Span), null);
            default:
                var value = obj.IsEmpty ? default : JsonSerializer.Deserialize<T>(obj.Span, KubeJson.Options);
                if (value is null)
                {
                    throw new JsonException($"a {type} watch event without an object");
                }
                return new WatchEvent<T>(type, value, value is IKubernetesObject typed ? typed.Metadata.ResourceVersion : ResourceVersionOf(obj.Span), null);
        }
    }

    /// <summary>
    /// One line of a watch stream: its type, and where its object is (the object stays raw until
    /// its type is known: an ERROR carries a Status). Properties may come in any order.
    /// </summary>
    private static (string Type, Range Object) WatchFrame(ReadOnlySpan<byte> line)
    {
        var reader = new Utf8JsonReader(line);
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
        {
            throw new JsonException("a watch frame is not a JSON object");
        }
        string? type = null;
        var obj = default(Range);
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var isType = reader.ValueTextEquals("type"u8);
            var isObject = reader.ValueTextEquals("object"u8);
            reader.Read();
            if (isType && reader.TokenType == JsonTokenType.String)
            {
                type = reader.GetString();
            }
            var start = (int)reader.TokenStartIndex;
            reader.Skip();
            if (isObject && reader.TokenType != JsonTokenType.Null)
            {
                obj = start..(int)reader.BytesConsumed;
            }
        }
        return (type ?? "", obj);
    }

    /// <summary>metadata.resourceVersion of an object in JSON (null when it has none).</summary>
    private static string? ResourceVersionOf(ReadOnlySpan<byte> obj)
    {
        var reader = new Utf8JsonReader(obj);
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
        {
            return null;
        }
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var isMetadata = reader.ValueTextEquals("metadata"u8);
            reader.Read();
            if (isMetadata && reader.TokenType == JsonTokenType.StartObject)
            {
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    var isVersion = reader.ValueTextEquals("resourceVersion"u8);
                    reader.Read();
                    if (isVersion)
                    {
                        return reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
                    }
                    reader.Skip();
                }
                return null;
            }
            reader.Skip();
        }
        return null;
    }

    private const string JsonContentType = "application/json";

    /// <summary>A list response: its items typed, its metadata as far as paging needs it.</summary>
    private sealed record ListBody<T>
    {
        public ListMetadata? Metadata { get; init; }
        public List<T>? Items { get; init; }
    }

    private sealed record ListMetadata
    {
        public string? ResourceVersion { get; init; }
        public string? Continue { get; init; }
        public long? RemainingItemCount { get; init; }
    }


    private static T Read<T>(byte[] body) =>
        body.Length == 0 ? throw new JsonException($"an empty response where a {typeof(T).Name} was expected")
        : JsonSerializer.Deserialize<T>(body, KubeJson.Options) ?? throw new JsonException($"null where a {typeof(T).Name} was expected");

    /// <summary>An object as request bytes in a pooled buffer, with its metadata (read from the object itself when it is typed, no detour through a JSON tree).</summary>
    private static (PooledBuffer Body, ObjectMeta Meta) Body<T>(T obj)
    {
        if (obj is IKubernetesObject typed)
        {
            return (PooledBuffer.Json(obj, KubeJson.Options), typed.Metadata);
        }
        var node = KubeJson.ToNode(obj);
        return (PooledBuffer.Json(node, KubeJson.Options), KubeJson.Metadata(node));
    }

    private static string Query(params (string Key, string? Value)[] pairs)
    {
        var parts = pairs.Where(p => p.Value is not null).Select(p => $"{p.Key}={Uri.EscapeDataString(p.Value!)}").ToList();
        return parts.Count == 0 ? "" : "?" + string.Join("&", parts);
    }

    private async Task<byte[]> SendAsync(HttpMethod method, string path, ReadOnlyMemory<byte>? body, string? contentType, bool idempotent, CancellationToken ct)
    {
        using var response = await SendRawAsync(method, path, body, contentType, idempotent, streaming: false, ct);
        return await response.Content.ReadAsByteArrayAsync(ct);
    }

    /// <summary>
    /// A request whose answer is deserialized as it arrives, never held whole: a list page is
    /// megabytes, and a create's answer echoes its body. The request timeout covers the answer
    /// too; an answer that breaks off or times out after its headers is asked again when the
    /// request is idempotent.
    /// </summary>
    // Metadata alone, else (a server that cannot) whole objects, which read into the same type.
    private const string MetadataAccept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json";
    private const string MetadataListAccept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1, application/json";

    private async Task<T> SendReadAsync<T>(HttpMethod method, string path, ReadOnlyMemory<byte>? body, string? contentType, bool idempotent, CancellationToken ct, string? accept = null)
    {
        var operation = $"{method} {path}";
        for (var attempt = 1; ; attempt++)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(_options.RequestTimeout);
            try
            {
                using var response = await SendRawAsync(method, path, body, contentType, idempotent, streaming: true, timeout.Token, accept);
                await using var stream = await response.Content.ReadAsStreamAsync(timeout.Token);
                return await JsonSerializer.DeserializeAsync<T>(stream, KubeJson.Options, timeout.Token)
                    ?? throw new JsonException($"null where a {typeof(T).Name} was expected");
            }
            catch (Exception e) when (!ct.IsCancellationRequested && e is HttpRequestException or IOException or OperationCanceledException)
            {
                var failure = TransportFailure(e, operation, "no complete response");
                if (!idempotent || attempt >= _options.Retry.MaxAttempts)
                {
                    throw failure;
                }
                var wait = Backoff(attempt, null);
                LogRetry(_log, operation, failure.ServerMessage, attempt, wait.TotalMilliseconds);
                await Task.Delay(wait, ct);
            }
        }
    }

    /// <summary>One request with retries; returns only successful responses, throws KubeApiException otherwise.</summary>
    private async Task<HttpResponseMessage> SendRawAsync(HttpMethod method, string path, ReadOnlyMemory<byte>? body, string? contentType, bool idempotent, bool streaming, CancellationToken ct, string? accept = null)
    {
        var operation = $"{method} {path}";
        var retry = _options.Retry;
        var tokenRefreshed = false;
        for (var attempt = 1; ; attempt++)
        {
            using var request = new HttpRequestMessage(method, path);
            if (body is { } bytes)
            {
                request.Content = new ReadOnlyMemoryContent(bytes);
                request.Content.Headers.ContentType = new MediaTypeHeaderValue(contentType ?? JsonContentType);
            }
            if (accept is null)
            {
                request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
            }
            else
            {
                request.Headers.TryAddWithoutValidation("Accept", accept);
            }
            if (Connection.Token?.Current() is { } token)
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            }
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            if (!streaming)
            {
                timeout.CancelAfter(_options.RequestTimeout);
            }
            HttpResponseMessage response;
            try
            {
                response = await _http.SendAsync(request, streaming ? HttpCompletionOption.ResponseHeadersRead : HttpCompletionOption.ResponseContentRead, timeout.Token);
            }
            catch (Exception e) when (!ct.IsCancellationRequested && e is HttpRequestException or OperationCanceledException)
            {
                var failure = TransportFailure(e, operation, "no response");
                if (!idempotent || attempt >= retry.MaxAttempts)
                {
                    throw failure;
                }
                var wait = Backoff(attempt, null);
                LogRetry(_log, operation, failure.ServerMessage, attempt, wait.TotalMilliseconds);
                await Task.Delay(wait, ct);
                continue;
            }
            if (response.IsSuccessStatusCode)
            {
                return response;
            }
            using (response)
            {
                var code = response.StatusCode;
                var text = await response.Content.ReadAsStringAsync(ct);
                JsonObject? status = null;
                try
                {
                    status = text.Length > 0 ? JsonNode.Parse(text) as JsonObject : null;
                }
                catch (System.Text.Json.JsonException)
                {
                    // Not a Status object (a proxy's error page): the code says enough.
                }
                var error = KubeApiException.FromStatus(status, code, operation);
                if (code == HttpStatusCode.Unauthorized && Connection.Token is { } source && !tokenRefreshed)
                {
                    source.Invalidate();
                    tokenRefreshed = true;
                    continue;
                }
                var serverAsked = code is HttpStatusCode.TooManyRequests or HttpStatusCode.ServiceUnavailable;
                var retriable = serverAsked || ((int)code >= 500 && idempotent);
                if (!retriable || attempt >= retry.MaxAttempts)
                {
                    throw error;
                }
                var wait = Backoff(attempt, response.Headers.RetryAfter);
                LogRetry(_log, operation, $"{(int)code} {error.Reason}", attempt, wait.TotalMilliseconds);
                await Task.Delay(wait, ct);
            }
        }
    }

    /// <summary>A request that got no (complete) answer: a timeout is 504 Timeout, anything else 503 Unreachable.</summary>
    private KubeApiException TransportFailure(Exception e, string operation, string timedOut) =>
        e is OperationCanceledException
            ? new KubeApiException(HttpStatusCode.GatewayTimeout, "Timeout", $"{timedOut} within {_options.RequestTimeout.TotalSeconds:0.#} s", operation)
            : new KubeApiException(HttpStatusCode.ServiceUnavailable, "Unreachable", e.Message, operation);

    /// <summary>Retry-After when the server gave one (capped), otherwise exponential backoff, jittered over its upper half.</summary>
    private TimeSpan Backoff(int attempt, RetryConditionHeaderValue? retryAfter)
    {
        var policy = _options.Retry;
        if (retryAfter?.Delta is { } delta)
        {
            return delta < policy.MaxRetryAfter ? delta : policy.MaxRetryAfter;
        }
        var ceiling = Math.Min(policy.MaxDelay.TotalMilliseconds, policy.BaseDelay.TotalMilliseconds * Math.Pow(2, attempt - 1));
        return TimeSpan.FromMilliseconds(ceiling / 2 + Random.Shared.NextDouble() * ceiling / 2);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Operation} failed ({Why}), attempt {Attempt}; retrying in {DelayMs:0} ms")]
    private static partial void LogRetry(ILogger logger, string operation, string why, int attempt, double delayMs);

    [LoggerMessage(Level = LogLevel.Information, Message = "list of {Resource} outlived its continue token (410); listing again from the start (attempt {Attempt})")]
    private static partial void LogContinueExpired(ILogger logger, string resource, int attempt);
}
