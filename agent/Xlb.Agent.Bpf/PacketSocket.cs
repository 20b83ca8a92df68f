using System.Runtime.InteropServices;
using Xlb.Agent.Bpf.Interop;

namespace Xlb.Agent.Bpf;

/// <summary>
/// A raw AF_PACKET socket for sending whole Ethernet frames out of one interface: gratuitous
/// ARP and unsolicited neighbour advertisements, which no IP socket can send for an address the
/// kernel does not hold. Needs CAP_NET_RAW.
/// </summary>
public sealed unsafe class PacketSocket : IDisposable
{
    private const int AfPacket = 17;
    private const int SockRaw = 3;

    [StructLayout(LayoutKind.Sequential)]
    private struct SockaddrLl
    {
        public ushort Family;
        public ushort ProtocolBe;
        public int IfIndex;
        public ushort HaType;
        public byte PktType;
        public byte HaLen;
        public fixed byte Addr[8];
    }

    private readonly int _fd;
    private readonly int _ifindex;

    /// <param name="ifindex">The interface the frames leave by.</param>
    public PacketSocket(int ifindex)
    {
        // Protocol 0: this socket only sends; it receives nothing.
        _fd = LibC.socket(AfPacket, SockRaw, 0);
        if (_fd < 0)
        {
            throw new BpfException("socket(AF_PACKET)", Marshal.GetLastPInvokeError(), $"ifindex {ifindex}");
        }
        _ifindex = ifindex;
    }

    /// <summary>Sends one frame, Ethernet header included, as it is.</summary>
    public void Send(ReadOnlySpan<byte> frame)
    {
        if (frame.Length < 14)
        {
            throw new ArgumentException("a frame needs an Ethernet header", nameof(frame));
        }
        var to = new SockaddrLl
        {
            Family = AfPacket,
            ProtocolBe = (ushort)(frame[12] | frame[13] << 8), // the frame's EtherType, network order
            IfIndex = _ifindex,
            HaLen = 6,
        };
        for (var i = 0; i < 6; i++)
        {
            to.Addr[i] = frame[i];
        }
        fixed (byte* p = frame)
        {
            if (LibC.sendto(_fd, p, (nuint)frame.Length, 0, &to, (uint)sizeof(SockaddrLl)) < 0)
            {
                throw new BpfException("sendto(AF_PACKET)", Marshal.GetLastPInvokeError(), $"ifindex {_ifindex}");
            }
        }
    }

    public void Dispose() => LibC.close(_fd);
}
