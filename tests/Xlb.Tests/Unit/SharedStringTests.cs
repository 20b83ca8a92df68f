using System.Text.Json;
using Xlb.Crds;
using Xlb.Kube;

namespace Xlb.Tests.Unit;

/// <summary>Strings with few distinct values over a cluster are read as one shared string per value.</summary>
public class SharedStringTests
{
    private static List<Condition> Read(string json) => JsonSerializer.Deserialize<List<Condition>>(json, KubeJson.Options)!;

    [Fact]
    public void Conditions_read_apart_share_their_strings()
    {
        const string one = """[{"type": "Ready", "status": "True", "reason": "Ready", "message": "10.0.0.1 served by lb-1", "lastTransitionTime": "2026-11-22T10:00:00Z"}]""";
        var a = Read(one)[0];
        var b = Read(one)[0];
        Assert.Equal(a, b);
        Assert.Same(a.Type, b.Type);
        Assert.Same(a.Status, b.Status);
        Assert.Same(a.Reason, b.Reason);
        Assert.Same(a.LastTransitionTime, b.LastTransitionTime);
        Assert.Same(a.Message, b.Message);
    }

    [Fact]
    public void A_flood_of_distinct_values_does_not_stop_the_sharing()
    {
        for (var i = 0; i < 70_000; i++)
        {
            Read($$"""[{"type": "t", "status": "True", "reason": "r", "message": "flood {{i}}"}]""");
        }
        const string later = """[{"type": "t", "status": "True", "reason": "r", "message": "a message first read after the flood"}]""";
        Assert.Same(Read(later)[0].Message, Read(later)[0].Message);
    }

    [Fact]
    public void Threads_reading_the_same_new_values_at_once_get_one_string_per_value()
    {
        // Other tests read JSON meanwhile; a table that started afresh during a round may hand
        // out a second string for a value, so such a round is run again.
        for (var attempt = 0; ; attempt++)
        {
            var generation = SharedStrings.Generation;
            var values = Enumerable.Range(0, 4_000).Select(i => $"threads {attempt} {i} {Guid.NewGuid():N}").ToArray();
            var got = new string[4][];
            Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, t =>
            {
                got[t] = new string[values.Length];
                for (var k = 0; k < values.Length; k++)
                {
                    var i = t % 2 == 0 ? k : values.Length - 1 - k;
                    got[t][i] = SharedStrings.Of(values[i].AsSpan());
                }
            });
            if (SharedStrings.Generation != generation && attempt < 3)
            {
                continue;
            }
            for (var i = 0; i < values.Length; i++)
            {
                Assert.Equal(values[i], got[0][i]);
                Assert.NotSame(values[i], got[0][i]);
                for (var t = 1; t < 4; t++)
                {
                    Assert.Same(got[0][i], got[t][i]);
                }
            }
            return;
        }
    }

    [Fact]
    public void Escaped_long_and_null_values_read_as_written()
    {
        var reason = "R" + new string('x', 600);
        var json = JsonSerializer.Serialize(new[]
        {
            new Condition { Type = "Caf\u00e9\"\\/\n", Status = "\u65e5\u672c", Reason = reason, LastTransitionTime = null },
            new Condition { Type = "Caf\u00e9\"\\/\n", Status = "\u65e5\u672c", Reason = reason },
        }, KubeJson.Options);
        var read = Read(json);
        Assert.Equal("Caf\u00e9\"\\/\n", read[0].Type);
        Assert.Equal("\u65e5\u672c", read[0].Status);
        Assert.Equal(reason, read[0].Reason);
        Assert.Null(read[0].LastTransitionTime);
        Assert.Same(read[0].Type, read[1].Type);
        // Spelled with escapes, the same value is the same string.
        Assert.Same(read[0].Status, Read("""[{"type": "t", "status": "\u65e5\u672c", "reason": "r"}]""")[0].Status);
    }

    [Fact]
    public void A_value_that_is_not_a_string_is_refused()
    {
        Assert.Throws<JsonException>(() => Read("""[{"type": 1, "status": "True", "reason": "r"}]"""));
        Assert.Throws<JsonException>(() => Read("""[{"type": "t", "status": ["True"], "reason": "r"}]"""));
    }

    [Fact]
    public void Namespaces_of_objects_read_apart_are_one_string()
    {
        var a = JsonSerializer.Deserialize<ObjectMeta>("""{"name": "a", "namespace": "team-a"}""", KubeJson.Options)!;
        var b = JsonSerializer.Deserialize<ObjectMeta>("""{"name": "b", "namespace": "team-a"}""", KubeJson.Options)!;
        Assert.Same(a.Namespace, b.Namespace);
    }

    [Fact]
    public void Labels_and_annotations_are_read_and_written_as_the_contract_reads_and_writes_a_map_and_their_strings_are_shared()
    {
        var rng = new Random(29);
        string[] texts = ["app", "kubernetes.io/service-name", "endpointslice.kubernetes.io/managed-by", "endpointslice-controller.k8s.io", "", "a\"b\\c\u00e9\n", new string('x', 300)];
        for (var round = 0; round < 200; round++)
        {
            var map = Enumerable.Range(0, rng.Next(0, 5)).Select(_ => (Key: texts[rng.Next(texts.Length)] + rng.Next(3), Value: texts[rng.Next(texts.Length)]))
                .DistinctBy(kv => kv.Key).ToDictionary(kv => kv.Key, kv => kv.Value);
            var meta = new ObjectMeta { Name = "n", Labels = map, Annotations = map };
            var json = JsonSerializer.Serialize(meta, KubeJson.Options);
            var contract = JsonSerializer.Serialize(map, KubeJson.Options);
            Assert.Contains($"\"labels\":{contract}", json, StringComparison.Ordinal);
            var read = JsonSerializer.Deserialize<ObjectMeta>(json, KubeJson.Options)!;
            Assert.Equal(map, read.Labels);
            Assert.Equal(map, read.Annotations);
        }
        var a = JsonSerializer.Deserialize<ObjectMeta>("""{"labels": {"kubernetes.io/service-name": "web", "tier": "edge"}}""", KubeJson.Options)!;
        var b = JsonSerializer.Deserialize<ObjectMeta>("""{"labels": {"kubernetes.io/service-name": "web", "tier": "edge"}}""", KubeJson.Options)!;
        Assert.Same(a.Labels!.Keys.First(), b.Labels!.Keys.First());
        Assert.Same(a.Labels["tier"], b.Labels["tier"]);
        foreach (var bad in new[] { """{"labels": ["a"]}""", """{"labels": {"a": 1}}""", """{"labels": {"a": {"b": "c"}}}""" })
        {
            Assert.Throws<JsonException>(() => JsonSerializer.Deserialize<ObjectMeta>(bad, KubeJson.Options));
        }
        Assert.Null(JsonSerializer.Deserialize<ObjectMeta>("""{"labels": null}""", KubeJson.Options)!.Labels);
    }
}
