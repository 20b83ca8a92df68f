using Xlb.Crds;
using Xlb.Crds.Serialization;

using Xlb.Tests.Support;

namespace Xlb.Tests.Unit;

public class SerializationTests
{
    /// <summary>
    /// Version skew in an upgrade: the CRDs and the operator go first, so an agent of the version
    /// before reads node configs with fields it does not know. Through the API (the cluster agent's
    /// reader) they are skipped; a file (standalone, one binary for both) is read strictly.
    /// </summary>
    [Fact]
    public void A_node_config_of_a_newer_operator_is_read_through_the_API_with_its_unknown_fields_skipped()
    {
        const string json = """
            {"apiVersion":"xlb.io/v1alpha1","kind":"XlbNodeConfig","metadata":{"name":"lb-1"},
             "spec":{"nodeName":"lb-1","revision":7,"contentHash":"h","futureSetting":{"a":[1]},
               "vips":[{"address":"10.250.0.10","role":"Active","shard":"edge","futureVipField":true}],
               "listeners":[{"name":"demo/web/http","vip":"10.250.0.10","port":80,"futureListenerField":"x",
                 "backends":[{"address":"10.201.1.2","port":8080,"futureBackendField":3}]}]}}
            """;
        var read = System.Text.Json.JsonSerializer.Deserialize<XlbNodeConfig>(json, Xlb.Kube.KubeJson.Options)!;
        Assert.Equal((7L, "10.250.0.10", "demo/web/http", "10.201.1.2", 8080), (read.Spec.Revision, read.Spec.Vips.Single().Address, read.Spec.Listeners.Single().Name, read.Spec.Listeners.Single().Backends.Single().Address, read.Spec.Listeners.Single().Backends.Single().Port));
        Assert.ThrowsAny<System.Text.Json.JsonException>(() => System.Text.Json.JsonSerializer.Deserialize<XlbNodeConfig>(json, XlbJson.Options));
    }

    [Fact]
    public void Omitted_fields_take_their_documented_defaults()
    {
        var set = Manifests.Read("""
            apiVersion: xlb.io/v1alpha1
            kind: LoadBalancerPool
            metadata: {name: p}
            spec: {blocks: [192.0.2.0/28]}
            ---
            apiVersion: xlb.io/v1alpha1
            kind: PortMapping
            metadata: {name: m, namespace: ns}
            spec:
              shardRef: s
              ports: [{port: 80}]
              backend: {endpoints: [{address: 192.0.2.100}]}
            """, "t.yaml");
        Assert.Empty(set.Errors);
        var pool = Assert.Single(set.Pools);
        Assert.True(pool.Spec.AutoAssign);
        Assert.Empty(pool.Spec.Reserved);
        var pm = Assert.Single(set.PortMappings);
        Assert.Equal("Auto", pm.Spec.Vip);
        Assert.Equal(L4Protocol.TCP, pm.Spec.Ports[0].Protocol);
        Assert.Null(pm.Spec.Ports[0].TargetPort);
        Assert.Equal(1, pm.Spec.Backend.Endpoints[0].Weight);
        Assert.Equal(SchedulingAlgorithm.Maglev, pm.Spec.Scheduling.Algorithm);
    }

    [Fact]
    public void Every_example_round_trips_through_yaml_unchanged()
    {
        var first = Examples.Read("demo");
        Assert.Empty(first.Errors);
        var yaml = string.Join("---\n",
            first.Pools.Select(Manifests.ToYaml)
                .Concat(first.Shards.Select(Manifests.ToYaml))
                .Concat(first.PortMappings.Select(Manifests.ToYaml)));
        var second = Manifests.Read(yaml, "again.yaml");
        Assert.Empty(second.Errors);
        Assert.Equal(Manifests.ToYaml(first.PortMappings[0]), Manifests.ToYaml(second.PortMappings[0]));
        Assert.Equal(first.Pools[0].Spec.Blocks, second.Pools[0].Spec.Blocks);
        Assert.Equal(first.Shards[0].Spec.NodeSelector!.MatchLabels, second.Shards[0].Spec.NodeSelector!.MatchLabels);
    }

    [Fact]
    public void Json_manifests_are_read_like_yaml_ones()
    {
        var set = Manifests.Read("""{"apiVersion":"xlb.io/v1alpha1","kind":"VipShard","metadata":{"name":"j"},"spec":{"poolRef":"p"}}""", "s.json");
        Assert.Empty(set.Errors);
        Assert.Equal("p", Assert.Single(set.Shards).Spec.PoolRef);
    }

    [Theory]
    [InlineData("80", "80")]
    [InlineData("true", "true")]
    [InlineData("null", "null")]
    [InlineData("1.5", "1.5")]
    [InlineData(" padded", " padded")]
    [InlineData("", "")]
    [InlineData("10.0.0.1", "10.0.0.1")]
    public void Strings_that_look_like_other_types_stay_strings(string value, string expected)
    {
        var yaml = Yaml.Write(new System.Text.Json.Nodes.JsonObject { ["v"] = value });
        var back = Yaml.ReadDocuments(yaml)[0]["v"]!.GetValue<string>();
        Assert.Equal(expected, back);
    }

    [Fact]
    public void A_named_target_port_is_kept_as_a_name_and_a_number_as_a_number()
    {
        var set = Manifests.Read("""
            apiVersion: xlb.io/v1alpha1
            kind: PortMapping
            metadata: {name: m}
            spec:
              shardRef: s
              ports: [{port: 80, targetPort: http}, {port: 81, targetPort: 8081}]
              backend: {}
            """, "t.yaml");
        var ports = Assert.Single(set.PortMappings).Spec.Ports;
        Assert.Equal("http", ports[0].TargetPort!.Value.Name);
        Assert.Equal(8081, ports[1].TargetPort!.Value.Number);
    }

    [Theory]
    [InlineData("spec: {shardRef: s, backend: {}, prot: []}", "prot")]
    [InlineData("spec: {backend: {}}", "shardRef")]
    [InlineData("spec: {shardRef: s, backend: {}, ports: [{port: eighty}]}", "spec.ports[0].port")]
    public void Bad_documents_are_reported_with_what_and_where(string spec, string mentioned)
    {
        var set = Manifests.Read($"""
            apiVersion: xlb.io/v1alpha1
            kind: PortMapping
            metadata: {"{"}name: broken{"}"}
            {spec}
            ---
            apiVersion: xlb.io/v1alpha1
            kind: VipShard
            metadata: {"{"}name: fine{"}"}
            spec: {"{"}poolRef: p{"}"}
            """, "bad.yaml");
        var error = Assert.Single(set.Errors);
        Assert.Equal(1, error.Document);
        Assert.Contains("PortMapping broken", error.Message, StringComparison.Ordinal);
        Assert.Contains(mentioned, error.Message, StringComparison.Ordinal);
        Assert.Single(set.Shards);
    }

    [Fact]
    public void Invalid_yaml_and_unknown_kinds_are_errors_not_exceptions()
    {
        Assert.Contains("not valid YAML", Manifests.Read("a: [", "x.yaml").Errors.Single().Message, StringComparison.Ordinal);
        Assert.Contains("not one XLB reads", Manifests.Read("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}", "x.yaml").Errors.Single().Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Two_mapping_statuses_are_the_same_exactly_when_their_json_is()
    {
        var rng = new Random(17);
        T Pick<T>(params T[] values) => values[rng.Next(values.Length)];
        List<T> Some<T>(Func<T> make) => [.. Enumerable.Range(0, rng.Next(3)).Select(_ => make())];
        PortMappingStatus Make() => new()
        {
            ObservedGeneration = Pick<long?>(null, 1, 2),
            Vips = Some(() => Pick("192.0.2.1", "192.0.2.2")),
            ActiveNodes = Some(() => Pick("n1", "n2")),
            Backends = Pick<BackendCounts?>(null, new BackendCounts { Total = 2, Ready = 1, Summary = "1/2" }, new BackendCounts { Total = 2, Ready = 2, Summary = "2/2" }),
            Nodes = Some(() => new NodeProgress { Node = Pick("n1", "n2"), Role = Pick(VipRole.Active, VipRole.Standby), Revision = Pick(1, 2), ContentDigest = Pick<string?>(null, "ab"), Applied = Pick(true, false) }),
            Conditions = Some(() => new Condition
            {
                Type = Pick("Ready", "Programmed"), Status = Pick("True", "False"), Reason = Pick("Ready", "Pending"), Message = Pick("", "m"),
                ObservedGeneration = Pick<long?>(null, 1), LastTransitionTime = Pick<string?>(null, "2026-01-01T00:00:00Z"),
            }),
        };
        var (same, different) = (0, 0);
        for (var i = 0; i < 20_000; i++)
        {
            var a = Make();
            var b = rng.Next(4) == 0 ? a with { } : Make();
            var json = System.Text.Json.JsonSerializer.Serialize(a, XlbJson.Options) == System.Text.Json.JsonSerializer.Serialize(b, XlbJson.Options);
            Assert.Equal(json, a.SameAs(b));
            Assert.Equal(json, b.SameAs(a));
            (same, different) = json ? (same + 1, different) : (same, different + 1);
        }
        Assert.True(same > 4000 && different > 4000, $"{same} same, {different} different");
        Assert.False(new PortMappingStatus().SameAs(null));
    }
}
