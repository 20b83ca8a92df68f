using System.Net;
using System.Net.Sockets;
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
/// alive). With a key, every datagram is authenticated and only authenticated ones are taken; the
/// key file is read again at every walk (<see cref="FlowSyncKeyFile"/>).
/// </summary>
public sealed partial class FlowSyncer(XdpDataPlane dp, IPEndPoint listen, TimeSpan interval, FlowSyncKeyFile? keys, ILogger log, TimeProvider time)
{
    private readonly TimeProvider _time = time;
    private sealed record Config(FlowSyncView View, IReadOnlyList<IPEndPoint> Peers, HashSet<IPAddress> From);

    private volatile Config? _config;
    private string? _keyProblem;
    private volatile bool _peersChanged;
    private long _sent, _received, _written, _skipped, _refused;

    public IPEndPoint Listen => listen;

    /// <summary>Flows sent (each peer counted), received, written, left out, and datagrams refused (not from a peer, not flow sync, or not authenticated as this node's key says).</summary>
    public (long Sent, long Received, long Written, long Skipped, long Refused) Counts =>
        (Interlocked.Read(ref _sent), Interlocked.Read(ref _received), Interlocked.Read(ref _written), Interlocked.Read(ref _skipped), Interlocked.Read(ref _refused));

    /// <summary>The services and peers from now on (after every apply: a service's id and its backends' indexes may have moved).</summary>
    public void Configure(FlowSyncView view, IReadOnlyList<NodeSyncPeer> peers)
    {
        var endpoints = peers.Select(p => new IPEndPoint(IPAddress.Parse(p.Address), listen.Port)).ToList();
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

    public async Task RunAsync(CancellationToken ct)
    {
        using var socket = Bind(ref listen);
        keys?.Refresh();
        LogListening(listen, keys?.Current is not null ? "authenticated" : keys is null ? "not authenticated (no --flow-sync-key-file)" : $"not authenticated ({keys.Problem ?? $"no key at {keys.Path} yet"})");
        await Task.WhenAll(ReceiveAsync(socket, ct), SendAsync(socket, ct));
    }

    /// <summary>The socket on <paramref name="at"/>; on a host without IPv6, the IPv4 wildcard instead of the IPv6 one.</summary>
    private static Socket Bind(ref IPEndPoint at)
    {
        if (at.AddressFamily == AddressFamily.InterNetworkV6 && at.Address.Equals(IPAddress.IPv6Any) && !Socket.OSSupportsIPv6)
        {
            at = new IPEndPoint(IPAddress.Any, at.Port);
        }
        var socket = at.AddressFamily == AddressFamily.InterNetworkV6
            ? new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp) { DualMode = true }
            : new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            socket.Bind(at);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private async Task SendAsync(Socket socket, CancellationToken ct)
    {
        ulong since = 0;
        var lastFull = long.MinValue;
        while (!ct.IsCancellationRequested)
        {
            var walk = XdpDataPlane.MonotonicNs();
            if (keys is not null)
            {
                var wasAuthenticated = keys.Current is not null;
                if (keys.Refresh())
                {
                    LogNewKey(keys.Path, wasAuthenticated ? "the one before is still taken from peers that have not read it yet" : "datagrams are authenticated from now on");
                }
                else if (keys.Problem is { } problem && _keyProblem != problem)
                {
                    LogKeyProblem(problem);
                }
                _keyProblem = keys.Problem;
            }
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
                    foreach (var datagram in SyncedFlows.Encode(flows, keys?.Current, _time.GetUtcNow().ToUnixTimeMilliseconds()))
                    {
                        foreach (var peer in config.Peers)
                        {
                            try
                            {
                                await socket.SendToAsync(datagram, peer, ct);
                            }
                            catch (SocketException e)
                            {
                                LogSendFailed(peer, e.Message);
                            }
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

    private async Task ReceiveAsync(Socket socket, CancellationToken ct)
    {
        var buffer = new byte[65536];
        EndPoint any = new IPEndPoint(socket.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        while (!ct.IsCancellationRequested)
        {
            SocketReceiveFromResult got;
            try
            {
                got = await socket.ReceiveFromAsync(buffer, any, ct);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (SocketException e)
            {
                LogReceiveFailed(e.Message);
                continue;
            }
            var from = ((IPEndPoint)got.RemoteEndPoint).Address;
            if (from.IsIPv4MappedToIPv6)
            {
                from = from.MapToIPv4();
            }
            if (_config is not { } config || !config.From.Contains(from))
            {
                Interlocked.Increment(ref _refused);
                if (_heard.Add((from, false)))
                {
                    LogRefused(from);
                }
                continue;
            }
            try
            {
                var flows = SyncedFlows.Decode(buffer.AsSpan(0, got.ReceivedBytes), keys?.Accepted ?? [], _time.GetUtcNow().ToUnixTimeMilliseconds());
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
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "flow sync: a new key in {Path}: datagrams are sent with it; {What}")]
    private partial void LogNewKey(string path, string what);

    [LoggerMessage(Level = LogLevel.Error, Message = "flow sync: the key file cannot be used, the last good key stays: {Problem}")]
    private partial void LogKeyProblem(string problem);

    [LoggerMessage(Level = LogLevel.Information, Message = "flow sync: {Services} synchronised service(s), peers {Peers}")]
    private partial void LogConfigured(int services, string peers);

    [LoggerMessage(Level = LogLevel.Warning, Message = "flow sync: refusing datagrams from {From}, which is not a peer (logged once)")]
    private partial void LogRefused(IPAddress from);

    [LoggerMessage(Level = LogLevel.Information, Message = "flow sync: first flows from {From}: {Written} written, {Skipped} left out (no such synchronised service or backend here)")]
    private partial void LogFirstFrom(IPAddress from, int written, int skipped);

    [LoggerMessage(Level = LogLevel.Debug, Message = "flow sync: sent {Flows} flow(s) seen since {SinceNs} to {Peers} peer(s)")]
    private partial void LogSent(int flows, int peers, ulong sinceNs);

    [LoggerMessage(Level = LogLevel.Information, Message = "flow sync: listening on {Listen}, datagrams {Auth}")]
    private partial void LogListening(IPEndPoint listen, string auth);

    [LoggerMessage(Level = LogLevel.Warning, Message = "flow sync: cannot send to {Peer}: {Error}")]
    private partial void LogSendFailed(IPEndPoint peer, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "flow sync: cannot read the flow table: {Error}")]
    private partial void LogWalkFailed(string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "flow sync: receive failed: {Error}")]
    private partial void LogReceiveFailed(string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "flow sync: a datagram from {From} is not flow sync: {Error}")]
    private partial void LogMalformed(IPAddress from, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "flow sync: cannot write flows: {Error}")]
    private partial void LogWriteFailed(string error);
}
