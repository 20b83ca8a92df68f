using System.Text.Json;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Kube;

namespace Xlb.Tests.Unit;

/// <summary>A listener's backends are read and written by hand, into exactly the JSON (and under exactly the rules) of the serializer's contract.</summary>
public class NodeBackendsJsonTests
{
    private static string ContractJson(List<NodeBackend> backends, JsonSerializerOptions options) => JsonSerializer.Serialize(backends, options);

    private static string ListenerBackendsJson(List<NodeBackend> backends, JsonSerializerOptions options)
    {
        using var doc = JsonDocument.Parse(JsonSerializer.Serialize(new Listener { Name = "n", Vip = "10.0.0.1", Port = 80, Backends = backends }, options));
        return doc.RootElement.GetProperty("backends").GetRawText();
    }

    [Fact]
    public void Random_backends_are_written_as_the_contract_writes_them_and_read_back_the_same()
    {
        var rng = new Random(23);
        string[] addresses = ["10.0.0.1", "2001:db8::1", "fd00::a", "192.0.2.255", "a\"b\\c\u00e9"];
        for (var round = 0; round < 300; round++)
        {
            var backends = Enumerable.Range(0, rng.Next(0, 8)).Select(_ => new NodeBackend
            {
                Address = addresses[rng.Next(addresses.Length)], Port = rng.Next(-1, 70000), Weight = rng.Next(-2, 200), Draining = rng.Next(2) == 0,
            }).ToList();
            // Unindented, IP-text backends take the writer's raw path; indented ones and other text the token path.
            foreach (var options in new[] { XlbJson.Options, KubeJson.Options, new JsonSerializerOptions(XlbJson.Options) { WriteIndented = true } })
            {
                var json = ListenerBackendsJson(backends, options);
                // Indented, the listener's backends sit one level deeper than the list written alone.
                var contract = options.WriteIndented ? ContractJson(backends, options).Replace("\n", "\n  ", StringComparison.Ordinal) : ContractJson(backends, options);
                Assert.Equal(contract, json);
                var read = JsonSerializer.Deserialize<Listener>($$"""{"name":"n","vip":"10.0.0.1","port":80,"backends":{{json}}}""", options)!;
                Assert.Equal(backends, read.Backends);
            }
        }
    }

    [Theory]
    [InlineData("""[{"address":"10.0.0.1","port":80}]""")]
    [InlineData("""[{"port":80,"address":"10.0.0.1","draining":true,"weight":0}]""")]
    [InlineData("""[{"address":"10.0.0.1","port":80,"weight":5,"weight":7}]""")]
    [InlineData("""[{"address":"10.0.0.1","port":80,"zone":"a"}]""")]
    [InlineData("""[{"address":"10.0.0.1","port":80,"extra":{"a":[1,{"b":2}]}}]""")]
    [InlineData("""[{"address":"10.0.0.1"}]""")]
    [InlineData("""[{"port":80}]""")]
    [InlineData("""[{"address":null,"port":80}]""")]
    [InlineData("""[{"address":"10.0.0.1","port":null}]""")]
    [InlineData("""[{"address":"10.0.0.1","port":"80"}]""")]
    [InlineData("""[{"address":"10.0.0.1","port":80.5}]""")]
    [InlineData("""[{"address":"10.0.0.1","port":80,"draining":"yes"}]""")]
    [InlineData("""[{"address":1,"port":80}]""")]
    [InlineData("""[{"Address":"10.0.0.1","port":80}]""")]
    [InlineData("""[["10.0.0.1",80]]""")]
    [InlineData("""{"address":"10.0.0.1","port":80}""")]
    [InlineData("""[]""")]
    public void Odd_input_is_read_or_refused_as_the_contract_reads_or_refuses_it(string backends)
    {
        foreach (var options in new[] { XlbJson.Options, KubeJson.Options })
        {
            var contract = Outcome(() => JsonSerializer.Deserialize<List<NodeBackend>>(backends, options)!);
            var converter = Outcome(() => JsonSerializer.Deserialize<Listener>($$"""{"name":"n","vip":"10.0.0.1","port":80,"backends":{{backends}}}""", options)!.Backends);
            Assert.Equal(contract, converter);
        }
    }

    private static string Outcome(Func<List<NodeBackend>> read)
    {
        try
        {
            return string.Join(";", read().Select(b => $"{b.Address} {b.Port} {b.Weight} {b.Draining}"));
        }
        catch (JsonException)
        {
            return "refused";
        }
    }
}
