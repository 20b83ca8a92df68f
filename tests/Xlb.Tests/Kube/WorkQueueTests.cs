using Xlb.Kube;

namespace Xlb.Tests.Kube;

public sealed class WorkQueueTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task A_key_is_queued_once_however_often_it_is_added()
    {
        using var q = new WorkQueue();
        q.Add("a");
        q.Add("b");
        q.Add("a");
        Assert.Equal(2, q.Length);
        Assert.Equal("a", await q.GetAsync(Ct));
        Assert.Equal("b", await q.GetAsync(Ct));
    }

    [Fact]
    public async Task A_key_added_while_in_progress_waits_for_Done_and_then_runs_once_more()
    {
        using var q = new WorkQueue();
        q.Add("k");
        var key = await q.GetAsync(Ct);
        q.Add("k");
        q.Add("k");
        Assert.Equal(0, q.Length);
        q.Done(key!);
        Assert.Equal(1, q.Length);
        Assert.Equal("k", await q.GetAsync(Ct));
    }

    [Fact]
    public void Backoff_doubles_per_failure_and_Forget_resets_it()
    {
        using var q = new WorkQueue(baseDelay: TimeSpan.FromMilliseconds(5));
        var delays = Enumerable.Range(0, 4).Select(_ => q.AddRateLimited("k").TotalMilliseconds).ToList();
        Assert.Equal([5, 10, 20, 40], delays);
        Assert.Equal(4, q.Requeues("k"));
        q.Forget("k");
        Assert.Equal(5, q.AddRateLimited("k").TotalMilliseconds);
    }

    [Fact]
    public void The_global_bucket_bounds_the_rate_across_keys()
    {
        using var q = new WorkQueue(baseDelay: TimeSpan.FromMilliseconds(1), ratePerSecond: 2, burst: 2);
        var delays = Enumerable.Range(0, 4).Select(i => q.AddRateLimited($"k{i}").TotalMilliseconds).ToList();
        Assert.True(delays[0] < 100 && delays[1] < 100, "the burst passes at once");
        Assert.InRange(delays[2], 400, 600);
        Assert.InRange(delays[3], 900, 1100);
    }

    [Fact]
    public async Task Shutdown_releases_waiting_workers()
    {
        using var q = new WorkQueue();
        var waiting = q.GetAsync(Ct);
        q.ShutDown();
        Assert.Null(await waiting);
    }

    [Fact]
    public async Task The_controller_never_runs_one_key_twice_at_once_and_reruns_a_key_dirtied_meanwhile()
    {
        using var q = new WorkQueue();
        var running = 0;
        var overlap = false;
        var runs = 0;
        var firstStarted = new TaskCompletionSource();
        var release = new TaskCompletionSource();
        var controller = new Controller("test", q, async (key, ct) =>
        {
            if (Interlocked.Increment(ref running) > 1)
            {
                overlap = true;
            }
            if (Interlocked.Increment(ref runs) == 1)
            {
                firstStarted.SetResult();
                await release.Task.WaitAsync(ct);
            }
            Interlocked.Decrement(ref running);
            return ReconcileResult.Done;
        }, new ControllerOptions { Workers = 4 });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = controller.RunAsync(stop.Token);
        q.Add("k");
        await firstStarted.Task.WaitAsync(Ct);
        for (var i = 0; i < 20; i++)
        {
            q.Add("k");
        }
        release.SetResult();
        for (var i = 0; i < 100 && Volatile.Read(ref runs) < 2; i++)
        {
            await Task.Delay(20, Ct);
        }
        await Task.Delay(200, Ct);
        await stop.CancelAsync();
        await run;
        Assert.False(overlap);
        Assert.Equal(2, runs);
    }

    [Fact]
    public async Task Failures_retry_with_backoff_terminal_errors_do_not_and_requeue_after_runs_again()
    {
        using var q = new WorkQueue(baseDelay: TimeSpan.FromMilliseconds(10));
        var calls = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        var controller = new Controller("test", q, (key, ct) =>
        {
            var n = calls.AddOrUpdate(key, 1, (_, c) => c + 1);
            return key switch
            {
                "flaky" when n < 3 => throw new InvalidOperationException("not yet"),
                "broken" => Task.FromResult(ReconcileResult.Terminal("invalid spec")),
                "periodic" when n < 3 => Task.FromResult(ReconcileResult.After(TimeSpan.FromMilliseconds(50))),
                _ => Task.FromResult(ReconcileResult.Done),
            };
        });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = controller.RunAsync(stop.Token);
        q.Add("flaky");
        q.Add("broken");
        q.Add("periodic");
        for (var i = 0; i < 100 && (calls.GetValueOrDefault("flaky") < 3 || calls.GetValueOrDefault("periodic") < 3); i++)
        {
            await Task.Delay(20, Ct);
        }
        await Task.Delay(300, Ct);
        await stop.CancelAsync();
        await run;
        Assert.Equal(3, calls["flaky"]);
        Assert.Equal(0, q.Requeues("flaky"));
        Assert.Equal(1, calls["broken"]);
        Assert.Equal(3, calls["periodic"]);
        Assert.Equal(2, controller.Errors);
    }

    [Fact]
    public async Task A_reconcile_that_overruns_its_timeout_is_cancelled_and_retried()
    {
        using var q = new WorkQueue(baseDelay: TimeSpan.FromMilliseconds(10));
        var calls = 0;
        var controller = new Controller("test", q, async (key, ct) =>
        {
            if (Interlocked.Increment(ref calls) == 1)
            {
                await Task.Delay(TimeSpan.FromSeconds(30), ct);
            }
            return ReconcileResult.Done;
        }, new ControllerOptions { ReconcileTimeout = TimeSpan.FromMilliseconds(100) });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = controller.RunAsync(stop.Token);
        q.Add("slow");
        for (var i = 0; i < 100 && Volatile.Read(ref calls) < 2; i++)
        {
            await Task.Delay(20, Ct);
        }
        await stop.CancelAsync();
        await run;
        Assert.Equal(2, calls);
        Assert.Equal(1, controller.Errors);
    }
}
