using System.Net;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// A PortMapping's own connection log: manifests → xlb operator → xlb agent (started without
/// --flow-log) → XDP; the agent writes the mapping's flows as JSON lines on its standard output,
/// and nothing of a mapping that does not ask for it.
/// </summary>
public sealed class ConnectionLogEndToEndTests(ITestOutputHelper output)
{
    private static string Mapping(string name, string vip, bool logged) => $"""
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: {name}
          namespace: demo
        spec:
          shardRef: edge
          vip: {vip}
          ports:
            - name: http
              port: 80
              targetPort: 8080
          connectionLog:
            enabled: {(logged ? "true" : "false")}
            sampleEvery: 1
          backend:
            endpoints:
              - address: 10.201.1.2
        """;

    [Fact]
    public async Task The_agent_logs_the_flows_of_the_mapping_that_asks_and_no_others()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("cl", backends: 1);
        var manifests = Examples.CopyToTemp("demo");
        try
        {
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Mapping("web-logged", "10.250.0.24", true) + "\n---\n" + Mapping("web-quiet", "10.250.0.25", false));
            using var stack = StandaloneStack.Start(bed.Topology, manifests, "lb-1", bed.Log, []);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            foreach (var vip in new[] { "10.250.0.24", "10.250.0.25" })
            {
                var probe = await HttpProbe.RunAsync(bed.Topology.Client, new IPEndPoint(IPAddress.Parse(vip), 80), count: 5, parallel: 1, ct);
                Assert.Equal(0, probe.Failed);
            }
            // The agent polls its ring buffer every 250 ms: wait for the lines, for 10 s at most.
            List<JsonNode> Lines() => [.. bed.Log.ToString().Split('\n')
                .Select(l => l.IndexOf("{\"time\"", StringComparison.Ordinal) is var at and >= 0 ? JsonNode.Parse(l[at..]) : null)
                .OfType<JsonNode>()];
            for (var waited = 0; waited < 100 && Lines().Count(l => l["event"]!.GetValue<string>() == "new") < 5; waited++)
            {
                await Task.Delay(100, ct);
            }
            var lines = Lines();
            Assert.Equal(5, lines.Count(l => l["event"]!.GetValue<string>() == "new"));
            Assert.All(lines, l => Assert.Equal("10.250.0.24:80", l["vip"]!.GetValue<string>()));
            Assert.All(lines, l => Assert.Equal("demo/web-logged/http", l["service"]!.GetValue<string>()));
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }
}
