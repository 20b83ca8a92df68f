using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>Revisions swapped under load: every flip is atomic, so no request notices one.</summary>
public sealed class RevisionSwapTests(ITestOutputHelper output)
{
    /// <summary>The stream's bound in count (it is bounded in time too); far more than 5 s of swaps take.</summary>
    private const int MaxRequests = 200_000;

    [Fact]
    public async Task Revisions_swapped_every_100_ms_under_load_fail_no_request_and_move_no_connection()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var hand = await HandWrittenConfig.StartAsync("w", ct);
        var (topology, stack, log) = (hand.Bed.Topology, hand.Stack, hand.Bed.Log);
        var (first, listener, vip) = (hand.First, hand.Listener, hand.Vip);
        try
        {
            // Long-lived connections, each pinned to a backend by the flow table.
            var longLived = new List<(KeepAliveClient Client, string Backend)>();
            for (var i = 0; i < 6; i++)
            {
                var c = await KeepAliveClient.ConnectAsync(topology.Client, vip, ct);
                longLived.Add((c, await c.GetAsync(ct)));
            }

            // Each revision changes the Maglev table (weights, a backend draining or gone) and the
            // set of services (a second listener comes and goes); every one keeps a backend serving.
            var all = listener.Backends;
            Listener[] Variant(int n) => (n % 4) switch
            {
                0 => [listener],
                1 => [listener with { Backends = [all[0] with { Weight = 3 }, .. all.Skip(1)] }],
                2 => [listener with { Backends = [all[0], all[1] with { Draining = true }, all[2]] }, listener with { Name = listener.Name + "-alt", Port = listener.Port + 1 }],
                _ => [listener with { Backends = [all[0], all[2]] }],
            };

            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            stop.CancelAfter(TimeSpan.FromSeconds(60));
            var stream = RequestStream.Start(topology.Client, vip, MaxRequests, stop.Token);

            const int revisions = 40;
            var revision = first.Spec.Revision;
            for (var n = 1; n <= revisions; n++)
            {
                revision++;
                var spec = first.Spec with { Revision = revision, ContentHash = $"swap-{revision}", Listeners = [.. Variant(n)] };
                hand.Write(spec);
                await Task.Delay(100, ct);
            }
            await stack.WaitAppliedAsync(revision, TimeSpan.FromSeconds(30), ct);
            await Task.Delay(300, ct);
            await stop.CancelAsync();
            var (okCount, failedCount, streamErrors) = await stream;

            var applied = System.Text.RegularExpressions.Regex.Matches(log.ToString(), "applied revision \\d+ into generation").Count;
            output.WriteLine($"{okCount} new connections over {revisions} revisions, {applied} applies, 0 failed");
            Assert.True(failedCount == 0, $"{failedCount} requests failed while revisions were swapped: {string.Join("; ", streamErrors.Take(5))}");
            Assert.True(okCount >= 40, $"only {okCount} requests ran; the stream did not cover the swaps");
            Assert.True(okCount < MaxRequests, "the stream ended at its cap before the swaps did");
            // The agent followed the swaps, not just the last one (it wakes on each write of the file).
            Assert.True(applied >= revisions / 2, $"only {applied} applies for {revisions} revisions");
            foreach (var (client, backend) in longLived)
            {
                Assert.Equal(backend, await client.GetAsync(ct));
                client.Dispose();
            }
        }
        finally
        {
            output.WriteLine(log.ToString());
        }
    }
}
