using System.Net;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// LeastConn with real TCP connections that stay open: manifests → xlb operator → xlb agent → XDP
/// in the LB namespace. Each new connection goes to the backend with fewer open connections, and
/// connections that close free their backend's place.
/// </summary>
public sealed class LeastConnEndToEndTests(ITestOutputHelper output)
{
    private const string Vip = "10.250.0.22";

    private const string Mapping = """
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: web-lc
          namespace: demo
        spec:
          shardRef: edge
          vip: 10.250.0.22
          ports:
            - name: http
              port: 80
              targetPort: 8080
          scheduling:
            algorithm: LeastConn
          backend:
            endpoints:
              - address: 10.201.1.2
              - address: 10.201.2.2
        """;

    [Fact]
    public async Task Each_new_connection_goes_to_the_backend_with_fewer_open_connections()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("lc", backends: 2);
        var manifests = Examples.CopyToTemp("demo");
        var held = new List<(KeepAliveClient Connection, string Backend)>();
        try
        {
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Mapping);
            var health = new IPEndPoint(IPAddress.Loopback, 9473);
            using var stack = StandaloneStack.Start(bed.Topology, manifests, "lb-1", bed.Log, "--listen", health.ToString());
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            var target = new IPEndPoint(IPAddress.Parse(Vip), 80);
            // A connection that asks once which backend serves it, and stays open.
            async Task<string> Open()
            {
                var connection = await KeepAliveClient.ConnectAsync(bed.Topology.Client, target, ct);
                try
                {
                    var backend = await connection.GetAsync(ct);
                    held.Add((connection, backend));
                    return backend;
                }
                catch
                {
                    connection.Dispose();
                    throw;
                }
            }

            // 0-0: either; 1-0: the other; 1-1: either; 2-1: the other.
            var first = await Open();
            var second = await Open();
            Assert.NotEqual(first, second);
            var third = await Open();
            var fourth = await Open();
            Assert.NotEqual(third, fourth);
            // xlb status shows the counts the program compares: two open connections on each backend.
            var status = JsonNode.Parse(stack.Status("--node-config", stack.NodeConfigPath, "-o", "json"))!;
            var backends = Assert.Single(status["services"]!.AsArray())!["backends"]!.AsArray();
            Assert.All(backends, b => Assert.Equal(2, b!["openFlows"]!.GetValue<long>()));
            // And the agent's metrics.
            var metrics = (await HttpProbe.StatusAsync(bed.Topology.Lb, health, "/metrics", ct)).Body;
            Assert.Contains("xlb_backend_open_flows{backend=\"10.201.1.2:8080\"} 2\n", metrics, StringComparison.Ordinal);
            Assert.Contains("xlb_backend_open_flows{backend=\"10.201.2.2:8080\"} 2\n", metrics, StringComparison.Ordinal);
            Assert.Equal(["backend-1", "backend-2"], new[] { first, second }.Order(StringComparer.Ordinal));

            // Both connections to backend-1 close: the next two go there, though it was even before.
            foreach (var h in held.Where(h => h.Backend == "backend-1").ToList())
            {
                h.Connection.Dispose();
                held.Remove(h);
            }
            // The FINs pass the LB on their way out; give them a moment.
            await Task.Delay(TimeSpan.FromMilliseconds(300), ct);
            Assert.Equal(["backend-1", "backend-1"], [await Open(), await Open()]);
            // 2-2 again: the next pair splits.
            Assert.NotEqual(await Open(), await Open());
        }
        finally
        {
            foreach (var (connection, _) in held)
            {
                connection.Dispose();
            }
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }
}
