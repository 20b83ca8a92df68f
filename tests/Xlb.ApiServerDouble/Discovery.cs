using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;

namespace Xlb.ApiServerDouble;

/// <summary>
/// Discovery (API Concepts, "Discovery API"): the unaggregated documents, which kubectl falls
/// back to when the aggregated form is not offered.
/// </summary>
public sealed partial class ApiServer
{
    private async Task<bool> ServeDiscoveryAsync(HttpContext ctx, string path)
    {
        if (path.TrimEnd('/') is "/healthz" or "/readyz" or "/livez")
        {
            ctx.Response.ContentType = "text/plain";
            await ctx.Response.WriteAsync("ok", ctx.RequestAborted);
            return true;
        }
        JsonNode? doc = path.TrimEnd('/') switch
        {
            "/version" => new JsonObject
            {
                ["major"] = "1",
                ["minor"] = "32",
                ["gitVersion"] = "v1.32.0-xlb-double",
                ["platform"] = "linux/amd64",
            },
            "/api" => new JsonObject
            {
                ["kind"] = "APIVersions",
                ["versions"] = new JsonArray("v1"),
                ["serverAddressByClientCIDRs"] = new JsonArray(new JsonObject
                {
                    ["clientCIDR"] = "0.0.0.0/0",
                    ["serverAddress"] = Url.Authority,
                }),
            },
            "/apis" => GroupList(),
            var p when p.StartsWith("/openapi/v3", StringComparison.Ordinal) => OpenApi(p) ?? throw NotFoundPath(p),
            var p when p.StartsWith("/openapi", StringComparison.Ordinal) => throw NotFoundPath(p),
            var p when ResourceListFor(p) is { } list => list,
            _ => null,
        };
        if (doc is null)
        {
            return false;
        }
        await WriteAsync(ctx, 200, doc);
        return true;
    }

    private JsonObject GroupList()
    {
        var groups = new JsonArray();
        foreach (var g in _types.Where(t => t.Group.Length > 0).GroupBy(t => t.Group))
        {
            var versions = new JsonArray();
            foreach (var v in g.Select(t => t.Version).Distinct())
            {
                versions.Add(new JsonObject { ["groupVersion"] = $"{g.Key}/{v}", ["version"] = v });
            }
            groups.Add(new JsonObject
            {
                ["name"] = g.Key,
                ["versions"] = versions,
                ["preferredVersion"] = versions[0]!.DeepClone(),
            });
        }
        return new JsonObject { ["kind"] = "APIGroupList", ["apiVersion"] = "v1", ["groups"] = groups };
    }

    private JsonObject? ResourceListFor(string path)
    {
        var segs = path.Trim('/').Split('/');
        var groupVersion = segs switch
        {
            ["api", var v] => v,
            ["apis", var g, var v] => $"{g}/{v}",
            _ => null,
        };
        if (groupVersion is null || !_types.Any(t => t.GroupVersion == groupVersion))
        {
            return null;
        }
        var resources = new JsonArray();
        foreach (var t in _types.Where(t => t.GroupVersion == groupVersion))
        {
            resources.Add(new JsonObject
            {
                ["name"] = t.Plural,
                ["singularName"] = t.Singular,
                ["namespaced"] = t.Namespaced,
                ["kind"] = t.Kind,
                ["verbs"] = new JsonArray("create", "delete", "get", "list", "patch", "update", "watch"),
                ["shortNames"] = new JsonArray([.. t.ShortNames.Select(s => (JsonNode)s)]),
                ["categories"] = new JsonArray([.. t.Categories.Select(s => (JsonNode)s)]),
            });
            if (t.StatusSubresource)
            {
                resources.Add(new JsonObject
                {
                    ["name"] = t.Plural + "/status",
                    ["singularName"] = "",
                    ["namespaced"] = t.Namespaced,
                    ["kind"] = t.Kind,
                    ["verbs"] = new JsonArray("get", "patch", "update"),
                });
            }
        }
        return new JsonObject
        {
            ["kind"] = "APIResourceList",
            ["apiVersion"] = "v1",
            ["groupVersion"] = groupVersion,
            ["resources"] = resources,
        };
    }
}
