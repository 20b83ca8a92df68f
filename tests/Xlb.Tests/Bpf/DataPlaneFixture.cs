using Xlb.Agent;
using Xlb.Agent.Bpf;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.Tests.Support;

namespace Xlb.Tests.Bpf;

/// <summary>
/// A loaded XDP object, configured through the agent's real apply path, and an LB namespace with
/// routes and neighbours for its FIB lookups. Built on first use, after the privilege check.
/// </summary>
public sealed class DataPlaneFixture : IDisposable
{
    public const string Vip = "10.250.0.10";
    public static readonly System.Net.IPAddress Client = System.Net.IPAddress.Parse(LbTopology.ClientAddress);
    public static readonly System.Net.IPAddress VipAddress = System.Net.IPAddress.Parse(Vip);
    public const string Vip6 = "fd00:250::10";
    public static readonly System.Net.IPAddress Client6 = System.Net.IPAddress.Parse(LbTopology.ClientAddress6);
    public static readonly System.Net.IPAddress VipAddress6 = System.Net.IPAddress.Parse(Vip6);

    public static byte[] MacBytes(string mac) => [.. mac.Split(':').Select(h => Convert.ToByte(h, 16))];
    public const int XdpDrop = 1;
    public const int XdpPass = 2;
    public const int XdpTx = 3;
    public const int XdpRedirect = 4;

    private readonly Lazy<(LbTopology Topology, XdpDataPlane Plane)> _state = new(Build);

    public LbTopology Topology => _state.Value.Topology;
    public XdpDataPlane Plane => _state.Value.Plane;

    public static XlbNodeConfigSpec Spec(params int[] backends) => new()
    {
        NodeName = "lb-1",
        Vips =
        [
            new NodeVip { Address = Vip, Role = VipRole.Active, Shard = "s" },
            new NodeVip { Address = Vip6, Role = VipRole.Active, Shard = "s" },
            new NodeVip { Address = StandbyVip, Role = VipRole.Standby, Shard = "s" },
        ],
        Listeners =
        [
            new Listener
            {
                Name = "t/web/http", Vip = Vip, Port = 80, Protocol = L4Protocol.TCP,
                Backends = [.. backends.Select(i => new NodeBackend { Address = LbTopology.BackendAddress(i), Port = 8080 })],
            },
            new Listener
            {
                Name = "t/dns/udp", Vip = Vip, Port = 53, Protocol = L4Protocol.UDP,
                Backends = [new NodeBackend { Address = LbTopology.BackendAddress(1), Port = 5353 }],
            },
            Two("t/dnat/p", DnatPort) with { NatMode = NatMode.DNAT },
            Two("t/dsr-l2/p", DsrL2Port) with { NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.L2 },
            Two("t/dsr-ipip/p", DsrIpipPort) with { NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.IPIP },
            Two("t/rr/p", RoundRobinPort) with { Algorithm = SchedulingAlgorithm.RoundRobin },
            Two("t/sh/p", SourceHashPort) with { Algorithm = SchedulingAlgorithm.SourceHash },
            new Listener
            {
                Name = "t/dsr-far/p", Vip = Vip, Port = DsrOffLinkPort, NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.L2,
                Backends = [new NodeBackend { Address = OffLinkBackend, Port = DsrOffLinkPort }],
            },
            new Listener
            {
                Name = "t/dsr-unresolved/p", Vip = Vip, Port = DsrUnresolvedPort, NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.L2,
                Backends = [new NodeBackend { Address = UnresolvedBackend, Port = DsrUnresolvedPort }],
            },
            // The same services on an IPv6 VIP with IPv6 backends.
            Two6("t6/web/http", 80),
            Two6("t6/dns/udp", 53) with { Protocol = L4Protocol.UDP },
            Two6("t6/dnat/p", DnatPort) with { NatMode = NatMode.DNAT },
            Two6("t6/dsr-l2/p", DsrL2Port) with { NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.L2 },
            Two6("t6/dsr-ipip/p", DsrIpipPort) with { NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.IPIP },
        ],
    };

    private static Listener Two6(string name, int port) => new()
    {
        Name = name, Vip = Vip6, Port = port,
        Backends = [.. new[] { 1, 2 }.Select(i => new NodeBackend { Address = LbTopology.BackendAddress6(i), Port = 8080 })],
    };

    /// <summary>A VIP this node stands by for: it forwards if traffic comes, but does not answer ARP.</summary>
    public const string StandbyVip = "10.250.0.12";

    public const int DnatPort = 81;
    public const int DsrL2Port = 82;
    public const int DsrIpipPort = 83;
    public const int RoundRobinPort = 84;
    public const int SourceHashPort = 85;
    public const int DsrOffLinkPort = 86;
    public const int DsrUnresolvedPort = 87;

    /// <summary>A backend on backend 1's link that no host answers for: the kernel has no neighbour entry for it.</summary>
    public const string UnresolvedBackend = "10.201.1.77";

    /// <summary>A backend the LB reaches through a gateway (backend 1), not on a shared link.</summary>
    public const string OffLinkBackend = "10.99.0.5";

    private static Listener Two(string name, int port) => new()
    {
        Name = name, Vip = Vip, Port = port,
        Backends = [.. new[] { 1, 2 }.Select(i => new NodeBackend { Address = LbTopology.BackendAddress(i), Port = 8080 })],
    };

    private static (LbTopology, XdpDataPlane) Build()
    {
        var topology = LbTopology.Create(LbTopology.NewPrefix("p"), backends: 2);
        try
        {
            Netns.Ip(topology.Lb, "route", "add", "10.99.0.0/24", "via", LbTopology.BackendAddress(1));
            var plane = Alive(XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath));
            plane.Apply(Spec(1, 2));
            return (topology, plane);
        }
        catch
        {
            topology.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The plane as a running agent keeps it: stamped alive (here a day ahead, for the whole test),
    /// so that another host's announcement of a VIP does not make the program yield it.
    /// </summary>
    public static XdpDataPlane Alive(XdpDataPlane plane)
    {
        plane.StampAgentAlive(XdpDataPlane.MonotonicNs() + 86_400_000_000_000);
        return plane;
    }

    /// <summary>A TCP packet from the test client's <paramref name="clientPort"/> to VIP:<paramref name="vipPort"/>.</summary>
    public static Packet ClientTcp(ushort clientPort, int vipPort = 80, byte flags = Packet.Syn) =>
        new() { Src = Client, Dst = VipAddress, SrcPort = clientPort, DstPort = (ushort)vipPort, TcpFlags = flags };

    /// <summary>The flow key of a TCP connection from the test client's <paramref name="clientPort"/> to VIP:<paramref name="vipPort"/>.</summary>
    public static Xlb.DataPlane.XlbFlowKey ClientFlowKey(ushort clientPort, int vipPort = 80) => new()
    {
        Saddr = Xlb.DataPlane.Addr16.From(Client), Daddr = Xlb.DataPlane.Addr16.From(VipAddress),
        SportBe = Xlb.DataPlane.Net.Be(clientPort), DportBe = Xlb.DataPlane.Net.Be(vipPort),
        Proto = Xlb.DataPlane.XlbAbi.ProtoTcp, Family = Xlb.DataPlane.XlbAbi.FamilyV4,
    };

    /// <summary>A node config with only the active IPv4 VIP, and these listeners.</summary>
    public static XlbNodeConfigSpec OneVip(params Listener[] listeners) =>
        new() { NodeName = "lb-1", Vips = [new NodeVip { Address = Vip, Role = VipRole.Active, Shard = "s" }], Listeners = [.. listeners] };

    /// <summary>A FullNAT TCP listener on VIP:port toward the topology's backends by index, on their port 8080.</summary>
    public static Listener ToBackends(string name, int port, params int[] backends) => new()
    {
        Name = name, Vip = Vip, Port = port,
        Backends = [.. backends.Select(i => new NodeBackend { Address = LbTopology.BackendAddress(i), Port = 8080 })],
    };

    /// <summary>
    /// Timeouts a flow last seen at boot (LastSeenNs 0 or 1) is past on any host up for 10 s. The
    /// defaults (up to 900 s) are not: a CI machine runs these tests minutes after it boots, and a
    /// flow's clock set back further than the host's uptime would wrap and never expire.
    /// </summary>
    public static readonly FlowTimeouts SinceBootIsIdle = new()
    {
        TcpNew = TimeSpan.FromSeconds(10), TcpEstablished = TimeSpan.FromSeconds(10), TcpClosing = TimeSpan.FromSeconds(10), Udp = TimeSpan.FromSeconds(10),
    };

    /// <summary>
    /// A data plane with maps of its own (loaded with <paramref name="options"/>, given
    /// <paramref name="spec"/>), and a runner for it inside the LB namespace. The caller disposes it.
    /// </summary>
    public (XdpDataPlane Plane, Func<byte[], TestRunResult> Run) PrivatePlane(DataPlaneOptions? options, XlbNodeConfigSpec spec)
    {
        var plane = Alive(XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath, options));
        plane.Apply(spec);
        var fd = plane.ProgramFd;
        return (plane, packet => Netns.Run(Topology.Lb, () => TestRun.Xdp(fd, packet)));
    }

    /// <summary>Runs the program once on <paramref name="packet"/> inside the LB namespace.</summary>
    public TestRunResult Run(byte[] packet)
    {
        Privileged.Require();
        var fd = Plane.ProgramFd;
        return Netns.Run(Topology.Lb, () => TestRun.Xdp(fd, packet));
    }

    public void Dispose()
    {
        if (_state.IsValueCreated)
        {
            _state.Value.Plane.Dispose();
            _state.Value.Topology.Dispose();
        }
    }
}
