using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// FullNAT ports toward a backend are reused as real TCP lets them be: with five NAT ports, a
/// client that closes its connections first makes many more than five in a row (each port comes
/// free 2 s after its connection ended, and the backend keeps nothing of it); connections the
/// backend closes first hold their ports (the backend keeps those tuples in TIME_WAIT), so a sixth
/// one is refused.
/// </summary>
public sealed class NatPortReuseEndToEndTests(ITestOutputHelper output)
{
    private const string Vip = OneBackendWeb.Vip;

    [Fact]
    public async Task Ports_of_connections_the_client_closed_serve_again_and_those_in_the_backends_time_wait_do_not()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("nr", backends: 1);
        var manifests = Examples.CopyToTemp("demo");
        try
        {
            using var stack = await OneBackendWeb.StartAsync(bed, manifests, ct);
            var health = OneBackendWeb.Health;
            var vip = new IPEndPoint(IPAddress.Parse(Vip), 80);

            // 15 connections over five ports, the client closing each first. A SYN that finds no
            // free port is dropped and sent again by the client a second later.
            var clock = Stopwatch.StartNew();
            for (var i = 0; i < 15; i++)
            {
                Assert.Equal("backend-1", await HttpProbe.GetAsync(bed.Topology.Client, vip, TimeSpan.FromSeconds(10), ct, clientClosesFirst: true));
                await Task.Delay(300, ct);
            }
            output.WriteLine($"15 client-closed connections through 5 NAT ports in {clock.Elapsed.TotalSeconds:F1} s");
            Assert.Equal(15, bed.Backend(1)!.Served);

            // Quiet for 2 s, every port is free again: five connections the server closes first.
            await Task.Delay(2500, ct);
            for (var i = 0; i < 5; i++)
            {
                Assert.Equal("backend-1", await HttpProbe.GetAsync(bed.Topology.Client, vip, TimeSpan.FromSeconds(5), ct));
            }
            var busy = Counter(stack, "drop_nat_ports_busy");
            // xlb status: all five ports held toward the backend, by connections that have ended.
            var backend = JsonNode.Parse(stack.Status("--node-config", stack.NodeConfigPath, "-o", "json"))!["services"]![0]!["backends"]![0]!;
            Assert.Equal((5, 5), (backend["natPorts"]!.GetValue<int>(), backend["natPortsEnded"]!.GetValue<int>()));
            Assert.Contains("5/5 (5)", stack.Status("--node-config", stack.NodeConfigPath), StringComparison.Ordinal);
            // And the agent's metrics, to alert on before the range runs out.
            var metrics = (await HttpProbe.StatusAsync(bed.Topology.Lb, health, "/metrics", ct)).Body;
            Assert.Contains("xlb_nat_port_range 5\n", metrics, StringComparison.Ordinal);
            Assert.Contains("xlb_backend_nat_ports_held{backend=\"10.201.1.2:8080\"} 5\n", metrics, StringComparison.Ordinal);
            Assert.Contains("xlb_backend_nat_ports_ended{backend=\"10.201.1.2:8080\"} 5\n", metrics, StringComparison.Ordinal);
            // Their ports stay theirs while the backend holds them in TIME_WAIT: a sixth gets none.
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => HttpProbe.GetAsync(bed.Topology.Client, vip, TimeSpan.FromSeconds(4), ct));
            Assert.True(Counter(stack, "drop_nat_ports_busy") > busy, "the sixth connection's SYN was not refused for want of a NAT port");
            Assert.Equal(20, bed.Backend(1)!.Served);

            // The node config's status says so, with the pair and the numbers (checked every 10 s).
            string Degraded() => File.ReadAllText(stack.AgentStatusPath);
            var deadline = Stopwatch.StartNew();
            while (!Degraded().Contains("NatPortsLow", StringComparison.Ordinal) && deadline.Elapsed < TimeSpan.FromSeconds(20))
            {
                await Task.Delay(200, ct);
            }
            var status = Xlb.Crds.Serialization.Yaml.ReadDocuments(Degraded())[0]["conditions"]!.AsArray().Single(c => c!["type"]!.GetValue<string>() == "Degraded")!;
            Assert.Equal(("True", "NatPortsLow"), (status["status"]!.GetValue<string>(), status["reason"]!.GetValue<string>()));
            Assert.Contains("10.201.1.2:8080/TCP from 10.250.0.20: 5 of 5 ports held, 5 of them by ended connections", status["message"]!.GetValue<string>(), StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }

    private static ulong Counter(StandaloneStack stack, string name) => OneBackendWeb.Counter(stack, name);
}
