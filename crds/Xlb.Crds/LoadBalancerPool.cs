namespace Xlb.Crds;

/// <summary>A pool of VIP addresses (cluster-scoped) that PortMappings draw from.</summary>
public sealed record LoadBalancerPool : IKubernetesObject
{
    public const string KindName = "LoadBalancerPool";
    public string ApiVersion { get; init; } = XlbApi.ApiVersion;
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public required LoadBalancerPoolSpec Spec { get; init; }
    public LoadBalancerPoolStatus? Status { get; init; }
}

public sealed record LoadBalancerPoolSpec
{
    /// <summary>Address blocks: a CIDR ("192.0.2.0/28") or an inclusive range ("192.0.2.10-192.0.2.20").</summary>
    public List<string> Blocks { get; init; } = [];
    /// <summary>Addresses or blocks inside <see cref="Blocks"/> that are never handed out.</summary>
    public List<string> Reserved { get; init; } = [];
    /// <summary>Whether mappings that ask for an automatic VIP may draw from this pool.</summary>
    public bool AutoAssign { get; init; } = true;
    /// <summary>A disabled pool hands out no new addresses; existing allocations stay.</summary>
    public bool Disabled { get; init; }
}

public sealed record LoadBalancerPoolStatus
{
    public List<Condition> Conditions { get; init; } = [];
}
