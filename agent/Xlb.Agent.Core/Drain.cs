using System.Net;
using Xlb.Crds;

namespace Xlb.Agent.Core;

/// <summary>A backend whose drain timeout has passed on a listener: its flows through that listener end.</summary>
public readonly record struct DrainedBackend(string Listener, IPAddress Vip, int Port, L4Protocol Protocol, IPAddress Backend, int BackendPort);

/// <summary>
/// Drain timeouts (a listener's <see cref="Listener.DrainTimeout"/>). A draining backend takes no
/// new flows and keeps its existing ones; once it has been draining on a listener for the
/// listener's timeout, it leaves that listener, and its flows there are to be ended (the next packet
/// of such a flow is a new flow to another backend, which answers a TCP connection with a reset).
/// The clock of a backend starts when this tracker first sees it draining, and stops when the
/// backend is active again or gone; an agent that restarts starts the clocks afresh, so a restart
/// lengthens a drain, never shortens it. Pure: the time is an input.
/// </summary>
public sealed class DrainTracker
{
    private Dictionary<(string Listener, string Address, int Port), (DateTimeOffset Since, bool Ended)> _draining = [];

    /// <param name="Effective">The spec without the backends whose drain is over.</param>
    /// <param name="Drained">Backends whose drain ended in this pass (each reported once).</param>
    /// <param name="NextExpiry">When the next drain in progress ends; null: none.</param>
    public sealed record Result(XlbNodeConfigSpec Effective, IReadOnlyList<DrainedBackend> Drained, DateTimeOffset? NextExpiry);

    /// <summary>Backends draining now, with when each began.</summary>
    public int Count => _draining.Count;

    public Result Apply(XlbNodeConfigSpec spec, DateTimeOffset now)
    {
        var seen = new Dictionary<(string, string, int), (DateTimeOffset Since, bool Ended)>();
        var drained = new List<DrainedBackend>();
        DateTimeOffset? next = null;
        List<Listener>? changed = null;
        for (var i = 0; i < spec.Listeners.Count; i++)
        {
            var l = spec.Listeners[i];
            List<NodeBackend>? kept = null;
            for (var j = 0; j < l.Backends.Count; j++)
            {
                var b = l.Backends[j];
                var over = false;
                if (b.Draining)
                {
                    var key = (l.Name, b.Address, b.Port);
                    (DateTimeOffset Since, bool Ended) state = _draining.TryGetValue(key, out var was) ? was : (now, false);
                    var ends = state.Since + l.DrainTimeout.Value;
                    over = ends <= now;
                    if (over && !state.Ended)
                    {
                        drained.Add(new DrainedBackend(l.Name, IPAddress.Parse(l.Vip), l.Port, l.Protocol, IPAddress.Parse(b.Address), b.Port));
                        state.Ended = true;
                    }
                    else if (!over && (next is null || ends < next))
                    {
                        next = ends;
                    }
                    seen[key] = state;
                }
                if (over && kept is null)
                {
                    kept = [.. l.Backends.Take(j)];
                }
                else if (!over)
                {
                    kept?.Add(b);
                }
            }
            if (kept is not null)
            {
                changed ??= [.. spec.Listeners];
                changed[i] = l with { Backends = kept };
            }
        }
        _draining = seen;
        return new Result(changed is null ? spec : spec with { Listeners = changed }, drained, next);
    }
}
