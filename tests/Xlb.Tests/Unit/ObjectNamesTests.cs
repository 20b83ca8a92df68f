using Xlb.ApiServerDouble;
using Xlb.Crds;
using Xlb.Kube;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

/// <summary>
/// Names and label values XLB makes from other objects' names stay within what the API server
/// takes, as the double checks it (<see cref="ObjectRules"/>): a node's name is a subdomain of up to
/// 253 characters, a label value holds 63.
/// </summary>
public sealed class ObjectNamesTests
{
    private static readonly string Long = string.Join('.', Enumerable.Repeat("rack-07-row-c", 18)); // 251 characters

    private static void ValidName(string name) => Assert.Empty(ObjectRules.Name(NameRule.Subdomain, name));

    private static void ValidLabelValue(string value) =>
        Assert.Empty(ObjectRules.Check(ResourceType.Leases, new System.Text.Json.Nodes.JsonObject { ["metadata"] = new System.Text.Json.Nodes.JsonObject { ["labels"] = new System.Text.Json.Nodes.JsonObject { ["k"] = value } } }));

    [Theory]
    [InlineData("lb-1")]
    [InlineData("ip-10-0-1-23.eu-west-1.compute.internal")]
    public void A_node_name_that_fits_is_its_own_label_value_and_lease_name_suffix(string node)
    {
        Assert.Equal(node, XlbApi.NodeLabelValue(node));
        Assert.Equal($"xlb-agent-{node}", XlbApi.AgentLeaseName(node));
    }

    [Fact]
    public void A_long_node_name_becomes_a_valid_distinct_label_value_lease_name_and_chunk_name()
    {
        Assert.Equal(251, Long.Length);
        var other = Long[..^1] + "d";
        // Cut where the label value (46), the chunk name (200) and the Lease name (226) cut a name, each after a dot.
        string DotAt(int i) => new string('a', i) + "." + new string('b', 252 - i);
        foreach (var node in new[] { Long, other, Long[..69], DotAt(45), DotAt(199), DotAt(225) })
        {
            ValidName(node);
            var label = XlbApi.NodeLabelValue(node);
            Assert.True(label.Length <= 63, label);
            ValidLabelValue(label);
            ValidName(XlbApi.AgentLeaseName(node));
            ValidName(Chunking.ChunkName(node, new string('a', 64)));
        }
        // Names that differ only past the cut stay apart.
        Assert.NotEqual(XlbApi.NodeLabelValue(Long), XlbApi.NodeLabelValue(other));
        Assert.NotEqual(XlbApi.AgentLeaseName(Long), XlbApi.AgentLeaseName(other));
        Assert.StartsWith("xlb-agent-rack-07-row-c.", XlbApi.AgentLeaseName(Long), StringComparison.Ordinal);
        // An event about an object of the longest name gets a name the server takes.
        ValidName(XlbApi.ObjectName("", new string('a', 253), ".18a2b3c4d5e6f7a8"));
    }

    [Fact]
    public void An_event_note_is_cut_at_1024_bytes_between_characters()
    {
        Assert.Equal("short", EventRecorder.Note("short"));
        Assert.Equal(1024, EventRecorder.Note(new string('a', 2000)).Length);
        var twoBytes = EventRecorder.Note(new string('×', 600));
        Assert.Equal(512, twoBytes.Length);
        var emoji = EventRecorder.Note("a" + string.Concat(Enumerable.Repeat("🙂", 300)));
        Assert.Equal(1 + 255 * 2, emoji.Length); // 1 + 255 × 4 bytes = 1021; a 256th would pass 1024
        Assert.False(char.IsHighSurrogate(emoji[^1]));
        Assert.True(System.Text.Encoding.UTF8.GetByteCount(emoji) <= 1024);
    }
}
