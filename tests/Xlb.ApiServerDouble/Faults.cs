using System.Net;

namespace Xlb.ApiServerDouble;

/// <summary>Failures the double produces on demand, for clients that must survive a real cluster's bad days.</summary>
public sealed class Faults
{
    private readonly Lock _gate = new();
    private readonly Queue<Fault> _pending = new();

    /// <summary>A failure: an error status, or (Broken) a 200 whose body breaks off with the connection.</summary>
    public sealed record Fault(HttpStatusCode Code, TimeSpan? RetryAfter, string? PathContains, bool Broken = false);

    /// <summary>Added before every resource request is served.</summary>
    public TimeSpan Latency { get; set; }

    /// <summary>Called with the path and query of every resource request before it is served (to act between two requests).</summary>
    public Action<string>? BeforeRequest { get; set; }

    /// <summary>How many injected failures have been served.</summary>
    public int Served { get; private set; }

    /// <summary>The next <paramref name="count"/> resource requests (whose path contains <paramref name="pathContains"/>, if given) fail with <paramref name="code"/>.</summary>
    public void FailNext(int count, HttpStatusCode code, TimeSpan? retryAfter = null, string? pathContains = null)
    {
        lock (_gate)
        {
            for (var i = 0; i < count; i++)
            {
                _pending.Enqueue(new Fault(code, retryAfter, pathContains));
            }
        }
    }

    /// <summary>The next <paramref name="count"/> resource requests (whose path contains <paramref name="pathContains"/>, if given) get a 200 whose body breaks off: the connection is dropped after the headers and the first bytes.</summary>
    public void BreakNext(int count, string? pathContains = null)
    {
        lock (_gate)
        {
            for (var i = 0; i < count; i++)
            {
                _pending.Enqueue(new Fault(HttpStatusCode.OK, null, pathContains, Broken: true));
            }
        }
    }

    /// <summary>Forgets every pending failure, the latency, the hook and the count of failures served.</summary>
    public void Clear()
    {
        lock (_gate)
        {
            _pending.Clear();
            Served = 0;
            Latency = TimeSpan.Zero;
            BeforeRequest = null;
        }
    }

    internal Fault? Take(string path)
    {
        lock (_gate)
        {
            if (_pending.TryPeek(out var next) && (next.PathContains is null || path.Contains(next.PathContains, StringComparison.Ordinal)))
            {
                Served++;
                return _pending.Dequeue();
            }
            return null;
        }
    }
}
