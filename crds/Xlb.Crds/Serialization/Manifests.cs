using System.Text.Json;
using System.Text.Json.Nodes;
using YamlDotNet.Core;

namespace Xlb.Crds.Serialization;

/// <summary>A problem with one document of a manifest, located so a person can find it.</summary>
public sealed record ManifestError(string Source, int Document, string Message)
{
    public override string ToString() => $"{Source} (document {Document}): {Message}";
}

/// <summary>Everything read from a set of manifests: the objects XLB knows and what could not be read.</summary>
public sealed record ManifestSet
{
    public List<LoadBalancerPool> Pools { get; } = [];
    public List<VipShard> Shards { get; } = [];
    public List<PortMapping> PortMappings { get; } = [];
    public List<XlbNodeConfig> NodeConfigs { get; } = [];
    public List<Node> Nodes { get; } = [];
    public List<ManifestError> Errors { get; } = [];
}

/// <summary>Reads Kubernetes manifests (multi-document YAML or JSON) into XLB's typed objects.</summary>
public static class Manifests
{
    /// <summary>Adds the objects of one manifest text to <paramref name="into"/>; one bad document never hides the others.</summary>
    public static void Read(string text, string source, ManifestSet into)
    {
        IReadOnlyList<JsonNode> docs;
        try
        {
            docs = Yaml.ReadDocuments(text);
        }
        catch (YamlException e)
        {
            into.Errors.Add(new ManifestError(source, 0, $"not valid YAML at line {e.Start.Line}, column {e.Start.Column}: {e.Message}"));
            return;
        }
        for (var i = 0; i < docs.Count; i++)
        {
            ReadDocument(docs[i], source, i + 1, into);
        }
    }

    public static ManifestSet Read(string text, string source)
    {
        var set = new ManifestSet();
        Read(text, source, set);
        return set;
    }

    private static void ReadDocument(JsonNode doc, string source, int index, ManifestSet into)
    {
        if (doc is not JsonObject obj)
        {
            into.Errors.Add(new ManifestError(source, index, "a manifest document must be a mapping"));
            return;
        }
        var apiVersion = (obj["apiVersion"] as JsonValue)?.GetValue<string>();
        var kind = (obj["kind"] as JsonValue)?.GetValue<string>();
        if (kind == "List" && obj["items"] is JsonArray items)
        {
            foreach (var item in items)
            {
                if (item is not null)
                {
                    ReadDocument(item.DeepClone(), source, index, into);
                }
            }
            return;
        }
        var name = obj["metadata"]?["name"]?.GetValue<string>() ?? "(unnamed)";
        try
        {
            switch ((apiVersion, kind))
            {
                case (XlbApi.ApiVersion, LoadBalancerPool.KindName):
                    into.Pools.Add(Deserialize<LoadBalancerPool>(obj));
                    break;
                case (XlbApi.ApiVersion, VipShard.KindName):
                    into.Shards.Add(Deserialize<VipShard>(obj));
                    break;
                case (XlbApi.ApiVersion, PortMapping.KindName):
                    into.PortMappings.Add(Deserialize<PortMapping>(obj));
                    break;
                case (XlbApi.ApiVersion, XlbNodeConfig.KindName):
                    into.NodeConfigs.Add(Deserialize<XlbNodeConfig>(obj));
                    break;
                case ("v1", Node.KindName):
                    into.Nodes.Add(Deserialize<Node>(obj));
                    break;
                case (null, _) or (_, null):
                    into.Errors.Add(new ManifestError(source, index, "apiVersion and kind are required"));
                    break;
                default:
                    into.Errors.Add(new ManifestError(source, index, $"{kind} {name}: kind {kind} of {apiVersion} is not one XLB reads"));
                    break;
            }
        }
        catch (JsonException e)
        {
            var where = string.IsNullOrEmpty(e.Path) || e.Path == "$" ? "" : $" at {e.Path.TrimStart('$', '.')}";
            into.Errors.Add(new ManifestError(source, index, $"{kind} {name}{where}: {Clean(e.Message)}"));
        }
    }

    private static T Deserialize<T>(JsonObject obj) =>
        (T)(obj.Deserialize(XlbJson.Options.GetTypeInfo(typeof(T)))
            ?? throw new JsonException("document is empty"));

    /// <summary>System.Text.Json appends its own path and position; we report the path ourselves.</summary>
    private static string Clean(string message)
    {
        var cut = message.IndexOf(" Path: ", StringComparison.Ordinal);
        return cut >= 0 ? message[..cut] : message;
    }

    public static string ToYaml<T>(T obj) where T : IKubernetesObject =>
        Yaml.Write(JsonSerializer.SerializeToNode(obj, XlbJson.Options.GetTypeInfo(typeof(T))));
}
