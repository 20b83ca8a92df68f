using System.Buffers;
using System.Text;
using System.Text.Json;
using Xlb.Crds;

namespace Xlb.Operator.Core;

/// <summary>
/// What the operator reads back of a chunk, kept in an annotation on it: its VIPs (address, role,
/// shard) and its listeners' identities (name, VIP, port, protocol). With it the operator lists
/// and watches chunks as metadata alone (PartialObjectMetadata): a restart reads a few kilobytes
/// per chunk instead of every backend of every listener. A chunk without the annotation (written
/// by an older operator, or whose summary would pass <see cref="MaxLength"/>) is read whole.
/// <code>{"v":1,"vips":[["10.0.0.1","Active","edge"]],"listeners":[["ns/name/http","10.0.0.1",80,"TCP"]]}</code>
/// </summary>
public static class ChunkSummaries
{
    public const string Annotation = "xlb.io/summary";

    /// <summary>The longest summary kept (annotations share 256 KiB per object).</summary>
    public const int MaxLength = 64 * 1024;

    private const int Version = 1;

    /// <summary>The summary of a chunk's content, or null when it would pass <see cref="MaxLength"/>.</summary>
    public static string? Write(IReadOnlyList<NodeVip> vips, IReadOnlyList<Listener> listeners)
    {
        var buffer = new ArrayBufferWriter<byte>(64 + (vips.Count * 48) + (listeners.Count * 80));
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteNumber("v"u8, Version);
            w.WriteStartArray("vips"u8);
            foreach (var vip in vips)
            {
                w.WriteStartArray();
                w.WriteStringValue(vip.Address);
                w.WriteStringValue(vip.Role == VipRole.Active ? "Active" : "Standby");
                w.WriteStringValue(vip.Shard);
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteStartArray("listeners"u8);
            foreach (var l in listeners)
            {
                w.WriteStartArray();
                w.WriteStringValue(l.Name);
                w.WriteStringValue(l.Vip);
                w.WriteNumberValue(l.Port);
                w.WriteStringValue(l.Protocol == L4Protocol.UDP ? "UDP" : "TCP");
                w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return buffer.WrittenCount > MaxLength ? null : Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>
    /// The VIPs and listener identities of a summary (listeners carry name, VIP, port and protocol
    /// only); null when there is none, or it is not one this version reads.
    /// </summary>
    public static (List<NodeVip> Vips, List<Listener> Listeners)? Read(string? text)
    {
        if (string.IsNullOrEmpty(text) || text.Length > MaxLength)
        {
            return null;
        }
        try
        {
            var reader = new Utf8JsonReader(Encoding.UTF8.GetBytes(text));
            List<NodeVip>? vips = null;
            List<Listener>? listeners = null;
            var version = 0;
            Expect(ref reader, JsonTokenType.StartObject);
            while (Next(ref reader) == JsonTokenType.PropertyName)
            {
                if (reader.ValueTextEquals("v"u8))
                {
                    Expect(ref reader, JsonTokenType.Number);
                    version = reader.GetInt32();
                }
                else if (reader.ValueTextEquals("vips"u8))
                {
                    vips = [];
                    Expect(ref reader, JsonTokenType.StartArray);
                    while (Next(ref reader) == JsonTokenType.StartArray)
                    {
                        var address = Shared(ref reader);
                        var role = String(ref reader) switch { "Active" => VipRole.Active, "Standby" => VipRole.Standby, _ => throw new JsonException("role") };
                        var shard = Shared(ref reader);
                        Expect(ref reader, JsonTokenType.EndArray);
                        vips.Add(new NodeVip { Address = address, Role = role, Shard = shard });
                    }
                }
                else if (reader.ValueTextEquals("listeners"u8))
                {
                    listeners = [];
                    Expect(ref reader, JsonTokenType.StartArray);
                    while (Next(ref reader) == JsonTokenType.StartArray)
                    {
                        var name = String(ref reader);
                        var vip = Shared(ref reader);
                        Expect(ref reader, JsonTokenType.Number);
                        var port = reader.GetInt32();
                        var protocol = String(ref reader) switch { "TCP" => L4Protocol.TCP, "UDP" => L4Protocol.UDP, _ => throw new JsonException("protocol") };
                        Expect(ref reader, JsonTokenType.EndArray);
                        listeners.Add(new Listener { Name = name, Vip = vip, Port = port, Protocol = protocol });
                    }
                }
                else
                {
                    reader.Read();
                    reader.Skip();
                }
            }
            return version == Version && vips is not null && listeners is not null ? (vips, listeners) : null;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            return null;
        }
    }

    private static JsonTokenType Next(ref Utf8JsonReader reader) => reader.Read() ? reader.TokenType : throw new JsonException("truncated");

    private static void Expect(ref Utf8JsonReader reader, JsonTokenType type)
    {
        if (Next(ref reader) != type)
        {
            throw new JsonException($"expected {type}");
        }
    }

    private static string String(ref Utf8JsonReader reader)
    {
        Expect(ref reader, JsonTokenType.String);
        return reader.GetString()!;
    }

    // VIPs and shard names recur across chunks and objects: one string per value (see SharedStrings).
    private static string Shared(ref Utf8JsonReader reader)
    {
        Expect(ref reader, JsonTokenType.String);
        return SharedStringConverter.Share(ref reader);
    }
}
