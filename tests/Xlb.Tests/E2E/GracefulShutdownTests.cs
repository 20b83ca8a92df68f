using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>The shutdown window as users of XLB expect it from their Kubernetes deployments.</summary>
public sealed class GracefulShutdownTests(ITestOutputHelper output)
{
    private static readonly IPEndPoint Health = new(IPAddress.Loopback, 9470);

    [Fact]
    public async Task On_sigterm_readiness_fails_new_connections_are_refused_established_ones_continue_then_the_agent_exits()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("g", backends: 3);
        var topology = bed.Topology;
        var log = bed.Log;
        try
        {
            // Metrics are pushed over OTLP too, to a collector of the test's reached through the LB namespace's loopback.
            await using var collector = await OtlpReceiver.StartAsync(grpc: false);
            await using var relay = NetnsRelay.Start(topology.Lb, collector.Endpoint);
            using var stack = StandaloneStack.Start(topology, Examples.Dir("demo"), "lb-1", log, "--shutdown-timeout", "4", "--listen", Health.ToString(),
                "--otlp-endpoint", $"http://{relay.Endpoint}", "--otlp-protocol", "http/protobuf", "--otlp-interval", "0.5");
            var listener = (await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct)).Spec.Listeners.Single();
            var vip = new IPEndPoint(IPAddress.Parse(listener.Vip), listener.Port);

            Assert.Equal(200, (await HttpProbe.StatusAsync(topology.Lb, Health, "/readyz", ct)).Status);
            using var established = await KeepAliveClient.ConnectAsync(topology.Client, vip, ct);
            var backend = await established.GetAsync(ct);
            var metrics = (await HttpProbe.StatusAsync(topology.Lb, Health, "/metrics", ct)).Body;
            Assert.Contains("xlb_agent_applied_revision 1", metrics, StringComparison.Ordinal);
            // The first apply wrote to the maps: observed, and well inside the largest finite bucket.
            var applies = System.Text.RegularExpressions.Regex.Match(metrics, "xlb_agent_apply_duration_seconds_count ([1-9][0-9]*)\n").Groups[1].Value;
            Assert.NotEmpty(applies);
            Assert.Contains($"xlb_agent_apply_duration_seconds_bucket{{le=\"30\"}} {applies}\n", metrics, StringComparison.Ordinal);
            Assert.Matches("xlb_packets_total\\{reason=\"fwd_new_flow\"\\} [1-9]", metrics);
            Assert.Matches($"xlb_service_new_flows_total\\{{service=\"{vip.Address}:{vip.Port}/TCP\"\\}} [1-9]", metrics);
            var backendAddresses = string.Join("|", listener.Backends.Select(b => System.Text.RegularExpressions.Regex.Escape($"{b.Address}:{b.Port}")));
            Assert.Matches($"xlb_backend_new_flows_total\\{{backend=\"({backendAddresses})\"\\}} [1-9]", metrics);
            // The keep-alive connection is live in the flow table: counted for its service and its backend.
            Assert.Matches($"xlb_service_active_flows\\{{service=\"{vip.Address}:{vip.Port}/TCP\"\\}} [1-9]", metrics);
            Assert.Matches($"xlb_backend_active_flows\\{{backend=\"({backendAddresses})\"\\}} [1-9]", metrics);

            // The same figures over OTLP: the service's new flows and its live flow, attributed to it.
            var service = $"{vip.Address}:{vip.Port}/TCP";
            var export = await collector.WaitForAsync(r =>
                r.Points.Any(p => p.Metric == "xlb.service.new_flows" && p.Attributes.GetValueOrDefault("service") == service && p.Value >= 1) &&
                r.Points.Any(p => p.Metric == "xlb.service.active_flows" && p.Attributes.GetValueOrDefault("service") == service && p.Value >= 1), TimeSpan.FromSeconds(20), ct);
            Assert.Contains(export.Points, p => p.Metric == "xlb.packets" && p.Attributes.GetValueOrDefault("reason") == "fwd_new_flow" && p.Value >= 1);
            Assert.Contains(export.Points, p => p.Metric == "xlb.backend.new_flows" && listener.Backends.Any(b => p.Attributes.GetValueOrDefault("backend") == $"{b.Address}:{b.Port}"));
            Assert.Contains(export.Points, p => p.Metric == "xlb.agent.applied_revision" && p.Value == 1);
            Assert.Contains(export.Points, p => p.Metric == "xlb.agent.apply.duration" && p.Value >= 1);

            var clock = Stopwatch.StartNew();
            Netns.Terminate(stack.Agent);
            await WaitUntilAsync(async () => (await HttpProbe.StatusAsync(topology.Lb, Health, "/readyz", ct)).Status == 503, ct);

            // A new connection is refused at once (RST from the data plane), not left to time out.
            var refused = await Assert.ThrowsAsync<SocketException>(() => HttpProbe.GetAsync(topology.Client, vip, TimeSpan.FromSeconds(3), ct));
            Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
            Assert.Equal(backend, await established.GetAsync(ct));
            Assert.False(stack.Agent.HasExited, "the agent left before its shutdown window ended");

            Assert.True(stack.Agent.WaitForExit(TimeSpan.FromSeconds(15)), "the agent did not exit after its shutdown window");
            output.WriteLine($"agent exited {clock.Elapsed.TotalSeconds:F1} s after SIGTERM");
            Assert.InRange(clock.Elapsed.TotalSeconds, 3.5, 15);
            Assert.Equal(0, stack.Agent.ExitCode);
        }
        finally
        {
            output.WriteLine(log.ToString());
        }
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, CancellationToken ct)
    {
        for (var i = 0; i < 50; i++)
        {
            if (await condition())
            {
                return;
            }
            await Task.Delay(100, ct);
        }
        Assert.Fail("condition not met within 5 s");
    }
}
