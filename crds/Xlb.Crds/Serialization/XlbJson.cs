using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace Xlb.Crds.Serialization;

/// <summary>
/// The one JSON contract of XLB's API types: the runtime, the YAML reader and writer and the
/// CRD generator all go through it. Unknown fields are errors (as kubectl's strict validation).
/// Reflection-based on purpose: the source generator builds init-only records through a
/// parameterized creator and so replaces property initializers (our defaults) with default(T).
/// </summary>
public static class XlbJson
{
    public static JsonSerializerOptions Options { get; } = Create();

    private static JsonSerializerOptions Create()
    {
        var o = new JsonSerializerOptions
        {
            PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
            UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
            RespectNullableAnnotations = true,
            TypeInfoResolver = new DefaultJsonTypeInfoResolver { Modifiers = { ShareEnvelope } },
        };
        o.MakeReadOnly();
        return o;
    }

    private static readonly SharedStringConverter Shared = new();

    /// <summary>Every object's apiVersion and kind are read as one shared string per value (an informer holds thousands of objects of one kind).</summary>
    public static void ShareEnvelope(JsonTypeInfo info)
    {
        if (info.Kind != JsonTypeInfoKind.Object)
        {
            return;
        }
        foreach (var p in info.Properties)
        {
            if (p.PropertyType == typeof(string) && p.Name is "apiVersion" or "kind" && p.CustomConverter is null)
            {
                p.CustomConverter = Shared;
            }
        }
    }

    public static JsonTypeInfo<T> Info<T>() => (JsonTypeInfo<T>)Options.GetTypeInfo(typeof(T));

    /// <summary>The writer options the serializer itself takes from <paramref name="options"/> when it writes bytes: a writer made with them writes the same bytes.</summary>
    public static JsonWriterOptions WriterOptions(JsonSerializerOptions options) =>
        new() { Encoder = options.Encoder, Indented = options.WriteIndented, MaxDepth = options.MaxDepth };
}
