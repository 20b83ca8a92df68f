using System.Net;
using Xlb.Crds;

namespace Xlb.Operator.Core;

/// <summary>Names one object of the input, for problems and status.</summary>
public sealed record ObjectRef(string Kind, string? Namespace, string Name)
{
    public override string ToString() => Namespace is null ? $"{Kind} {Name}" : $"{Kind} {Namespace}/{Name}";

    public static ObjectRef Of(IKubernetesObject o) => new(o.Kind, o.Metadata.Namespace, o.Metadata.Name ?? "");
}

/// <summary>Why one object could not be (fully) programmed. Reason is CamelCase, for a condition.</summary>
public sealed record Problem(ObjectRef Object, string Reason, string Message)
{
    public override string ToString() => $"{Object}: {Reason}: {Message}";
}

public sealed record PlanInput
{
    public IReadOnlyList<LoadBalancerPool> Pools { get; init; } = [];
    public IReadOnlyList<VipShard> Shards { get; init; } = [];
    public IReadOnlyList<PortMapping> PortMappings { get; init; } = [];
    public IReadOnlyList<Node> Nodes { get; init; } = [];
    /// <summary>Namespaces with their labels, for pools' namespaceSelector. A namespace not listed has no labels.</summary>
    public IReadOnlyList<Namespace> Namespaces { get; init; } = [];
    /// <summary>Services, for serviceRef port names.</summary>
    public IReadOnlyList<Service> Services { get; init; } = [];
    public IReadOnlyList<EndpointSlice> EndpointSlices { get; init; } = [];
    /// <summary>
    /// The node configs rendered last time, by node, with their agents' status: revisions continue
    /// from them and VIPs stay put. A chunked config must come assembled: its VIPs, and its
    /// listeners' names and VIPs (the planner reads no more of a previous listener).
    /// </summary>
    public IReadOnlyDictionary<string, XlbNodeConfig> Previous { get; init; } = new Dictionary<string, XlbNodeConfig>();
    /// <summary>When each node's agent last renewed its Lease. Null: liveness is not tracked (standalone mode) and every node is ready.</summary>
    public IReadOnlyDictionary<string, DateTimeOffset>? AgentRenewals { get; init; }
    /// <summary>The time of this plan: lease expiry and condition transition times are measured against it.</summary>
    public DateTimeOffset Now { get; init; }
    /// <summary>
    /// Node content larger than this (bytes of JSON) is split into XlbNodeConfigChunks. Null: never
    /// split (standalone mode writes files, which have no size limit).
    /// </summary>
    public long? ChunkLimit { get; init; }
    /// <summary>Reuse from the previous plan of this process; the result is the same with or without it.</summary>
    public PlanMemo? Memo { get; init; }
    /// <summary>
    /// How many threads a plan may use to validate and render the many mappings the memo cannot
    /// answer (a cold start): null for every processor, 1 for the calling thread only. The result
    /// is the same either way.
    /// </summary>
    public int? MaxParallelism { get; init; }
}

public sealed record PlanResult
{
    public required IReadOnlyList<XlbNodeConfig> NodeConfigs { get; init; }
    /// <summary>The chunks the node configs list (empty when every config fits inline).</summary>
    public IReadOnlyList<XlbNodeConfigChunk> Chunks { get; init; } = [];
    public required IReadOnlyList<Problem> Problems { get; init; }
    public required IReadOnlyDictionary<ObjectRef, IPAddress> Vips { get; init; }
    /// <summary>Per shard, where each VIP is served.</summary>
    public required IReadOnlyDictionary<string, IReadOnlyList<VipPlacement>> Placements { get; init; }
    /// <summary>The status every input object should have now (conditions merged with the ones it has).</summary>
    public required IReadOnlyDictionary<string, LoadBalancerPoolStatus> PoolStatuses { get; init; }
    public required IReadOnlyDictionary<string, VipShardStatus> ShardStatuses { get; init; }
    public required IReadOnlyDictionary<ObjectRef, PortMappingStatus> MappingStatuses { get; init; }
    /// <summary>When the plan can change with no input changing: the next possible agent Lease expiry. Null: never.</summary>
    public DateTimeOffset? NextExpiry { get; init; }
}
