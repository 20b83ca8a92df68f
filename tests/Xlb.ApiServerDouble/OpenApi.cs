using System.Text.Json.Nodes;

namespace Xlb.ApiServerDouble;

/// <summary>
/// The OpenAPI v3 discovery kubectl reads before it writes: per group-version, the object paths
/// with their operations, each declaring the fieldValidation query parameter and its
/// group-version-kind. That is what tells kubectl the server validates fields itself
/// (--validate=strict then sends fieldValidation=Strict instead of validating client-side).
/// No schemas are published.
/// </summary>
public sealed partial class ApiServer
{
    private JsonObject? OpenApi(string path)
    {
        var rest = path.TrimEnd('/')["/openapi/v3".Length..].TrimStart('/');
        if (rest.Length == 0)
        {
            var paths = new JsonObject();
            foreach (var gv in _types.Select(t => t.GroupVersion).Distinct())
            {
                var key = gv.Contains('/') ? "apis/" + gv : "api/" + gv;
                paths[key] = new JsonObject { ["serverRelativeURL"] = $"/openapi/v3/{key}?hash={Hash(gv)}" };
            }
            return new JsonObject { ["paths"] = paths };
        }
        var groupVersion = rest.StartsWith("apis/", StringComparison.Ordinal) ? rest[5..] : rest.StartsWith("api/", StringComparison.Ordinal) ? rest[4..] : null;
        var types = _types.Where(t => t.GroupVersion == groupVersion).ToList();
        if (types.Count == 0)
        {
            return null;
        }
        var ops = new JsonObject();
        foreach (var t in types)
        {
            var prefix = t.Group.Length == 0 ? $"/api/{t.Version}" : $"/apis/{t.Group}/{t.Version}";
            var scope = t.Namespaced ? "/namespaces/{namespace}" : "";
            ops[$"{prefix}{scope}/{t.Plural}"] = Operations(t, "get", "post");
            ops[$"{prefix}{scope}/{t.Plural}/{{name}}"] = Operations(t, "get", "put", "patch", "delete");
            if (t.StatusSubresource)
            {
                ops[$"{prefix}{scope}/{t.Plural}/{{name}}/status"] = Operations(t, "get", "put", "patch");
            }
        }
        return new JsonObject
        {
            ["openapi"] = "3.0.0",
            ["info"] = new JsonObject { ["title"] = "Kubernetes", ["version"] = "v1.32.0" },
            ["paths"] = ops,
            ["components"] = new JsonObject { ["schemas"] = new JsonObject() },
        };
    }

    private static JsonObject Operations(ResourceType t, params string[] verbs)
    {
        var item = new JsonObject();
        foreach (var verb in verbs)
        {
            var op = new JsonObject
            {
                ["x-kubernetes-group-version-kind"] = new JsonObject { ["group"] = t.Group, ["kind"] = t.Kind, ["version"] = t.Version },
                ["responses"] = new JsonObject { ["200"] = new JsonObject { ["description"] = "OK" } },
            };
            if (verb is "post" or "put" or "patch")
            {
                op["parameters"] = new JsonArray(new JsonObject
                {
                    ["name"] = "fieldValidation",
                    ["in"] = "query",
                    ["schema"] = new JsonObject { ["type"] = "string", ["uniqueItems"] = true },
                });
            }
            item[verb] = op;
        }
        return item;
    }

    private static string Hash(string text) =>
        Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(text)))[..16];
}
