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
    private const int Stack = 256;

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
        return SharedStrings.Of(chars[..reader.CopyString(chars)]);
    }

    public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WriteStringValue(value);
}

/// <summary>
/// The table behind <see cref="SharedStringConverter"/>: open addressing over a power-of-two
/// array, at most half full. Lookups take no lock (a slot is written once, with a whole
/// reference, and a reader that misses a value being added adds it under the lock, where it
/// finds it). Adding takes one lock. When the table holds <see cref="Limit"/> values, the next
/// value starts a fresh table; readers still probing the old one finish there.
/// </summary>
public static class SharedStrings
{
    /// <summary>The most values the table holds before it starts afresh.</summary>
    public const int Limit = 1 << 16;

    private sealed class Table
    {
        public readonly string?[] Slots = new string?[Limit * 2];
        public int Count;
    }

    private static readonly Lock Gate = new();
    private static volatile Table _table = new();

    /// <summary>The one shared string with these characters.</summary>
    public static string Of(ReadOnlySpan<char> text)
    {
        var hash = string.GetHashCode(text);
        if (Find(_table, text, hash) is { } found)
        {
            return found;
        }
        lock (Gate)
        {
            var table = _table;
            if (Find(table, text, hash) is { } raced)
            {
                return raced;
            }
            if (table.Count >= Limit)
            {
                _table = table = new Table();
                Generation++;
            }
            var value = new string(text);
            var mask = table.Slots.Length - 1;
            var i = hash & mask;
            while (table.Slots[i] is not null)
            {
                i = (i + 1) & mask;
            }
            table.Count++;
            Volatile.Write(ref table.Slots[i], value);
            return value;
        }
    }

    /// <summary>How many times the table has started afresh.</summary>
    public static int Generation { get; private set; }

    private static string? Find(Table table, ReadOnlySpan<char> text, int hash)
    {
        var slots = table.Slots;
        var mask = slots.Length - 1;
        for (var i = hash & mask; ; i = (i + 1) & mask)
        {
            var slot = Volatile.Read(ref slots[i]);
            if (slot is null)
            {
                return null;
            }
            if (slot.AsSpan().SequenceEqual(text))
            {
                return slot;
            }
        }
    }
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
