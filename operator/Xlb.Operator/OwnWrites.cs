using Xlb.Crds;
using Xlb.Kube;

namespace Xlb.Operator;

/// <summary>
/// The writes this operator made, so the watch events they cause (their echoes) can be told from
/// changes made by others. An echo carries nothing the last plan did not already decide, so it
/// need not start another plan over every object; the informer caches still take it in, and the
/// next plan reads it. Level-triggered healing is untouched: any event that is not exactly the
/// echo of a write (another resourceVersion, another type) plans as before, and so does the
/// periodic resync.
/// <para>
/// A watch event can arrive before the write's own response. So a write is announced before it is
/// sent; events for that object while it is in flight are held, and judged once the response gives
/// the resourceVersion the write produced.
/// </para>
/// </summary>
public sealed class OwnWrites(Action foreign)
{
    private const string Gone = "(deleted)";
    private readonly Lock _gate = new();
    private readonly Dictionary<(string Resource, string Key), Flight> _inFlight = [];
    /// <summary>Per object, the resourceVersions our writes produced whose events have not come yet, oldest first (a few at most).</summary>
    private readonly Dictionary<(string Resource, string Key), List<string>> _expected = [];
    private const int ExpectedLimit = 8;
    private long _echoes;

    private sealed class Flight
    {
        public int Writes { get; set; }
        public List<string> Held { get; } = [];
    }

    /// <summary>Events recognised as echoes so far (for metrics and tests).</summary>
    public long Echoes => Interlocked.Read(ref _echoes);

    /// <summary>
    /// Runs one write to one object. <paramref name="write"/> returns the object's resourceVersion
    /// after it, or null for a delete. Events held while it ran that are not its echo (or all of
    /// them, when it failed) are passed on to the foreign-change callback.
    /// </summary>
    public async Task WriteAsync(KubeResource resource, string key, Func<Task<string?>> write)
    {
        var id = (resource.Plural, key);
        Flight flight;
        lock (_gate)
        {
            if (!_inFlight.TryGetValue(id, out flight!))
            {
                _inFlight[id] = flight = new Flight();
            }
            flight.Writes++;
        }
        string? after = null;
        try
        {
            after = await write() ?? Gone;
        }
        finally
        {
            var passOn = false;
            lock (_gate)
            {
                if (after is not null)
                {
                    if (!_expected.TryGetValue(id, out var expected))
                    {
                        _expected[id] = expected = [];
                    }
                    expected.Add(after);
                    if (expected.Count > ExpectedLimit)
                    {
                        expected.RemoveAt(0);
                    }
                }
                if (--flight.Writes == 0)
                {
                    _inFlight.Remove(id);
                    foreach (var rv in flight.Held)
                    {
                        passOn |= !Expected(id, rv);
                    }
                }
            }
            if (passOn)
            {
                foreign();
            }
        }
    }

    /// <summary>Whether this event is only the echo of one of our writes. Events during a write are held and judged when it returns.</summary>
    public bool IsEcho<T>(KubeResource resource, InformerEvent<T> e) where T : class, IKubernetesObject
    {
        if (e.Synthesized)
        {
            return false; // a relist: whatever it shows, plan on it
        }
        var id = (resource.Plural, Informer<T>.KeyOf(e.Object.Metadata));
        var rv = e.Type == WatchEvent<T>.Deleted ? Gone : e.Object.Metadata.ResourceVersion ?? "";
        lock (_gate)
        {
            if (_inFlight.TryGetValue(id, out var flight))
            {
                flight.Held.Add(rv);
                return true;
            }
            return Expected(id, rv);
        }
    }

    /// <summary>
    /// Whether an event's resourceVersion is one our writes produced. Events come in the order of
    /// their writes, so the expectations before the one met are stale (their events were
    /// superseded or came while nothing was listening) and go too.
    /// </summary>
    private bool Expected((string, string) id, string rv)
    {
        if (!_expected.TryGetValue(id, out var expected))
        {
            return false;
        }
        var at = expected.IndexOf(rv);
        if (at < 0)
        {
            return false;
        }
        expected.RemoveRange(0, at + 1);
        if (expected.Count == 0)
        {
            _expected.Remove(id);
        }
        Interlocked.Increment(ref _echoes);
        return true;
    }
}
