using System.Diagnostics;
using System.Net.Sockets;

namespace Xlb.Cli.Testbed;

/// <summary>
/// Every Ethernet frame that reaches the interfaces of one namespace (an AF_PACKET socket for
/// all protocols), for tests that look at what a node put on the link. Read in bounded time only.
/// </summary>
public sealed class FrameCapture : IDisposable
{
    private const ProtocolType AllProtocols = (ProtocolType)0x0300; // htons(ETH_P_ALL)
    private readonly Socket _socket;

    private FrameCapture(Socket socket) => _socket = socket;

    public static FrameCapture Start(string ns) =>
        new(Netns.Run(ns, () => new Socket(AddressFamily.Packet, SocketType.Raw, AllProtocols)));

    /// <summary>
    /// Frames received until <paramref name="timeout"/> passes or <paramref name="enough"/> says
    /// the frames so far (those <paramref name="match"/> accepts) are enough.
    /// </summary>
    public List<byte[]> Collect(Func<byte[], bool> match, Func<List<byte[]>, bool> enough, TimeSpan timeout)
    {
        var frames = new List<byte[]>();
        var buffer = new byte[2048];
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout && !enough(frames))
        {
            var left = timeout - clock.Elapsed;
            _socket.ReceiveTimeout = Math.Max(1, (int)left.TotalMilliseconds);
            int n;
            try
            {
                n = _socket.Receive(buffer);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.TimedOut or SocketError.WouldBlock)
            {
                break;
            }
            var frame = buffer[..n];
            if (match(frame))
            {
                frames.Add(frame);
            }
        }
        return frames;
    }

    public void Dispose() => _socket.Dispose();
}
