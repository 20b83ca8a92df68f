using System.Text.Json.Serialization;

namespace Xlb.Crds;

// The parts of built-in Kubernetes kinds that XLB reads (and, for Service, writes in status).
// Unknown fields are skipped: these are other people's types.

/// <summary>A core/v1 Namespace: its labels decide which pools its PortMappings may use.</summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record Namespace : IKubernetesObject
{
    public const string KindName = "Namespace";
    public string ApiVersion { get; init; } = "v1";
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
}

/// <summary>A core/v1 Service, for type LoadBalancer with XLB's loadBalancerClass and for serviceRef port names.</summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record Service : IKubernetesObject
{
    public const string KindName = "Service";
    /// <summary>The spec.loadBalancerClass XLB serves.</summary>
    public const string LoadBalancerClass = "xlb.io/xlb";
    public string ApiVersion { get; init; } = "v1";
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public ServiceSpec Spec { get; init; } = new();
    public ServiceStatus? Status { get; init; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record ServiceSpec
{
    public string? Type { get; init; }
    public string? LoadBalancerClass { get; init; }
    public string? ExternalTrafficPolicy { get; init; }
    public List<ServiceSpecPort> Ports { get; init; } = [];
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record ServiceSpecPort
{
    public string? Name { get; init; }
    public int Port { get; init; }
    public string Protocol { get; init; } = "TCP";
    public IntOrString? TargetPort { get; init; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record ServiceStatus
{
    public LoadBalancerStatus? LoadBalancer { get; init; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record LoadBalancerStatus
{
    public List<LoadBalancerIngress> Ingress { get; init; } = [];
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record LoadBalancerIngress
{
    public string? Ip { get; init; }
    /// <summary>VIP: traffic to the address goes through the load balancer (Kubernetes 1.30+).</summary>
    public string? IpMode { get; init; }
}

/// <summary>A discovery.k8s.io/v1 EndpointSlice: the backends of a Service, with readiness.</summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record EndpointSlice : IKubernetesObject
{
    public const string KindName = "EndpointSlice";
    /// <summary>The label that names the slice's Service.</summary>
    public const string ServiceNameLabel = "kubernetes.io/service-name";
    public string ApiVersion { get; init; } = "discovery.k8s.io/v1";
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    /// <summary>IPv4, IPv6 or FQDN.</summary>
    public string AddressType { get; init; } = "IPv4";
    public List<SliceEndpoint> Endpoints { get; init; } = [];
    public List<SlicePort> Ports { get; init; } = [];
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record SliceEndpoint
{
    public List<string> Addresses { get; init; } = [];
    public EndpointConditions Conditions { get; init; } = new();
    public string? NodeName { get; init; }
}

/// <summary>Unset ready and serving mean true; unset terminating means false (the EndpointSlice API's rule).</summary>
[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record EndpointConditions
{
    public bool? Ready { get; init; }
    public bool? Serving { get; init; }
    public bool? Terminating { get; init; }
}

[JsonUnmappedMemberHandling(JsonUnmappedMemberHandling.Skip)]
public sealed record SlicePort
{
    public string? Name { get; init; }
    public int? Port { get; init; }
    public string Protocol { get; init; } = "TCP";
}
