using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Xlb.Cli.Testbed;

/// <summary>
/// A tiny HTTP/1.1 server inside a namespace that answers every request with its own name, so a
/// client can tell which backend served it. Keep-alive is honoured. Counts what it served.
/// </summary>
public sealed class HttpBackend : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private int _served;

    public string Name { get; }
    public int Served => Volatile.Read(ref _served);

    /// <summary>The client addresses connections came from (as this backend saw them).</summary>
    public IReadOnlyCollection<IPAddress> Peers => [.. _peers.Keys];

    private readonly System.Collections.Concurrent.ConcurrentDictionary<IPAddress, byte> _peers = new();

    private HttpBackend(string name, Socket listener)
    {
        Name = name;
        _listener = listener;
        _accepting = AcceptLoopAsync();
    }

    public static HttpBackend Start(string ns, string name, IPAddress address, int port)
    {
        var listener = Netns.Listen(ns, new IPEndPoint(address, port), 1024);
        return new HttpBackend(name, listener);
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket conn;
            try
            {
                conn = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            if (conn.RemoteEndPoint is IPEndPoint peer)
            {
                _peers.TryAdd(peer.Address, 0);
            }
            _ = ServeAsync(conn);
        }
    }

    private async Task ServeAsync(Socket conn)
    {
        using var _ = conn;
        var buf = new byte[4096];
        var pending = new StringBuilder();
        var body = Encoding.ASCII.GetBytes(Name + "\n");
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                timeout.CancelAfter(TimeSpan.FromSeconds(30));
                var n = await conn.ReceiveAsync(buf, SocketFlags.None, timeout.Token);
                if (n == 0)
                {
                    return;
                }
                pending.Append(Encoding.ASCII.GetString(buf, 0, n));
                int end;
                while ((end = pending.ToString().IndexOf("\r\n\r\n", StringComparison.Ordinal)) >= 0)
                {
                    var head = pending.ToString(0, end);
                    pending.Remove(0, end + 4);
                    var close = head.Contains("Connection: close", StringComparison.OrdinalIgnoreCase);
                    var response = Encoding.ASCII.GetBytes(
                        $"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {body.Length}\r\nConnection: {(close ? "close" : "keep-alive")}\r\n\r\n");
                    await conn.SendAsync(response.Concat(body).ToArray(), SocketFlags.None);
                    Interlocked.Increment(ref _served);
                    if (close)
                    {
                        conn.Shutdown(SocketShutdown.Both);
                        return;
                    }
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // The client went away or we are stopping.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _accepting;
        _stop.Dispose();
    }
}
