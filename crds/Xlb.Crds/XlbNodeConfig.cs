using Xlb.Crds.Schema;

namespace Xlb.Crds;

/// <summary>
/// The fully resolved desired state of one LB node (name = node name). Written by the operator
/// only; the agent on that node applies it and writes its status.
/// </summary>
[Crd("xlbnodeconfigs", CrdScope.Cluster, ShortNames = ["xnc"])]
[PrinterColumn("Revision", "integer", ".spec.revision")]
[PrinterColumn("Applied", "integer", ".status.appliedRevision")]
[PrinterColumn("VIPs", "integer", ".spec.vipCount")]
[PrinterColumn("Listeners", "integer", ".spec.listenerCount")]
[PrinterColumn("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status")]
[PrinterColumn("Attach", "string", ".status.attachMode", Priority = 1)]
[PrinterColumn("Age", "date", ".metadata.creationTimestamp")]
public sealed record XlbNodeConfig : IKubernetesObject
{
    public const string KindName = "XlbNodeConfig";
    public string ApiVersion { get; init; } = XlbApi.ApiVersion;
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public required XlbNodeConfigSpec Spec { get; init; }
    public XlbNodeConfigStatus? Status { get; init; }
}

/// <summary>Everything one node's agent programs: its VIPs and their listeners.</summary>
public sealed record XlbNodeConfigSpec
{
    /// <summary>The node this config is for.</summary>
    public required string NodeName { get; init; }
    /// <summary>Increases by one whenever the content changes.</summary>
    public long Revision { get; init; }
    /// <summary>SHA-256 of the content (VIPs and listeners), lower-case hex.</summary>
    public string ContentHash { get; init; } = "";
    /// <summary>Number of VIPs, for kubectl get.</summary>
    public int VipCount { get; init; }
    /// <summary>Number of listeners, for kubectl get.</summary>
    public int ListenerCount { get; init; }
    /// <summary>The VIPs this node serves (Active) or stands by for (Standby).</summary>
    public List<NodeVip> Vips { get; init; } = [];
    /// <summary>Every VIP:port this node forwards, with its backends.</summary>
    public List<Listener> Listeners { get; init; } = [];
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<VipRole>))]
public enum VipRole
{
    Active,
    Standby,
}

/// <summary>One VIP of a node.</summary>
public sealed record NodeVip
{
    /// <summary>The address.</summary>
    public required string Address { get; init; }
    /// <summary>Active: this node answers for it. Standby: ready to take over.</summary>
    public required VipRole Role { get; init; }
    /// <summary>The VipShard it belongs to.</summary>
    public required string Shard { get; init; }
}

/// <summary>One VIP:port served by this node, with everything the data plane needs.</summary>
public sealed record Listener
{
    /// <summary>namespace/mapping/port, for status and metrics.</summary>
    public required string Name { get; init; }
    /// <summary>The VIP.</summary>
    public required string Vip { get; init; }
    /// <summary>The port on the VIP.</summary>
    public required int Port { get; init; }
    /// <summary>TCP or UDP.</summary>
    public L4Protocol Protocol { get; init; } = L4Protocol.TCP;
    /// <summary>Backend selection for new flows.</summary>
    public SchedulingAlgorithm Algorithm { get; init; } = SchedulingAlgorithm.Maglev;
    /// <summary>Address translation.</summary>
    public NatMode NatMode { get; init; } = NatMode.FullNAT;
    /// <summary>DSR only: the encapsulation.</summary>
    public DsrEncapsulation? DsrEncapsulation { get; init; }
    /// <summary>Session affinity; absent: none.</summary>
    public AffinitySpec? Affinity { get; init; }
    /// <summary>How long a draining backend keeps its flows.</summary>
    public Duration DrainTimeout { get; init; } = new(TimeSpan.FromSeconds(30));
    /// <summary>Connection log sampling; absent: off.</summary>
    public ConnectionLogSpec? ConnectionLog { get; init; }
    /// <summary>The backends, in a stable order.</summary>
    public List<NodeBackend> Backends { get; init; } = [];
    /// <summary>Active checks; without a port, each backend is checked on its own port. Absent: no checks.</summary>
    public HealthCheckSpec? HealthCheck { get; init; }
}

/// <summary>One backend of a listener.</summary>
public sealed record NodeBackend
{
    /// <summary>The backend's address.</summary>
    public required string Address { get; init; }
    /// <summary>The backend's port (the mapping's targetPort, resolved).</summary>
    public required int Port { get; init; }
    /// <summary>Relative share of new flows.</summary>
    public int Weight { get; init; } = 1;
    /// <summary>A draining backend takes no new flows; its existing flows continue.</summary>
    public bool Draining { get; init; }
}

/// <summary>What the node's agent reports.</summary>
public sealed record XlbNodeConfigStatus
{
    /// <summary>The revision the data plane runs.</summary>
    public long AppliedRevision { get; init; }
    /// <summary>The content hash of that revision.</summary>
    public string AppliedHash { get; init; } = "";
    /// <summary>native or generic (XDP attach mode).</summary>
    public string? AttachMode { get; init; }
    /// <summary>Backends taken out of service by this node's health checks ("address:port").</summary>
    [ListSet]
    public List<string> UnhealthyBackends { get; init; } = [];
    /// <summary>Entries used in the data plane's maps, by map.</summary>
    public Dictionary<string, long>? MapUsage { get; init; }
    /// <summary>Applied, Ready, Degraded.</summary>
    [ListMap("type")]
    public List<Condition> Conditions { get; init; } = [];
}
