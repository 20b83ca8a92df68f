using System.Net;
using Microsoft.Extensions.Logging;
using Xlb.Agent.Core;
using Xlb.Crds;

namespace Xlb.Agent;

/// <summary>
/// Flow sync between the LB nodes of a shard (<see cref="SyncedFlows"/>): every interval it walks
/// the admitted-flow table and sends the flows of synchronised services that saw a packet since
/// an interval before its last walk to each peer over UDP, and all of them after a change of
/// peers and every <see cref="SyncedFlows.FullResendEvery"/> (a lost datagram, or a peer that was
/// not listening yet, would otherwise miss an idle flow for good). It takes in what the peers
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
    private readonly ILogger log;
    private readonly TimeProvider _time;
    private sealed record Config(FlowSyncView View, IReadOnlyList<IPEndPoint> Peers, HashSet<IPAddress> From);

    private volatile Config? _config;
    private volatile bool _peersChanged;
    private long _sent, _received, _written, _skipped, _refused;

    /// <summary>Takes the flow-sync datagrams of <paramref name="link"/> from now on.</summary>
    public FlowSyncer(XdpDataPlane dp, PeerLink link, TimeSpan interval, ILogger log, TimeProvider time)
    {
        this.dp = dp;
        this.link = link;
        this.interval = interval;
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
        _config = new Config(view, endpoints, [.. endpoints.Select(e => e.Address)]);
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
            link.RefreshKeys();
            if (_config is { } config && config.Peers.Count > 0 && config.View.Services.Count > 0)
            {
                if (_peersChanged || lastFull == long.MinValue || _time.GetElapsedTime(lastFull) >= SyncedFlows.FullResendEvery)
                {
                    // A new peer gets every flow; and so does every peer now and then (see FullResendEvery).
                    _peersChanged = false;
                    since = 0;
                    lastFull = _time.GetTimestamp();
                }
                try
                {
                    var flows = dp.SyncableFlows(config.View, since);
                    foreach (var datagram in SyncedFlows.Encode(flows, link.Key, _time.GetUtcNow().ToUnixTimeMilliseconds()))
                    {
                        foreach (var peer in config.Peers)
                        {
                            await link.SendAsync(datagram, peer, ct);
                        }
                    }
                    Interlocked.Add(ref _sent, (long)flows.Count * config.Peers.Count);
                    if (flows.Count > 0)
                    {
                        LogSent(flows.Count, config.Peers.Count, since);
                    }
                    since = SyncedFlows.NextSince(walk, interval);
                }
                catch (Bpf.BpfException e)
                {
                    LogWalkFailed(e.Message);
                }
            }
            try
            {
                await Task.Delay(interval, _time, ct);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
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
