using Xlb.Agent.Core;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.Tests.Support;
using static Xlb.Tests.Bpf.DataPlaneFixture;

namespace Xlb.Tests.Bpf;

/// <summary>
/// A drain timeout through the agent's path: the tracker's effective config applied to a real
/// data plane, then the drained backend's flows ended in its flow tables, packet by packet.
/// </summary>
public class DrainTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 22, 10, 0, 0, TimeSpan.Zero);

    private static Listener Web(bool draining, int port = 80) => ToBackends($"t/drain-{port}/p", port, 1, 2) with
    {
        DrainTimeout = new Duration(TimeSpan.FromSeconds(30)),
        Backends = [new NodeBackend { Address = LbTopology.BackendAddress(1), Port = 8080, Draining = draining }, new NodeBackend { Address = LbTopology.BackendAddress(2), Port = 8080 }],
    };

    [Fact]
    public void Past_its_drain_timeout_a_backend_leaves_and_its_flows_on_that_listener_end()
    {
        Privileged.Require();
        var (plane, run) = fx.PrivatePlane(null, OneVip(Web(draining: false), Web(draining: false, port: 81)));
        using var owned = plane;
        int BackendOf(ushort clientPort, int vipPort, byte flags) =>
            LbTopology.BackendIndexOf(Packet.Parse(run(new Packet { Src = Client, Dst = VipAddress, SrcPort = clientPort, DstPort = (ushort)vipPort, TcpFlags = flags }.Build()).Packet).Dst);

        // Connections on both listeners, spread over both backends (each has shown its second packet).
        var flows = new List<(ushort Port, int VipPort, int Backend)>();
        for (ushort p = 41000; p < 41040; p++)
        {
            foreach (var vipPort in new[] { 80, 81 })
            {
                var backend = BackendOf(p, vipPort, Packet.Syn);
                Assert.Equal(backend, BackendOf(p, vipPort, Packet.Ack));
                flows.Add((p, vipPort, backend));
            }
        }
        Assert.Contains(flows, f => f.VipPort == 80 && f.Backend == 1);
        Assert.Contains(flows, f => f.VipPort == 80 && f.Backend == 2);

        // Backend 1 drains on :80: its flows continue, new ones go to backend 2.
        var drains = new DrainTracker();
        var draining = OneVip(Web(draining: true), Web(draining: false, port: 81));
        var during = drains.Apply(draining, T0);
        plane.Apply(during.Effective);
        Assert.Equal(0, plane.EndFlows(during.Drained));
        Assert.All(flows, f => Assert.Equal(f.Backend, BackendOf(f.Port, f.VipPort, Packet.Ack)));
        Assert.All(Enumerable.Range(42000, 10), p => Assert.Equal(2, BackendOf((ushort)p, 80, Packet.Syn)));

        // 30 s later the drain is over: backend 1 leaves :80 and its flows there end; nothing else moves.
        var over = drains.Apply(draining, T0.AddSeconds(30));
        plane.Apply(over.Effective);
        var ended = plane.EndFlows(over.Drained);
        Assert.Equal(flows.Count(f => f.VipPort == 80 && f.Backend == 1), ended);
        foreach (var f in flows)
        {
            Assert.Equal(f.VipPort == 80 ? 2 : f.Backend, BackendOf(f.Port, f.VipPort, Packet.Ack));
        }
        Assert.Equal(0, plane.EndFlows(drains.Apply(draining, T0.AddSeconds(31)).Drained));
    }
}
