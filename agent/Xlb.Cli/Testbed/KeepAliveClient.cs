using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Xlb.Cli.Testbed;

/// <summary>One long-lived HTTP/1.1 connection from inside a namespace: many requests, one TCP flow.</summary>
public sealed class KeepAliveClient : IDisposable
{
    private readonly Socket _socket;
    private readonly IPEndPoint _target;

    private KeepAliveClient(Socket socket, IPEndPoint target)
    {
        _socket = socket;
        _target = target;
    }

    public static async Task<KeepAliveClient> ConnectAsync(string ns, IPEndPoint target, CancellationToken ct)
    {
        var socket = Netns.Run(ns, () => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
        try
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(TimeSpan.FromSeconds(5));
            await socket.ConnectAsync(target, cts.Token);
            return new KeepAliveClient(socket, target);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Sends one request on the connection and returns the body (the backend's name).</summary>
    public async Task<string> GetAsync(CancellationToken ct)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(TimeSpan.FromSeconds(5));
        await _socket.SendAsync(Encoding.ASCII.GetBytes($"GET / HTTP/1.1\r\nHost: {_target}\r\n\r\n"), SocketFlags.None, cts.Token);
        var text = new StringBuilder();
        var buf = new byte[4096];
        while (true)
        {
            var n = await _socket.ReceiveAsync(buf, SocketFlags.None, cts.Token);
            if (n == 0)
            {
                throw new InvalidDataException("the connection was closed");
            }
            text.Append(Encoding.ASCII.GetString(buf, 0, n));
            var s = text.ToString();
            var head = s.IndexOf("\r\n\r\n", StringComparison.Ordinal);
            if (head < 0)
            {
                continue;
            }
            var lengthAt = s.IndexOf("Content-Length: ", StringComparison.OrdinalIgnoreCase);
            var length = int.Parse(s.AsSpan(lengthAt + 16, s.IndexOf('\r', lengthAt) - lengthAt - 16), System.Globalization.CultureInfo.InvariantCulture);
            if (s.Length >= head + 4 + length)
            {
                return s.Substring(head + 4, length).Trim();
            }
        }
    }

    public void Dispose() => _socket.Dispose();
}
