using System.Runtime.InteropServices;
using Xlb.Agent.Bpf.Interop;

namespace Xlb.Agent.Bpf;

public enum XdpMode
{
    /// <summary>In the driver: the fast path.</summary>
    Native,
    /// <summary>In the kernel's generic hook after the skb is built: works everywhere, slower.</summary>
    Generic,
}

/// <summary>Attaching XDP programs to interfaces (netlink-based: the program stays after the process exits).</summary>
public static unsafe class Xdp
{
    private const uint FlagsSkbMode = 1u << 1;
    private const uint FlagsDrvMode = 1u << 2;

    public static int IfIndex(string ifname)
    {
        var idx = LibC.if_nametoindex(ifname);
        if (idx == 0)
        {
            throw new BpfException("if_nametoindex", Marshal.GetLastPInvokeError(), $"interface {ifname}");
        }
        return (int)idx;
    }

    /// <summary>
    /// Attaches in native mode; when the driver has no native XDP and <paramref name="allowGeneric"/>
    /// is set, falls back to generic mode. Returns the mode used, so the caller can report it.
    /// </summary>
    public static XdpMode Attach(string ifname, int progFd, bool allowGeneric)
    {
        var ifindex = IfIndex(ifname);
        var opts = new BpfXdpAttachOpts { sz = (nuint)sizeof(BpfXdpAttachOpts) };
        var rc = Libbpf.bpf_xdp_attach(ifindex, progFd, FlagsDrvMode, &opts);
        if (rc == 0)
        {
            return XdpMode.Native;
        }
        if (!allowGeneric || -rc != 95)
        {
            throw new BpfException("bpf_xdp_attach", -rc, $"native mode on {ifname}");
        }
        rc = Libbpf.bpf_xdp_attach(ifindex, progFd, FlagsSkbMode, &opts);
        if (rc < 0)
        {
            throw new BpfException("bpf_xdp_attach", -rc, $"generic mode on {ifname}");
        }
        return XdpMode.Generic;
    }

    public static void Detach(string ifname, XdpMode mode)
    {
        var opts = new BpfXdpAttachOpts { sz = (nuint)sizeof(BpfXdpAttachOpts) };
        var rc = Libbpf.bpf_xdp_detach(IfIndex(ifname), mode == XdpMode.Native ? FlagsDrvMode : FlagsSkbMode, &opts);
        if (rc < 0)
        {
            throw new BpfException("bpf_xdp_detach", -rc, ifname);
        }
    }
}
