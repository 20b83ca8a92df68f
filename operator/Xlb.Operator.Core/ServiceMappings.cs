using Xlb.Crds;

namespace Xlb.Operator.Core;

/// <summary>
/// Services of type LoadBalancer with loadBalancerClass xlb.io/xlb become operator-owned
/// PortMappings (same namespace and name, owned by the Service), so they get everything a
/// PortMapping gets: a VIP, placement, status and events. Settings come from annotations. Pure.
/// </summary>
public static class ServiceMappings
{
    public const string ShardAnnotation = "xlb.io/shard";
    public const string VipAnnotation = "xlb.io/vip";
    public const string ShareKeyAnnotation = "xlb.io/share-key";
    public const string AlgorithmAnnotation = "xlb.io/algorithm";
    public const string MaglevTableSizeAnnotation = "xlb.io/maglev-table-size";
    public const string IdleTimeoutAnnotation = "xlb.io/idle-timeout";
    /// <summary>spec.nat.sourceAddresses, comma-separated (checked as the field is).</summary>
    public const string SourceAddressesAnnotation = "xlb.io/source-addresses";
    /// <summary>The label that marks a PortMapping as the operator's, for the named Service.</summary>
    public const string ServiceLabel = "xlb.io/service";
    public const string ManagedByLabel = "app.kubernetes.io/managed-by";
    public const string ManagedBy = "xlb-operator";

    public sealed record Outcome(IReadOnlyList<PortMapping> Mappings, IReadOnlyList<Problem> Problems);

    public static bool IsOurs(Service s) =>
        s.Spec.Type == "LoadBalancer" && s.Spec.LoadBalancerClass == Service.LoadBalancerClass;

    public static bool IsOwned(PortMapping pm) => pm.Metadata.Labels?.ContainsKey(ServiceLabel) == true;

    public static Outcome Desired(IReadOnlyList<Service> services, IReadOnlyList<VipShard> shards, IReadOnlyList<PortMapping> existing)
    {
        var mappings = new List<PortMapping>();
        var problems = new List<Problem>();
        var byKey = existing.ToDictionary(m => $"{m.Metadata.Namespace}/{m.Metadata.Name}", StringComparer.Ordinal);
        foreach (var svc in services.Where(IsOurs).OrderBy(s => s.Metadata.Namespace, StringComparer.Ordinal).ThenBy(s => s.Metadata.Name, StringComparer.Ordinal))
        {
            var self = ObjectRef.Of(svc);
            var annotations = svc.Metadata.Annotations ?? [];
            var shard = annotations.GetValueOrDefault(ShardAnnotation) ?? (shards.Count == 1 ? shards[0].Metadata.Name : null);
            if (shard is null)
            {
                problems.Add(new Problem(self, "NoShard", $"annotate the Service with {ShardAnnotation}: <VipShard> ({shards.Count} VipShards exist, so none is the default)"));
                continue;
            }
            if (byKey.TryGetValue($"{svc.Metadata.Namespace}/{svc.Metadata.Name}", out var taken) && taken.Metadata.Labels?.GetValueOrDefault(ServiceLabel) != svc.Metadata.Name)
            {
                problems.Add(new Problem(self, "NameTaken", $"PortMapping {svc.Metadata.Namespace}/{svc.Metadata.Name} exists and is not the operator's; rename one of them"));
                continue;
            }
            var algorithm = SchedulingAlgorithm.Maglev;
            if (annotations.GetValueOrDefault(AlgorithmAnnotation) is { } a && !Enum.TryParse(a, ignoreCase: false, out algorithm))
            {
                problems.Add(new Problem(self, "InvalidAnnotation", $"{AlgorithmAnnotation}: '{a}' is not one of {string.Join(", ", Enum.GetNames<SchedulingAlgorithm>())}"));
                continue;
            }
            int? tableSize = null;
            if (annotations.GetValueOrDefault(MaglevTableSizeAnnotation) is { } t)
            {
                if (!int.TryParse(t, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var size) ||
                    MaglevTableSize.Problem(size) is not null)
                {
                    problems.Add(new Problem(self, "InvalidAnnotation",
                        $"{MaglevTableSizeAnnotation}: '{t}' is not a prime from {MaglevTableSize.Min} to {MaglevTableSize.Max}"));
                    continue;
                }
                tableSize = size;
            }
            Duration? idle = null;
            if (annotations.GetValueOrDefault(IdleTimeoutAnnotation) is { } i)
            {
                if (!Duration.TryParse(i, out var parsed) || !IdleTimeout.Allowed(parsed.Value))
                {
                    problems.Add(new Problem(self, "InvalidAnnotation", $"{IdleTimeoutAnnotation}: '{i}' is not a duration of {IdleTimeout.Range} (such as 5s or 15m)"));
                    continue;
                }
                idle = parsed;
            }
            var ports = svc.Spec.Ports
                .Where(p => p.Protocol is "TCP" or "UDP")
                .Select(p => new ServicePort { Name = p.Name, Port = p.Port, Protocol = p.Protocol == "UDP" ? L4Protocol.UDP : L4Protocol.TCP })
                .ToList();
            if (ports.Count == 0)
            {
                problems.Add(new Problem(self, "NoPorts", "the Service has no TCP or UDP port"));
                continue;
            }
            mappings.Add(new PortMapping
            {
                Metadata = new ObjectMeta
                {
                    Name = svc.Metadata.Name,
                    Namespace = svc.Metadata.Namespace,
                    Labels = new() { [ServiceLabel] = svc.Metadata.Name ?? "", [ManagedByLabel] = ManagedBy },
                    OwnerReferences = svc.Metadata.Uid is { } uid
                        ? [new OwnerReference { ApiVersion = "v1", Kind = "Service", Name = svc.Metadata.Name ?? "", Uid = uid, Controller = true, BlockOwnerDeletion = true }]
                        : null,
                },
                Spec = new PortMappingSpec
                {
                    ShardRef = shard,
                    Vip = annotations.GetValueOrDefault(VipAnnotation) ?? "Auto",
                    ShareKey = annotations.GetValueOrDefault(ShareKeyAnnotation),
                    Ports = ports,
                    Backend = new BackendSpec { ServiceRef = new ServiceRef { Name = svc.Metadata.Name ?? "" } },
                    Scheduling = new SchedulingSpec { Algorithm = algorithm, MaglevTableSize = tableSize },
                    // The Service's own session affinity, as kube-proxy would keep it.
                    Affinity = svc.Spec.SessionAffinity == "ClientIP"
                        ? new AffinitySpec { Mode = AffinityMode.ClientIP, Timeout = new Duration(TimeSpan.FromSeconds(svc.Spec.SessionAffinityConfig?.ClientIP?.TimeoutSeconds ?? 10800)) }
                        : new AffinitySpec(),
                    TrafficPolicy = svc.Spec.ExternalTrafficPolicy == "Local" ? TrafficPolicy.Local : TrafficPolicy.Cluster,
                    IdleTimeout = idle,
                    Nat = annotations.GetValueOrDefault(SourceAddressesAnnotation) is { } sources
                        ? new NatSpec { SourceAddresses = [.. sources.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)] }
                        : new NatSpec(),
                },
            });
        }
        return new Outcome(mappings, problems);
    }

    /// <summary>The Service's load-balancer status from its PortMapping's status: IPs only, never hostnames.</summary>
    public static LoadBalancerStatus Ingress(PortMappingStatus? status) => new()
    {
        Ingress = [.. (status?.Vips ?? []).Select(v => new LoadBalancerIngress { Ip = v, IpMode = "VIP" })],
    };
}
