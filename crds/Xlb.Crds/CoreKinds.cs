using System.Text.Json;
using System.Text.Json.Serialization;

namespace Xlb.Crds;

// The parts of built-in Kubernetes kinds that XLB reads (and, for Service, writes in status).
// Unknown fields are skipped: these are other people's types.

/// <summary>A core/v1 Namespace: its labels decide which pools its PortMappings may use.</summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record Namespace : IKubernetesObject
{
    public const string KindName = "Namespace";
    public string ApiVersion { get; init; } = "v1";
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
}

/// <summary>A core/v1 Service, for type LoadBalancer with XLB's loadBalancerClass and for serviceRef port names.</summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record Service : IKubernetesObject
{
    public const string KindName = "Service";
    /// <summary>The spec.loadBalancerClass XLB serves.</summary>
    public const string LoadBalancerClass = "xlb.io/xlb";
    public string ApiVersion { get; init; } = "v1";
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public ServiceSpec Spec { get; init; } = new();
    public ServiceStatus? Status { get; init; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record ServiceSpec
{
    public string? Type { get; init; }
    public string? LoadBalancerClass { get; init; }
    public string? ExternalTrafficPolicy { get; init; }
    public List<ServiceSpecPort> Ports { get; init; } = [];
    /// <summary>None or ClientIP.</summary>
    public string? SessionAffinity { get; init; }
    public SessionAffinityConfig? SessionAffinityConfig { get; init; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record SessionAffinityConfig
{
    public ClientIPConfig? ClientIP { get; init; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record ClientIPConfig
{
    /// <summary>1 to 86400; Kubernetes defaults it to 10800 (3 h).</summary>
    public int? TimeoutSeconds { get; init; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record ServiceSpecPort
{
    public string? Name { get; init; }
    public int Port { get; init; }
    public string Protocol { get; init; } = "TCP";
    public IntOrString? TargetPort { get; init; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record ServiceStatus
{
    public LoadBalancerStatus? LoadBalancer { get; init; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record LoadBalancerStatus
{
    public List<LoadBalancerIngress> Ingress { get; init; } = [];
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record LoadBalancerIngress
{
    public string? Ip { get; init; }
    /// <summary>VIP: traffic to the address goes through the load balancer (Kubernetes 1.30+).</summary>
    public string? IpMode { get; init; }
}

/// <summary>A discovery.k8s.io/v1 EndpointSlice: the backends of a Service, with readiness.</summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record EndpointSlice : IKubernetesObject
{
    public const string KindName = "EndpointSlice";
    /// <summary>The label that names the slice's Service.</summary>
    public const string ServiceNameLabel = "kubernetes.io/service-name";
    public string ApiVersion { get; init; } = "discovery.k8s.io/v1";
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    /// <summary>IPv4, IPv6 or FQDN.</summary>
    [JsonConverter(typeof(SharedStringConverter))]
    public string AddressType { get; init; } = "IPv4";
    [JsonConverter(typeof(SliceEndpointsConverter))]
    public List<SliceEndpoint> Endpoints { get; init; } = [];
    public List<SlicePort> Ports { get; init; } = [];
}

/// <summary>
/// One endpoint of a slice. A cluster's slices hold hundreds of thousands of these and an informer
/// keeps them all, so they are kept small: a value in its slice's list (no object of its own), its
/// one address as a string (an exact-size array only when it has several), the conditions one
/// shared object per combination, node names one string per node. They are read by their own
/// converter, which goes through an endpoint in one pass (see <see cref="SliceEndpointConverter"/>).
/// </summary>
[JsonConverter(typeof(SliceEndpointConverter))]
public readonly record struct SliceEndpoint
{
    // One address: the string itself; several: all of them in a string[]; none: null. Almost every
    // endpoint has one address, and an array around it would cost 32 bytes per endpoint.
    private readonly object? _addresses;
    private readonly EndpointConditions? _conditions;

    public SliceEndpoint()
    {
    }

    private SliceEndpoint(object? addresses, EndpointConditions conditions, string? node)
    {
        _addresses = addresses;
        Conditions = conditions;
        NodeName = node;
    }

    /// <summary>Fungible addresses of one endpoint: consumers may use the first only (the EndpointSlice API's rule). A new array each time for one address; read <see cref="FirstAddress"/> instead.</summary>
#pragma warning disable CA1819 // an exact-size array: a list's spare capacity, times every endpoint of a cluster, is memory for nothing
    public string[] Addresses
    {
        get => _addresses switch { string one => [one], string[] all => all, _ => [] };
        init => _addresses = value.Length switch { 0 => null, 1 => value[0], _ => value };
    }
#pragma warning restore CA1819

    /// <summary>The address consumers use (the first), or null when there is none.</summary>
    public string? FirstAddress => _addresses switch { string one => one, string[] all => all[0], _ => null };

    /// <summary>An endpoint as the converter reads it: <paramref name="addresses"/> is null, one string, or an array of two or more.</summary>
    internal static SliceEndpoint Read(object? addresses, EndpointConditions conditions, string? node) => new(addresses, conditions, node);

    // Unset is kept as null, so an endpoint read from JSON equals one built with the same values.
    public EndpointConditions Conditions { get => _conditions ?? EndpointConditions.Unset; init => _conditions = value == EndpointConditions.Unset ? null : value; }
    public string? NodeName { get; init; }
}

/// <summary>
/// Reads an endpoint in one pass over its fields, keeping what XLB reads (addresses, conditions,
/// node name) and skipping the rest (zone, hints, targetRef, hostname). The serializer's own
/// object reader keeps a frame per nested value; over a cluster's endpoints that bookkeeping cost
/// more than the reading. An unset or null conditions object means every condition unset.
/// </summary>
public sealed class SliceEndpointConverter : JsonConverter<SliceEndpoint>
{
    private static readonly EndpointConditionsConverter Conditions = new();

    public override SliceEndpoint Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new JsonException("an endpoint must be an object");
        }
        object? addresses = null;
        var conditions = EndpointConditions.Unset;
        string? node = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            if (reader.ValueTextEquals("addresses"u8))
            {
                reader.Read();
                addresses = ReadAddresses(ref reader);
            }
            else if (reader.ValueTextEquals("conditions"u8))
            {
                reader.Read();
                conditions = reader.TokenType == JsonTokenType.Null ? EndpointConditions.Unset : Conditions.Read(ref reader, typeof(EndpointConditions), options);
            }
            else if (reader.ValueTextEquals("nodeName"u8))
            {
                reader.Read();
                node = reader.TokenType == JsonTokenType.Null ? null : SharedStringConverter.Share(ref reader);
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }
        return SliceEndpoint.Read(addresses, conditions, node);
    }

    private static object? ReadAddresses(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new JsonException("endpoint addresses must be an array of strings");
        }
        // Almost every endpoint has one address: read it without a growing list.
        string? first = null;
        List<string>? more = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            var address = reader.TokenType == JsonTokenType.String ? reader.GetString()! : throw new JsonException("endpoint addresses must be an array of strings");
            if (first is null)
            {
                first = address;
            }
            else
            {
                (more ??= [first]).Add(address);
            }
        }
        return more is not null ? more.ToArray() : first;
    }

    public override void Write(Utf8JsonWriter writer, SliceEndpoint value, JsonSerializerOptions options)
    {
        writer.WriteStartObject();
        writer.WriteStartArray("addresses"u8);
        foreach (var address in value.Addresses)
        {
            writer.WriteStringValue(address);
        }
        writer.WriteEndArray();
        writer.WritePropertyName("conditions"u8);
        Conditions.Write(writer, value.Conditions, options);
        if (value.NodeName is { } node)
        {
            writer.WriteString("nodeName"u8, node);
        }
        writer.WriteEndObject();
    }
}

/// <summary>
/// A slice's endpoints, read into a list of exactly their number: a list grown while reading
/// keeps up to half its size spare, over every slice an informer holds. Null (the API server's
/// form of no endpoints) reads as none.
/// </summary>
public sealed class SliceEndpointsConverter : JsonConverter<List<SliceEndpoint>>
{
    private static readonly SliceEndpointConverter One = new();

    [ThreadStatic]
    private static List<SliceEndpoint>? _scratch;

    public override bool HandleNull => true;

    public override List<SliceEndpoint> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Null)
        {
            return [];
        }
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new JsonException("endpoints must be an array");
        }
        var scratch = _scratch ?? [];
        _scratch = null; // a converter that reads a nested slice meanwhile gets its own
        scratch.Clear();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            scratch.Add(One.Read(ref reader, typeof(SliceEndpoint), options));
        }
        var result = new List<SliceEndpoint>(scratch.Count);
        result.AddRange(scratch);
        if (scratch.Capacity <= 1 << 14)
        {
            scratch.Clear();
            _scratch = scratch;
        }
        return result;
    }

    public override void Write(Utf8JsonWriter writer, List<SliceEndpoint> value, JsonSerializerOptions options)
    {
        writer.WriteStartArray();
        foreach (var e in value)
        {
            One.Write(writer, e, options);
        }
        writer.WriteEndArray();
    }
}

/// <summary>Unset ready and serving mean true; unset terminating means false (the EndpointSlice API's rule).</summary>
[JsonConverter(typeof(EndpointConditionsConverter))]
public sealed record EndpointConditions
{
    /// <summary>All three unset.</summary>
    public static EndpointConditions Unset { get; } = new();

    public bool? Ready { get; init; }
    public bool? Serving { get; init; }
    public bool? Terminating { get; init; }

    private static readonly EndpointConditions[] Shared = [.. Enumerable.Range(0, 27).Select(i => new EndpointConditions
    {
        Ready = Tri(i % 3), Serving = Tri(i / 3 % 3), Terminating = Tri(i / 9),
    })];

    private static bool? Tri(int v) => v == 0 ? null : v == 1;

    private static int Index(bool? v) => v is null ? 0 : v.Value ? 1 : 2;

    /// <summary>The one shared object for these values (there are 27 combinations).</summary>
    public static EndpointConditions Of(bool? ready, bool? serving, bool? terminating) => Shared[Index(ready) + 3 * Index(serving) + 9 * Index(terminating)];
}

/// <summary>Reads conditions into the shared object for their values; writes the set ones.</summary>
public sealed class EndpointConditionsConverter : JsonConverter<EndpointConditions>
{
    public override EndpointConditions Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new JsonException("endpoint conditions must be an object");
        }
        bool? ready = null, serving = null, terminating = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            var name = reader.ValueTextEquals("ready"u8) ? "ready" : reader.ValueTextEquals("serving"u8) ? "serving" : reader.ValueTextEquals("terminating"u8) ? "terminating" : null;
            reader.Read();
            if (name is null || reader.TokenType == JsonTokenType.Null)
            {
                reader.Skip(); // another field, or an unset condition
                continue;
            }
            var value = reader.TokenType switch
            {
                JsonTokenType.True => true,
                JsonTokenType.False => false,
                _ => throw new JsonException($"endpoint condition {name} must be true, false or null"),
            };
            switch (name)
            {
                case "ready":
                    ready = value;
                    break;
                case "serving":
                    serving = value;
                    break;
                default:
                    terminating = value;
                    break;
            }
        }
        return EndpointConditions.Of(ready, serving, terminating);
    }

    public override void Write(Utf8JsonWriter writer, EndpointConditions value, JsonSerializerOptions options)
    {
        writer.WriteStartObject();
        foreach (var (name, v) in new[] { ("ready", value.Ready), ("serving", value.Serving), ("terminating", value.Terminating) })
        {
            if (v is { } set)
            {
                writer.WriteBoolean(name, set);
            }
        }
        writer.WriteEndObject();
    }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record SlicePort
{
    [JsonConverter(typeof(SharedStringConverter))]
    public string? Name { get; init; }
    public int? Port { get; init; }
    [JsonConverter(typeof(SharedStringConverter))]
    public string Protocol { get; init; } = "TCP";
}
