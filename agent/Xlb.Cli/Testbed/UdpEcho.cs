using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Xlb.Cli.Testbed;

/// <summary>
/// A UDP server inside a namespace that answers every datagram with its own name, so a client
/// can tell which backend served it. Counts what it answered and who asked.
/// </summary>
public sealed class UdpEcho : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _serving;
    private readonly byte[] _name;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<IPAddress, byte> _peers = new();
    private int _answered;

    public int Answered => Volatile.Read(ref _answered);

    /// <summary>The client addresses datagrams came from (as this backend saw them).</summary>
    public IReadOnlyCollection<IPAddress> Peers => [.. _peers.Keys];

    private UdpEcho(string name, Socket socket)
    {
        _name = Encoding.ASCII.GetBytes(name);
        _socket = socket;
        _serving = ServeAsync();
    }

    public static UdpEcho Start(string ns, string name, IPEndPoint at)
    {
        var socket = Netns.Run(ns, () =>
        {
            var s = new Socket(at.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            s.Bind(at);
            return s;
        });
        return new UdpEcho(name, socket);
    }

    private async Task ServeAsync()
    {
        var buf = new byte[2048];
        EndPoint any = new IPEndPoint(_socket.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        while (!_stop.IsCancellationRequested)
        {
            SocketReceiveFromResult got;
            try
            {
                got = await _socket.ReceiveFromAsync(buf, SocketFlags.None, any, _stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            if (got.RemoteEndPoint is IPEndPoint peer)
            {
                _peers.TryAdd(peer.Address, 0);
                await _socket.SendToAsync(_name, SocketFlags.None, peer);
                Interlocked.Increment(ref _answered);
            }
        }
    }

    /// <summary>
    /// Sends <paramref name="count"/> datagrams, each from a new socket (a new flow each time), and
    /// waits at most <paramref name="timeout"/> for each answer. The socket is connected to the
    /// target, so only an answer from exactly that address and port counts.
    /// </summary>
    public static async Task<ProbeResult> ProbeAsync(string ns, IPEndPoint target, int count, TimeSpan timeout, CancellationToken ct)
    {
        var byBackend = new Dictionary<string, int>(StringComparer.Ordinal);
        var errors = new List<string>();
        var failed = 0;
        var buf = new byte[256];
        for (var i = 0; i < count; i++)
        {
            using var socket = Netns.Run(ns, () => new Socket(target.AddressFamily, SocketType.Dgram, ProtocolType.Udp));
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(timeout);
            try
            {
                await socket.ConnectAsync(target, cts.Token);
                await socket.SendAsync(Encoding.ASCII.GetBytes($"ping {i}"), SocketFlags.None, cts.Token);
                var n = await socket.ReceiveAsync(buf, SocketFlags.None, cts.Token);
                var who = Encoding.ASCII.GetString(buf, 0, n);
                byBackend[who] = byBackend.GetValueOrDefault(who) + 1;
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                ct.ThrowIfCancellationRequested();
                failed++;
                if (errors.Count < 5)
                {
                    errors.Add(e.Message);
                }
            }
        }
        return new ProbeResult(byBackend, failed, errors);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _socket.Dispose();
        await _serving;
        _stop.Dispose();
    }
}
