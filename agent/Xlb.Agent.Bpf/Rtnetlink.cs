using System.Runtime.InteropServices;
using Xlb.Agent.Bpf.Interop;

namespace Xlb.Agent.Bpf;

/// <summary>Takes one read of netlink messages; returns true when the dump is complete.</summary>
public delegate bool NetlinkChunk(ReadOnlySpan<byte> messages);

/// <summary>
/// The kernel's routing netlink (NETLINK_ROUTE), for the one question the agent asks it: every
/// network device of this namespace (RTM_GETLINK, dumped). Parsing is the caller's
/// (Xlb.Agent.Core.LinkDump); this is only the socket.
/// </summary>
public static unsafe class Rtnetlink
{
    private const int AfNetlink = 16, SockRaw = 3, SockCloexec = 0x80000, NetlinkRoute = 0;
    private const ushort RtmGetlink = 18, NlmFRequest = 0x1, NlmFDump = 0x300;
    private static int s_seq;

    [StructLayout(LayoutKind.Sequential)]
    private struct LinkRequest
    {
        // struct nlmsghdr
        public uint Len;
        public ushort Type;
        public ushort Flags;
        public uint Seq;
        public uint Pid;
        // struct ifinfomsg
        public byte Family;
        public byte Pad;
        public ushort DevType;
        public int Index;
        public uint IfFlags;
        public uint Change;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct SockaddrNl
    {
        public ushort Family;
        public ushort Pad;
        public uint Pid;
        public uint Groups;
    }

    /// <summary>Dumps every link; each read goes to <paramref name="chunk"/> until it says the dump is done.</summary>
    public static void DumpLinks(NetlinkChunk chunk)
    {
        var fd = LibC.socket(AfNetlink, SockRaw | SockCloexec, NetlinkRoute);
        if (fd < 0)
        {
            throw new BpfException("socket(AF_NETLINK)", Marshal.GetLastPInvokeError(), "NETLINK_ROUTE");
        }
        try
        {
            var request = new LinkRequest
            {
                Len = (uint)sizeof(LinkRequest),
                Type = RtmGetlink,
                Flags = NlmFRequest | NlmFDump,
                Seq = (uint)Interlocked.Increment(ref s_seq),
            };
            var kernel = new SockaddrNl { Family = AfNetlink };
            if (LibC.sendto(fd, (byte*)&request, (nuint)sizeof(LinkRequest), 0, &kernel, (uint)sizeof(SockaddrNl)) < 0)
            {
                throw new BpfException("sendto(RTM_GETLINK)", Marshal.GetLastPInvokeError(), "link dump");
            }
            // The kernel fills each read with whole messages, up to about a page per device.
            var buffer = new byte[64 * 1024];
            fixed (byte* b = buffer)
            {
                while (true)
                {
                    var n = LibC.recv(fd, b, (nuint)buffer.Length, 0);
                    if (n < 0)
                    {
                        throw new BpfException("recv(NETLINK_ROUTE)", Marshal.GetLastPInvokeError(), "link dump");
                    }
                    if (n == 0 || chunk(buffer.AsSpan(0, (int)n)))
                    {
                        return;
                    }
                }
            }
        }
        finally
        {
            LibC.close(fd);
        }
    }
}
