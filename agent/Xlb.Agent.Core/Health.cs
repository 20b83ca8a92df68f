using Xlb.Crds;

namespace Xlb.Agent.Core;

/// <summary>What one probe checks: a backend address, the check port and the kind of check.</summary>
public readonly record struct ProbeTarget(string Address, int Port, HealthCheckType Type, string Path)
{
    public override string ToString() => Type == HealthCheckType.HTTP ? $"http://{Address}:{Port}{Path}" : $"tcp://{Address}:{Port}";
}

/// <summary>One target's schedule: how often, how long to wait, and the thresholds.</summary>
public sealed record ProbePlan(ProbeTarget Target, TimeSpan Interval, TimeSpan Timeout, int HealthyThreshold, int UnhealthyThreshold);

/// <summary>
/// Consecutive-result thresholds per probe target: a healthy target goes unhealthy after
/// UnhealthyThreshold failures in a row, back after HealthyThreshold successes in a row.
/// New targets start healthy, so an agent start does not take every backend out.
/// </summary>
public sealed class HealthTracker
{
    private sealed class State
    {
        public bool Healthy = true;
        public int Streak;
    }

    private readonly Dictionary<ProbeTarget, State> _states = [];

    /// <summary>The probes a node config asks for, one per distinct target (the strictest settings win).</summary>
    public static IReadOnlyList<ProbePlan> Plans(XlbNodeConfigSpec spec) =>
        [.. spec.Listeners
            .Where(l => l.HealthCheck is not null)
            .SelectMany(l => l.Backends.Select(b => (Check: l.HealthCheck!, Target: new ProbeTarget(b.Address, l.HealthCheck!.Port ?? b.Port, l.HealthCheck.Type, l.HealthCheck.Path))))
            .GroupBy(x => x.Target)
            .Select(g => new ProbePlan(
                g.Key,
                g.Min(x => x.Check.Interval.Value),
                g.Min(x => x.Check.Timeout.Value),
                g.Max(x => x.Check.HealthyThreshold),
                g.Min(x => x.Check.UnhealthyThreshold)))
            .OrderBy(p => p.Target.ToString(), StringComparer.Ordinal)];

    /// <summary>Records one probe result; true when the target's health changed.</summary>
    public bool Observe(ProbePlan plan, bool success)
    {
        if (!_states.TryGetValue(plan.Target, out var s))
        {
            s = new State();
            _states[plan.Target] = s;
        }
        if (success == s.Healthy)
        {
            s.Streak = 0;
            return false;
        }
        s.Streak++;
        if (s.Streak < (s.Healthy ? plan.UnhealthyThreshold : plan.HealthyThreshold))
        {
            return false;
        }
        s.Healthy = success;
        s.Streak = 0;
        return true;
    }

    public bool IsHealthy(ProbeTarget target) => !_states.TryGetValue(target, out var s) || s.Healthy;

    /// <summary>Forgets targets no config asks for any more.</summary>
    public void Retain(IEnumerable<ProbeTarget> targets)
    {
        var keep = targets.ToHashSet();
        foreach (var gone in _states.Keys.Where(k => !keep.Contains(k)).ToList())
        {
            _states.Remove(gone);
        }
    }
}

/// <summary>The spec the data plane should hold given backend health: unhealthy backends get no new flows.</summary>
public static class HealthFilter
{
    public sealed record Result(XlbNodeConfigSpec Effective, IReadOnlyList<string> Unhealthy, IReadOnlyList<string> FailedOpen);

    /// <summary>
    /// Sets the weight of unhealthy backends to zero (Maglev leaves them out; their established
    /// flows stay in conntrack). A listener whose backends are all unhealthy keeps them all:
    /// trying a backend beats refusing every connection (reported as failed open).
    /// </summary>
    public static Result Apply(XlbNodeConfigSpec spec, Func<ProbeTarget, bool> isHealthy)
    {
        var unhealthy = new SortedSet<string>(StringComparer.Ordinal);
        var failedOpen = new List<string>();
        var listeners = spec.Listeners.Select(l =>
        {
            if (l.HealthCheck is not { } hc)
            {
                return l;
            }
            var down = l.Backends
                .Where(b => !isHealthy(new ProbeTarget(b.Address, hc.Port ?? b.Port, hc.Type, hc.Path)))
                .ToHashSet();
            if (down.Count == 0)
            {
                return l;
            }
            foreach (var b in down)
            {
                unhealthy.Add($"{b.Address}:{b.Port}");
            }
            if (down.Count == l.Backends.Count)
            {
                failedOpen.Add(l.Name);
                return l;
            }
            return l with { Backends = [.. l.Backends.Select(b => down.Contains(b) ? b with { Weight = 0 } : b)] };
        }).ToList();
        return new Result(spec with { Listeners = listeners }, [.. unhealthy], failedOpen);
    }
}
