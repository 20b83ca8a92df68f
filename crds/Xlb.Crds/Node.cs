namespace Xlb.Crds;

/// <summary>The part of a core/v1 Node that XLB reads: its name and labels.</summary>
[System.Text.Json.Serialization.JsonUnmappedMemberHandling(System.Text.Json.Serialization.JsonUnmappedMemberHandling.Skip)]
public sealed record Node : IKubernetesObject
{
    public const string KindName = "Node";
    public string ApiVersion { get; init; } = "v1";
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
}
