using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Xlb.Crds;
using Xlb.Crds.Serialization;

namespace Xlb.Kube;

/// <summary>
/// The client's JSON contract: XLB's API contract, except that fields the types do not know are
/// skipped. A cluster may serve a newer schema than this binary; manifests stay strict.
/// </summary>
public static class KubeJson
{
    public static JsonSerializerOptions Options { get; } = Create();

    private static JsonSerializerOptions Create()
    {
        var o = new JsonSerializerOptions(XlbJson.Options) { UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip };
        o.MakeReadOnly();
        return o;
    }

    public static JsonObject ToNode<T>(T value) =>
        value as JsonObject ?? JsonSerializer.SerializeToNode(value, Options)?.AsObject() ?? throw new JsonException("an object serialized to null");

    public static ObjectMeta Metadata(JsonObject obj) =>
        obj["metadata"]?.Deserialize<ObjectMeta>(Options) ?? throw new JsonException("the object has no metadata");
}

/// <summary>Any object, untyped beyond its metadata: for kinds XLB has no type for, and for tests.</summary>
public sealed record KubeObject : IKubernetesObject
{
    public string ApiVersion { get; init; } = "";
    public string Kind { get; init; } = "";
    public ObjectMeta Metadata { get; init; } = new();
    [JsonExtensionData]
    public Dictionary<string, JsonElement> Fields { get; init; } = [];
}

/// <summary>An object's identity and metadata only: for caches that must know what exists, not what it holds.</summary>
public sealed record PartialObject : IKubernetesObject
{
    public string ApiVersion { get; init; } = "";
    public string Kind { get; init; } = "";
    public ObjectMeta Metadata { get; init; } = new();
}
