using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Xlb.Agent.Core;

namespace Xlb.Agent;

/// <summary>
/// Runs the active health checks of a node config: one scheduler loop, probes started when due,
/// at most <c>maxConcurrent</c> in flight (thousands of backends, not thousands of threads).
/// Each target's first probe is spread over its interval by a hash of the target, and later ones
/// jitter by ±10 %, so probes do not arrive in bursts. State changes call <c>onChange</c> at once.
/// </summary>
public sealed partial class HealthProber(ILogger log, TimeProvider time, Action onChange, int maxConcurrent = 64)
{
    private sealed class Slot(ProbePlan plan, DateTimeOffset due)
    {
        public ProbePlan Plan { get; set; } = plan;
        public DateTimeOffset Due { get; set; } = due;
        public bool InFlight { get; set; }
    }

    private readonly Lock _lock = new();
    private readonly HealthTracker _tracker = new();
    private readonly Dictionary<ProbeTarget, Slot> _slots = [];
    private readonly SemaphoreSlim _concurrency = new(maxConcurrent);

    /// <summary>Replaces the set of probes; targets that stay keep their schedule and state.</summary>
    public void Update(IReadOnlyList<ProbePlan> plans)
    {
        lock (_lock)
        {
            var now = time.GetUtcNow();
            foreach (var plan in plans)
            {
                if (_slots.TryGetValue(plan.Target, out var slot))
                {
                    slot.Plan = plan;
                }
                else
                {
                    var phase = (uint)StringComparer.Ordinal.GetHashCode(plan.Target.ToString()) % Math.Max(1, (uint)plan.Interval.TotalMilliseconds);
                    _slots[plan.Target] = new Slot(plan, now + TimeSpan.FromMilliseconds(phase));
                }
            }
            var keep = plans.Select(p => p.Target).ToHashSet();
            foreach (var gone in _slots.Keys.Where(k => !keep.Contains(k)).ToList())
            {
                _slots.Remove(gone);
            }
            _tracker.Retain(keep);
        }
    }

    public bool IsHealthy(ProbeTarget target)
    {
        lock (_lock)
        {
            return _tracker.IsHealthy(target);
        }
    }

    public async Task RunAsync(CancellationToken ct)
    {
        using var tick = new PeriodicTimer(TimeSpan.FromMilliseconds(50), time);
        while (await Xlb.Hosting.Ticks.NextAsync(tick, ct))
        {
            List<Slot> due;
            lock (_lock)
            {
                var now = time.GetUtcNow();
                due = [.. _slots.Values.Where(s => !s.InFlight && s.Due <= now)];
                foreach (var s in due)
                {
                    s.InFlight = true;
                }
            }
            foreach (var slot in due)
            {
                _ = ProbeAsync(slot, ct);
            }
        }
    }

    private async Task ProbeAsync(Slot slot, CancellationToken ct)
    {
        var plan = slot.Plan;
        bool ok;
        try
        {
            await _concurrency.WaitAsync(ct);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        try
        {
            ok = await CheckAsync(plan, ct);
        }
        finally
        {
            _concurrency.Release();
        }
        bool changed;
        lock (_lock)
        {
            slot.InFlight = false;
            slot.Due = time.GetUtcNow() + (plan.Interval * (0.9 + (0.2 * Random.Shared.NextDouble())));
            changed = _slots.ContainsKey(plan.Target) && _tracker.Observe(plan, ok);
        }
        if (changed)
        {
            if (ok)
            {
                LogHealthy(plan.Target.ToString(), plan.HealthyThreshold);
            }
            else
            {
                LogUnhealthy(plan.Target.ToString(), plan.UnhealthyThreshold);
            }
            onChange();
        }
    }

    /// <summary>One probe: a TCP connect, or an HTTP GET whose status is 2xx or 3xx, within the timeout.</summary>
    public static async Task<bool> CheckAsync(ProbePlan plan, CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(plan.Timeout);
        var target = plan.Target;
        try
        {
            using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Parse(target.Address), target.Port), cts.Token);
            if (target.Type == Crds.HealthCheckType.TCP)
            {
                return true;
            }
            var request = $"GET {target.Path} HTTP/1.1\r\nHost: {target.Address}:{target.Port}\r\nUser-Agent: xlb-health\r\nConnection: close\r\n\r\n";
            await socket.SendAsync(Encoding.ASCII.GetBytes(request), SocketFlags.None, cts.Token);
            var buf = new byte[64];
            var n = 0;
            while (n < 12)
            {
                var got = await socket.ReceiveAsync(buf.AsMemory(n), SocketFlags.None, cts.Token);
                if (got == 0)
                {
                    return false;
                }
                n += got;
            }
            var line = Encoding.ASCII.GetString(buf, 0, n);
            return line.StartsWith("HTTP/1.", StringComparison.Ordinal) && line[9] is '2' or '3';
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or IOException)
        {
            return false;
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "backend {Target} is unhealthy ({Failures} failed checks in a row): no new flows")]
    private partial void LogUnhealthy(string target, int failures);

    [LoggerMessage(Level = LogLevel.Information, Message = "backend {Target} is healthy again ({Successes} good checks in a row)")]
    private partial void LogHealthy(string target, int successes);
}
