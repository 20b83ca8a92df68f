using System.Buffers;
using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Xlb.Crds.Serialization;

namespace Xlb.ApiServerDouble;

/// <summary>
/// An in-process Kubernetes API server on 127.0.0.1 and an ephemeral port: discovery, CRUD,
/// server-side apply, the status subresource, finalizers, list paging and selectors, and watch
/// with bookmarks and 410 Expired. Semantics follow the Kubernetes API documentation ("API
/// Concepts", "Server-Side Apply", "Finalizers"); where the double simplifies, the type that
/// implements the semantic says so. JSON only: no protobuf, no strategic merge patch, no dry run.
/// </summary>
public sealed partial class ApiServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly List<ResourceType> _types = [];
    private ApiSecurity? _security;

    public ObjectStore Store { get; }
    public Faults Faults { get; } = new();
    public Uri Url { get; private set; } = null!;

    /// <summary>How often an idle watch that asked for bookmarks gets one (the real server: about a minute).</summary>
    public TimeSpan BookmarkInterval { get; set; } = TimeSpan.FromSeconds(1);
    /// <summary>
    /// Authorization of resource requests (discovery is open to every authenticated user, as in a
    /// cluster): false answers 403 Forbidden with Kubernetes' message. Null: everything is allowed.
    /// </summary>
    public Func<AccessRequest, bool>? Authorizer { get; set; }

    private ApiServer(WebApplication app, TimeProvider time)
    {
        _app = app;
        Store = new ObjectStore(time);
    }

    /// <summary>
    /// Starts a double. With <paramref name="security"/> it serves HTTPS and authenticates every
    /// request (401 Unauthorized otherwise), as a real API server does.
    /// </summary>
    public static async Task<ApiServer> StartAsync(IEnumerable<ResourceType>? types = null, TimeProvider? time = null, ApiSecurity? security = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0, listen =>
        {
            if (security is not null)
            {
                listen.UseHttps(https =>
                {
                    https.ServerCertificate = security.ServerCertificate;
                    https.ClientCertificateMode = Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.AllowCertificate;
                    https.AllowAnyClientCertificate();
                });
            }
        }));
        var app = builder.Build();
        var server = new ApiServer(app, time ?? TimeProvider.System) { _security = security };
        foreach (var type in types ?? ResourceType.Defaults)
        {
            server.Register(type);
        }
        foreach (var ns in new[] { "default", "kube-system", "kube-public", "kube-node-lease" })
        {
            server.Seed(ResourceType.Namespaces, new JsonObject { ["metadata"] = new JsonObject { ["name"] = ns } });
        }
        app.Run(server.ServeAsync);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
            .Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.Url = new Uri(address);
        return server;
    }

    public void Register(ResourceType type)
    {
        if (_types.Any(t => t.GroupVersion == type.GroupVersion && t.Plural == type.Plural))
        {
            throw new InvalidOperationException($"{type.QualifiedName} is registered already");
        }
        _types.Add(type);
    }

    /// <summary>Stores an object directly, as if created by some other client (manager "seed").</summary>
    public JsonObject Seed(ResourceType type, JsonObject obj)
    {
        var copy = obj.DeepClone().AsObject();
        copy["apiVersion"] = type.ApiVersion;
        copy["kind"] = type.Kind;
        var ns = type.Namespaced ? copy["metadata"]?["namespace"]?.GetValue<string>() ?? "default" : null;
        return CreateObject(type, ns, copy, "seed");
    }

    public async ValueTask DisposeAsync()
    {
        Store.EndWatches(abort: false);
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    private async Task ServeAsync(HttpContext ctx)
    {
        try
        {
            var path = ctx.Request.Path.Value ?? "/";
            if (_security is not null && !await AuthenticateAsync(ctx, _security))
            {
                throw new ApiError(HttpStatusCode.Unauthorized, "Unauthorized", "Unauthorized");
            }
            if (await ServeDiscoveryAsync(ctx, path))
            {
                return;
            }
            var route = Route(path);
            Authorize(ctx, route);
            if (Faults.Latency > TimeSpan.Zero)
            {
                await Task.Delay(Faults.Latency, ctx.RequestAborted);
            }
            Faults.BeforeRequest?.Invoke(path + ctx.Request.QueryString);
            var fault = Faults.Take(path);
            if (fault is { Broken: true })
            {
                ctx.Response.StatusCode = 200;
                ctx.Response.ContentType = "application/json";
                await ctx.Response.Body.WriteAsync("{\"kind\":\"List\",\"apiVersion\":\"v1\",\"items\":[{\"metadata\":"u8.ToArray(), ctx.RequestAborted);
                await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
                await Task.Delay(50, ctx.RequestAborted); // the client has the headers: the break is in the body
                ctx.Abort();
                return;
            }
            if (fault is not null)
            {
                if (fault.RetryAfter is { } after)
                {
                    ctx.Response.Headers.RetryAfter = ((int)Math.Ceiling(after.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
                }
                var reason = fault.Code switch
                {
                    HttpStatusCode.TooManyRequests => "TooManyRequests",
                    HttpStatusCode.ServiceUnavailable => "ServiceUnavailable",
                    HttpStatusCode.GatewayTimeout => "Timeout",
                    _ => "InternalError",
                };
                throw new ApiError(fault.Code, reason, "injected fault");
            }
            await ServeResourceAsync(ctx, route);
        }
        catch (ApiError e)
        {
            await WriteAsync(ctx, (int)e.Code, e.ToStatus());
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or YamlDotNet.Core.YamlException or FormatException)
        {
            await WriteAsync(ctx, 400, ApiError.BadRequest("the request body is not valid: " + e.Message).ToStatus());
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            // The client went away.
        }
        catch (Exception e)
        {
            await WriteAsync(ctx, 500, ApiError.Status(HttpStatusCode.InternalServerError, "InternalError", "Internal error occurred: " + e));
        }
    }

    private static async Task WriteAsync(HttpContext ctx, int code, byte[] body, string contentType = "application/json")
    {
        if (ctx.Response.HasStarted)
        {
            return;
        }
        ctx.Response.StatusCode = code;
        ctx.Response.ContentType = contentType;
        await ctx.Response.Body.WriteAsync(body, ctx.RequestAborted);
    }

    private static async Task WriteAsync(HttpContext ctx, int code, JsonNode body)
    {
        if (ctx.Response.HasStarted)
        {
            return;
        }
        ctx.Response.StatusCode = code;
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(body.ToJsonString(), ctx.RequestAborted);
    }

    private sealed record Target(ResourceType Type, string? Namespace, string? Name, string? Subresource);

    private Target Route(string path)
    {
        var segs = path.Trim('/').Split('/', StringSplitOptions.RemoveEmptyEntries);
        string group, version;
        string[] rest;
        if (segs.Length >= 2 && segs[0] == "api")
        {
            (group, version, rest) = ("", segs[1], segs[2..]);
        }
        else if (segs.Length >= 3 && segs[0] == "apis")
        {
            (group, version, rest) = (segs[1], segs[2], segs[3..]);
        }
        else
        {
            throw NotFoundPath(path);
        }
        ResourceType? Find(string plural) => _types.FirstOrDefault(t => t.Group == group && t.Version == version && t.Plural == plural);
        string? ns = null;
        if (rest.Length >= 3 && rest[0] == "namespaces" && Find(rest[2]) is { Namespaced: true })
        {
            ns = rest[1];
            rest = rest[2..];
        }
        if (rest.Length is 0 or > 3 || Find(rest[0]) is not { } type || (rest.Length == 3 && rest[2] != "status"))
        {
            throw NotFoundPath(path);
        }
        if (type.Namespaced && ns is null && rest.Length > 1)
        {
            throw NotFoundPath(path);
        }
        if (rest.Length == 3 && !type.StatusSubresource)
        {
            throw NotFoundPath(path);
        }
        return new Target(type, ns, rest.Length > 1 ? rest[1] : null, rest.Length == 3 ? "status" : null);
    }

    private static ApiError NotFoundPath(string path) =>
        new(HttpStatusCode.NotFound, "NotFound", $"the server could not find the requested resource ({path})");

    private async Task ServeResourceAsync(HttpContext ctx, Target t)
    {
        var q = ctx.Request.Query;
        if (q.ContainsKey("dryRun"))
        {
            throw ApiError.BadRequest("dryRun is not supported by this API server");
        }
        var method = ctx.Request.Method;
        if (t.Name is null)
        {
            switch (method)
            {
                case "GET" when IsTrue(q["watch"]):
                    await WatchAsync(ctx, t);
                    return;
                case "GET":
                    await WriteListAsync(ctx, ListObjects(ctx, t, WantsMetadata(ctx, list: true)));
                    return;
                case "POST" when t.Namespace is not null || !t.Type.Namespaced:
                    var body = await ReadJsonAsync(ctx);
                    CheckIdentity(t, body, null);
                    await WriteAsync(ctx, 201, CreateObject(t.Type, t.Namespace, body, Manager(ctx)));
                    return;
                default:
                    throw ApiError.MethodNotAllowed($"the server does not allow this method on the requested resource ({method})");
            }
        }
        switch (method)
        {
            case "GET":
                var metadataOnly = WantsMetadata(ctx, list: false);
                await WriteAsync(ctx, 200, Store.GetJson(t.Type, t.Namespace, t.Name, metadataOnly) ?? throw ApiError.NotFound(t.Type, t.Name),
                    metadataOnly ? PartialMetadataType : "application/json");
                return;
            case "PUT":
                await WriteAsync(ctx, 200, Replace(t, await ReadJsonAsync(ctx), Manager(ctx)));
                return;
            case "PATCH":
                await PatchAsync(ctx, t);
                return;
            case "DELETE":
                await DeleteAsync(ctx, t);
                return;
            default:
                throw ApiError.MethodNotAllowed($"the server does not allow this method on the requested resource ({method})");
        }
    }

    private static bool IsTrue(Microsoft.Extensions.Primitives.StringValues v) => v.ToString() is "true" or "1";

    /// <summary>
    /// The field manager of an update: the fieldManager parameter, else the user agent's program
    /// name ("kubectl/v1.32 (linux/amd64)" → "kubectl"), as the real server derives it.
    /// </summary>
    private static string Manager(HttpContext ctx)
    {
        var given = ctx.Request.Query["fieldManager"].ToString();
        if (given.Length > 0)
        {
            return given;
        }
        var agent = ctx.Request.Headers.UserAgent.ToString();
        var name = agent.Split('/', ' ')[0];
        return name.Length > 0 ? name : "unknown";
    }

    private static async Task<JsonObject> ReadJsonAsync(HttpContext ctx)
    {
        var contentType = ctx.Request.ContentType?.Split(';')[0].Trim();
        if (contentType is not (null or "" or "application/json" or "application/merge-patch+json"))
        {
            throw new ApiError(HttpStatusCode.UnsupportedMediaType, "UnsupportedMediaType",
                $"the body of the request was in an unknown format - accepted media types include: application/json (got {contentType})");
        }
        using var reader = new StreamReader(ctx.Request.Body);
        var text = await reader.ReadToEndAsync(ctx.RequestAborted);
        return JsonNode.Parse(text) as JsonObject ?? throw ApiError.BadRequest("the request body must be a JSON object");
    }

    private static string NameOf(JsonObject obj) => obj["metadata"]?["name"]?.GetValue<string>() ?? "";

    /// <summary>apiVersion, kind, name and namespace of a body must agree with the URL (400 otherwise, as on a real server).</summary>
    private static void CheckIdentity(Target t, JsonObject body, string? urlName)
    {
        var apiVersion = body["apiVersion"]?.GetValue<string>();
        var kind = body["kind"]?.GetValue<string>();
        if (apiVersion is not null && apiVersion != t.Type.ApiVersion)
        {
            throw ApiError.BadRequest($"the API version in the data ({apiVersion}) does not match the expected API version ({t.Type.ApiVersion})");
        }
        if (kind is not null && kind != t.Type.Kind)
        {
            throw ApiError.BadRequest($"the kind in the data ({kind}) does not match the expected kind ({t.Type.Kind})");
        }
        body["apiVersion"] = t.Type.ApiVersion;
        body["kind"] = t.Type.Kind;
        if (body["metadata"] is not JsonObject meta)
        {
            meta = new JsonObject();
            body["metadata"] = meta;
        }
        var bodyNs = meta["namespace"]?.GetValue<string>();
        if (t.Type.Namespaced)
        {
            if (bodyNs is { Length: > 0 } && bodyNs != t.Namespace)
            {
                throw ApiError.BadRequest("the namespace of the provided object does not match the namespace sent on the request");
            }
            meta["namespace"] = t.Namespace;
        }
        else
        {
            meta.Remove("namespace");
        }
        if (urlName is not null && meta["name"] is not null && NameOf(body) != urlName)
        {
            throw ApiError.BadRequest($"the name of the object ({NameOf(body)}) does not match the name on the URL ({urlName})");
        }
        if (urlName is not null)
        {
            meta["name"] = urlName;
        }
    }

    private JsonObject CreateObject(ResourceType type, string? ns, JsonObject body, string manager)
    {
        var meta = body["metadata"]!.AsObject();
        if (meta["name"] is null && meta["generateName"]?.GetValue<string>() is { Length: > 0 } prefix)
        {
            meta["name"] = prefix + RandomSuffix();
        }
        var name = NameOf(body);
        if (name.Length == 0)
        {
            throw ApiError.Invalid(type, name, "metadata.name", "Required value: name or generateName is required");
        }
        if (type.StatusSubresource)
        {
            // The status of a resource with a status subresource is the controller's: a create drops it.
            body.Remove("status");
        }
        meta.Remove("managedFields");
        FieldManager.RecordUpdate(null, body, type, manager, null, Store.Now());
        return Store.Create(type, ns, body);
    }

    private static string RandomSuffix()
    {
        const string alphabet = "bcdfghjklmnpqrstvwxz2456789";
        return string.Concat(Enumerable.Range(0, 5).Select(_ => alphabet[Random.Shared.Next(alphabet.Length)]));
    }

    /// <summary>
    /// Keeps what an endpoint may not change: the main resource of a type with a status
    /// subresource ignores status, /status ignores everything but status.
    /// </summary>
    private static JsonObject Scope(ResourceType type, string? subresource, JsonObject current, JsonObject candidate)
    {
        if (subresource == "status")
        {
            var next = current.DeepClone().AsObject();
            next["status"] = candidate["status"]?.DeepClone();
            if (next["status"] is null)
            {
                next.Remove("status");
            }
            next["metadata"]!["resourceVersion"] = candidate["metadata"]?["resourceVersion"]?.DeepClone();
            return next;
        }
        if (type.StatusSubresource)
        {
            candidate["status"] = current["status"]?.DeepClone();
            if (candidate["status"] is null)
            {
                candidate.Remove("status");
            }
        }
        return candidate;
    }

    private JsonObject Replace(Target t, JsonObject body, string manager)
    {
        CheckIdentity(t, body, t.Name);
        return Store.Update(t.Type, t.Namespace, t.Name!, current =>
        {
            var next = Scope(t.Type, t.Subresource, current, body);
            next["metadata"]!.AsObject().Remove("managedFields");
            FieldManager.RecordUpdate(current, next, t.Type, manager, t.Subresource, Store.Now());
            return next;
        }, requireResourceVersion: !t.Type.AllowUnconditionalUpdate);
    }

    private async Task PatchAsync(HttpContext ctx, Target t)
    {
        var contentType = ctx.Request.ContentType?.Split(';')[0].Trim();
        switch (contentType)
        {
            case "application/merge-patch+json":
            {
                var patch = await ReadJsonAsync(ctx);
                var manager = Manager(ctx);
                var result = Store.Update(t.Type, t.Namespace, t.Name!, current =>
                {
                    var merged = (JsonObject)MergePatch.Apply(current.DeepClone(), patch)!;
                    CheckIdentity(t, merged, t.Name);
                    var next = Scope(t.Type, t.Subresource, current, merged);
                    FieldManager.RecordUpdate(current, next, t.Type, manager, t.Subresource, Store.Now());
                    return next;
                });
                await WriteAsync(ctx, 200, result);
                return;
            }
            case "application/apply-patch+yaml":
            case "application/apply-patch+cbor":
            {
                using var reader = new StreamReader(ctx.Request.Body);
                var docs = ApplyDocuments(await reader.ReadToEndAsync(ctx.RequestAborted));
                if (docs is not [JsonObject applied])
                {
                    throw ApiError.BadRequest("an apply patch must be exactly one object");
                }
                var manager = ctx.Request.Query["fieldManager"].ToString();
                if (manager.Length == 0)
                {
                    throw ApiError.BadRequest("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch");
                }
                var force = IsTrue(ctx.Request.Query["force"]);
                if (applied["apiVersion"] is null || applied["kind"] is null)
                {
                    throw ApiError.BadRequest("apiVersion and kind must be set in an apply patch");
                }
                CheckIdentity(t, applied, t.Name);
                if (t.Type.Schema is { } schema && Store.CheckCustomResources)
                {
                    Validation.DefaultKeys(schema, applied);
                }
                var wantedRv = applied["metadata"]?["resourceVersion"]?.GetValue<string>();
                if (Store.Get(t.Type, t.Namespace, t.Name!) is null)
                {
                    if (t.Subresource is not null)
                    {
                        throw ApiError.NotFound(t.Type, t.Name!);
                    }
                    var created = FieldManager.Apply(null, applied, t.Type, manager, force, null, Store.Now());
                    created["apiVersion"] = t.Type.ApiVersion;
                    created["kind"] = t.Type.Kind;
                    created["metadata"]!["name"] = t.Name;
                    if (t.Namespace is not null)
                    {
                        created["metadata"]!["namespace"] = t.Namespace;
                    }
                    created.Remove("status");
                    try
                    {
                        await WriteAsync(ctx, 201, Store.Create(t.Type, t.Namespace, created));
                        return;
                    }
                    catch (ApiError e) when (e.Reason == "AlreadyExists")
                    {
                        // Lost a race with a concurrent create: apply onto what is there now.
                    }
                }
                var result = Store.Update(t.Type, t.Namespace, t.Name!, current =>
                {
                    if (wantedRv is { Length: > 0 } && wantedRv != current["metadata"]!["resourceVersion"]!.GetValue<string>())
                    {
                        throw ApiError.Conflict(t.Type, t.Name!, "the object has been modified; please apply your changes to the latest version and try again");
                    }
                    return FieldManager.Apply(current, applied, t.Type, manager, force, t.Subresource, Store.Now());
                });
                await WriteAsync(ctx, 200, result);
                return;
            }
            default:
                throw new ApiError(HttpStatusCode.UnsupportedMediaType, "UnsupportedMediaType",
                    $"the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/apply-patch+yaml (got {contentType})");
        }
    }

    /// <summary>
    /// The documents of an apply body. JSON is YAML, and clients mostly send JSON: a body that
    /// parses as JSON is read as such (a YAML reader takes far longer over a large object).
    /// </summary>
    private static IReadOnlyList<JsonNode> ApplyDocuments(string text)
    {
        if (text.AsSpan().TrimStart() is ['{', ..])
        {
            try
            {
                return JsonNode.Parse(text) is { } node ? [node] : [];
            }
            catch (System.Text.Json.JsonException)
            {
                // Not JSON after all (YAML flow style): the YAML reader decides.
            }
        }
        return Yaml.ReadDocuments(text);
    }

    private async Task DeleteAsync(HttpContext ctx, Target t)
    {
        if (t.Subresource is not null)
        {
            throw ApiError.MethodNotAllowed("the server does not allow this method on the requested resource (DELETE status)");
        }
        string? uid = null, rv = null;
        if (ctx.Request.ContentLength is > 0 || ctx.Request.Headers.TransferEncoding.Count > 0)
        {
            using var reader = new StreamReader(ctx.Request.Body);
            var text = await reader.ReadToEndAsync(ctx.RequestAborted);
            if (text.Length > 0 && JsonNode.Parse(text)?["preconditions"] is JsonObject pre)
            {
                uid = pre["uid"]?.GetValue<string>();
                rv = pre["resourceVersion"]?.GetValue<string>();
            }
        }
        var result = Store.Delete(t.Type, t.Namespace, t.Name!, uid, rv);
        if (!result.Deleted)
        {
            await WriteAsync(ctx, 200, result.Object);
            return;
        }
        await WriteAsync(ctx, 200, new JsonObject
        {
            ["kind"] = "Status",
            ["apiVersion"] = "v1",
            ["metadata"] = new JsonObject(),
            ["status"] = "Success",
            ["details"] = new JsonObject
            {
                ["name"] = t.Name,
                ["group"] = t.Type.Group,
                ["kind"] = t.Type.Plural,
                ["uid"] = result.Object["metadata"]!["uid"]!.DeepClone(),
            },
        });
    }

    private const string PartialMetadataType = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    private const string PartialMetadataListType = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

    /// <summary>
    /// Content negotiation for reads (API Concepts, "Receiving resources as metadata"): the Accept
    /// header's first media type this server can serve wins. application/json (or any JSON, or
    /// none) is the full objects; application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1
    /// (…List for a list) is their metadata alone. An Accept with nothing servable is a 406.
    /// </summary>
    private static bool WantsMetadata(HttpContext ctx, bool list)
    {
        var accept = ctx.Request.Headers.Accept.ToString();
        if (string.IsNullOrWhiteSpace(accept))
        {
            return false;
        }
        var want = list ? "PartialObjectMetadataList" : "PartialObjectMetadata";
        foreach (var entry in accept.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = entry.Split(';', StringSplitOptions.TrimEntries);
            if (parts[0] is not ("application/json" or "application/*" or "*/*"))
            {
                continue;
            }
            var parameters = parts.Skip(1).Select(p => p.Split('=', 2)).Where(kv => kv.Length == 2)
                .ToDictionary(kv => kv[0].ToLowerInvariant(), kv => kv[1].Trim('"'), StringComparer.Ordinal);
            if (!parameters.TryGetValue("as", out var kind))
            {
                return false;
            }
            if (kind == want && parameters.GetValueOrDefault("g") == "meta.k8s.io" && parameters.GetValueOrDefault("v") == "v1")
            {
                return true;
            }
        }
        throw new ApiError(HttpStatusCode.NotAcceptable, "NotAcceptable",
            $"only the following media types are accepted: application/json, {(list ? PartialMetadataListType : PartialMetadataType)}");
    }

    /// <summary>A list response: its opening (kind, metadata, "items":[) and its items' stored JSON.</summary>
    private sealed record ListResponse(byte[] Head, List<byte[]> Items, string ContentType);

    /// <summary>Writes a list as it goes: a page of EndpointSlices is megabytes, and is not copied into one buffer.</summary>
    private static async Task WriteListAsync(HttpContext ctx, ListResponse list)
    {
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = list.ContentType;
        var writer = ctx.Response.BodyWriter;
        writer.Write(list.Head);
        for (var i = 0; i < list.Items.Count; i++)
        {
            if (i > 0)
            {
                writer.Write(","u8);
            }
            writer.Write(list.Items[i]);
            if (writer.UnflushedBytes >= 1 << 16)
            {
                await writer.FlushAsync(ctx.RequestAborted);
            }
        }
        writer.Write("]}"u8);
        await writer.FlushAsync(ctx.RequestAborted);
    }

    private ListResponse ListObjects(HttpContext ctx, Target t, bool metadataOnly)
    {
        var q = ctx.Request.Query;
        var limit = int.TryParse(q["limit"], NumberStyles.None, CultureInfo.InvariantCulture, out var l) ? l : 0;
        var cont = q["continue"].ToString();
        long? exact = null;
        if (q["resourceVersionMatch"] == "Exact")
        {
            exact = long.TryParse(q["resourceVersion"], NumberStyles.None, CultureInfo.InvariantCulture, out var rv) ? rv
                : throw ApiError.BadRequest("resourceVersionMatch=Exact needs a resourceVersion");
        }
        var result = Store.List(t.Type, t.Namespace, LabelSelector.Parse(q["labelSelector"]), FieldSelector.Parse(q["fieldSelector"], t.Type),
            limit, cont.Length > 0 ? cont : null, exact, metadataOnly);
        // The items are the store's own bytes, written as they are after this opening.
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
        using (var json = new System.Text.Json.Utf8JsonWriter(buffer, new System.Text.Json.JsonWriterOptions { SkipValidation = true }))
        {
            json.WriteStartObject();
            json.WriteString("kind", metadataOnly ? "PartialObjectMetadataList" : t.Type.Kind + "List");
            json.WriteString("apiVersion", metadataOnly ? "meta.k8s.io/v1" : t.Type.ApiVersion);
            json.WriteStartObject("metadata");
            json.WriteString("resourceVersion", result.ResourceVersion.ToString(CultureInfo.InvariantCulture));
            if (result.Continue is not null)
            {
                json.WriteString("continue", result.Continue);
                if (result.Remaining is { } remaining)
                {
                    json.WriteNumber("remainingItemCount", remaining);
                }
            }
            json.WriteEndObject();
            json.WriteStartArray("items");
            json.Flush();
        }
        return new ListResponse(buffer.WrittenSpan.ToArray(), result.Items, metadataOnly ? PartialMetadataListType : "application/json");
    }

    private async Task WatchAsync(HttpContext ctx, Target t)
    {
        var q = ctx.Request.Query;
        var fields = FieldSelector.Parse(q["fieldSelector"], t.Type);
        var metadataOnly = WantsMetadata(ctx, list: false);
        var watcher = Store.Watch(t.Type, t.Namespace, LabelSelector.Parse(q["labelSelector"]), fields, q["resourceVersion"]);
        try
        {
            var bookmarks = IsTrue(q["allowWatchBookmarks"]);
            var deadline = int.TryParse(q["timeoutSeconds"], NumberStyles.None, CultureInfo.InvariantCulture, out var s) && s > 0
                ? Store.Time.GetUtcNow().AddSeconds(s) : DateTimeOffset.MaxValue;
            ctx.Response.StatusCode = 200;
            ctx.Response.ContentType = metadataOnly ? PartialMetadataType : "application/json";
            await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
            while (true)
            {
                var left = deadline - Store.Time.GetUtcNow();
                if (left <= TimeSpan.Zero)
                {
                    return;
                }
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted);
                wait.CancelAfter(left < BookmarkInterval ? left : BookmarkInterval);
                try
                {
                    if (!await watcher.Frames.WaitToReadAsync(wait.Token))
                    {
                        if (watcher.Aborted)
                        {
                            ctx.Abort();
                        }
                        return;
                    }
                }
                catch (OperationCanceledException) when (!ctx.RequestAborted.IsCancellationRequested)
                {
                    if (bookmarks)
                    {
                        watcher.RequestBookmark();
                    }
                    continue;
                }
                while (watcher.Frames.TryRead(out var frame))
                {
                    // Objects (and bookmarks) as PartialObjectMetadata when asked; an ERROR's Status as it is.
                    var obj = metadataOnly && frame.Type != "ERROR" && frame.Object is JsonObject full ? ObjectStore.PartialObjectMetadata(full) : frame.Object;
                    var line = new JsonObject { ["type"] = frame.Type, ["object"] = obj }.ToJsonString() + "\n";
                    await ctx.Response.WriteAsync(line, ctx.RequestAborted);
                }
                await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
            }
        }
        finally
        {
            watcher.Close();
        }
    }
}
