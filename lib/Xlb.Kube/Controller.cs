using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Xlb.Kube;

/// <summary>What a reconcile asks for next: nothing, another run after a delay, or nothing ever (a terminal error).</summary>
public readonly record struct ReconcileResult(TimeSpan? RequeueAfter, string? TerminalError)
{
    public static ReconcileResult Done { get; } = new(null, null);
    public static ReconcileResult After(TimeSpan delay) => new(delay, null);
    /// <summary>The input is wrong and retrying cannot help (the object gets a Stalled condition instead).</summary>
    public static ReconcileResult Terminal(string why) => new(null, why);
}

public sealed record ControllerOptions
{
    public int Workers { get; init; } = 2;
    public TimeSpan ReconcileTimeout { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>
/// Workers draining a work queue into a reconcile function (controller-runtime's contract): done
/// forgets the key's backoff, requeue-after schedules it, an exception or a timeout requeues it
/// with backoff, a terminal error is logged and not retried.
/// </summary>
public sealed partial class Controller(
    string name,
    WorkQueue queue,
    Func<string, CancellationToken, Task<ReconcileResult>> reconcile,
    ControllerOptions? options = null,
    ILogger? logger = null)
{
    private readonly ControllerOptions _options = options ?? new ControllerOptions();
    private readonly ILogger _log = logger ?? NullLogger.Instance;
    private long _reconciles;
    private long _errors;

    public string Name => name;
    public long Reconciles => Interlocked.Read(ref _reconciles);
    public long Errors => Interlocked.Read(ref _errors);

    /// <summary>Runs the workers until <paramref name="ct"/> is cancelled; the queue is shut down then.</summary>
    public async Task RunAsync(CancellationToken ct)
    {
        using var stop = ct.Register(queue.ShutDown);
        await Task.WhenAll(Enumerable.Range(0, _options.Workers).Select(_ => Task.Run(() => WorkAsync(ct), CancellationToken.None)));
    }

    private async Task WorkAsync(CancellationToken ct)
    {
        while (await NextAsync(ct) is { } key)
        {
            try
            {
                await ProcessAsync(key, ct);
            }
            finally
            {
                queue.Done(key);
            }
        }
    }

    /// <summary>The next key; null once the queue shuts down or the run is cancelled (whichever the worker sees first).</summary>
    private async Task<string?> NextAsync(CancellationToken ct)
    {
        try
        {
            return await queue.GetAsync(ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return null;
        }
    }

    private async Task ProcessAsync(string key, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_options.ReconcileTimeout);
        var started = Stopwatch.GetTimestamp();
        Interlocked.Increment(ref _reconciles);
        try
        {
            var result = await reconcile(key, timeout.Token);
            queue.Forget(key);
            if (result.TerminalError is { } why)
            {
                LogTerminal(_log, name, key, why);
            }
            else if (result.RequeueAfter is { } after)
            {
                queue.AddAfter(key, after);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // Shutting down: the reconcile was cut short; the next leader or run does it again.
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            Interlocked.Increment(ref _errors);
            var delay = queue.AddRateLimited(key);
            var what = e is OperationCanceledException ? $"timed out after {_options.ReconcileTimeout.TotalSeconds:0.#} s" : e.Message;
            LogFailed(_log, name, key, what, Stopwatch.GetElapsedTime(started).TotalMilliseconds, delay.TotalMilliseconds);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Controller} {Key}: {Why} ({ElapsedMs:0} ms); retrying in {DelayMs:0} ms")]
    private static partial void LogFailed(ILogger logger, string controller, string key, string why, double elapsedMs, double delayMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Controller} {Key}: {Why}; not retrying until the object changes")]
    private static partial void LogTerminal(ILogger logger, string controller, string key, string why);
}
