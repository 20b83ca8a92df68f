using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Xlb.Agent;

/// <summary>
/// The agent's UDP socket toward the other LB nodes (<c>--flow-sync-listen</c>): flow sync
/// (<see cref="FlowSyncer"/>) and heartbeats (<see cref="Heartbeater"/>) share it, so one port
/// is opened between nodes. It hands each datagram to the one its first bytes name, and holds the
/// key file (<c>--flow-sync-key-file</c>) that authenticates both, read again at most once a second.
/// </summary>
public sealed partial class PeerLink : IDisposable
{
    /// <summary>Takes one datagram from <paramref name="from"/> (an IPv4 address as such, not mapped).</summary>
    public delegate void Handler(IPAddress from, ReadOnlySpan<byte> datagram);

    private static readonly TimeSpan KeyRefreshEvery = TimeSpan.FromSeconds(1);

    private readonly Socket _socket;
    private readonly FlowSyncKeyFile? _keys;
    private readonly ILogger _log;
    private readonly TimeProvider _time;
    private readonly Lock _keyGate = new();
    private long _keysRead = long.MinValue;
    private string? _keyProblem;

    private PeerLink(Socket socket, IPEndPoint listen, FlowSyncKeyFile? keys, ILogger log, TimeProvider time)
    {
        _socket = socket;
        Listen = listen;
        _keys = keys;
        _log = log;
        _time = time;
    }

    /// <summary>Where it listens (on a host without IPv6, the IPv4 wildcard instead of the IPv6 one).</summary>
    public IPEndPoint Listen { get; }

    /// <summary>Flow-sync datagrams go here.</summary>
    public Handler? Flows { get; set; }

    /// <summary>Heartbeats go here.</summary>
    public Handler? Heartbeats { get; set; }

    /// <summary>The key datagrams are sent with; null: unauthenticated.</summary>
    public byte[]? Key => _keys?.Current;

    /// <summary>The keys a datagram may be authenticated with (none: only unauthenticated ones are taken).</summary>
    public IReadOnlyList<byte[]> Accepted => _keys?.Accepted ?? [];

    /// <summary>Binds the socket; throws <see cref="SocketException"/> when the port is taken.</summary>
    public static PeerLink Open(IPEndPoint listen, FlowSyncKeyFile? keys, ILogger log, TimeProvider time)
    {
        if (listen.AddressFamily == AddressFamily.InterNetworkV6 && listen.Address.Equals(IPAddress.IPv6Any) && !Socket.OSSupportsIPv6)
        {
            listen = new IPEndPoint(IPAddress.Any, listen.Port);
        }
        var socket = listen.AddressFamily == AddressFamily.InterNetworkV6
            ? new Socket(AddressFamily.InterNetworkV6, SocketType.Dgram, ProtocolType.Udp) { DualMode = true }
            : new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            socket.Bind(listen);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        var link = new PeerLink(socket, listen, keys, log, time);
        link.RefreshKeys();
        link.LogListening(listen, keys?.Current is not null ? "authenticated" : keys is null ? "not authenticated (no --flow-sync-key-file)" : $"not authenticated ({keys.Problem ?? $"no key at {keys.Path} yet"})");
        return link;
    }

    /// <summary>Reads the key file again when it was last read a second ago or more, and says what changed.</summary>
    public void RefreshKeys()
    {
        if (_keys is null)
        {
            return;
        }
        lock (_keyGate)
        {
            if (_keysRead != long.MinValue && _time.GetElapsedTime(_keysRead) < KeyRefreshEvery)
            {
                return;
            }
            _keysRead = _time.GetTimestamp();
            var wasAuthenticated = _keys.Current is not null;
            if (_keys.Refresh())
            {
                LogNewKey(_keys.Path, wasAuthenticated ? "the one before is still taken from peers that have not read it yet" : "datagrams are authenticated from now on");
            }
            else if (_keys.Problem is { } problem && _keyProblem != problem)
            {
                LogKeyProblem(problem);
            }
            _keyProblem = _keys.Problem;
        }
    }

    /// <summary>Sends one datagram; a failure is logged, not thrown (the peer may be gone).</summary>
    public async Task SendAsync(byte[] datagram, IPEndPoint to, CancellationToken ct)
    {
        try
        {
            await _socket.SendToAsync(datagram, to, ct);
        }
        catch (SocketException e)
        {
            LogSendFailed(to, e.Message);
        }
    }

    /// <summary>Receives until <paramref name="ct"/> ends, handing each datagram to its taker.</summary>
    public async Task RunAsync(CancellationToken ct)
    {
        var buffer = new byte[65536];
        EndPoint any = new IPEndPoint(_socket.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        while (!ct.IsCancellationRequested)
        {
            SocketReceiveFromResult got;
            try
            {
                got = await _socket.ReceiveFromAsync(buffer, any, ct);
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
            var datagram = buffer.AsSpan(0, got.ReceivedBytes);
            // Anything that is not a heartbeat is flow sync's to take or refuse (and count).
            (Core.Heartbeats.Is(datagram) ? Heartbeats : Flows)?.Invoke(from, datagram);
        }
    }

    public void Dispose() => _socket.Dispose();

    [LoggerMessage(Level = LogLevel.Information, Message = "peers: a new key in {Path}: datagrams are sent with it; {What}")]
    private partial void LogNewKey(string path, string what);

    [LoggerMessage(Level = LogLevel.Error, Message = "peers: the key file cannot be used, the last good key stays: {Problem}")]
    private partial void LogKeyProblem(string problem);

    [LoggerMessage(Level = LogLevel.Information, Message = "peers: listening on {Listen} (flow sync and heartbeats), datagrams {Auth}")]
    private partial void LogListening(IPEndPoint listen, string auth);

    [LoggerMessage(Level = LogLevel.Warning, Message = "peers: cannot send to {Peer}: {Error}")]
    private partial void LogSendFailed(IPEndPoint peer, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "peers: receive failed: {Error}")]
    private partial void LogReceiveFailed(string error);
}
