using System.Net;
using Microsoft.Extensions.Logging;
using Xlb.Agent.Core;
using Xlb.Crds;

namespace Xlb.Agent;

/// <summary>
/// Flow sync between the LB nodes of a shard (<see cref="SyncedFlows"/>): every interval it walks
/// the admitted-flow table and sends the flows of synchronised services that saw a packet since
/// an interval before its last walk to each peer over UDP, and all of them after a change of
/// peers, at once when a peer is heard again after a silence (<see cref="ResendAll"/>: it
/// restarted, and its tables may be new), and every full-resend period (a lost datagram would
/// otherwise leave an idle flow out for good). It takes in what the peers
/// send, from their addresses only, and writes it into this node's flow tables. A flow admitted
/// less than an interval before a failover may not have reached the peer; a copy idles out on
/// the peer as the original does (a busy flow is sent again each interval, which keeps its copy
/// alive). With a key, every datagram is authenticated and only authenticated ones are taken
/// (<see cref="PeerLink"/>, whose socket it shares with the heartbeats).
/// </summary>
public sealed partial class FlowSyncer
{
    private readonly XdpDataPlane dp;
    private readonly PeerLink link;
    private readonly TimeSpan interval;
    private readonly TimeSpan fullResend;
    private readonly SemaphoreSlim _wake = new(0);
    private readonly ILogger log;
    private readonly TimeProvider _time;
    private sealed record Config(FlowSyncView View, IReadOnlyList<IPEndPoint> Peers, HashSet<IPAddress> From, Dictionary<string, IPEndPoint> ByNode);

    private volatile Config? _config;
    private volatile bool _peersChanged;
    private long _sent, _received, _written, _skipped, _refused;

    private readonly Action<string>? _resent;

    /// <summary>Takes the flow-sync datagrams of <paramref name="link"/> from now on.</summary>
    /// <param name="fullResend">How often every flow is sent again (<see cref="SyncedFlows.FullResendEvery"/> by default).</param>
    /// <param name="resent">A returning peer has been sent every flow (<see cref="ResendAll"/>): the VIPs taken from it may go back.</param>
    public FlowSyncer(XdpDataPlane dp, PeerLink link, TimeSpan interval, TimeSpan fullResend, ILogger log, TimeProvider time, Action<string>? resent = null)
    {
        _resent = resent;
        this.dp = dp;
        this.link = link;
        this.interval = interval;
        this.fullResend = fullResend;
        this.log = log;
        _time = time;
        link.Flows = Receive;
    }

    /// <summary>Flows sent (each peer counted), received, written, left out, and datagrams refused (not from a peer, not flow sync, or not authenticated as this node's key says).</summary>
    public (long Sent, long Received, long Written, long Skipped, long Refused) Counts =>
        (Interlocked.Read(ref _sent), Interlocked.Read(ref _received), Interlocked.Read(ref _written), Interlocked.Read(ref _skipped), Interlocked.Read(ref _refused));

    /// <summary>The services and peers from now on (after every apply: a service's id and its backends' indexes may have moved).</summary>
    public void Configure(FlowSyncView view, IReadOnlyList<NodeSyncPeer> peers)
    {
        var endpoints = peers.Select(p => new IPEndPoint(IPAddress.Parse(p.Address), link.Listen.Port)).ToList();
        var was = _config;
        if (was is null || !was.Peers.SequenceEqual(endpoints) || !was.View.Services.SetEquals(view.Services))
        {
            _peersChanged = true;
            LogConfigured(view.Services.Count, string.Join(", ", peers.Select(p => $"{p.Node} ({p.Address})")));
        }
        _config = new Config(view, endpoints, [.. endpoints.Select(e => e.Address)], peers.Select((p, i) => (p.Node, At: endpoints[i])).DistinctBy(p => p.Node).ToDictionary(p => p.Node, p => p.At, StringComparer.Ordinal));
    }

    /// <summary>
    /// <paramref name="peer"/> is heard again after a silence: it restarted (after a reboot or an
    /// upgrade to another ABI its tables are new and empty) or was cut off. Its connections may
    /// live on here only as the copies it sent, which this node served while it held its VIPs,
    /// and they must be back there before its VIPs go back to it. So the next walk, at once,
    /// sends that peer every flow, the copies included (never sent on otherwise: the peers would
    /// echo each other's flows; a node keeps its own flow over a copy of it); until it has,
    /// <see cref="Owes"/> says so. Nothing to do for a node that is not a flow-sync peer here.
    /// </summary>
    public void ResendAll(string peer)
    {
        if (_config is not { } config || !config.ByNode.ContainsKey(peer) || config.View.Services.Count == 0)
        {
            return;
        }
        lock (_returning)
        {
            _returning[peer] = _time.GetTimestamp();
        }
        _wake.Release();
    }

    /// <summary>The returning peers this node has not yet sent every flow, with when each was heard.</summary>
    private readonly Dictionary<string, long> _returning = new(StringComparer.Ordinal);

    /// <summary>The longest the VIPs taken from a returning peer wait for its flows to be sent (<see cref="Owes"/>).</summary>
    public static readonly TimeSpan HandBackWait = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Whether this node still owes <paramref name="peer"/>, heard again, every flow it holds (at
    /// most <see cref="HandBackWait"/>): meanwhile the VIPs it took from the peer stay here
    /// (<see cref="Core.Takeover.Apply"/>'s handingBack), so that the connections are there before
    /// the traffic is.
    /// </summary>
    public bool Owes(string peer)
    {
        lock (_returning)
        {
            return _returning.TryGetValue(peer, out var at) && _time.GetElapsedTime(at) < HandBackWait;
        }
    }

    /// <summary>The returning peers as a walk begins, with when each was heard.</summary>
    private Dictionary<string, long> Returning()
    {
        lock (_returning)
        {
            return new(_returning, StringComparer.Ordinal);
        }
    }

    /// <summary>
    /// The walk that began with <paramref name="asked"/> has sent them every flow (or had nothing
    /// to send): their VIPs may go back. A peer heard again during the walk stays owed.
    /// </summary>
    private void Resent(Dictionary<string, long> asked)
    {
        lock (_returning)
        {
            foreach (var (peer, at) in asked)
            {
                if (_returning.TryGetValue(peer, out var now) && now == at)
                {
                    _returning.Remove(peer);
                }
            }
        }
        foreach (var peer in asked.Keys)
        {
            _resent?.Invoke(peer);
        }
    }

    /// <summary>Peers whose first datagram (taken or refused) was logged: one line each, not one per datagram.</summary>
    private readonly HashSet<(IPAddress, bool)> _heard = [];

    /// <summary>Sends until <paramref name="ct"/> ends (what peers send is taken by <see cref="Receive"/> meanwhile).</summary>
    public Task RunAsync(CancellationToken ct) => SendAsync(ct);

    private async Task SendAsync(CancellationToken ct)
    {
        ulong since = 0;
        var lastFull = long.MinValue;
        while (!ct.IsCancellationRequested)
        {
            var walk = XdpDataPlane.MonotonicNs();
            var asked = Returning();
            link.RefreshKeys();
            if (_config is { } config && config.Peers.Count > 0 && config.View.Services.Count > 0)
            {
                if (_peersChanged || lastFull == long.MinValue || _time.GetElapsedTime(lastFull) >= fullResend)
                {
                    // A new or returning peer gets every flow; and so does every peer now and then (see FullResendEvery).
                    _peersChanged = false;
                    since = 0;
                    lastFull = _time.GetTimestamp();
                }
                var returning = asked.Keys.Where(config.ByNode.ContainsKey).Select(n => (Node: n, At: config.ByNode[n])).ToList();
                try
                {
                    var others = returning.Count == 0 ? config.Peers : [.. config.Peers.Where(p => !returning.Any(r => r.At.Equals(p)))];
                    var flows = dp.SyncableFlows(config.View, since);
                    await SendAsync(flows, others, ct);
                    if (flows.Count > 0)
                    {
                        LogSent(flows.Count, others.Count, since);
                    }
                    if (returning.Count > 0)
                    {
                        var all = dp.SyncableFlows(config.View, 0, copies: true);
                        await SendAsync(all, [.. returning.Select(r => r.At)], ct);
                        foreach (var (node, _) in returning)
                        {
                            LogResentAll(node, all.Count, all.Count(f => f.Copy));
                        }
                    }
                    since = SyncedFlows.NextSince(walk, interval);
                }
                catch (Bpf.BpfException e)
                {
                    LogWalkFailed(e.Message);
                }
            }
            // Sent, or nothing to send (no peers or services now): either way, nothing is owed.
            Resent(asked);
            try
            {
                // The interval, or less when a peer returns (ResendAll).
                if (await _wake.WaitAsync(interval, ct))
                {
                    while (_wake.CurrentCount > 0)
                    {
                        await _wake.WaitAsync(0, ct);
                    }
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task SendAsync(List<SyncedFlow> flows, IReadOnlyList<IPEndPoint> peers, CancellationToken ct)
    {
        if (peers.Count == 0)
        {
            return;
        }
        foreach (var datagram in SyncedFlows.Encode(flows, link.Key, _time.GetUtcNow().ToUnixTimeMilliseconds()))
        {
            foreach (var peer in peers)
            {
                await link.SendAsync(datagram, peer, ct);
            }
        }
        Interlocked.Add(ref _sent, (long)flows.Count * peers.Count);
    }

    /// <summary>One flow-sync datagram from <paramref name="from"/>: taken from a peer only, and written into the flow tables.</summary>
    private void Receive(IPAddress from, ReadOnlySpan<byte> datagram)
    {
        if (_config is not { } config || !config.From.Contains(from))
        {
            Interlocked.Increment(ref _refused);
            if (_heard.Add((from, false)))
            {
                LogRefused(from);
            }
            return;
        }
        try
        {
            var flows = SyncedFlows.Decode(datagram, link.Accepted, _time.GetUtcNow().ToUnixTimeMilliseconds());
            Interlocked.Add(ref _received, flows.Count);
            var (written, skipped) = dp.ImportFlows(config.View, flows);
            Interlocked.Add(ref _written, written);
            Interlocked.Add(ref _skipped, skipped);
            if (_heard.Add((from, true)))
            {
                LogFirstFrom(from, written, skipped);
            }
        }
        catch (FormatException e)
        {
            Interlocked.Increment(ref _refused);
            LogMalformed(from, e.Message);
        }
        catch (Bpf.BpfException e)
        {
            LogWriteFailed(e.Message);
        }
    }



    [LoggerMessage(Level = LogLevel.Information, Message = "flow sync: {Peer} is heard again after a silence: sent it every flow, {Flows} ({Copies} of them copies of flows of its own or other peers')")]
    private partial void LogResentAll(string peer, int flows, int copies);

    [LoggerMessage(Level = LogLevel.Information, Message = "flow sync: {Services} synchronised service(s), peers {Peers}")]
    private partial void LogConfigured(int services, string peers);

    [LoggerMessage(Level = LogLevel.Warning, Message = "flow sync: refusing datagrams from {From}, which is not a peer (logged once)")]
    private partial void LogRefused(IPAddress from);

    [LoggerMessage(Level = LogLevel.Information, Message = "flow sync: first flows from {From}: {Written} written, {Skipped} left out (no such synchronised service or backend here)")]
    private partial void LogFirstFrom(IPAddress from, int written, int skipped);

    [LoggerMessage(Level = LogLevel.Debug, Message = "flow sync: sent {Flows} flow(s) seen since {SinceNs} to {Peers} peer(s)")]
    private partial void LogSent(int flows, int peers, ulong sinceNs);



    [LoggerMessage(Level = LogLevel.Warning, Message = "flow sync: cannot read the flow table: {Error}")]
    private partial void LogWalkFailed(string error);


    [LoggerMessage(Level = LogLevel.Warning, Message = "flow sync: a datagram from {From} is not flow sync: {Error}")]
    private partial void LogMalformed(IPAddress from, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "flow sync: cannot write flows: {Error}")]
    private partial void LogWriteFailed(string error);
}
