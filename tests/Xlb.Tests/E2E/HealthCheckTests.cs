using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Crds.Serialization;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>A backend that stops answering leaves the Maglev table on the node at once, and comes back.</summary>
public sealed class HealthCheckTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_stopped_backend_loses_its_share_within_the_unhealthy_window_and_regains_it()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("h", backends: 3);
        var topology = bed.Topology;
        var manifests = Examples.CopyToTemp("demo");
        var log = bed.Log;
        try
        {
            await File.AppendAllTextAsync(Path.Combine(manifests, "30-web.yaml"),
                "  healthCheck:\n    type: HTTP\n    path: /healthz\n    interval: 500ms\n    timeout: 300ms\n    healthyThreshold: 2\n    unhealthyThreshold: 2\n", ct);
            using var stack = StandaloneStack.Start(topology, manifests, "lb-1", log);
            var listener = (await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct)).Spec.Listeners.Single();
            Assert.NotNull(listener.HealthCheck);
            var vip = new IPEndPoint(IPAddress.Parse(listener.Vip), listener.Port);
            Assert.Equal(3, (await HttpProbe.RunAsync(topology.Client, vip, 60, 4, ct)).ByBackend.Count);

            await bed.StopBackendAsync(2);
            var clock = Stopwatch.StartNew();
            await WaitForUnhealthyAsync(stack, ["10.201.2.2:8080"], ct);
            output.WriteLine($"backend-2 out after {clock.Elapsed.TotalSeconds:F1} s");
            // 2 failures at a 500 ms interval (±10 %), each failing within 300 ms, plus the first probe's phase.
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(3), $"detection took {clock.Elapsed.TotalSeconds:F1} s");
            var without = await HttpProbe.RunAsync(topology.Client, vip, 90, 4, ct);
            Assert.True(without.Failed == 0, $"{without.Failed} failed with backend-2 out: {string.Join("; ", without.Errors)}");
            Assert.Equal(["backend-1", "backend-3"], without.ByBackend.Keys.Order(StringComparer.Ordinal));

            bed.StartBackend(2);
            await WaitForUnhealthyAsync(stack, [], ct);
            var back = await HttpProbe.RunAsync(topology.Client, vip, 90, 4, ct);
            Assert.Equal(0, back.Failed);
            Assert.Equal(["backend-1", "backend-2", "backend-3"], back.ByBackend.Keys.Order(StringComparer.Ordinal));
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(log.ToString());
        }
    }

    private static async Task WaitForUnhealthyAsync(StandaloneStack stack, string[] expected, CancellationToken ct)
    {
        var last = "";
        for (var i = 0; i < 150; i++)
        {
            if (File.Exists(stack.AgentStatusPath))
            {
                var status = Yaml.ReadDocuments(await File.ReadAllTextAsync(stack.AgentStatusPath, ct))[0];
                var list = (status["unhealthyBackends"] as JsonArray ?? []).Select(n => n!.GetValue<string>()).ToArray();
                last = string.Join(",", list);
                if (list.SequenceEqual(expected))
                {
                    return;
                }
            }
            await Task.Delay(50, ct);
        }
        Assert.Fail($"unhealthy backends did not become [{string.Join(",", expected)}] within 7.5 s; last [{last}]");
    }
}
