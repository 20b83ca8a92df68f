using System.Net;
using System.Net.Sockets;
using Xlb.Cli.Testbed;

namespace Xlb.Tests.Support;

/// <summary>
/// Makes a loopback TCP service of this process reachable from inside a network namespace: a
/// listener bound to 127.0.0.1 of that namespace (the socket is made on a thread that entered
/// it) whose connections are piped to <paramref name="target"/> on this namespace's loopback.
/// Traffic stays on the two loopbacks. Stops, and closes every piped connection, on dispose.
/// </summary>
public sealed class NetnsRelay : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly IPEndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _pipes = [];
    private readonly Task _accepting;

    private NetnsRelay(Socket listener, IPEndPoint target)
    {
        (_listener, _target) = (listener, target);
        _accepting = Task.Run(AcceptAsync);
    }

    /// <summary>Where clients inside the namespace connect.</summary>
    public IPEndPoint Endpoint => (IPEndPoint)_listener.LocalEndPoint!;

    public static NetnsRelay Start(string ns, IPEndPoint target)
    {
        Netns.Ip(ns, "link", "set", "lo", "up");
        var listener = Netns.Listen(ns, new IPEndPoint(IPAddress.Loopback, 0), 64);
        return new NetnsRelay(listener, target);
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket inner;
            try
            {
                inner = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }
            lock (_pipes)
            {
                _pipes.Add(PipeAsync(inner));
            }
        }
    }

    private async Task PipeAsync(Socket inner)
    {
        using var _ = inner;
        using var outer = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await outer.ConnectAsync(_target, _stop.Token);
            await using var a = new NetworkStream(inner);
            await using var b = new NetworkStream(outer);
            using var either = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            var up = CopyAsync(a, b, outer, either.Token);
            var down = CopyAsync(b, a, inner, either.Token);
            await Task.WhenAny(up, down);
            await either.CancelAsync();
            await Task.WhenAll(up, down);
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or IOException)
        {
            // One side went away: the connection ends.
        }
    }

    private static async Task CopyAsync(Stream from, Stream to, Socket toSocket, CancellationToken ct)
    {
        try
        {
            await from.CopyToAsync(to, ct);
            toSocket.Shutdown(SocketShutdown.Send);
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or IOException or ObjectDisposedException)
        {
            // Closed under us.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _accepting;
        Task[] pipes;
        lock (_pipes)
        {
            pipes = [.. _pipes];
        }
        await Task.WhenAll(pipes);
        _stop.Dispose();
    }
}
