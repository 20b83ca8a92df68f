using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Xlb.Agent.Core;
using Xlb.Crds;

namespace Xlb.Agent;

/// <summary>
/// One BGP session to one neighbour (RFC 4271), as an announcer: it opens the connection, agrees
/// on the session, advertises host routes for the VIPs it is given and withdraws those taken
/// away, keeps the session alive, and reconnects (1 s, doubling to 30 s) when it fails. It takes
/// no routes: the neighbour's UPDATEs are read and dropped.
///
/// It offers graceful restart (RFC 4724) with forwarding state kept: when the agent restarts
/// (the XDP program keeps forwarding meanwhile), <see cref="StopAsync"/> without cease closes the
/// connection and a neighbour that helps keeps the routes for <see cref="RestartTime"/> seconds,
/// until the next agent's session sends them again and its End-of-RIB. Stopping with cease
/// sends "administrative shutdown", and the neighbour withdraws the routes at once.
/// </summary>
public sealed partial class BgpSpeaker
{
    /// <summary>Seconds a helping neighbour keeps our routes after the connection drops without a NOTIFICATION.</summary>
    public const int RestartTime = 120;

    private readonly ILogger _log;
    private readonly TimeProvider _time;
    private readonly SemaphoreSlim _changed = new(0);
    private readonly CancellationTokenSource _stop = new();
    private volatile Desire _desired = new(new HashSet<IPAddress>(), new HashSet<IPAddress>());

    /// <summary>The routes to advertise, and those of them that go out preferred (VIPs taken over).</summary>
    private sealed record Desire(IReadOnlySet<IPAddress> Routes, IReadOnlySet<IPAddress> Preferred);
    private volatile bool _cease;
    private bool _restarting;
    private Task _run = Task.CompletedTask;

    private readonly Action _changedState;

    private BgpSpeaker(NodeBgpPeer peer, ILogger log, TimeProvider time, bool restarting, Action changedState)
    {
        Peer = peer;
        _changedState = changedState;
        _log = log;
        _time = time;
        _restarting = restarting;
    }

    public NodeBgpPeer Peer { get; }

    /// <summary>Idle, Connect, OpenSent, OpenConfirm or Established (RFC 4271 8.2.2's states).</summary>
    public string State { get; private set; } = "Idle";

    /// <summary>Why the last session ended or failed; null while none has.</summary>
    public string? LastError { get; private set; }

    /// <summary>The routes the neighbour holds from this session now.</summary>
    public IReadOnlySet<IPAddress> Advertised { get; private set; } = new HashSet<IPAddress>();

    /// <param name="restarting">This agent took over the data plane of one before it: the first OPEN says so (graceful restart's R flag).</param>
    /// <param name="changedState">Called when the session comes up or goes down, or its routes change (from the session's thread).</param>
    public static BgpSpeaker Start(NodeBgpPeer peer, ILogger log, TimeProvider time, bool restarting, Action changedState)
    {
        var speaker = new BgpSpeaker(peer, log, time, restarting, changedState);
        speaker._run = Task.Run(speaker.RunAsync);
        return speaker;
    }

    /// <summary>
    /// The routes to advertise from now on (of the session's family; others are left out), and
    /// those of them to advertise preferred: VIPs this node took over from a silent peer
    /// (<see cref="BgpRouteAttributes.Preferred"/>).
    /// </summary>
    public void SetRoutes(IReadOnlySet<IPAddress> routes, IReadOnlySet<IPAddress>? preferred = null)
    {
        _desired = new Desire(routes, preferred ?? new HashSet<IPAddress>());
        _changed.Release();
    }

    /// <summary>Ends the session: with a cease NOTIFICATION (the neighbour withdraws our routes), or without (graceful restart: it keeps them for a while).</summary>
    public async Task StopAsync(bool cease)
    {
        _cease = cease;
        await _stop.CancelAsync();
        await _run;
    }

    private async Task RunAsync()
    {
        var backoff = TimeSpan.FromSeconds(1);
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                await SessionAsync(_stop.Token);
                backoff = TimeSpan.FromSeconds(1);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e) when (e is SocketException or IOException or BgpProtocolException or OperationCanceledException or TimeoutException)
            {
                LastError = e.Message;
                var was = State;
                State = "Idle";
                Advertised = new HashSet<IPAddress>();
                LogSessionFailed(Peer.Address, Peer.Port, was, e.Message, backoff.TotalSeconds);
                _changedState();
            }
            try
            {
                await Task.Delay(backoff, _time, _stop.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, TimeSpan.FromSeconds(30).Ticks));
        }
        State = "Idle";
    }

    private async Task SessionAsync(CancellationToken stop)
    {
        var address = IPAddress.Parse(Peer.Address);
        var family = address.AddressFamily;
        State = "Connect";
        using var socket = new Socket(family, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using (var connecting = CancellationTokenSource.CreateLinkedTokenSource(stop))
        {
            connecting.CancelAfter(TimeSpan.FromSeconds(5));
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, Peer.Port), connecting.Token);
            }
            catch (OperationCanceledException) when (!stop.IsCancellationRequested)
            {
                throw new TimeoutException($"no connection to {Peer.Address} port {Peer.Port} within 5 s");
            }
        }
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var local = (IPEndPoint)socket.LocalEndPoint!;
        var ourHold = (int)Peer.HoldTime.Value.TotalSeconds;
        var bgpFamily = BgpFamily.Of(family);
        await stream.WriteAsync(BgpWire.Open(new BgpOpen(Peer.MyAsn, ourHold, RouterId(local.Address), [bgpFamily], FourOctetAs: true,
            GracefulRestart: (RestartTime, _restarting, ForwardingKept: true))), stop);
        State = "OpenSent";
        // Until the session is up, the neighbour has the larger of our hold time and 30 s to answer.
        using var opening = CancellationTokenSource.CreateLinkedTokenSource(stop);
        opening.CancelAfter(TimeSpan.FromSeconds(Math.Max(ourHold, 30)));
        var (type, body) = await ReadAsync(stream, opening.Token);
        if (type != BgpMessageType.Open)
        {
            throw await RefuseAsync(stream, new BgpProtocolException(5, 1, $"expected OPEN, got {type}"));
        }
        int hold;
        bool fourOctet;
        try
        {
            var theirs = BgpWire.ParseOpen(body);
            (hold, fourOctet) = BgpRoutes.Agree(theirs, Peer, ourHold);
        }
        catch (BgpProtocolException e)
        {
            throw await RefuseAsync(stream, e);
        }
        await stream.WriteAsync(BgpWire.Keepalive(), stop);
        State = "OpenConfirm";
        (type, _) = await ReadAsync(stream, opening.Token);
        if (type != BgpMessageType.Keepalive)
        {
            throw await RefuseAsync(stream, new BgpProtocolException(5, 2, $"expected KEEPALIVE, got {type}"));
        }
        State = "Established";
        _restarting = false;
        LastError = null;
        LogEstablished(Peer.Address, Peer.Port, Peer.Asn, hold);
        _changedState();

        var attributes = new BgpRouteAttributes(Peer.MyAsn, Internal: Peer.Asn == Peer.MyAsn, fourOctet, local.Address);
        var lastHeard = _time.GetTimestamp();
        using var reading = CancellationTokenSource.CreateLinkedTokenSource(stop);
        var reader = Task.Run(async () =>
        {
            while (true)
            {
                var (t, b) = await ReadAsync(stream, reading.Token);
                Interlocked.Exchange(ref lastHeard, _time.GetTimestamp());
                if (t == BgpMessageType.Open)
                {
                    throw new BgpProtocolException(5, 3, "OPEN on an established session");
                }
            }
        }, CancellationToken.None);
        try
        {
            await WriteLoopAsync(stream, attributes, family, bgpFamily, hold, () => Interlocked.Read(ref lastHeard), reader, stop);
        }
        finally
        {
            await reading.CancelAsync();
            try
            {
                await reader;
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or BgpProtocolException or ObjectDisposedException)
            {
                // The session is over either way: the loop says why.
            }
        }
    }

    private async Task WriteLoopAsync(NetworkStream stream, BgpRouteAttributes attributes, AddressFamily family, BgpFamily bgpFamily, int hold,
        Func<long> lastHeard, Task reader, CancellationToken stop)
    {
        var advertised = new Dictionary<IPAddress, bool>();
        // Hold time 0: neither side sends keepalives (RFC 4271 4.4).
        TimeSpan? keepalive = hold == 0 ? null : TimeSpan.FromSeconds(Math.Max(1, hold / 3));
        var lastSent = _time.GetTimestamp();
        var first = true;
        while (true)
        {
            var desired = _desired;
            var (announce, preferred, withdraw) = BgpRoutes.Diff(advertised, desired.Routes, desired.Preferred, family);
            foreach (var message in BgpWire.Updates(announce, withdraw, attributes).Concat(BgpWire.Updates(preferred, [], attributes with { Preferred = true })))
            {
                await stream.WriteAsync(message, stop);
                lastSent = _time.GetTimestamp();
            }
            if (announce.Length + preferred.Length + withdraw.Length > 0)
            {
                foreach (var a in announce)
                {
                    advertised[a] = false;
                }
                foreach (var a in preferred)
                {
                    advertised[a] = true;
                }
                foreach (var a in withdraw)
                {
                    advertised.Remove(a);
                }
                Advertised = new HashSet<IPAddress>(advertised.Keys);
                LogRoutes(Peer.Address, announce.Length + preferred.Length, withdraw.Length, advertised.Count);
                _changedState();
            }
            if (first)
            {
                // Every route is sent: a neighbour that kept our routes through a restart drops those it did not get again.
                await stream.WriteAsync(BgpWire.EndOfRib(bgpFamily), stop);
                lastSent = _time.GetTimestamp();
                first = false;
            }

            using var wait = CancellationTokenSource.CreateLinkedTokenSource(stop);
            var tick = TimeSpan.FromSeconds(1);
            var changed = _changed.WaitAsync(tick, wait.Token);
            var done = await Task.WhenAny(changed, reader);
            await wait.CancelAsync();
            if (stop.IsCancellationRequested)
            {
                if (_cease)
                {
                    await stream.WriteAsync(BgpWire.Notification(6, 2), CancellationToken.None);
                    LogCeased(Peer.Address, advertised.Count);
                }
                else
                {
                    LogLeftForRestart(Peer.Address, advertised.Count, RestartTime);
                }
                Advertised = new HashSet<IPAddress>();
                throw new OperationCanceledException(stop);
            }
            if (done == reader)
            {
                await reader; // throws why the neighbour ended it
                throw new IOException("the neighbour closed the connection");
            }
            var now = _time.GetTimestamp();
            if (hold > 0 && _time.GetElapsedTime(lastHeard(), now) > TimeSpan.FromSeconds(hold))
            {
                await stream.WriteAsync(BgpWire.Notification(4, 0), CancellationToken.None);
                throw new TimeoutException($"nothing heard from the neighbour for the hold time, {hold} s");
            }
            if (keepalive is { } every && _time.GetElapsedTime(lastSent, now) >= every)
            {
                await stream.WriteAsync(BgpWire.Keepalive(), stop);
                lastSent = now;
            }
        }
    }

    /// <summary>Sends the NOTIFICATION for <paramref name="e"/> and gives it back to throw.</summary>
    private static async Task<BgpProtocolException> RefuseAsync(NetworkStream stream, BgpProtocolException e)
    {
        try
        {
            await stream.WriteAsync(BgpWire.Notification(e.Code, e.Subcode), CancellationToken.None);
        }
        catch (IOException)
        {
            // It is closing anyway.
        }
        return e;
    }

    /// <summary>The next message; a NOTIFICATION ends the session with what it says.</summary>
    private static async Task<(BgpMessageType Type, byte[] Body)> ReadAsync(NetworkStream stream, CancellationToken ct)
    {
        var header = new byte[BgpWire.HeaderLength];
        try
        {
            await stream.ReadExactlyAsync(header, ct);
        }
        catch (EndOfStreamException)
        {
            throw new IOException("the neighbour closed the connection");
        }
        var (type, length) = BgpWire.ReadHeader(header);
        var body = new byte[length - BgpWire.HeaderLength];
        await stream.ReadExactlyAsync(body, ct);
        if (type == BgpMessageType.Notification)
        {
            var n = BgpWire.ParseNotification(body);
            throw new IOException($"the neighbour sent NOTIFICATION {n}");
        }
        return (type, body);
    }

    /// <summary>
    /// The BGP identifier: our address on an IPv4 session; else an IPv4 address of this host (the
    /// first that is not loopback); else one made from the IPv6 address, in 1.0.0.0/8 and up.
    /// </summary>
    private static IPAddress RouterId(IPAddress local)
    {
        if (local.AddressFamily == AddressFamily.InterNetwork)
        {
            return local;
        }
        var v4 = NetworkInterface.GetAllNetworkInterfaces()
            .SelectMany(i => i.GetIPProperties().UnicastAddresses)
            .Select(u => u.Address)
            .FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a));
        if (v4 is not null)
        {
            return v4;
        }
        var b = local.GetAddressBytes();
        return new IPAddress([(byte)(b[12] | 1), b[13], b[14], b[15]]);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "BGP session with {Peer} port {Port} (AS {Asn}) established, hold time {Hold} s")]
    private partial void LogEstablished(string peer, int port, long asn, int hold);

    [LoggerMessage(Level = LogLevel.Warning, Message = "BGP session with {Peer} port {Port} failed in state {State}: {Error}; trying again in {Seconds} s")]
    private partial void LogSessionFailed(string peer, int port, string state, string error, double seconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "BGP {Peer}: advertised {Announced} route(s), withdrew {Withdrawn}; {Held} held")]
    private partial void LogRoutes(string peer, int announced, int withdrawn, int held);

    [LoggerMessage(Level = LogLevel.Information, Message = "BGP {Peer}: session ended with administrative shutdown, {Count} route(s) withdrawn")]
    private partial void LogCeased(string peer, int count);

    [LoggerMessage(Level = LogLevel.Information, Message = "BGP {Peer}: connection closed for a restart; a neighbour that helps graceful restart keeps the {Count} route(s) up to {Seconds} s")]
    private partial void LogLeftForRestart(string peer, int count, int seconds);
}
