using System.Text.Json.Serialization;
using Xlb.Crds.Schema;

namespace Xlb.Crds;

/// <summary>A group of VIPs placed on the LB nodes its node selector picks: one active node and one standby per VIP, so load spreads and fails over fast.</summary>
[Crd("vipshards", CrdScope.Cluster, ShortNames = ["xshard"])]
[PrinterColumn("Pool", "string", ".spec.poolRef")]
[PrinterColumn("Nodes", "integer", ".status.readyNodeCount", Description = "LB nodes with a live agent")]
[PrinterColumn("VIPs", "integer", ".status.vipCount")]
[PrinterColumn("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status")]
[PrinterColumn("Reason", "string", ".status.conditions[?(@.type==\"Ready\")].reason", Priority = 1)]
[PrinterColumn("Age", "date", ".metadata.creationTimestamp")]
public sealed record VipShard : IKubernetesObject
{
    public const string KindName = "VipShard";
    public string ApiVersion { get; init; } = XlbApi.ApiVersion;
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public required VipShardSpec Spec { get; init; }
    public VipShardStatus? Status { get; init; }
}

/// <summary>Where a shard's VIPs come from, which nodes serve them and how.</summary>
public sealed record VipShardSpec
{
    /// <summary>The LoadBalancerPool that automatic VIPs of this shard come from.</summary>
    [Immutable("poolRef cannot change: VIPs would be renumbered under live traffic. Create a new VipShard and move PortMappings to it by re-creating them.")]
    [Length(1, 253)]
    public required string PoolRef { get; init; }
    /// <summary>Which nodes run agents for this shard. Absent: every node with an XLB agent.</summary>
    public LabelSelector? NodeSelector { get; init; }
    /// <summary>How clients learn which node holds a VIP.</summary>
    public Announcement Announcement { get; init; } = new();
    /// <summary>How VIPs are spread over the shard's nodes.</summary>
    public Placement Placement { get; init; } = new();
    /// <summary>How fast a dead node is noticed.</summary>
    public Failover Failover { get; init; } = new();
    /// <summary>Whether established flows are synchronised to the standby node.</summary>
    public FlowSync FlowSync { get; init; } = new();
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<AnnouncementMode>))]
public enum AnnouncementMode
{
    L2,
    BGP,
}

/// <summary>How VIPs are announced to the network.</summary>
[Validation("self.mode == 'BGP' || !has(self.peers) || size(self.peers) == 0", "peers are for mode BGP only", FieldPath = ".peers")]
public sealed record Announcement
{
    /// <summary>L2: the active node answers ARP/ND for the VIP and sends gratuitous ARP on takeover. BGP: the active node advertises a host route to peers, and withdraws it when it gives the VIP up or stops.</summary>
    public AnnouncementMode Mode { get; init; } = AnnouncementMode.L2;
    /// <summary>BGP peers (mode BGP only).</summary>
    [ListMap("address")]
    [Length(0, 16)]
    public List<BgpPeer> Peers { get; init; } = [];
}

/// <summary>One BGP neighbour. Every LB node of the shard (or those its nodeSelector selects) opens a session to it and advertises a host route (/32 or /128) for each VIP it holds as active, with itself as next hop. IPv4 VIPs go over IPv4 sessions, IPv6 VIPs over IPv6 sessions.</summary>
[Validation("duration(self.holdTime) >= duration('3s') && duration(self.holdTime) <= duration('65535s')", "holdTime must be from 3s to 65535s", FieldPath = ".holdTime")]
public sealed record BgpPeer
{
    /// <summary>The neighbour's address.</summary>
    public required string Address { get; init; }
    /// <summary>The neighbour's TCP port.</summary>
    [Range(1, 65535)]
    public int Port { get; init; } = 179;
    /// <summary>The neighbour's autonomous system number (the same as myAsn: internal BGP).</summary>
    [Range(1, 4294967295)]
    public required long Asn { get; init; }
    /// <summary>Our autonomous system number.</summary>
    [Range(1, 4294967295)]
    public required long MyAsn { get; init; }
    /// <summary>The hold time we offer (the session uses the smaller of both sides'). When a node dies, its routes stay with the neighbour until this passes: it bounds a failover.</summary>
    public Duration HoldTime { get; init; } = new(TimeSpan.FromSeconds(9));
    /// <summary>Which of the shard's nodes open a session to this neighbour, by their labels (each rack's nodes to that rack's router, say). Absent: every node of the shard. A node of the shard that no neighbour selects does not serve the shard: it could not announce its VIPs.</summary>
    public LabelSelector? NodeSelector { get; init; }
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<PlacementStrategy>))]
public enum PlacementStrategy
{
    Spread,
    Pack,
    Pinned,
}

/// <summary>How VIPs are placed. Every strategy is sticky: a VIP stays on its node while that node is ready, also across operator restarts.</summary>
[Validation("self.strategy != 'Pinned' || has(self.nodes) && size(self.nodes) > 0", "strategy Pinned needs nodes: the ordered list of nodes to use", FieldPath = ".nodes", Reason = "FieldValueRequired")]
public sealed record Placement
{
    /// <summary>Spread: VIPs are spread over all ready nodes by rendezvous hashing. Pack: every VIP on the first ready node by name. Pinned: the first ready node of nodes.</summary>
    public PlacementStrategy Strategy { get; init; } = PlacementStrategy.Spread;
    /// <summary>Pinned only: nodes in order of preference.</summary>
    [Length(0, 64)]
    [ListSet]
    public List<string> Nodes { get; init; } = [];
}

/// <summary>Dead-node detection: a node is dead for this shard when its agent has been silent for interval × multiplier. The agents send each other a heartbeat every interval, and a standby takes a VIP over on its own when the VIP's active node falls silent; the operator moves the VIP in the node configs when the agent's Lease is that old too, and at least 3 s old.</summary>
public sealed record Failover
{
    /// <summary>Detection parameters.</summary>
    public FailureDetection Detection { get; init; } = new();
}

/// <summary>How often the agent proves it is alive, and how many misses mean dead.</summary>
[Validation("duration(self.interval) >= duration('100ms') && duration(self.interval) <= duration('1m')", "interval must be from 100ms to 1m", FieldPath = ".interval")]
public sealed record FailureDetection
{
    /// <summary>The agent sends the shard's other nodes a heartbeat this often. The default, 250 ms × 3, takes a dead node's VIPs over within a second (750 ms after its last heartbeat).</summary>
    public Duration Interval { get; init; } = new(TimeSpan.FromMilliseconds(250));
    /// <summary>Missed heartbeats before the node's VIPs move to their standby.</summary>
    [Range(2, 30)]
    public int Multiplier { get; init; } = 3;
}

/// <summary>Flow synchronisation to the standby node.</summary>
public sealed record FlowSync
{
    /// <summary>When true, the active node copies new flows to the standby so they survive a failover.</summary>
    public bool Enabled { get; init; }
}

/// <summary>What the operator observed about a shard.</summary>
public sealed record VipShardStatus
{
    /// <summary>The metadata.generation this status describes.</summary>
    public long? ObservedGeneration { get; init; }
    /// <summary>Where each VIP is served.</summary>
    [ListMap("address")]
    public List<VipPlacement> Vips { get; init; } = [];
    /// <summary>Number of VIPs.</summary>
    public int VipCount { get; init; }
    /// <summary>Nodes the shard selects whose agent is alive.</summary>
    [ListSet]
    public List<string> ReadyNodes { get; init; } = [];
    /// <summary>Number of ready nodes.</summary>
    public int ReadyNodeCount { get; init; }
    /// <summary>VIP moves from one active node to another since the shard was created.</summary>
    public long Transitions { get; init; }
    /// <summary>Ready, Degraded, Stalled, Reconciling.</summary>
    [ListMap("type")]
    public List<Condition> Conditions { get; init; } = [];
}

/// <summary>Where one VIP of a shard is served.</summary>
public sealed record VipPlacement
{
    /// <summary>The VIP.</summary>
    [JsonConverter(typeof(SharedStringConverter))]
    public required string Address { get; init; }
    /// <summary>The node that answers for the VIP.</summary>
    [JsonConverter(typeof(SharedStringConverter))]
    public required string ActiveNode { get; init; }
    /// <summary>The node that takes over when the active node dies.</summary>
    [JsonConverter(typeof(SharedStringConverter))]
    public string? StandbyNode { get; init; }
}
