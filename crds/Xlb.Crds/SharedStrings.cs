using System.Text.Json;
using System.Text.Json.Serialization;

namespace Xlb.Crds;

/// <summary>
/// Strings that take few distinct values over a whole cluster (node names, namespaces, condition
/// types, statuses, reasons, times and most messages), one string per distinct value: an informer
/// keeps one per object or endpoint, hundreds of thousands of copies of a few hundred values. The
/// table is bounded: when it is full it starts afresh, so distinct values (a message that names its
/// object) cost at most the table and never stop the sharing of the common ones.
/// </summary>
public sealed class SharedStringConverter : JsonConverter<string>
{
    private const int Limit = 1 << 16;
    private const int Stack = 256;
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> Table = new(StringComparer.Ordinal);
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string>.AlternateLookup<ReadOnlySpan<char>> Lookup =
        Table.GetAlternateLookup<ReadOnlySpan<char>>();

    public override bool HandleNull => false;

    public override string? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => Share(ref reader);

    /// <summary>The string (or property name) under the reader, as the one shared string for its value.</summary>
    public static string Share(ref Utf8JsonReader reader)
    {
        if (reader.TokenType is not (JsonTokenType.String or JsonTokenType.PropertyName))
        {
            throw new JsonException($"expected a string, not {reader.TokenType}");
        }
        // A value met before is found without making a string of it: decoded onto the stack and
        // looked up by its characters. The bytes are at least as many as the characters they decode to.
        var bytes = reader.HasValueSequence ? reader.ValueSequence.Length : reader.ValueSpan.Length;
        if (bytes > Stack)
        {
            return reader.GetString()!;
        }
        Span<char> chars = stackalloc char[Stack];
        var text = chars[..reader.CopyString(chars)];
        if (Lookup.TryGetValue(text, out var shared))
        {
            return shared;
        }
        var value = new string(text);
        if (Table.Count >= Limit)
        {
            Table.Clear();
        }
        return Table.GetOrAdd(value, value);
    }

    public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WriteStringValue(value);
}

/// <summary>
/// Labels and annotations: keys and values through <see cref="SharedStringConverter"/> (every
/// EndpointSlice carries the same label keys, and most of the same values: managed-by, the
/// Service's own labels). A long value (an annotation holding a whole manifest) is not shared.
/// </summary>
public sealed class SharedStringMapConverter : JsonConverter<Dictionary<string, string>>
{
    public override Dictionary<string, string> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new JsonException("labels and annotations must be an object of strings");
        }
        var map = new Dictionary<string, string>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            var key = SharedStringConverter.Share(ref reader);
            reader.Read();
            map[key] = reader.TokenType == JsonTokenType.String ? SharedStringConverter.Share(ref reader) : throw new JsonException($"the value of '{key}' must be a string");
        }
        return map;
    }

    public override void Write(Utf8JsonWriter writer, Dictionary<string, string> value, JsonSerializerOptions options)
    {
        writer.WriteStartObject();
        foreach (var (key, text) in value)
        {
            writer.WriteString(key, text);
        }
        writer.WriteEndObject();
    }
}
