using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Xlb.DataPlane;

// C# twins of xdp/include/xlb_abi.h. Layout is proven by a test that compiles
// _Static_assert(offsetof/sizeof) generated from these types against the header.
// Multi-byte fields named *Be hold network byte order, exactly as the packet does.

/// <summary>Constants of xlb_abi.h.</summary>
public static class XlbAbi
{
    public const int Version = 11;
    public const int MaxServices = 16384;
    public const int MaxBackends = 65536;
    public const int RingCapacity = 1 << 22;
    public const int MaxFlows = 262144;
    public const int MaxNewFlows = 65536;
    public const int Generations = 2;
    public const byte FamilyV4 = 4;
    public const byte FamilyV6 = 6;
    public const byte ProtoTcp = 6;
    public const byte ProtoUdp = 17;
    public const byte BackendDraining = 1;
    public const uint CfgShutdown = 1;
    public const uint CfgNoFlowCache = 2;
    public const uint VipActive = 1;
    public const int MaxIfaces = 64;
    public const int MaxClaims = 4096;
    /// <summary>How often the agent stamps xlb_agent_seen while it runs.</summary>
    public const int AgentStampMs = 250;
    /// <summary>How long the agent may not stamp before the program yields claimed VIPs (yielded in xlb.c).</summary>
    public const long AgentSilentNs = 2_000_000_000;
    public const int MaxVlans = 4096;
    /// <summary>The two VLAN tag protocols (TPIDs) the program parses: 802.1Q and 802.1ad.</summary>
    public const ushort Vlan8021Q = 0x8100;
    public const ushort Vlan8021Ad = 0x88a8;
    public const byte ModeFullNat = 0;
    public const byte ModeDnat = 1;
    public const byte ModeDsrL2 = 2;
    public const byte ModeDsrIpip = 3;
    public const byte AlgoMaglev = 0;
    public const byte AlgoSourceHash = 1;
    public const byte AlgoRoundRobin = 2;
    public const byte AlgoLeastConn = 3;
    /// <summary>LeastConn compares at most this many backends per new flow (a window of the ring the flow hash picks).</summary>
    public const int LcScan = 16;
    /// <summary>XLB_FLOW_F_COUNTED: the flow is one of its backend's open flows in xlb_backend_conns.</summary>
    public const byte FlowCounted = 1;
    /// <summary>XLB_FLOW_F_SYNCED: the flow is a copy another LB node sent (flow sync).</summary>
    public const byte FlowSynced = 0x80;
    /// <summary>XLB_FLOW_F_FIN_CLIENT: the client's FIN was seen.</summary>
    public const byte FlowFinClient = 0x02;
    /// <summary>XLB_FLOW_F_FIN_BACKEND: the backend's FIN was seen.</summary>
    public const byte FlowFinBackend = 0x04;
    /// <summary>XLB_FLOW_F_TIME_WAIT: the backend's FIN came first, so the backend holds the tuple in TIME_WAIT.</summary>
    public const byte FlowTimeWait = 0x08;
    /// <summary>XLB_FLOW_F_RESET: a RST was seen, either way.</summary>
    public const byte FlowReset = 0x10;
    /// <summary>XLB_SVC_F_COUNT_FLOWS: a LeastConn service, whose flows count in xlb_backend_conns.</summary>
    public const ushort SvcCountFlows = 1;
    /// <summary>XLB_SVC_F_AFFINITY: ClientIP affinity (its timeout in xlb_svc_opts, by service id).</summary>
    public const ushort SvcAffinity = 2;
    /// <summary>XLB_SVC_F_SNAT: FullNAT from source addresses beyond the VIP (its xlb_snat entry).</summary>
    public const ushort SvcSnat = 4;
    /// <summary>XLB_SNAT_ADDRS: the source addresses a service may have beside its VIP.</summary>
    public const int SnatAddrs = 4;
    public const int MaxAffinity = 65536;
    public const byte FlowNew = 0;
    public const byte FlowEstablished = 1;
    public const byte FlowClosing = 2;
    public const int FilterBits = 65536;
    public const int FilterWords = FilterBits / 64;
    public const int Ipv6ExtMax = 4;
    public const byte EventNew = 1;
    public const byte EventClosed = 2;
    public const uint EventsSent = 0;
    public const uint EventsLost = 1;
    public const int EventsRingBytes = 256 * 1024;

    /// <summary>
    /// xlb_filter_slot: the filter bit of an IPv4 address, computed on the four address bytes
    /// read as the program reads them (a little-endian u32 of network-order bytes).
    /// </summary>
    public static int FilterSlot(ReadOnlySpan<byte> ipv4)
    {
        var word = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(ipv4);
        return (int)((word * 0x9e3779b1u) >> 16);
    }

    /// <summary>The filter bit of any address: IPv6 folds its four words by xor first (xlb_filter_fold6).</summary>
    public static int FilterSlot(IPAddress address)
    {
        var bytes = address.GetAddressBytes();
        if (bytes.Length == 4)
        {
            return FilterSlot(bytes);
        }
        var folded = new byte[4];
        for (var i = 0; i < 16; i++)
        {
            folded[i % 4] ^= bytes[i];
        }
        return FilterSlot(folded);
    }
}

/// <summary>Sixteen address bytes: IPv4 in the first four, the rest zero.</summary>
[InlineArray(16)]
public struct Addr16 : IEquatable<Addr16>
{
    private byte _element0;

    public static Addr16 From(IPAddress address)
    {
        var a = default(Addr16);
        if (!address.TryWriteBytes(a, out _))
        {
            throw new ArgumentException($"cannot encode address {address}", nameof(address));
        }
        return a;
    }

    public readonly IPAddress ToAddress(byte family) =>
        family == XlbAbi.FamilyV4 ? new IPAddress(((ReadOnlySpan<byte>)this)[..4]) : new IPAddress(this);

    public readonly bool Equals(Addr16 other) => ((ReadOnlySpan<byte>)this).SequenceEqual(other);

    public override readonly bool Equals(object? obj) => obj is Addr16 other && Equals(other);

    public override readonly int GetHashCode()
    {
        var h = new HashCode();
        h.AddBytes(this);
        return h.ToHashCode();
    }
}

public static class Net
{
    /// <summary>Host-order port to the network-order value the packet holds.</summary>
    public static ushort Be(int port) =>
        BitConverter.IsLittleEndian ? System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((ushort)port) : (ushort)port;

    public static int FromBe(ushort be) =>
        BitConverter.IsLittleEndian ? System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(be) : be;

    public static byte Family(IPAddress a) =>
        a.AddressFamily == AddressFamily.InterNetwork ? XlbAbi.FamilyV4 : XlbAbi.FamilyV6;
}

[StructLayout(LayoutKind.Sequential)]
public record struct XlbVipKey
{
    public Addr16 Addr;
    public byte Family;
    public byte Gen;
    public byte Pad0;
    public byte Pad1;
}

[StructLayout(LayoutKind.Sequential)]
public record struct XlbSvcKey
{
    public Addr16 Vip;
    public ushort PortBe;
    public byte Proto;
    public byte Family;
    public byte Gen;
    public byte Pad0;
    public byte Pad1;
    public byte Pad2;
}

[StructLayout(LayoutKind.Sequential)]
public record struct XlbSvc
{
    public uint Id;
    public uint RingOff;
    public uint RingSize;
    public ushort Flags;
    public byte Mode;
    public byte Algo;
}

[StructLayout(LayoutKind.Sequential)]
public record struct XlbBackend
{
    public Addr16 Addr;
    public ushort PortBe;
    public byte Family;
    public byte Flags;
}

/// <summary>
/// A FullNAT service's source addresses beyond its VIP (xlb_snat, by generation × (MaxServices + 1)
/// + service id): <see cref="Count"/> of A0..A3, in the order the listener lists them.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public record struct XlbSnat
{
    public uint Count;
    public uint Pad;
    public Addr16 A0;
    public Addr16 A1;
    public Addr16 A2;
    public Addr16 A3;

    public static XlbSnat Of(IReadOnlyList<Addr16> addresses)
    {
        if (addresses.Count > XlbAbi.SnatAddrs)
        {
            throw new ArgumentException($"{addresses.Count} source addresses; the data plane holds {XlbAbi.SnatAddrs} per service", nameof(addresses));
        }
        Addr16 At(int i) => i < addresses.Count ? addresses[i] : default;
        return new XlbSnat { Count = (uint)addresses.Count, A0 = At(0), A1 = At(1), A2 = At(2), A3 = At(3) };
    }

    /// <summary>Address i (0-based; a flow's <see cref="XlbFlow.Snat"/> minus one).</summary>
    public readonly Addr16? At(int i) => i < 0 || i >= Count || i >= XlbAbi.SnatAddrs ? null : i switch { 0 => A0, 1 => A1, 2 => A2, _ => A3 };
}

/// <summary>What a service asks of new flows beyond its algorithm (xlb_svc_opts, by service id).</summary>
[StructLayout(LayoutKind.Sequential)]
public record struct XlbSvcOpts
{
    /// <summary>ClientIP affinity timeout, seconds (0: none).</summary>
    public uint AffinityS;
    /// <summary>Its own connection-log sample, 1 in N (0: the node's).</summary>
    public uint LogSample;
    /// <summary>Its own idle timeout of established TCP flows, or of UDP flows, seconds (0: the node's).</summary>
    public uint IdleS;
    public uint Spare;
}

[StructLayout(LayoutKind.Sequential)]
public record struct XlbFlowKey
{
    public Addr16 Saddr;
    public Addr16 Daddr;
    public ushort SportBe;
    public ushort DportBe;
    public byte Proto;
    public byte Family;
    public byte Pad0;
    public byte Pad1;
}

[StructLayout(LayoutKind.Sequential)]
public record struct XlbFlow
{
    public Addr16 Backend;
    public ushort BackendPortBe;
    public ushort NatPortBe;
    public uint SvcId;
    public ulong LastSeenNs;
    public uint NhSlot;
    public byte State;
    public byte Mode;
    /// <summary>XLB_FLOW_F_*: <see cref="XlbAbi.FlowCounted"/>.</summary>
    public byte Flags;
    /// <summary>The FullNAT source the flow took: 0 the VIP, i the service's <see cref="XlbSnat"/> address i - 1.</summary>
    public byte Snat;
}

[StructLayout(LayoutKind.Sequential)]
public record struct XlbRnat
{
    public Addr16 Vip;
    public Addr16 Client;
    public ushort VipPortBe;
    public ushort ClientPortBe;
    public uint SvcId;
    /// <summary>The backend index, for xlb_backend_stats.</summary>
    public uint Backend;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct XlbNexthop
{
    public Addr16 Addr;
    public ulong ResolvedNs;
    public uint Ifindex;
    public fixed byte Dmac[6];
    public fixed byte Smac[6];
    public byte Onlink;
    public byte Pad;
    /// <summary>The MTU of the way there, as the FIB says (0: not known).</summary>
    public ushort Mtu;
    public ushort VlanProtoBe;
    public ushort VlanTciBe;
}

/// <summary>One generation's filter: bits at <see cref="XlbAbi.FilterSlot"/> of VIPs and of DNAT backends.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct XlbFilter
{
    public fixed ulong Vip[XlbAbi.FilterWords];
    public fixed ulong Rsrc[XlbAbi.FilterWords];
}

/// <summary>Another host's announcement of a VIP this node holds (xlb_vip_claims, by VIP with generation 0).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct XlbClaim
{
    public ulong SeenNs;
    public fixed byte Mac[6];
    public fixed byte Pad[2];
    public uint Ifindex;
    public uint Spare;

    public readonly byte[] MacBytes()
    {
        var m = new byte[6];
        fixed (byte* p = Mac)
        {
            new ReadOnlySpan<byte>(p, 6).CopyTo(m);
        }
        return m;
    }
}

/// <summary>The MAC of an interface the program runs on (xlb_ifmacs, by ifindex).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct XlbIfmac
{
    public fixed byte Mac[6];
    public fixed byte Pad[2];

    public static XlbIfmac Of(ReadOnlySpan<byte> mac)
    {
        var m = default(XlbIfmac);
        mac[..6].CopyTo(new Span<byte>(m.Mac, 6));
        return m;
    }
}

/// <summary>A VLAN tag on a device: xlb_vlan_out's value (by the VLAN device's ifindex) and xlb_vlan_in's key.</summary>
[StructLayout(LayoutKind.Sequential)]
public record struct XlbVlan
{
    public uint LowerIfindex;
    public ushort ProtoBe;
    public ushort VidBe;

    public static XlbVlan Of(int lowerIfindex, ushort proto, ushort vid) => new()
    {
        LowerIfindex = (uint)lowerIfindex,
        ProtoBe = Net.Be(proto),
        VidBe = Net.Be((ushort)(vid & 0x0fff)),
    };
}

/// <summary>A VLAN device, by its tag (xlb_vlan_in's value): its ifindex and MAC.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct XlbVlanDev : IEquatable<XlbVlanDev>
{
    public uint Ifindex;
    public fixed byte Mac[6];
    public fixed byte Pad[2];

    public static XlbVlanDev Of(int ifindex, ReadOnlySpan<byte> mac)
    {
        var d = new XlbVlanDev { Ifindex = (uint)ifindex };
        mac[..6].CopyTo(new Span<byte>(d.Mac, 6));
        return d;
    }

    public readonly bool Equals(XlbVlanDev other)
    {
        fixed (byte* a = Mac)
        {
            return Ifindex == other.Ifindex && new ReadOnlySpan<byte>(a, 6).SequenceEqual(new ReadOnlySpan<byte>(other.Mac, 6));
        }
    }

    public override readonly bool Equals(object? obj) => obj is XlbVlanDev other && Equals(other);

    public override readonly int GetHashCode()
    {
        fixed (byte* a = Mac)
        {
            return HashCode.Combine(Ifindex, BitConverter.ToUInt32(new ReadOnlySpan<byte>(a, 4)));
        }
    }
}

/// <summary>Per-service counters (one CPU's share).</summary>
[StructLayout(LayoutKind.Sequential)]
public record struct XlbSvcStats
{
    public ulong Packets;
    public ulong Bytes;
    public ulong ReplyPackets;
    public ulong ReplyBytes;
    public ulong NewFlows;

    /// <summary>Two CPUs' counters together.</summary>
    public static XlbSvcStats Add(XlbSvcStats a, XlbSvcStats b) => new()
    {
        Packets = a.Packets + b.Packets,
        Bytes = a.Bytes + b.Bytes,
        ReplyPackets = a.ReplyPackets + b.ReplyPackets,
        ReplyBytes = a.ReplyBytes + b.ReplyBytes,
        NewFlows = a.NewFlows + b.NewFlows,
    };
}

[StructLayout(LayoutKind.Sequential)]
public record struct XlbCfg
{
    public uint ActiveGen;
    public uint Flags;
    public ushort NatPortMin;
    public ushort NatPortMax;
    public uint EncapSrcBe;
    public uint TcpNewTimeoutS;
    public uint TcpEstablishedTimeoutS;
    public uint TcpClosingTimeoutS;
    public uint UdpTimeoutS;
    public Addr16 EncapSrc6;
    /// <summary>Flow events: 0 none; N the flows whose hash is a multiple of N (1: all).</summary>
    public uint EventSample;
    /// <summary>Slots per generation of xlb_backends (a power of two) and of xlb_rings; 0: the compiled defaults.</summary>
    public uint BackendSlots;
    public uint RingSlots;
    /// <summary>
    /// New flows of DSR services (Maglev or source hash) one CPU enters into the flow tables per
    /// second; past it they are forwarded by the consistent hash alone. 0: every flow is tracked.
    /// </summary>
    public uint NewFlowCap;
    /// <summary>ICMP "too big" answers one CPU sends per second; past it the packets they would answer are dropped. 0: no limit.</summary>
    public uint IcmpRate;
}

/// <summary>One record of the xlb_events ring buffer: a sampled flow began or closed.</summary>
[StructLayout(LayoutKind.Sequential)]
public record struct XlbFlowEvent
{
    public ulong TimeNs;
    public XlbFlowKey Flow;
    public Addr16 Backend;
    public ushort BackendPortBe;
    public ushort NatPortBe;
    public uint SvcId;
    public byte Type;
    public byte Mode;
    public byte ByBackend;
    public byte TcpFlags;
    /// <summary>FullNAT: the source the flow took (<see cref="XlbFlow.Snat"/>).</summary>
    public byte Snat;
    public byte Pad0;
    public byte Pad1;
    public byte Pad2;
}

/// <summary>The names counters go by outside C#: metrics labels, `xlb status`.</summary>
public static class XlbStatNames
{
    /// <summary>PassNotVip → pass_not_vip (the C enum's name without its prefix).</summary>
    public static string SnakeName(this XlbStat stat)
    {
        var name = stat.ToString();
        var sb = new System.Text.StringBuilder(name.Length + 4);
        for (var i = 0; i < name.Length; i++)
        {
            if (i > 0 && char.IsUpper(name[i]))
            {
                sb.Append('_');
            }
            sb.Append(char.ToLowerInvariant(name[i]));
        }
        return sb.ToString();
    }
}

/// <summary>Mirror of enum xlb_stat: per-reason packet counters.</summary>
public enum XlbStat
{
    PassNonIp = 0,
    PassNotVip,
    PassTruncated,
    PassFragment,
    PassTtlExpired,
    PassFibNoNeigh,
    PassFibFailed,
    DropTruncatedL4,
    DropNoBackend,
    DropNatPortsBusy,
    DropNoConfig,
    FwdNewFlow,
    FwdEstablished,
    FwdReply,
    Tx,
    Redirect,
    TxRstShutdown,
    DropShutdownUnsupported,
    PassNotTcpUdp,
    DropDsrNotOnlink,
    DropEncapFailed,
    FwdExpiredFlow,
    PassIpv6Ext,
    DropUdp6NoChecksum,
    TxArpReply,
    TxNdAdvert,
    DropDsrUnresolved,
    PassVlanStacked,
    DropVlanFailed,
    FwdUntracked,
    TxIcmpTooBig,
    PassTooBig,
    DropTooBig,
    DropIcmpLimited,
    Count,
}
