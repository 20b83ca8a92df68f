using Xlb.Crds;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

public class ServiceMappingsTests
{
    private static Service Lb(string name, params (string Key, string Value)[] annotations) => new()
    {
        Metadata = new ObjectMeta { Name = name, Namespace = "ns", Annotations = annotations.ToDictionary(a => a.Key, a => a.Value) },
        Spec = new ServiceSpec { Type = "LoadBalancer", LoadBalancerClass = Service.LoadBalancerClass, Ports = [new ServiceSpecPort { Name = "http", Port = 80, Protocol = "TCP" }] },
    };

    private static readonly VipShard[] Shards = [new() { Metadata = new ObjectMeta { Name = "edge" }, Spec = new VipShardSpec { PoolRef = "p" } }];

    [Fact]
    public void Scheduling_annotations_set_the_algorithm_and_the_maglev_table_size()
    {
        var outcome = ServiceMappings.Desired(
        [
            Lb("a", (ServiceMappings.AlgorithmAnnotation, "SourceHash"), (ServiceMappings.MaglevTableSizeAnnotation, "4093")),
            Lb("b"),
            Lb("c", (ServiceMappings.MaglevTableSizeAnnotation, "4096")),
            Lb("d", (ServiceMappings.MaglevTableSizeAnnotation, "big")),
        ], Shards, []);
        var byName = outcome.Mappings.ToDictionary(m => m.Metadata.Name!);
        Assert.Equal(new SchedulingSpec { Algorithm = SchedulingAlgorithm.SourceHash, MaglevTableSize = 4093 }, byName["a"].Spec.Scheduling);
        Assert.Equal(new SchedulingSpec(), byName["b"].Spec.Scheduling);
        Assert.Equal(["c", "d"], outcome.Problems.Select(p => p.Object.Name).Order(StringComparer.Ordinal));
        Assert.All(outcome.Problems, p => Assert.Equal("InvalidAnnotation", p.Reason));
        Assert.Contains("'4096' is not a prime from 251 to 65537", outcome.Problems[0].Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_idle_timeout_annotation_sets_the_mappings_idle_timeout()
    {
        var outcome = ServiceMappings.Desired(
        [
            Lb("dns", (ServiceMappings.IdleTimeoutAnnotation, "5s")),
            Lb("plain"),
            Lb("zero", (ServiceMappings.IdleTimeoutAnnotation, "0s")),
            Lb("words", (ServiceMappings.IdleTimeoutAnnotation, "soon")),
        ], Shards, []);
        var byName = outcome.Mappings.ToDictionary(m => m.Metadata.Name!);
        Assert.Equal(TimeSpan.FromSeconds(5), byName["dns"].Spec.IdleTimeout?.Value);
        Assert.Null(byName["plain"].Spec.IdleTimeout);
        Assert.Equal(["words", "zero"], outcome.Problems.Select(p => p.Object.Name).Order(StringComparer.Ordinal));
        Assert.All(outcome.Problems, p => Assert.Contains("xlb.io/idle-timeout", p.Message, StringComparison.Ordinal));
    }

    [Fact]
    public void A_source_addresses_annotation_sets_the_mappings_fullnat_source_addresses()
    {
        var byName = ServiceMappings.Desired(
        [
            Lb("many", (ServiceMappings.SourceAddressesAnnotation, "10.250.0.5, 10.250.0.6")),
            Lb("plain"),
        ], Shards, []).Mappings.ToDictionary(m => m.Metadata.Name!);
        Assert.Equal(["10.250.0.5", "10.250.0.6"], byName["many"].Spec.Nat.SourceAddresses);
        Assert.Equal(NatMode.FullNAT, byName["many"].Spec.Nat.Mode);
        Assert.Null(byName["plain"].Spec.Nat.SourceAddresses);
    }

    [Fact]
    public void A_services_session_affinity_becomes_client_ip_affinity()
    {
        var sticky = Lb("s") with { Spec = Lb("s").Spec with { SessionAffinity = "ClientIP", SessionAffinityConfig = new SessionAffinityConfig { ClientIP = new ClientIPConfig { TimeoutSeconds = 600 } } } };
        var defaulted = Lb("d") with { Spec = Lb("d").Spec with { SessionAffinity = "ClientIP" } };
        var none = Lb("n") with { Spec = Lb("n").Spec with { SessionAffinity = "None" } };
        var byName = ServiceMappings.Desired([sticky, defaulted, none], Shards, []).Mappings.ToDictionary(m => m.Metadata.Name!);
        Assert.Equal(new AffinitySpec { Mode = AffinityMode.ClientIP, Timeout = new Duration(TimeSpan.FromMinutes(10)) }, byName["s"].Spec.Affinity);
        Assert.Equal(new AffinitySpec { Mode = AffinityMode.ClientIP, Timeout = new Duration(TimeSpan.FromHours(3)) }, byName["d"].Spec.Affinity);
        Assert.Equal(new AffinitySpec(), byName["n"].Spec.Affinity);
    }
}
