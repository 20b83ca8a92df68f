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
        Vips = [new NodeVip { Address = Vip, Role = VipRole.Active, Shard = "s" }],
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
        ],
    };

    private static (LbTopology, XdpDataPlane) Build()
    {
        var topology = LbTopology.Create(LbTopology.NewPrefix("p"), backends: 2);
        try
        {
            var plane = XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath);
            plane.Apply(Spec(1, 2));
            return (topology, plane);
        }
        catch
        {
            topology.Dispose();
            throw;
        }
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
