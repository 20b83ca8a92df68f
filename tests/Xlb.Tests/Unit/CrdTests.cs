using System.Text.Json.Nodes;
using Xlb.Crds;
using Xlb.Crds.Schema;
using Xlb.Crds.Serialization;

namespace Xlb.Tests.Unit;

public class CrdTests
{
    private static string Docs => File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Xlb.Crds.xml"));

    private static JsonObject Crd<T>() => new CrdGenerator(Docs).Generate(typeof(T));

    private static JsonObject Schema<T>() => Crd<T>()["spec"]!["versions"]![0]!["schema"]!["openAPIV3Schema"]!.AsObject();

    private static JsonObject At(JsonObject schema, string path)
    {
        JsonNode node = schema;
        foreach (var part in path.Split('.'))
        {
            node = part == "[]" ? node["items"]! : node["properties"]![part]!;
        }
        return node.AsObject();
    }

    [Fact]
    public void The_checked_in_crds_folder_is_what_the_types_generate()
    {
        var dir = Path.Combine(AppContext.BaseDirectory, "crds");
        foreach (var (name, text) in CrdFiles.Render(Docs))
        {
            var path = Path.Combine(dir, name);
            Assert.True(File.Exists(path), $"crds/{name} is missing: run `dotnet run --project agent/Xlb.Cli -- crds --out crds`");
            Assert.True(File.ReadAllText(path) == text, $"crds/{name} differs from the C# types: run `dotnet run --project agent/Xlb.Cli -- crds --out crds` and commit the result");
        }
        Assert.Equal(CrdFiles.Render(Docs).Keys.Where(k => k.EndsWith(".yaml", StringComparison.Ordinal) && k != "kustomization.yaml").Order(),
            Directory.GetFiles(dir, "xlb.io_*.yaml").Select(Path.GetFileName).Order());
    }

    [Theory]
    [InlineData(typeof(LoadBalancerPool))]
    [InlineData(typeof(VipShard))]
    [InlineData(typeof(PortMapping))]
    [InlineData(typeof(XlbNodeConfig))]
    public void Every_crd_is_structural_and_its_rules_and_defaults_hold_together(Type kind)
    {
        var crd = new CrdGenerator(Docs).Generate(kind);
        Assert.Empty(SchemaLint.Check(crd));
        var names = crd["spec"]!["names"]!;
        Assert.Equal(["xlb"], names["categories"]!.AsArray().Select(c => c!.GetValue<string>()));
        Assert.NotEmpty(names["shortNames"]!.AsArray());
        Assert.NotNull(crd["spec"]!["versions"]![0]!["subresources"]!["status"]);
    }

    [Theory]
    [InlineData(typeof(LoadBalancerPool))]
    [InlineData(typeof(VipShard))]
    [InlineData(typeof(PortMapping))]
    public void Every_user_field_has_a_description_for_kubectl_explain(Type kind)
    {
        var spec = new CrdGenerator(Docs).Generate(kind)["spec"]!["versions"]![0]!["schema"]!["openAPIV3Schema"]!["properties"]!["spec"]!.AsObject();
        var missing = new List<string>();
        Walk(spec, "spec", missing);
        Assert.Empty(missing);

        static void Walk(JsonObject node, string path, List<string> missing)
        {
            if (!node.ContainsKey("description"))
            {
                missing.Add(path);
            }
            foreach (var (name, child) in node["properties"]?.AsObject() ?? [])
            {
                Walk(child!.AsObject(), $"{path}.{name}", missing);
            }
            if (node["items"] is JsonObject items && items.ContainsKey("properties"))
            {
                foreach (var (name, child) in items["properties"]!.AsObject())
                {
                    Walk(child!.AsObject(), $"{path}[].{name}", missing);
                }
            }
        }
    }

    [Fact]
    public void PortMapping_schema_carries_defaults_keys_and_rules()
    {
        var s = Schema<PortMapping>();
        Assert.Equal(["spec"], s["required"]!.AsArray().Select(r => r!.GetValue<string>()));
        var spec = At(s, "spec");
        Assert.Equal(["shardRef", "backend"], spec["required"]!.AsArray().Select(r => r!.GetValue<string>()));
        Assert.Equal("Auto", At(s, "spec.vip")["default"]!.GetValue<string>());
        Assert.Equal("self == oldSelf", At(s, "spec.shardRef")["x-kubernetes-validations"]![0]!["rule"]!.GetValue<string>());
        Assert.Contains("Delete the PortMapping", At(s, "spec.shardRef")["x-kubernetes-validations"]![0]!["message"]!.GetValue<string>(), StringComparison.Ordinal);
        var ports = At(s, "spec.ports");
        Assert.Equal("map", ports["x-kubernetes-list-type"]!.GetValue<string>());
        Assert.Equal(["port", "protocol"], ports["x-kubernetes-list-map-keys"]!.AsArray().Select(k => k!.GetValue<string>()));
        Assert.Equal("TCP", At(s, "spec.ports.[].protocol")["default"]!.GetValue<string>());
        Assert.Equal(65535, At(s, "spec.ports.[].port")["maximum"]!.GetValue<long>());
        Assert.True(At(s, "spec.ports.[].targetPort")["x-kubernetes-int-or-string"]!.GetValue<bool>());
        Assert.Equal(["Maglev", "RoundRobin", "WeightedRoundRobin", "SourceHash", "LeastConn"],
            At(s, "spec.scheduling.algorithm")["enum"]!.AsArray().Select(e => e!.GetValue<string>()));
        Assert.Equal("Maglev", At(s, "spec.scheduling.algorithm")["default"]!.GetValue<string>());
        Assert.Equal(new JsonObject(), At(s, "spec.scheduling")["default"], JsonNode.DeepEquals);
        // No default: unset, the data plane's 1021; the bounds are the schema's, primality the operator's.
        var tableSize = At(s, "spec.scheduling.maglevTableSize");
        Assert.Equal((251L, 65537L, false), (tableSize["minimum"]!.GetValue<long>(), tableSize["maximum"]!.GetValue<long>(), tableSize.ContainsKey("default")));
        Assert.Contains("duration('24h')", At(s, "spec.affinity")["x-kubernetes-validations"]![0]!["rule"]!.GetValue<string>(), StringComparison.Ordinal);
        var hc = At(s, "spec.healthCheck");
        Assert.False(hc.ContainsKey("default")); // absent means: no checks
        Assert.Equal("5s", At(s, "spec.healthCheck.interval")["default"]!.GetValue<string>());
        Assert.Equal(Duration.Pattern, At(s, "spec.healthCheck.timeout")["pattern"]!.GetValue<string>());
        Assert.Equal("duration(self.timeout) < duration(self.interval)", hc["x-kubernetes-validations"]![0]!["rule"]!.GetValue<string>());
        Assert.Equal("FullNAT", At(s, "spec.nat.mode")["default"]!.GetValue<string>());
        Assert.False(At(s, "status").ContainsKey("default"));
        Assert.Equal(["type"], At(s, "status.conditions")["x-kubernetes-list-map-keys"]!.AsArray().Select(k => k!.GetValue<string>()));
    }

    [Fact]
    public void Printer_columns_show_vip_active_node_backends_ready_and_age()
    {
        var columns = Crd<PortMapping>()["spec"]!["versions"]![0]!["additionalPrinterColumns"]!.AsArray()
            .Select(c => (c!["name"]!.GetValue<string>(), c["jsonPath"]!.GetValue<string>())).ToList();
        Assert.Equal(
            [("VIP", ".status.vips[0]"), ("Active", ".status.activeNodes[0]"), ("Backends", ".status.backends.summary"),
             ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"), ("Reason", ".status.conditions[?(@.type==\"Ready\")].reason"),
             ("Age", ".metadata.creationTimestamp")],
            columns);
    }

    [Fact]
    public void VipShard_and_pool_schemas()
    {
        var shard = Schema<VipShard>();
        Assert.Equal("self == oldSelf", At(shard, "spec.poolRef")["x-kubernetes-validations"]![0]!["rule"]!.GetValue<string>());
        Assert.Equal(["Spread", "Pack", "Pinned"], At(shard, "spec.placement.strategy")["enum"]!.AsArray().Select(e => e!.GetValue<string>()));
        Assert.Equal("250ms", At(shard, "spec.failover.detection.interval")["default"]!.GetValue<string>());
        Assert.Equal(3, At(shard, "spec.failover.detection.multiplier")["default"]!.GetValue<int>());
        Assert.Equal(["In", "NotIn", "Exists", "DoesNotExist"], At(shard, "spec.nodeSelector.matchExpressions.[].operator")["enum"]!.AsArray().Select(e => e!.GetValue<string>()));
        var pool = Schema<LoadBalancerPool>();
        Assert.Equal(["blocks"], At(pool, "spec")["required"]!.AsArray().Select(r => r!.GetValue<string>()));
        Assert.Equal(1, At(pool, "spec.blocks")["minItems"]!.GetValue<int>());
        Assert.True(At(pool, "spec.autoAssign")["default"]!.GetValue<bool>());
        Assert.Equal("Cluster", Crd<LoadBalancerPool>()["spec"]!["scope"]!.GetValue<string>());
        Assert.Equal("Namespaced", Crd<PortMapping>()["spec"]!["scope"]!.GetValue<string>());
    }

    [Fact]
    public void The_lint_finds_what_the_api_server_would_refuse_or_trip_on()
    {
        var bad = Yaml.ReadDocuments("""
            spec:
              versions:
              - name: v1
                additionalPrinterColumns:
                - {name: X, type: string, jsonPath: .spec.nothere}
                schema:
                  openAPIV3Schema:
                    type: object
                    properties:
                      metadata: {type: object, properties: {name: {type: string}}}
                      spec:
                        type: object
                        x-kubernetes-validations:
                        - {rule: "size(self.items) > 0", message: m}
                        - {rule: "self.ghost == 1", message: m}
                        properties:
                          untyped: {description: no type}
                          both: {type: object, properties: {a: {type: string}}, additionalProperties: {type: string}}
                          mode: {type: string, enum: [A, B], default: C}
                          count: {type: integer, default: "three"}
                          items:
                            type: array
                            x-kubernetes-list-type: map
                            x-kubernetes-list-map-keys: [key]
                            items: {type: object, properties: {key: {type: string}}}
                          tags:
                            type: array
                            x-kubernetes-list-type: set
                            items: {type: object}
                          list: {type: array}
            """)[0].AsObject();
        var errors = SchemaLint.Check(bad);
        string[] expected =
        [
            "metadata: only type and description",
            "spec.untyped: no type",
            "spec.both: properties and additionalProperties exclude each other",
            "spec.mode: default \"C\" is not one of the enum values",
            "spec.count: default \"three\" is not a integer",
            "spec.items: list-map key key must be required or defaulted",
            "spec.tags: list-type set needs scalar items",
            "spec.list: an array needs items",
            "reads self.items, which may be absent, without has(self.items)",
            "reads self.ghost, which is not a property",
            "printer column X: .spec.nothere names no field",
        ];
        foreach (var e in expected)
        {
            Assert.Contains(errors, x => x.Contains(e, StringComparison.Ordinal));
        }
        Assert.Equal(expected.Length, errors.Count);
    }
}
