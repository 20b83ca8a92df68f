using System.Text.Json.Nodes;
using Xlb.ApiServerDouble;
using Xlb.Crds.Schema;
using Xlb.Crds.Serialization;
using Xlb.Tests.Support;

namespace Xlb.Tests.Unit;

/// <summary>
/// The API server double checks custom resources as the API server does: pruning, defaults,
/// the OpenAPI checks and the CRDs' CEL rules. Its CEL covers what the rules are written in; the
/// CRDs' own rules are run here against objects that keep and break each.
/// </summary>
public sealed class CelTests
{
    private static JsonNode? J(string json) => JsonNode.Parse(json);

    [Theory]
    // The CRDs' rules, each kept and broken.
    [InlineData("self.all(p, !has(p.name) || self.exists_one(q, has(q.name) && q.name == p.name))", """[{"name":"a"},{"name":"b"},{"port":1}]""", true)]
    [InlineData("self.all(p, !has(p.name) || self.exists_one(q, has(q.name) && q.name == p.name))", """[{"name":"a"},{"name":"a"}]""", false)]
    [InlineData("self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0", """{"operator":"In","values":["x"]}""", true)]
    [InlineData("self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0", """{"operator":"In","values":[]}""", false)]
    [InlineData("self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0", """{"operator":"Exists"}""", true)]
    [InlineData("self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0", """{"operator":"Exists","values":["x"]}""", false)]
    [InlineData("duration(self.holdTime) >= duration('3s') && duration(self.holdTime) <= duration('65535s')", """{"holdTime":"9s"}""", true)]
    [InlineData("duration(self.holdTime) >= duration('3s') && duration(self.holdTime) <= duration('65535s')", """{"holdTime":"2500ms"}""", false)]
    [InlineData("duration(self.timeout) < duration(self.interval)", """{"timeout":"2s","interval":"5s"}""", true)]
    [InlineData("duration(self.timeout) < duration(self.interval)", """{"timeout":"1m","interval":"59s"}""", false)]
    [InlineData("self.mode != 'ClientIP' || (duration(self.timeout) >= duration('1s') && duration(self.timeout) <= duration('24h'))", """{"mode":"ClientIP","timeout":"25h"}""", false)]
    [InlineData("self.mode != 'ClientIP' || (duration(self.timeout) >= duration('1s') && duration(self.timeout) <= duration('24h'))", """{"mode":"None","timeout":"25h"}""", true)]
    [InlineData("duration(self) >= duration('1s') && duration(self) <= duration('168h')", "\"1h30m\"", true)]
    [InlineData("duration(self) >= duration('1s') && duration(self) <= duration('168h')", "\"500ms\"", false)]
    [InlineData("!(has(self.serviceRef) && has(self.endpoints) && size(self.endpoints) > 0)", """{"serviceRef":{"name":"a"},"endpoints":[]}""", true)]
    [InlineData("!(has(self.serviceRef) && has(self.endpoints) && size(self.endpoints) > 0)", """{"serviceRef":{"name":"a"},"endpoints":[{"address":"10.0.0.1"}]}""", false)]
    [InlineData("self == 'Auto' || isIP(self)", "\"Auto\"", true)]
    [InlineData("self == 'Auto' || isIP(self)", "\"fd00:250::1\"", true)]
    [InlineData("self == 'Auto' || isIP(self)", "\"auto\"", false)]
    [InlineData("self.mode == 'BGP' || !has(self.peers) || size(self.peers) == 0", """{"mode":"L2","peers":[{}]}""", false)]
    [InlineData("self.strategy != 'Pinned' || has(self.nodes) && size(self.nodes) > 0", """{"strategy":"Pinned","nodes":[]}""", false)]
    [InlineData("self.mode == 'FullNAT' || !has(self.sourceAddresses) || size(self.sourceAddresses) == 0", """{"mode":"DNAT","sourceAddresses":["10.0.0.5"]}""", false)]
    [InlineData("self.mode == 'FullNAT' || !has(self.sourceAddresses) || size(self.sourceAddresses) == 0", """{"mode":"FullNAT","sourceAddresses":["10.0.0.5"]}""", true)]
    [InlineData("self.all(a, isIP(a))", """["10.0.0.5","fd00::5"]""", true)]
    [InlineData("self.all(a, isIP(a))", """["10.0.0.5","10.0.5"]""", false)]
    [InlineData("self.all(a, self.exists_one(b, b == a))", """["10.0.0.5","10.0.0.6"]""", true)]
    [InlineData("self.all(a, self.exists_one(b, b == a))", """["10.0.0.5","10.0.0.5"]""", false)]
    // isIP as Kubernetes has it: no leading zeros, no zone, no IPv4-mapped IPv6, no short forms.
    [InlineData("isIP(self)", "\"10.0.0.1\"", true)]
    [InlineData("isIP(self)", "\"10.0.0.01\"", false)]
    [InlineData("isIP(self)", "\"10.1\"", false)]
    [InlineData("isIP(self)", "\"256.0.0.1\"", false)]
    [InlineData("isIP(self)", "\"fe80::1%eth0\"", false)]
    [InlineData("isIP(self)", "\"::ffff:10.0.0.1\"", false)]
    // && and || are commutative: the side that decides wins over an error on the other.
    [InlineData("self.ghost == 1 || true", "{}", true)]
    [InlineData("false && self.ghost == 1", "{}", false)]
    [InlineData("self.ghost == 1 && false", "{}", false)]
    [InlineData("size('héllo') == 5 && 3 in [1, 2, 3] && 'a' < 'b' && -1 < 0 && 1.5 > 1 && [1, 2] == [1, 2]", "{}", true)]
    public void A_rule_holds_or_not_as_CEL_says(string rule, string self, bool holds) => Assert.Equal(holds, Cel.Holds(rule, J(self)));

    [Fact]
    public void An_error_that_nothing_absorbs_is_an_error_and_a_transition_rule_reads_the_old_value()
    {
        Assert.Contains("no such key: ghost", Assert.Throws<CelException>(() => Cel.Holds("self.ghost == 1", J("{}"))).Message, StringComparison.Ordinal);
        Assert.Throws<CelException>(() => Cel.Holds("self.ghost == 1 || false", J("{}")));
        Assert.Throws<CelException>(() => Cel.Holds("size(self) ==", J("[]")));
        Assert.True(Cel.IsTransition("self == oldSelf"));
        Assert.False(Cel.IsTransition("self == 'oldSelf'"));
        Assert.True(Cel.Holds("self == oldSelf", J("\"edge\""), J("\"edge\"")));
        Assert.False(Cel.Holds("self == oldSelf", J("\"edge\""), J("\"core\"")));
    }

    [Fact]
    public void Durations_are_read_as_Go_writes_them()
    {
        Assert.Equal(TimeSpan.FromMinutes(90), Cel.Duration("1h30m"));
        Assert.Equal(TimeSpan.FromMilliseconds(250), Cel.Duration("250ms"));
        Assert.Equal(TimeSpan.FromMilliseconds(1500), Cel.Duration("1.5s"));
        Assert.Equal(TimeSpan.FromSeconds(-2), Cel.Duration("-2s"));
        Assert.Equal(TimeSpan.Zero, Cel.Duration("0"));
        Assert.Throws<CelException>(() => Cel.Duration("5"));
        Assert.Throws<CelException>(() => Cel.Duration("5d"));
    }

    [Fact]
    public void Every_rule_of_the_crds_parses_and_every_example_is_valid_as_the_api_server_would_find_it()
    {
        var crds = CrdGenerator.Kinds.Select(k => new CrdGenerator("<doc/>").Generate(k)).ToList();
        var rules = crds.SelectMany(c => Rules(c)).Distinct().ToList();
        Assert.True(rules.Count >= 13, $"{rules.Count} rules");
        foreach (var rule in rules)
        {
            Cel.IsTransition(rule); // tokenizes
            try
            {
                Cel.Holds(rule, J("{}"), J("{}"));
            }
            catch (CelException e) when (e.Message.StartsWith("no such key", StringComparison.Ordinal) || e.Message.StartsWith("found no matching overload", StringComparison.Ordinal)
                || e.Message.StartsWith("no matching overload", StringComparison.Ordinal))
            {
                // Evaluated against an empty object: a parse error would have been thrown before.
            }
        }

        var root = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../../examples"));
        var checkedCount = 0;
        foreach (var dir in Directory.EnumerateDirectories(root))
        {
            foreach (var doc in Examples.Kustomized(dir))
            {
                var crd = crds.FirstOrDefault(c => c["spec"]!["names"]!["kind"]!.GetValue<string>() == doc["kind"]?.GetValue<string>());
                if (crd is null)
                {
                    continue;
                }
                var schema = crd["spec"]!["versions"]![0]!["schema"]!["openAPIV3Schema"]!.AsObject();
                var obj = doc.DeepClone().AsObject();
                var before = obj.ToJsonString();
                Validation.Prune(schema, obj);
                Assert.Equal(before, obj.ToJsonString()); // no field the schema does not know
                Validation.Default(schema, obj);
                Assert.Empty(Validation.Check(schema, obj, null));
                checkedCount++;
            }
        }
        Assert.True(checkedCount >= 4, $"{checkedCount} objects in examples/");
    }

    [Fact]
    public void A_custom_resource_is_pruned_defaulted_and_checked_with_every_error_named()
    {
        var schema = new CrdGenerator("<doc/>").Generate(typeof(Xlb.Crds.PortMapping))["spec"]!["versions"]![0]!["schema"]!["openAPIV3Schema"]!.AsObject();
        var pm = J("""
            {"apiVersion":"xlb.io/v1alpha1","kind":"PortMapping","metadata":{"name":"web","namespace":"demo"},
             "spec":{"shardRef":"edge","vip":"auto","ghost":1,
                     "ports":[{"name":"http","port":80},{"name":"http","port":70000,"protocol":"SCTP"}],
                     "backend":{"endpoints":[{"address":"10.0.0.1"}]},
                     "nat":{"mode":"Masquerade"}}}
            """)!.AsObject();
        Validation.Prune(schema, pm);
        Assert.False(pm["spec"]!.AsObject().ContainsKey("ghost"));
        Validation.Default(schema, pm);
        Assert.Equal("TCP", pm["spec"]!["ports"]![0]!["protocol"]!.GetValue<string>());
        Assert.Equal("Maglev", pm["spec"]!["scheduling"]!["algorithm"]!.GetValue<string>());
        var errors = Validation.Check(schema, pm, null).Select(e => $"{e.Field}: {e.Message}").ToList();
        Assert.Contains("spec.vip: Invalid value: \"string\": vip must be Auto or an IP address", errors);
        Assert.Contains("spec.ports: Invalid value: \"array\": port names must be unique", errors);
        Assert.Contains("spec.ports[1].port: Invalid value: 70000: spec.ports[1].port in body should be less than or equal to 65535", errors);
        Assert.Contains(errors, e => e.StartsWith("spec.ports[1].protocol: Unsupported value: \"SCTP\": supported values: \"TCP\", \"UDP\"", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("spec.nat.mode: Unsupported value: \"Masquerade\"", StringComparison.Ordinal));
        Assert.Equal(5, errors.Count);

        // The transition rule: shardRef may not change on an update, and may stay.
        var good = J("""{"spec":{"shardRef":"edge","backend":{"endpoints":[]}}}""")!.AsObject();
        var moved = J("""{"spec":{"shardRef":"core","backend":{"endpoints":[]}}}""")!.AsObject();
        Assert.Empty(Validation.Check(schema, good, good.DeepClone()));
        Assert.Contains(Validation.Check(schema, moved, good), e => e.Field == "spec.shardRef" && e.Message.Contains("Delete the PortMapping", StringComparison.Ordinal));
        // Required fields.
        Assert.Contains(("spec.shardRef", "Required value"), Validation.Check(schema, J("""{"spec":{"backend":{}}}""")!, null));
        // Numbers as a client's serializer holds them (CLR values, not parsed text) are integers all the same.
        var built = new JsonObject { ["spec"] = new JsonObject { ["shardRef"] = "edge", ["backend"] = new JsonObject(), ["ports"] = new JsonArray(new JsonObject { ["name"] = "a", ["port"] = 80 }) } };
        Assert.Empty(Validation.Check(schema, built, null));
        Assert.True(Cel.Holds("self.port == 80 && self.port < 81.5", new JsonObject { ["port"] = 80 }));

        // format: date-time, as a condition's lastTransitionTime is written.
        var conditions = new CrdGenerator("<doc/>").Generate(typeof(Xlb.Crds.PortMapping))["spec"]!["versions"]![0]!["schema"]!["openAPIV3Schema"]!["properties"]!["status"]!["properties"]!["conditions"]!.AsObject();
        string[] Times(string time) => [.. Validation.Check(conditions, J($$"""[{"type":"Ready","status":"True","lastTransitionTime":"{{time}}","reason":"Programmed","message":""}]""")!, null).Select(e => $"{e.Field}: {e.Message}")];
        Assert.Empty(Times("2026-11-23T10:00:00Z"));
        Assert.Empty(Times("2026-11-23T10:00:00.123456+01:00"));
        Assert.Empty(Times("2024-02-29t23:59:59z"));
        foreach (var bad in new[] { "2026-11-23 10:00:00Z", "2026-11-23T10:00:00", "2025-02-29T10:00:00Z", "2026-11-23T24:00:00Z", "yesterday", "" })
        {
            Assert.Equal([$"[0].lastTransitionTime: Invalid value: \"{bad}\": [0].lastTransitionTime in body must be of type date-time: \"{bad}\""], Times(bad));
        }
    }

    private static IEnumerable<string> Rules(JsonNode? node) => node switch
    {
        JsonObject o => (o["x-kubernetes-validations"] as JsonArray ?? []).Select(v => v!["rule"]!.GetValue<string>())
            .Concat(o.Where(p => p.Key != "x-kubernetes-validations").SelectMany(p => Rules(p.Value))),
        JsonArray a => a.SelectMany(Rules),
        _ => [],
    };
}
