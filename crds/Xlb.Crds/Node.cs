namespace Xlb.Crds;

/// <summary>The part of a core/v1 Node that XLB reads: its name, labels and addresses.</summary>
[System.Text.Json.Serialization.JsonUnmappedMemberHandling(System.Text.Json.Serialization.JsonUnmappedMemberHandling.Skip)]
public sealed record Node : IKubernetesObject
{
    public const string KindName = "Node";
    public string ApiVersion { get; init; } = "v1";
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public KubeNodeStatus? Status { get; init; }

    /// <summary>The address other LB nodes reach this one at (flow sync): its first InternalIP, else its first ExternalIP; null without either.</summary>
    public string? ReachableAddress() =>
        Status?.Addresses.FirstOrDefault(a => a.Type == "InternalIP")?.Address ?? Status?.Addresses.FirstOrDefault(a => a.Type == "ExternalIP")?.Address;
}

/// <summary>The part of a Node's status XLB reads.</summary>
[System.Text.Json.Serialization.JsonUnmappedMemberHandling(System.Text.Json.Serialization.JsonUnmappedMemberHandling.Skip)]
public sealed record KubeNodeStatus
{
    public List<NodeAddress> Addresses { get; init; } = [];
}

/// <summary>One of a Node's addresses: type Hostname, InternalIP, ExternalIP, InternalDNS or ExternalDNS.</summary>
[System.Text.Json.Serialization.JsonUnmappedMemberHandling(System.Text.Json.Serialization.JsonUnmappedMemberHandling.Skip)]
public sealed record NodeAddress
{
    public required string Type { get; init; }
    public required string Address { get; init; }
}
