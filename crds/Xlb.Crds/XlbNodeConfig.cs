namespace Xlb.Crds;

/// <summary>
/// The fully resolved desired state of one LB node (cluster-scoped, name = node name).
/// Written by the operator only; the agent on that node applies it and writes its status.
/// </summary>
public sealed record XlbNodeConfig : IKubernetesObject
{
    public const string KindName = "XlbNodeConfig";
    public string ApiVersion { get; init; } = XlbApi.ApiVersion;
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public required XlbNodeConfigSpec Spec { get; init; }
    public XlbNodeConfigStatus? Status { get; init; }
}

public sealed record XlbNodeConfigSpec
{
    public required string NodeName { get; init; }
    /// <summary>Increases by one whenever the content changes.</summary>
    public long Revision { get; init; }
    /// <summary>SHA-256 of the content (VIPs and listeners), hex.</summary>
    public string ContentHash { get; init; } = "";
    public List<NodeVip> Vips { get; init; } = [];
    public List<Listener> Listeners { get; init; } = [];
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<VipRole>))]
public enum VipRole
{
    Active,
    Standby,
}

public sealed record NodeVip
{
    public required string Address { get; init; }
    public required VipRole Role { get; init; }
    public required string Shard { get; init; }
}

/// <summary>One VIP:port served by this node, with everything the data plane needs.</summary>
public sealed record Listener
{
    /// <summary>namespace/mapping/port, for status and metrics.</summary>
    public required string Name { get; init; }
    public required string Vip { get; init; }
    public required int Port { get; init; }
    public L4Protocol Protocol { get; init; } = L4Protocol.TCP;
    public SchedulingAlgorithm Algorithm { get; init; } = SchedulingAlgorithm.Maglev;
    public List<NodeBackend> Backends { get; init; } = [];
    /// <summary>Resolved: the port is always set. Absent: no checks.</summary>
    public HealthCheckSpec? HealthCheck { get; init; }
}

public sealed record NodeBackend
{
    public required string Address { get; init; }
    public required int Port { get; init; }
    public int Weight { get; init; } = 1;
}

public sealed record XlbNodeConfigStatus
{
    public long AppliedRevision { get; init; }
    public string AppliedHash { get; init; } = "";
    public string? AttachMode { get; init; }
    /// <summary>Backends taken out of service by this node's health checks ("address:port").</summary>
    public List<string> UnhealthyBackends { get; init; } = [];
    public List<Condition> Conditions { get; init; } = [];
}
