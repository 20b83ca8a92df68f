using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Xlb.Cli.Testbed;

/// <summary>The outcome of a bounded run of requests: who answered how often, and what failed.</summary>
public sealed record ProbeResult(IReadOnlyDictionary<string, int> ByBackend, int Failed, IReadOnlyList<string> Errors)
{
    public int Answered => ByBackend.Values.Sum();
}

/// <summary>HTTP requests from inside a namespace, one new TCP connection each (a new flow each time).</summary>
public static class HttpProbe
{
    /// <summary>One GET on a new connection from inside a namespace; returns the body, throws unless the status is 200.</summary>
    public static async Task<string> GetAsync(string ns, IPEndPoint target, TimeSpan timeout, CancellationToken ct, bool clientClosesFirst = false)
    {
        var (status, body) = await RequestAsync(ns, target, "/", timeout, ct, clientClosesFirst);
        return status == 200 ? body.Trim() : throw new InvalidDataException($"unexpected status {status}");
    }

    /// <summary>GET <paramref name="path"/> from inside a namespace: status code and body.</summary>
    public static Task<(int Status, string Body)> StatusAsync(string ns, IPEndPoint target, string path, CancellationToken ct) =>
        RequestAsync(ns, target, path, TimeSpan.FromSeconds(5), ct);

    /// <summary>
    /// One request on a new connection. The server closes it after its answer (Connection: close),
    /// or, with <paramref name="clientClosesFirst"/>, the client closes once it has the whole answer
    /// (by its Content-Length) and then waits for the server's close.
    /// </summary>
    private static async Task<(int Status, string Body)> RequestAsync(string ns, IPEndPoint target, string path, TimeSpan timeout, CancellationToken ct, bool clientClosesFirst = false)
    {
        using var socket = Netns.Run(ns, () => new Socket(target.AddressFamily, SocketType.Stream, ProtocolType.Tcp));
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        await socket.ConnectAsync(target, cts.Token);
        var connection = clientClosesFirst ? "" : "Connection: close\r\n";
        await socket.SendAsync(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: {target}\r\n{connection}\r\n"), SocketFlags.None, cts.Token);
        var response = new StringBuilder();
        var buf = new byte[8192];
        int n;
        while (!(clientClosesFirst && Complete(response.ToString())) && (n = await socket.ReceiveAsync(buf, SocketFlags.None, cts.Token)) > 0)
        {
            response.Append(Encoding.ASCII.GetString(buf, 0, n));
        }
        if (clientClosesFirst)
        {
            socket.Shutdown(SocketShutdown.Send);
            while (await socket.ReceiveAsync(buf, SocketFlags.None, cts.Token) > 0)
            {
            }
        }
        var text = response.ToString();
        var head = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        if (!text.StartsWith("HTTP/1.", StringComparison.Ordinal) || head < 0)
        {
            throw new InvalidDataException($"not an HTTP response: {text[..Math.Min(text.Length, 80)]}");
        }
        return (int.Parse(text.AsSpan(9, 3), System.Globalization.CultureInfo.InvariantCulture), text[(head + 4)..]);
    }

    /// <summary>Sends <paramref name="count"/> requests, <paramref name="parallel"/> at a time; never more, never longer than each timeout.</summary>
    /// <summary>Has <paramref name="text"/> a whole head and as much body as its Content-Length says?</summary>
    private static bool Complete(string text)
    {
        var head = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        if (head < 0)
        {
            return false;
        }
        var at = text.IndexOf("Content-Length:", 0, head, StringComparison.OrdinalIgnoreCase);
        if (at < 0)
        {
            return false;
        }
        var eol = text.IndexOf("\r\n", at, StringComparison.Ordinal);
        var length = int.Parse(text.AsSpan(at + 15, eol - at - 15).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        return Encoding.ASCII.GetByteCount(text.AsSpan(head + 4)) >= length;
    }

    public static async Task<ProbeResult> RunAsync(string ns, IPEndPoint target, int count, int parallel, CancellationToken ct)
    {
        var byBackend = new Dictionary<string, int>(StringComparer.Ordinal);
        var errors = new List<string>();
        var failed = 0;
        var next = 0;
        async Task Worker()
        {
            while (Interlocked.Increment(ref next) <= count)
            {
                try
                {
                    var who = await GetAsync(ns, target, TimeSpan.FromSeconds(5), ct);
                    lock (byBackend)
                    {
                        byBackend[who] = byBackend.GetValueOrDefault(who) + 1;
                    }
                }
                catch (Exception e) when (e is SocketException or OperationCanceledException or InvalidDataException)
                {
                    ct.ThrowIfCancellationRequested();
                    lock (byBackend)
                    {
                        failed++;
                        if (errors.Count < 5)
                        {
                            errors.Add(e.Message);
                        }
                    }
                }
            }
        }
        await Task.WhenAll(Enumerable.Range(0, parallel).Select(_ => Worker()));
        return new ProbeResult(byBackend, failed, errors);
    }
}
