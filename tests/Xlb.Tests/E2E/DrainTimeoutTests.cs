using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>A draining backend keeps its connections for its listener's drain timeout, and no longer.</summary>
public sealed class DrainTimeoutTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Connections_to_a_draining_backend_continue_until_the_drain_timeout_and_are_reset_after_it()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var hand = await HandWrittenConfig.StartAsync("dt", ct);
        var (topology, stack, log) = (hand.Bed.Topology, hand.Stack, hand.Bed.Log);
        var (first, listener, vip) = (hand.First, hand.Listener, hand.Vip);
        try
        {
            // Long-lived connections until two backends hold some; the first one's backend will drain.
            var connections = new List<(KeepAliveClient Client, string Backend)>();
            for (var i = 0; i < 24 && connections.Select(c => c.Backend).Distinct().Count() < 2; i++)
            {
                var c = await KeepAliveClient.ConnectAsync(topology.Client, vip, ct);
                connections.Add((c, await c.GetAsync(ct)));
            }
            var drained = connections[0].Backend;
            var address = LbTopology.BackendAddress(int.Parse(drained["backend-".Length..], System.Globalization.CultureInfo.InvariantCulture));
            Assert.Contains(connections, c => c.Backend != drained);

            var spec = first.Spec with
            {
                Revision = first.Spec.Revision + 1,
                ContentHash = "draining",
                Listeners = [listener with
                {
                    DrainTimeout = new Duration(TimeSpan.FromSeconds(4)),
                    Backends = [.. listener.Backends.Select(b => b.Address == address ? b with { Draining = true } : b)],
                }],
            };
            hand.Write(spec);
            await stack.WaitAppliedAsync(spec.Revision, TimeSpan.FromSeconds(30), ct);
            var drainStarted = DateTime.UtcNow;

            // Draining: every connection still answers from its own backend; new ones go elsewhere.
            foreach (var (client, backend) in connections)
            {
                Assert.Equal(backend, await client.GetAsync(ct));
            }
            for (var i = 0; i < 8; i++)
            {
                using var fresh = await KeepAliveClient.ConnectAsync(topology.Client, vip, ct);
                Assert.NotEqual(drained, await fresh.GetAsync(ct));
            }
            Assert.True(DateTime.UtcNow - drainStarted < TimeSpan.FromSeconds(4), "the drain checks outlasted the timeout");

            // Past the timeout the agent ends the drained backend's flows: their next packet finds
            // another backend, which resets a connection it never saw.
            await Eventually.TrueAsync(() => log.ToString().Contains("drain timeout over for 1 backends", StringComparison.Ordinal), "the agent ends the drain", seconds: 15);
            Assert.True(DateTime.UtcNow - drainStarted >= TimeSpan.FromSeconds(3.5), "the drain ended before its timeout");
            foreach (var (client, backend) in connections)
            {
                if (backend == drained)
                {
                    using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                    timeout.CancelAfter(TimeSpan.FromSeconds(10));
                    var reset = await Assert.ThrowsAsync<System.Net.Sockets.SocketException>(() => client.GetAsync(timeout.Token));
                    Assert.Equal(System.Net.Sockets.SocketError.ConnectionReset, reset.SocketErrorCode);
                }
                else
                {
                    Assert.Equal(backend, await client.GetAsync(ct));
                }
                client.Dispose();
            }
        }
        finally
        {
            output.WriteLine(log.ToString());
        }
    }
}
