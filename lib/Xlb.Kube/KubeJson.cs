using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Xlb.Crds;
using Xlb.Crds.Serialization;

namespace Xlb.Kube;

/// <summary>
/// The client's JSON contract: XLB's API contract, except that fields the types do not know are
/// skipped (a cluster may serve a newer schema than this binary) and a list or map sent as null
/// reads as empty. Manifests stay strict.
/// </summary>
public static class KubeJson
{
    public static JsonSerializerOptions Options { get; } = Create();

    private static JsonSerializerOptions Create()
    {
        var o = new JsonSerializerOptions(XlbJson.Options)
        {
            UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip,
            TypeInfoResolver = new DefaultJsonTypeInfoResolver { Modifiers = { XlbJson.ShareEnvelope, NullCollectionsAreEmpty } },
        };
        o.MakeReadOnly();
        return o;
    }

    /// <summary>
    /// The API server writes a Go nil slice or map as null where its field has no omitempty: an
    /// EndpointSlice of a Service with no endpoints comes as <c>"endpoints": null, "ports": null</c>.
    /// Such a list or map reads as empty, where the types say it is never null.
    /// </summary>
    private static void NullCollectionsAreEmpty(JsonTypeInfo info)
    {
        if (info.Kind != JsonTypeInfoKind.Object)
        {
            return;
        }
        foreach (var p in info.Properties)
        {
            if (p.Set is not { } set || p.IsSetNullable || Empty(p.PropertyType) is not { } empty)
            {
                continue;
            }
            p.IsSetNullable = true;
            p.Set = (obj, value) => set(obj, value ?? empty());
        }
    }

    private static Func<object>? Empty(Type type) =>
        type.IsArray ? () => Array.CreateInstance(type.GetElementType()!, 0)
        : type.IsGenericType && type.GetGenericTypeDefinition() is var g && (g == typeof(List<>) || g == typeof(Dictionary<,>)) ? () => Activator.CreateInstance(type)!
        : null;

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
