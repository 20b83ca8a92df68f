namespace Xlb.Crds;

/// <summary>One exposed L4 service: a VIP, its ports and the backends behind them (namespaced).</summary>
public sealed record PortMapping : IKubernetesObject
{
    public const string KindName = "PortMapping";
    public string ApiVersion { get; init; } = XlbApi.ApiVersion;
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public required PortMappingSpec Spec { get; init; }
    public PortMappingStatus? Status { get; init; }
}

public sealed record PortMappingSpec
{
    /// <summary>The VipShard whose nodes serve this mapping.</summary>
    public required string ShardRef { get; init; }
    /// <summary>"Auto" (default) draws from the shard's pool; an address asks for that address.</summary>
    public string Vip { get; init; } = "Auto";
    public List<ServicePort> Ports { get; init; } = [];
    public required BackendSpec Backend { get; init; }
    public SchedulingSpec Scheduling { get; init; } = new();
    /// <summary>Active checks of each backend from every LB node; absent: backends are taken as healthy.</summary>
    public HealthCheckSpec? HealthCheck { get; init; }
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
public sealed record HealthCheckSpec
{
    public HealthCheckType Type { get; init; } = HealthCheckType.TCP;
    /// <summary>The port to check; defaults to the backend's target port. UDP services are checked this way too.</summary>
    public int? Port { get; init; }
    /// <summary>HTTP only.</summary>
    public string Path { get; init; } = "/";
    public Duration Interval { get; init; } = new(TimeSpan.FromSeconds(5));
    /// <summary>Must be shorter than the interval.</summary>
    public Duration Timeout { get; init; } = new(TimeSpan.FromSeconds(2));
    /// <summary>Consecutive successes that make an unhealthy backend healthy again.</summary>
    public int HealthyThreshold { get; init; } = 2;
    /// <summary>Consecutive failures that take a healthy backend out.</summary>
    public int UnhealthyThreshold { get; init; } = 3;
}

public sealed record ServicePort
{
    public string? Name { get; init; }
    /// <summary>The port clients connect to on the VIP.</summary>
    public required int Port { get; init; }
    public L4Protocol Protocol { get; init; } = L4Protocol.TCP;
    /// <summary>The port on the backend; defaults to <see cref="Port"/>.</summary>
    public IntOrString? TargetPort { get; init; }
}

public sealed record BackendSpec
{
    /// <summary>Static backends; EndpointSlice-driven backends (serviceRef) come with the cluster mode.</summary>
    public List<StaticEndpoint> Endpoints { get; init; } = [];
}

public sealed record StaticEndpoint
{
    public required string Address { get; init; }
    /// <summary>Relative share of new flows, 1 to 100.</summary>
    public int Weight { get; init; } = 1;
}

public sealed record SchedulingSpec
{
    public SchedulingAlgorithm Algorithm { get; init; } = SchedulingAlgorithm.Maglev;
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<SchedulingAlgorithm>))]
public enum SchedulingAlgorithm
{
    Maglev,
}

public sealed record PortMappingStatus
{
    public List<string> Vips { get; init; } = [];
    public List<string> ActiveNodes { get; init; } = [];
    public List<Condition> Conditions { get; init; } = [];
}
