using System.Net;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>An agent restart must not disturb traffic: pinned maps are adopted, the program swapped in place.</summary>
public sealed class AgentRestartTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Restarting_the_agent_loses_no_request_and_resets_no_connection()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("r", backends: 3);
        var topology = bed.Topology;
        var log = bed.Log;
        try
        {
            using var stack = StandaloneStack.Start(topology, Examples.Dir("demo"), "lb-1", log);
            var listener = (await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct)).Spec.Listeners.Single();
            var vip = new IPEndPoint(IPAddress.Parse(listener.Vip), listener.Port);

            // Long-lived connections, each pinned to a backend by conntrack.
            var longLived = new List<(KeepAliveClient Client, string Backend)>();
            for (var i = 0; i < 8; i++)
            {
                var c = await KeepAliveClient.ConnectAsync(topology.Client, vip, ct);
                longLived.Add((c, await c.GetAsync(ct)));
            }

            // A steady stream of new connections while the agent restarts: bounded in count and time.
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            stop.CancelAfter(TimeSpan.FromSeconds(60));
            var stream = RequestStream.Start(topology.Client, vip, 5000, stop.Token);

            await Task.Delay(500, ct);
            var servedBefore = bed.Served;
            stack.StopAgent();
            Assert.True(stack.Agent.HasExited);
            File.Delete(stack.AgentStatusPath);
            var servedWhileDown = bed.Served - servedBefore;
            stack.StartAgent(topology);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            await Task.Delay(500, ct);
            await stop.CancelAsync();
            var (okCount, failedCount, streamErrors) = await stream;

            Assert.True(failedCount == 0, $"{failedCount} requests failed across the restart: {string.Join("; ", streamErrors.Take(5))}");
            Assert.True(okCount >= 20, $"only {okCount} requests ran; the stream did not cover the restart");
            output.WriteLine($"{okCount} new connections, {servedWhileDown} served while no agent ran, 0 failed");
            foreach (var (client, backend) in longLived)
            {
                Assert.Equal(backend, await client.GetAsync(ct));
                client.Dispose();
            }
            // The new agent adopted the maps and found nothing to write: only the first agent applied.
            Assert.Contains("adopted the pinned maps", log.ToString(), StringComparison.Ordinal);
            Assert.Single(System.Text.RegularExpressions.Regex.Matches(log.ToString(), "applied revision 1 into generation"));
        }
        finally
        {
            output.WriteLine(log.ToString());
        }
    }
}
