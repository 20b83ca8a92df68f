namespace Xlb.Crds;

/// <summary>A group of VIPs placed on the LB nodes that its node selector picks (cluster-scoped).</summary>
public sealed record VipShard : IKubernetesObject
{
    public const string KindName = "VipShard";
    public string ApiVersion { get; init; } = XlbApi.ApiVersion;
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public required VipShardSpec Spec { get; init; }
    public VipShardStatus? Status { get; init; }
}

public sealed record VipShardSpec
{
    /// <summary>The LoadBalancerPool that automatic VIPs of this shard come from.</summary>
    public required string PoolRef { get; init; }
    /// <summary>Which nodes run agents for this shard. Empty selects every LB node.</summary>
    public LabelSelector? NodeSelector { get; init; }
}

public sealed record VipShardStatus
{
    public List<VipPlacement> Vips { get; init; } = [];
    public List<Condition> Conditions { get; init; } = [];
}

/// <summary>Where one VIP of a shard is served.</summary>
public sealed record VipPlacement
{
    public required string Address { get; init; }
    public required string ActiveNode { get; init; }
    public string? StandbyNode { get; init; }
}
