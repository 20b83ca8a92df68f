using Xlb.Crds.Schema;

namespace Xlb.Crds;

/// <summary>A pool of VIP addresses (IPv4 and IPv6) that PortMappings draw from, and who may draw from it.</summary>
[Crd("loadbalancerpools", CrdScope.Cluster, ShortNames = ["xpool"])]
[PrinterColumn("Allocated", "integer", ".status.allocated", Description = "Addresses handed out")]
[PrinterColumn("Available", "integer", ".status.available", Description = "Addresses left (saturates at 2^63-1)")]
[PrinterColumn("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status")]
[PrinterColumn("Reason", "string", ".status.conditions[?(@.type==\"Ready\")].reason", Priority = 1)]
[PrinterColumn("Age", "date", ".metadata.creationTimestamp")]
public sealed record LoadBalancerPool : IKubernetesObject
{
    public const string KindName = "LoadBalancerPool";
    public string ApiVersion { get; init; } = XlbApi.ApiVersion;
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public required LoadBalancerPoolSpec Spec { get; init; }
    public LoadBalancerPoolStatus? Status { get; init; }
}

/// <summary>The addresses of a pool and the rules for handing them out.</summary>
public sealed record LoadBalancerPoolSpec
{
    /// <summary>Address blocks: a CIDR ("192.0.2.0/28", "2001:db8::/120") or an inclusive range ("192.0.2.10-192.0.2.20"). Blocks of two pools must not overlap.</summary>
    [Length(1, 64)]
    public required List<string> Blocks { get; init; }
    /// <summary>Addresses, CIDRs or ranges inside the blocks that are never handed out (gateways, addresses used elsewhere).</summary>
    [Length(0, 256)]
    public List<string> Reserved { get; init; } = [];
    /// <summary>Whether PortMappings with vip: Auto may draw from this pool. When false, only mappings that name an address of the pool get one.</summary>
    public bool AutoAssign { get; init; } = true;
    /// <summary>Who may draw from this pool.</summary>
    public PoolAllocation Allocation { get; init; } = new();
    /// <summary>Whether several PortMappings may share one VIP.</summary>
    public PoolSharing Sharing { get; init; } = new();
    /// <summary>A disabled pool hands out no new addresses; addresses already handed out stay.</summary>
    public bool Disabled { get; init; }
}

/// <summary>Who may draw addresses from a pool.</summary>
public sealed record PoolAllocation
{
    /// <summary>Only PortMappings in namespaces whose labels match draw from this pool; absent: every namespace.</summary>
    public LabelSelector? NamespaceSelector { get; init; }
}

/// <summary>VIP sharing rules of a pool.</summary>
public sealed record PoolSharing
{
    /// <summary>When true, PortMappings with the same vip.shareKey share one address, as long as their ports do not clash.</summary>
    public bool AllowSharedVips { get; init; }
}

/// <summary>What the operator observed about a pool.</summary>
public sealed record LoadBalancerPoolStatus
{
    /// <summary>The metadata.generation this status describes.</summary>
    public long? ObservedGeneration { get; init; }
    /// <summary>Addresses handed out, both families.</summary>
    public long Allocated { get; init; }
    /// <summary>Addresses that can still be handed out, both families (saturates at 2^63-1).</summary>
    public long Available { get; init; }
    /// <summary>Per address family: IPv4, then IPv6.</summary>
    [ListMap("family")]
    public List<FamilyUsage> Families { get; init; } = [];
    /// <summary>Ready, Exhausted, Stalled (for example: overlaps another pool).</summary>
    [ListMap("type")]
    public List<Condition> Conditions { get; init; } = [];
}

/// <summary>Address usage of one family in a pool.</summary>
public sealed record FamilyUsage
{
    /// <summary>IPv4 or IPv6.</summary>
    public required IpFamily Family { get; init; }
    /// <summary>Addresses in the blocks minus the reserved ones (saturates at 2^63-1).</summary>
    public long Total { get; init; }
    /// <summary>Addresses handed out.</summary>
    public long Allocated { get; init; }
    /// <summary>Addresses left.</summary>
    public long Available { get; init; }
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<IpFamily>))]
public enum IpFamily
{
    IPv4,
    IPv6,
}
