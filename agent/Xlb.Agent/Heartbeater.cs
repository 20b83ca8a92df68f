using System.Net;
using Microsoft.Extensions.Logging;
using Xlb.Agent.Core;
using Xlb.Crds;

namespace Xlb.Agent;

/// <summary>
/// Agent-to-agent failure detection (<see cref="Heartbeats"/>): sends each failover peer of the
/// node config a heartbeat at its interval, over the <see cref="PeerLink"/>, and keeps when each
/// was last heard. It calls <c>changed</c> when a standby VIP's active node passes its takeover
/// time, or is heard again after it: the agent then applies its config again, with those VIPs
/// taken over (<see cref="Takeover"/>) or given back; and when a peer has not been heard at all
/// for a while, or is heard at last (the agent reports it). It looks every eighth of the shortest
/// interval (at least every 100 ms), and at once when a heartbeat comes.
/// </summary>
public sealed partial class Heartbeater
{
    private sealed record Peer(string Node, IPEndPoint At, TimeSpan Interval)
    {
        public long NextSendMs { get; set; }
    }

    private readonly PeerLink _link;
    private readonly ILogger _log;
    private readonly TimeProvider _time;
    private readonly Action _changed;
    private readonly Lock _gate = new();
    private readonly PeerLiveness _liveness = new();
    private readonly HashSet<IPAddress> _refusedFrom = [];
    private string _node = "";
    private Dictionary<string, Peer> _peers = new(StringComparer.Ordinal);
    /// <summary>The (active node, takeover time) pairs of the config's standby VIPs: what is checked.</summary>
    private List<(string Node, TimeSpan After)> _watched = [];
    private string _overdue = "";
    private volatile bool _leaving;
    /// <summary>The peers whose VIPs this node serves, having taken them over: their heartbeats say so.</summary>
    private HashSet<string> _holding = new(StringComparer.Ordinal);
    /// <summary>The peers whose last heartbeat said they serve VIPs of this node's.</summary>
    private readonly HashSet<string> _heldBy = new(StringComparer.Ordinal);
    private long _sent, _received, _refused;

    private readonly Action<string> _givenBack;
    private readonly Action<string>? _returned;

    /// <param name="changed">A peer passed a takeover time, was heard again, or changed how it is heard.</param>
    /// <param name="givenBack">A peer no longer serves VIPs of this node's that it had taken over: announce them again.</param>
    /// <param name="returned">A peer is heard after a silence of three of its intervals, after saying it was leaving, or for the first time.</param>
    public Heartbeater(PeerLink link, ILogger log, TimeProvider time, Action changed, Action<string> givenBack, Action<string>? returned = null)
    {
        _returned = returned;
        _link = link;
        _log = log;
        _time = time;
        _changed = changed;
        _givenBack = givenBack;
        link.Heartbeats = Receive;
    }

    /// <summary>The peers whose VIPs this node serves now (from the last apply); each heartbeat to them says so.</summary>
    public void Holding(IEnumerable<string> peers) => _holding = peers.ToHashSet(StringComparer.Ordinal);

    /// <summary>Heartbeats sent (each peer counted), taken, and refused (not from a peer, not authenticated).</summary>
    public (long Sent, long Received, long Refused) Counts => (Interlocked.Read(ref _sent), Interlocked.Read(ref _received), Interlocked.Read(ref _refused));

    private long NowMs => _time.GetTimestamp() * 1000 / _time.TimestampFrequency;

    /// <summary>The peers and standby VIPs of a node config as the operator wrote it (before any takeover).</summary>
    public void Configure(XlbNodeConfigSpec spec)
    {
        lock (_gate)
        {
            var now = NowMs;
            _node = spec.NodeName;
            var peers = new Dictionary<string, Peer>(StringComparer.Ordinal);
            foreach (var p in spec.FailoverPeers)
            {
                var at = new IPEndPoint(IPAddress.Parse(p.Address), _link.Listen.Port);
                peers[p.Node] = _peers.TryGetValue(p.Node, out var was) && was.At.Equals(at) && was.Interval == p.Interval.Value
                    ? was
                    : new Peer(p.Node, at, p.Interval.Value) { NextSendMs = now };
            }
            if (!peers.Keys.ToHashSet().SetEquals(_peers.Keys))
            {
                LogPeers(string.Join(", ", peers.Values.Select(p => $"{p.Node} ({p.At.Address}, every {p.Interval.TotalMilliseconds:F0} ms)")));
            }
            _peers = peers;
            _liveness.Configure(peers.Keys, now);
            _watched = [.. spec.Vips
                .Where(v => v.Role == VipRole.Standby && v.ActiveNode is not null && v.TakeoverAfter is not null)
                .Select(v => (v.ActiveNode!, v.TakeoverAfter!.Value.Value)).Distinct()];
            _overdue = Overdue(now);
        }
    }

    /// <summary>How long a peer has been silent (<see cref="TimeSpan.MaxValue"/>: it is leaving; null: not a peer).</summary>
    public TimeSpan? SilentFor(string node)
    {
        lock (_gate)
        {
            return _liveness.SilentFor(node, NowMs);
        }
    }

    /// <summary>
    /// The peers never heard in <see cref="UnheardAfter"/> (at least three of their intervals)
    /// since they became peers: the port is closed between the nodes, or their keys differ, and
    /// nothing is taken over from them.
    /// </summary>
    public List<string> NeverHeard()
    {
        lock (_gate)
        {
            return NeverHeard(NowMs);
        }
    }

    private static readonly TimeSpan UnheardAfter = TimeSpan.FromSeconds(10);

    private List<string> NeverHeard(long now) =>
        _liveness.NeverHeard(now, _peers.Count == 0 ? UnheardAfter : TimeSpan.FromTicks(Math.Max(UnheardAfter.Ticks, 3 * _peers.Values.Max(p => p.Interval.Ticks))));

    /// <summary>
    /// From now on each heartbeat says this node is leaving (a drain began, or the program is
    /// detached): the peers take its VIPs at once. Three go out to each peer now (UDP may lose one).
    /// </summary>
    public async Task LeaveAsync(CancellationToken ct)
    {
        _leaving = true;
        List<Peer> peers;
        lock (_gate)
        {
            peers = [.. _peers.Values];
        }
        for (var i = 0; i < 3; i++)
        {
            foreach (var peer in peers)
            {
                await SendAsync(peer, ct);
            }
        }
    }

    /// <summary>A drain ended: heartbeats no longer say this node is leaving.</summary>
    public void Stay() => _leaving = false;

    public async Task RunAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            List<Peer> due;
            TimeSpan tick;
            bool changed;
            lock (_gate)
            {
                var now = NowMs;
                due = [.. _peers.Values.Where(p => p.NextSendMs <= now)];
                foreach (var p in due)
                {
                    // Not now + interval: a late tick does not push every later heartbeat back.
                    p.NextSendMs = Math.Max(p.NextSendMs + (long)p.Interval.TotalMilliseconds, now + 1);
                }
                tick = _peers.Count == 0 ? TimeSpan.FromMilliseconds(100)
                    : TimeSpan.FromMilliseconds(Math.Clamp(_peers.Values.Min(p => p.Interval.TotalMilliseconds) / 8, 10, 100));
                changed = Recheck(now);
            }
            if (changed)
            {
                _changed();
            }
            if (due.Count > 0)
            {
                _link.RefreshKeys();
            }
            foreach (var peer in due)
            {
                await SendAsync(peer, ct);
            }
            try
            {
                await Task.Delay(tick, _time, ct);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task SendAsync(Peer peer, CancellationToken ct)
    {
        var datagram = Heartbeats.Encode(new Heartbeat(_node, _leaving, _holding.Contains(peer.Node)), _link.Key, _time.GetUtcNow().ToUnixTimeMilliseconds());
        await _link.SendAsync(datagram, peer.At, ct);
        Interlocked.Increment(ref _sent);
    }

    private void Receive(IPAddress from, ReadOnlySpan<byte> datagram)
    {
        Heartbeat h;
        try
        {
            h = Heartbeats.Decode(datagram, _link.Accepted, _time.GetUtcNow().ToUnixTimeMilliseconds());
        }
        catch (FormatException e)
        {
            Refuse(from, e.Message);
            return;
        }
        bool fromPeer, changed = false, givenBack = false, returned = false;
        lock (_gate)
        {
            // A heartbeat counts for the node it names only from that node's own address.
            fromPeer = _peers.TryGetValue(h.Node, out var peer) && peer.At.Address.Equals(from);
            if (fromPeer)
            {
                var now = NowMs;
                returned = !h.Leaving && _liveness.State(h.Node, now, 3 * peer!.Interval) is "Unheard" or "Silent" or "Leaving";
                _liveness.Heard(h.Node, h.Leaving, now);
                changed = Recheck(now);
                if (h.HoldingYours)
                {
                    _heldBy.Add(h.Node);
                }
                else
                {
                    givenBack = _heldBy.Remove(h.Node);
                }
            }
        }
        if (givenBack)
        {
            _givenBack(h.Node);
        }
        if (returned)
        {
            _returned?.Invoke(h.Node);
        }
        if (!fromPeer)
        {
            Refuse(from, $"it names node {h.Node}, which is not a failover peer at that address");
            return;
        }
        Interlocked.Increment(ref _received);
        if (changed)
        {
            _changed();
        }
    }

    private void Refuse(IPAddress from, string why)
    {
        Interlocked.Increment(ref _refused);
        lock (_gate)
        {
            if (!_refusedFrom.Add(from))
            {
                return;
            }
        }
        LogRefused(from, why);
    }

    /// <summary>Whether the watched pairs past their takeover time are others than last time (under the gate).</summary>
    private bool Recheck(long now)
    {
        var overdue = Overdue(now);
        if (overdue == _overdue)
        {
            return false;
        }
        _overdue = overdue;
        return true;
    }

    /// <summary>What the agent's apply and report depend on: the watched pairs past their takeover time, the peers never heard, and how each peer is heard.</summary>
    private string Overdue(long now) =>
        string.Join(",", _watched.Where(w => _liveness.SilentFor(w.Node, now) is { } silent && silent >= w.After).Select(w => $"{w.Node}/{w.After.Ticks}"))
        + "|" + string.Join(",", NeverHeard(now))
        + "|" + string.Join(",", _peers.Values.Select(p => $"{p.Node}={_liveness.State(p.Node, now, 3 * p.Interval)}"));

    /// <summary>How each peer is heard (<see cref="PeerLiveness.State"/>; silent after three of its intervals without a heartbeat), by name.</summary>
    public List<(string Node, string State)> States()
    {
        lock (_gate)
        {
            var now = NowMs;
            return [.. _peers.Values.OrderBy(p => p.Node, StringComparer.Ordinal).Select(p => (p.Node, _liveness.State(p.Node, now, 3 * p.Interval) ?? "Unheard"))];
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "heartbeats: peers {Peers}")]
    private partial void LogPeers(string peers);

    [LoggerMessage(Level = LogLevel.Warning, Message = "heartbeats: refusing datagrams from {From}: {Why} (logged once)")]
    private partial void LogRefused(IPAddress from, string why);
}
