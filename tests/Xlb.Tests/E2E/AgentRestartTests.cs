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
            var (stack, vip) = await StartDemoAsync(bed, ct);
            using var _ = stack;

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

    /// <summary>
    /// An upgrade to a build of another ABI: the new agent cannot adopt the old pins, so it starts
    /// a data plane of its own, replaces the old program, and removes the old pins (which would
    /// otherwise hold their maps' memory for good), saying how many flows they held. Simulated
    /// by moving this build's pins to another ABI's folder while no agent runs.
    /// </summary>
    [Fact]
    public async Task An_agent_of_another_abi_replaces_the_data_plane_and_removes_the_old_pins()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("u", backends: 3);
        var topology = bed.Topology;
        var log = bed.Log;
        try
        {
            var (stack, vip) = await StartDemoAsync(bed, ct);
            using var _ = stack;
            var held = new List<KeepAliveClient>();
            for (var i = 0; i < 4; i++)
            {
                var c = await KeepAliveClient.ConnectAsync(topology.Client, vip, ct);
                await c.GetAsync(ct);
                held.Add(c);
            }

            stack.StopAgent();
            var instanceDir = Path.Combine(StandaloneStack.TestBpffs, "xlb", stack.Instance);
            var mine = Path.Combine(instanceDir, $"abi-{Xlb.DataPlane.XlbAbi.Version}");
            var older = Path.Combine(instanceDir, $"abi-{Xlb.DataPlane.XlbAbi.Version - 1}");
            Directory.Move(mine, older);
            File.Delete(stack.AgentStatusPath);
            stack.StartAgent(topology);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);

            Assert.False(Directory.Exists(older), $"{older} is still there");
            Assert.True(File.Exists(Path.Combine(mine, "xlb_flows")), "the new agent pinned no data plane of its own");
            var removed = System.Text.RegularExpressions.Regex.Match(log.ToString(), $@"removed {System.Text.RegularExpressions.Regex.Escape(older)}: the data plane of another build \(ABI {Xlb.DataPlane.XlbAbi.Version - 1}; this one is ABI {Xlb.DataPlane.XlbAbi.Version}\), replaced on this agent's interfaces; its (\d+) flows");
            Assert.True(removed.Success, "no log line says the old pins were removed");
            Assert.True(int.Parse(removed.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) >= held.Count, removed.Value);
            Assert.DoesNotContain("adopted the pinned maps", log.ToString(), StringComparison.Ordinal);
            // The new program went onto the interfaces with the config already in its maps: the
            // old one forwarded until then.
            var text = log.ToString();
            var after = text[text.IndexOf('\n', text.IndexOf("exiting with XDP attached", StringComparison.Ordinal))..];
            var primed = after.IndexOf("applied revision 1 into generation", StringComparison.Ordinal);
            Assert.True(primed >= 0 && primed < after.IndexOf("XDP attached to", StringComparison.Ordinal), "the new agent attached its program before writing the config into it");

            // The new data plane serves new connections.
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            stop.CancelAfter(TimeSpan.FromSeconds(30));
            var (ok, failed, errors) = await RequestStream.Start(topology.Client, vip, 20, stop.Token);
            Assert.True(ok == 20 && failed == 0, $"{ok} answered, {failed} failed: {string.Join("; ", errors.Take(5))}");
            var carried = 0;
            foreach (var c in held)
            {
                try
                {
                    await c.GetAsync(ct).WaitAsync(TimeSpan.FromSeconds(3), ct);
                    carried++;
                }
                catch (Exception e) when (e is IOException or TimeoutException or System.Net.Sockets.SocketException)
                {
                    // Its flow was in the old tables.
                }
                c.Dispose();
            }
            output.WriteLine($"{carried} of {held.Count} connections held across the upgrade still answered");
        }
        finally
        {
            output.WriteLine(log.ToString());
        }
    }

    /// <summary>The demo's operator and agent on the testbed, once revision 1 is applied, and its VIP.</summary>
    private static async Task<(StandaloneStack Stack, IPEndPoint Vip)> StartDemoAsync(Testbed bed, CancellationToken ct)
    {
        var stack = StandaloneStack.Start(bed.Topology, Examples.Dir("demo"), "lb-1", bed.Log);
        try
        {
            var listener = (await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct)).Spec.Listeners.Single();
            return (stack, new IPEndPoint(IPAddress.Parse(listener.Vip), listener.Port));
        }
        catch
        {
            stack.Dispose();
            throw;
        }
    }
}
