using System.Text.Json.Serialization;
using Xlb.Crds.Schema;

namespace Xlb.Crds;

/// <summary>One exposed L4 service: a VIP, its ports, and the backends behind them.</summary>
[Crd("portmappings", CrdScope.Namespaced, ShortNames = ["xpm"])]
[PrinterColumn("VIP", "string", ".status.vips[0]")]
[PrinterColumn("Active", "string", ".status.activeNodes[0]", Description = "The LB node serving the VIP")]
[PrinterColumn("Backends", "string", ".status.backends.summary", Description = "Ready/total backends")]
[PrinterColumn("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status")]
[PrinterColumn("Reason", "string", ".status.conditions[?(@.type==\"Ready\")].reason", Priority = 1)]
[PrinterColumn("Age", "date", ".metadata.creationTimestamp")]
public sealed record PortMapping : IKubernetesObject
{
    public const string KindName = "PortMapping";
    public string ApiVersion { get; init; } = XlbApi.ApiVersion;
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public required PortMappingSpec Spec { get; init; }
    public PortMappingStatus? Status { get; init; }
}

/// <summary>What to expose and where to send it.</summary>
public sealed record PortMappingSpec
{
    /// <summary>The VipShard whose nodes serve this mapping.</summary>
    [Immutable("shardRef cannot change: the VIP belongs to the shard's pool. Delete the PortMapping and create it again with the new shardRef.")]
    [Length(1, 253)]
    [JsonConverter(typeof(SharedStringConverter))]
    public required string ShardRef { get; init; }
    /// <summary>"Auto" draws an address from the shard's pool; an address asks for that address (it must be in the pool).</summary>
    [Validation("self == 'Auto' || isIP(self)", "vip must be Auto or an IP address")]
    public string Vip { get; init; } = "Auto";
    /// <summary>Mappings with the same shareKey share one VIP when their pool allows sharing and their ports do not clash.</summary>
    [Pattern("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    [Length(1, 63)]
    public string? ShareKey { get; init; }
    /// <summary>The ports exposed on the VIP. Each port/protocol pair appears once.</summary>
    [ListMap("port", "protocol")]
    [Length(1, 64)]
    [Validation("self.all(p, !has(p.name) || self.exists_one(q, has(q.name) && q.name == p.name))", "port names must be unique")]
    public List<ServicePort> Ports { get; init; } = [];
    /// <summary>Where the traffic goes.</summary>
    public required BackendSpec Backend { get; init; }
    /// <summary>How a new flow picks its backend.</summary>
    public SchedulingSpec Scheduling { get; init; } = new();
    /// <summary>Session affinity: keep a client on one backend across flows.</summary>
    public AffinitySpec Affinity { get; init; } = new();
    /// <summary>Cluster: every backend. Local: on each LB node, only the backends that run on that node (the client address is kept).</summary>
    public TrafficPolicy TrafficPolicy { get; init; } = TrafficPolicy.Cluster;
    /// <summary>How packets reach the backends and how replies return.</summary>
    public NatSpec Nat { get; init; } = new();
    /// <summary>Active checks of each backend from every LB node; absent: backends are taken as healthy.</summary>
    public HealthCheckSpec? HealthCheck { get; init; }
    /// <summary>What happens to flows of a backend that is terminating.</summary>
    public DrainSpec Drain { get; init; } = new();
    /// <summary>How long an established TCP connection, or a UDP flow, may be idle before the LB nodes forget it (its next packet then goes where a new flow's would). Absent: the agent's --tcp-timeout or --udp-timeout. A FullNAT UDP flow holds a source port toward its backend this long: a DNS-like service, whose clients send from a new port each time, wants a few seconds.</summary>
    [Validation("duration(self) >= duration('1s') && duration(self) <= duration('168h')", "idleTimeout must be from 1s to 168h")]
    public Duration? IdleTimeout { get; init; }
    /// <summary>Sampled new and closed flow records from the data plane.</summary>
    public ConnectionLogSpec ConnectionLog { get; init; } = new();
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<HealthCheckType>))]
public enum HealthCheckType
{
    /// <summary>A TCP connect.</summary>
    TCP,
    /// <summary>An HTTP GET; 2xx and 3xx are healthy.</summary>
    HTTP,
}

/// <summary>How an LB node decides a backend is healthy. Also used, resolved, in node configs.</summary>
[Validation("duration(self.timeout) < duration(self.interval)", "timeout must be shorter than interval", FieldPath = ".timeout")]
public sealed record HealthCheckSpec
{
    /// <summary>TCP: a connect. HTTP: a GET that must answer 2xx or 3xx.</summary>
    public HealthCheckType Type { get; init; } = HealthCheckType.TCP;
    /// <summary>The port to check; defaults to the backend's target port. UDP services are checked this way too.</summary>
    [Range(1, 65535)]
    public int? Port { get; init; }
    /// <summary>HTTP only: the path to GET.</summary>
    [Pattern("^/")]
    [Length(1, 1024)]
    public string Path { get; init; } = "/";
    /// <summary>Time between checks of one backend.</summary>
    public Duration Interval { get; init; } = new(TimeSpan.FromSeconds(5));
    /// <summary>How long one check may take; shorter than the interval.</summary>
    public Duration Timeout { get; init; } = new(TimeSpan.FromSeconds(2));
    /// <summary>Consecutive successes that make an unhealthy backend healthy again.</summary>
    [Range(1, 100)]
    public int HealthyThreshold { get; init; } = 2;
    /// <summary>Consecutive failures that take a healthy backend out.</summary>
    [Range(1, 100)]
    public int UnhealthyThreshold { get; init; } = 3;
}

/// <summary>One port exposed on the VIP.</summary>
public sealed record ServicePort
{
    /// <summary>A name for metrics and status; also how a Service's named port is matched.</summary>
    [Pattern("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    [Length(1, 15)]
    [JsonConverter(typeof(SharedStringConverter))]
    public string? Name { get; init; }
    /// <summary>The port clients connect to on the VIP.</summary>
    [Range(1, 65535)]
    public required int Port { get; init; }
    /// <summary>TCP or UDP.</summary>
    public L4Protocol Protocol { get; init; } = L4Protocol.TCP;
    /// <summary>The port on the backend: a number, or the name of a port of the referenced Service's endpoints. Defaults to port.</summary>
    public IntOrString? TargetPort { get; init; }
}

/// <summary>The backends: a Service's EndpointSlices, or a static list. Not both.</summary>
[Validation("!(has(self.serviceRef) && has(self.endpoints) && size(self.endpoints) > 0)", "set serviceRef or endpoints, not both")]
public sealed record BackendSpec
{
    /// <summary>A Service in the mapping's namespace whose EndpointSlices are the backends (ready: in service; terminating: draining).</summary>
    public ServiceRef? ServiceRef { get; init; }
    /// <summary>Static backends with weights.</summary>
    [Length(0, 1024)]
    public List<StaticEndpoint> Endpoints { get; init; } = [];
}

/// <summary>A Service in the same namespace as the PortMapping.</summary>
public sealed record ServiceRef
{
    /// <summary>The Service's name.</summary>
    [Length(1, 63)]
    public required string Name { get; init; }
}

/// <summary>One static backend.</summary>
public sealed record StaticEndpoint
{
    /// <summary>The backend's IP address (the same family as the VIP).</summary>
    [Validation("isIP(self)", "address must be an IP address")]
    public required string Address { get; init; }
    /// <summary>Relative share of new flows, 0 to 100; 0 takes no new flows.</summary>
    [Range(0, 100)]
    public int Weight { get; init; } = 1;
    /// <summary>The node the backend runs on, for trafficPolicy Local.</summary>
    public string? NodeName { get; init; }
}

/// <summary>Backend selection for new flows.</summary>
public sealed record SchedulingSpec
{
    /// <summary>Maglev (default): consistent hashing, the same choice on every LB node. RoundRobin, WeightedRoundRobin, SourceHash (by client address, consistent), LeastConn (the backend with the fewest open connections through the LB node per unit of weight).</summary>
    public SchedulingAlgorithm Algorithm { get; init; } = SchedulingAlgorithm.Maglev;
    /// <summary>Slots of the consistent-hash table of Maglev and SourceHash: a prime from 251 to 65537; unset, 1021. More slots give backends shares nearer their weights when there are many of them (about 100 slots per backend keeps each share within a few percent). Changing it sends most new flows elsewhere; established flows keep their backends.</summary>
    [Range(Xlb.Crds.MaglevTableSize.Min, Xlb.Crds.MaglevTableSize.Max)]
    public int? MaglevTableSize { get; init; }
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<SchedulingAlgorithm>))]
public enum SchedulingAlgorithm
{
    Maglev,
    RoundRobin,
    WeightedRoundRobin,
    SourceHash,
    LeastConn,
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<AffinityMode>))]
public enum AffinityMode
{
    None,
    ClientIP,
}

/// <summary>Session affinity.</summary>
[Validation("self.mode != 'ClientIP' || (duration(self.timeout) >= duration('1s') && duration(self.timeout) <= duration('24h'))", "timeout must be from 1s to 24h", FieldPath = ".timeout")]
public sealed record AffinitySpec
{
    /// <summary>None, or ClientIP: a client's new flows go where its last one went, per LB node, while it keeps within the timeout and its backend keeps its place (one that leaves or drains hands its clients to the others).</summary>
    public AffinityMode Mode { get; init; } = AffinityMode.None;
    /// <summary>ClientIP: how long after a client's last new flow its next one still follows it (1s to 24h).</summary>
    public Duration Timeout { get; init; } = new(TimeSpan.FromHours(3));
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<TrafficPolicy>))]
public enum TrafficPolicy
{
    Cluster,
    Local,
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<NatMode>))]
public enum NatMode
{
    FullNAT,
    DNAT,
    DSR,
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<DsrEncapsulation>))]
public enum DsrEncapsulation
{
    IPIP,
    L2,
}

/// <summary>Address translation.</summary>
[Validation("self.mode == 'FullNAT' || !has(self.sourceAddresses) || size(self.sourceAddresses) == 0", "sourceAddresses are for mode FullNAT only", FieldPath = ".sourceAddresses")]
public sealed record NatSpec
{
    /// <summary>FullNAT (default): source and destination rewritten, replies return through any LB node. DNAT: the client address is kept; backends route replies through the LB. DSR: backends answer clients directly.</summary>
    public NatMode Mode { get; init; } = NatMode.FullNAT;
    /// <summary>DSR only: IPIP encapsulation, or L2 (MAC rewrite; backends on the LB node's segment hold the VIP on lo).</summary>
    public DsrEncapsulation DsrEncapsulation { get; init; } = DsrEncapsulation.IPIP;
    /// <summary>
    /// FullNAT only: addresses new connections are translated from besides the VIP, of the VIP's
    /// family. Each gives the mapping another range of source ports toward every backend, so a
    /// backend can hold that many more connections from it (TIME_WAIT holds a port for a minute).
    /// They are announced with the VIP and move with it, so they must be reachable as the VIP is,
    /// and no other VIP's: outside every pool, or in this pool's reserved addresses. New
    /// addresses go at the end: a connection keeps its address by its place in this list.
    /// </summary>
    [Length(0, 4)]
    [Validation("self.all(a, isIP(a))", "each source address must be an IP address")]
    [Validation("self.all(a, self.exists_one(b, b == a))", "source addresses must be unique")]
    public List<string>? SourceAddresses { get; init; }
}

/// <summary>Draining of terminating backends.</summary>
public sealed record DrainSpec
{
    /// <summary>A terminating backend takes no new flows; its existing flows continue until it is gone or this long has passed.</summary>
    public Duration Timeout { get; init; } = new(TimeSpan.FromSeconds(30));
}

/// <summary>Connection log settings.</summary>
public sealed record ConnectionLogSpec
{
    /// <summary>When true, the data plane reports sampled new and closed flows.</summary>
    public bool Enabled { get; init; }
    /// <summary>One flow in this many is reported.</summary>
    [Range(1, 1000000)]
    public int SampleEvery { get; init; } = 100;
}

/// <summary>What the operator and the agents observed about a mapping.</summary>
public sealed record PortMappingStatus
{
    /// <summary>The metadata.generation this status describes.</summary>
    public long? ObservedGeneration { get; init; }
    /// <summary>The VIPs allocated to the mapping. Recorded here so that allocations survive operator restarts.</summary>
    [ListSet]
    public List<string> Vips { get; init; } = [];
    /// <summary>The LB nodes answering for the VIPs.</summary>
    [ListSet]
    public List<string> ActiveNodes { get; init; } = [];
    /// <summary>Backend counts.</summary>
    public BackendCounts? Backends { get; init; }
    /// <summary>Per LB node that serves the mapping: the node config revision that carries it and whether the agent applied it.</summary>
    [ListMap("node")]
    public List<NodeProgress> Nodes { get; init; } = [];
    /// <summary>Accepted, Programmed, BackendsReady, Ready, Reconciling, Stalled.</summary>
    [ListMap("type")]
    public List<Condition> Conditions { get; init; } = [];

    private static readonly List<string> NoStrings = [];
    private static readonly List<NodeProgress> NoNodes = [];
    private static readonly List<Condition> NoConditions = [];

    /// <summary>
    /// Whether two statuses say the same, list by list and element by element (the elements are
    /// records of values). Every other member is compared by the record's own equality, so a member
    /// added later counts too; a list added later compares by reference, which can only make two
    /// equal statuses look different (one write too many), never the reverse.
    /// </summary>
    public bool SameAs(PortMappingStatus? other) =>
        other is not null &&
        Vips.SequenceEqual(other.Vips) && ActiveNodes.SequenceEqual(other.ActiveNodes) &&
        Nodes.SequenceEqual(other.Nodes) && Conditions.SequenceEqual(other.Conditions) &&
        Bare() == other.Bare();

    private PortMappingStatus Bare() => this with { Vips = NoStrings, ActiveNodes = NoStrings, Nodes = NoNodes, Conditions = NoConditions };
}

/// <summary>Backends of a mapping, by state.</summary>
public sealed record BackendCounts
{
    /// <summary>All backends known, in any state.</summary>
    public int Total { get; init; }
    /// <summary>Ready endpoints (static endpoints count as ready).</summary>
    public int Ready { get; init; }
    /// <summary>Ready and not failed by any LB node's health checks.</summary>
    public int Healthy { get; init; }
    /// <summary>Terminating endpoints still serving their flows.</summary>
    public int Terminating { get; init; }
    /// <summary>"ready/total", for kubectl get.</summary>
    [JsonConverter(typeof(SharedStringConverter))]
    public string Summary { get; init; } = "";
}

/// <summary>How far one LB node has got with a mapping.</summary>
public sealed record NodeProgress
{
    /// <summary>The LB node.</summary>
    [JsonConverter(typeof(SharedStringConverter))]
    public required string Node { get; init; }
    /// <summary>Active or Standby.</summary>
    public VipRole Role { get; init; }
    /// <summary>The first node config revision that carries the mapping as it is now (it moves only when the mapping's own listeners change).</summary>
    public long Revision { get; init; }
    /// <summary>A short digest of the mapping's listeners on that node, to tell whether they changed.</summary>
    public string? ContentDigest { get; init; }
    /// <summary>Whether the node's agent reports that revision (or a later one) applied.</summary>
    public bool Applied { get; init; }
}
