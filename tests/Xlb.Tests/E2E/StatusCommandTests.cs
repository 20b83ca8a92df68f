using System.Net;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// `xlb status`, the real binary, against a running agent's pinned maps: which VIPs this node
/// holds, the service with its backends and shares, counters that match the traffic sent, and
/// the flow table filtered by address. The agent also writes the connection log: a line when
/// each connection began and one when it closed.
/// </summary>
public sealed class StatusCommandTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Status_shows_vips_services_backends_counters_and_flows_of_the_running_data_plane()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("s", backends: 3);
        var topology = bed.Topology;
        var manifests = Examples.CopyToTemp("demo");
        var flowLog = Path.Combine(manifests, "connections.jsonl");
        try
        {
            using var stack = StandaloneStack.Start(topology, manifests, "lb-1", bed.Log, "--flow-log", flowLog);
            var config = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            var listener = Assert.Single(config.Spec.Listeners);
            var probe = await HttpProbe.RunAsync(topology.Client, new IPEndPoint(IPAddress.Parse(listener.Vip), listener.Port), count: 30, parallel: 3, ct);
            Assert.Equal(0, probe.Failed);

            var json = JsonNode.Parse(stack.Status("--node-config", stack.NodeConfigPath, "--flows", "-o", "json"))!;
            output.WriteLine(json.ToJsonString());
            Assert.Equal("lb-1", json["node"]!.GetValue<string>());
            Assert.Equal(config.Spec.Revision, json["revision"]!.GetValue<long>());
            var vip = Assert.Single(json["vips"]!.AsArray());
            Assert.Equal((listener.Vip, "active"), (vip!["address"]!.GetValue<string>(), vip["role"]!.GetValue<string>()));

            var service = Assert.Single(json["services"]!.AsArray())!;
            Assert.Equal(listener.Name, service["name"]!.GetValue<string>());
            Assert.Equal((listener.Port, "TCP", "FullNAT", "Maglev"), (service["port"]!.GetValue<int>(), service["protocol"]!.GetValue<string>(), service["mode"]!.GetValue<string>(), service["algorithm"]!.GetValue<string>()));
            // Every request is one connection: one new flow each, and its packets both ways.
            Assert.Equal(30UL, service["newFlows"]!.GetValue<ulong>());
            Assert.True(service["packets"]!.GetValue<ulong>() >= 30 * 3, "fewer packets than three per connection");
            Assert.True(service["replyPackets"]!.GetValue<ulong>() >= 30 * 2, "fewer replies than two per connection");
            var backends = service["backends"]!.AsArray();
            Assert.Equal(listener.Backends.Select(b => $"{b.Address}:{b.Port}").Order(StringComparer.Ordinal),
                backends.Select(b => $"{b!["address"]}:{b["port"]}").Order(StringComparer.Ordinal));
            Assert.All(backends, b => Assert.Equal("active", b!["state"]!.GetValue<string>()));
            Assert.Equal(service["ringSize"]!.GetValue<int>(), backends.Sum(b => b!["ringSlots"]!.GetValue<int>()));
            Assert.Equal(probe.ByBackend.Count, backends.Count(b => b!["activeFlows"]!.GetValue<int>() > 0));
            // Every connection's flow counted to its backend: the per-backend new flows add up to the service's.
            Assert.Equal(30UL, (ulong)backends.Sum(b => (long)b!["newFlows"]!.GetValue<ulong>()));
            Assert.Equal(probe.ByBackend.Count, backends.Count(b => b!["packets"]!.GetValue<ulong>() > 0));

            // The flow table: one entry per connection (closing, not yet timed out), all from the client.
            var flows = json["flows"]!.AsArray();
            Assert.Equal(30, flows.Count);
            Assert.All(flows, f => Assert.StartsWith(LbTopology.ClientAddress + ":", f!["client"]!.GetValue<string>(), StringComparison.Ordinal));
            Assert.All(flows, f => Assert.Equal($"{listener.Vip}:{listener.Port}", f!["vip"]!.GetValue<string>()));
            Assert.All(flows, f => Assert.InRange(f!["natPort"]!.GetValue<int>(), 40000, 59999));
            Assert.All(flows, f => Assert.Equal(listener.Name, f!["service"]!.GetValue<string>()));
            Assert.True(json["counters"]!["fwd_new_flow"]!.GetValue<ulong>() >= 30);

            // The connection log: every connection began and closed, on the backend the flow table names.
            string[] Lines() => File.Exists(flowLog) ? File.ReadAllLines(flowLog) : [];
            await Eventually.TrueAsync(() => Lines().Length >= 60, "30 connections begun and closed in the connection log");
            var logged = Lines().Select(l => JsonNode.Parse(l)!).ToList();
            Assert.Equal(60, logged.Count);
            var byClient = logged.GroupBy(l => l["client"]!.GetValue<string>()).ToList();
            Assert.Equal(30, byClient.Count);
            var backendOf = flows.ToDictionary(f => f!["client"]!.GetValue<string>(), f => f!["backend"]!.GetValue<string>());
            foreach (var connection in byClient)
            {
                Assert.Equal(["new", "closed"], connection.Select(l => l["event"]!.GetValue<string>()));
                Assert.All(connection, l => Assert.Equal(backendOf[connection.Key], l["backend"]!.GetValue<string>()));
                Assert.All(connection, l => Assert.Equal((listener.Name, $"{listener.Vip}:{listener.Port}", "TCP", "FullNAT"),
                    (l["service"]!.GetValue<string>(), l["vip"]!.GetValue<string>(), l["protocol"]!.GetValue<string>(), l["mode"]!.GetValue<string>())));
                Assert.Contains(connection.Last()["closedBy"]!.GetValue<string>(), new[] { "client", "backend" });
                var opened = DateTimeOffset.Parse(connection.First()["time"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture);
                Assert.InRange(opened, DateTimeOffset.UtcNow.AddMinutes(-2), DateTimeOffset.UtcNow.AddSeconds(1));
            }

            // Filtered by a backend's address: only its flows, as many as it served.
            var one = LbTopology.BackendAddress(1);
            var filtered = JsonNode.Parse(stack.Status("--flow", one, "-o", "json"))!["flows"]!.AsArray();
            Assert.Equal(probe.ByBackend.GetValueOrDefault("backend-1"), filtered.Count);
            Assert.All(filtered, f => Assert.StartsWith(one + ":", f!["backend"]!.GetValue<string>(), StringComparison.Ordinal));

            // The table: what a person reads.
            var table = stack.Status("--node-config", stack.NodeConfigPath);
            output.WriteLine(table);
            Assert.Contains("VIPS", table, StringComparison.Ordinal);
            Assert.Matches($@"{Regex(listener.Vip)}\s+active", table);
            Assert.Matches($@"{Regex(listener.Name)}\s+{Regex(listener.Vip)}:{listener.Port}/TCP\s+FullNAT\s+Maglev\s+\d+\s+\d+\s+\d+\s+30\s+30\n", table);

            // Nothing pinned under another instance name: a clear error, exit code 1.
            var error = Assert.Throws<InvalidOperationException>(() => Netns.Sh(StandaloneStack.Self()[0], [.. StandaloneStack.Self()[1..], "status", "--bpffs", StandaloneStack.TestBpffs, "--instance", "no-such-instance"]));
            Assert.Contains("(1)", error.Message, StringComparison.Ordinal);
            Assert.Contains("no XLB data plane is pinned", error.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }

    private static string Regex(string s) => System.Text.RegularExpressions.Regex.Escape(s);
}
