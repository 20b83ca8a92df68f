using Xlb.Crds;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

/// <summary>A chunk's summary annotation: what the operator reads back of a chunk listed as metadata alone.</summary>
public class ChunkSummaryTests
{
    [Fact]
    public void Summaries_read_back_the_vips_and_listener_identities_written()
    {
        var rng = new Random(41);
        string[] odd = ["ns/name/http", "a\"b\\c/é/日本", "team-a/web/", "x/y/z"];
        for (var round = 0; round < 200; round++)
        {
            List<NodeVip> vips = [.. Enumerable.Range(0, rng.Next(0, 6)).Select(i => new NodeVip
            {
                Address = rng.Next(2) == 0 ? $"10.{rng.Next(256)}.{rng.Next(256)}.{i}" : $"fd00::{rng.Next(65536):x}",
                Role = rng.Next(2) == 0 ? VipRole.Active : VipRole.Standby,
                Shard = $"shard-{rng.Next(3)}",
            })];
            List<Listener> listeners = [.. Enumerable.Range(0, rng.Next(0, 8)).Select(i => new Listener
            {
                Name = odd[rng.Next(odd.Length)] + i,
                Vip = vips.Count > 0 ? vips[rng.Next(vips.Count)].Address : "10.0.0.1",
                Port = rng.Next(1, 65536),
                Protocol = rng.Next(2) == 0 ? L4Protocol.TCP : L4Protocol.UDP,
            })];
            var read = ChunkSummaries.Read(ChunkSummaries.Write(vips, listeners));
            Assert.NotNull(read);
            Assert.Equal(vips, read.Value.Vips);
            Assert.Equal(listeners.Select(l => (l.Name, l.Vip, l.Port, l.Protocol)), read.Value.Listeners.Select(l => (l.Name, l.Vip, l.Port, l.Protocol)));
        }
    }

    [Fact]
    public void A_summary_too_long_is_not_written_and_anything_unreadable_reads_as_none()
    {
        List<Listener> many = [.. Enumerable.Range(0, 2_000).Select(i => new Listener { Name = $"namespace-{i}/mapping-{i}/port-{i}", Vip = "10.0.0.1", Port = 80 })];
        Assert.Null(ChunkSummaries.Write([], many));
        Assert.NotNull(ChunkSummaries.Write([], many[..100]));
        foreach (var text in new[]
        {
            null, "", "{}", "not json", """{"v":2,"vips":[],"listeners":[]}""", """{"v":1,"vips":[]}""",
            """{"v":1,"vips":[["10.0.0.1","Leader","edge"]],"listeners":[]}""", """{"v":1,"vips":[],"listeners":[["a","10.0.0.1","80","TCP"]]}""",
            """{"v":1,"vips":[["10.0.0.1","Active"]],"listeners":[]}""", """{"v":1,"vips":[],"listeners":[""",
        })
        {
            Assert.Null(ChunkSummaries.Read(text));
        }
        Assert.NotNull(ChunkSummaries.Read("""{"v":1,"later":{"a":[1,2]},"vips":[],"listeners":[]}"""));
    }
}
