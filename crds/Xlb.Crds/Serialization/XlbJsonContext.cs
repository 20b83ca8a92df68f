using System.Text.Json.Serialization;

namespace Xlb.Crds.Serialization;

/// <summary>
/// The one JSON contract of XLB's API types: the runtime, the YAML reader and writer and the
/// CRD generator all go through it. Unknown fields are errors (as kubectl's strict validation).
/// </summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    RespectRequiredConstructorParameters = true,
    WriteIndented = false)]
[JsonSerializable(typeof(LoadBalancerPool))]
[JsonSerializable(typeof(VipShard))]
[JsonSerializable(typeof(PortMapping))]
[JsonSerializable(typeof(XlbNodeConfig))]
[JsonSerializable(typeof(XlbNodeConfigSpec))]
[JsonSerializable(typeof(XlbNodeConfigStatus))]
[JsonSerializable(typeof(Node))]
public sealed partial class XlbJsonContext : JsonSerializerContext
{
}
