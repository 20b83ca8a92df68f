using Xlb.Agent;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.DataPlane;
using Xlb.Tests.Support;
using static Xlb.Tests.Bpf.DataPlaneFixture;

namespace Xlb.Tests.Bpf;

/// <summary>A listener's Maglev table size, from its node config to the program's ring.</summary>
public class MaglevTableTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private static XlbSvc Service(XdpDataPlane plane, int port) =>
        plane.Services.Entries(k => k.Gen == plane.ActiveGeneration && k.PortBe == Net.Be(port)).Values.Single();

    [Fact]
    public void A_listener_that_names_a_table_size_gets_a_ring_of_that_size_and_forwards()
    {
        Privileged.Require();
        var (plane, run) = fx.PrivatePlane(null, OneVip(ToBackends("t/big/p", 80, 1, 2) with { MaglevTableSize = 4093 }, ToBackends("t/default/p", 81, 1, 2)));
        using var _ = plane;
        Assert.Equal(4093u, Service(plane, 80).RingSize);
        Assert.Equal((uint)Maglev.DefaultSize, Service(plane, 81).RingSize);
        var to = Enumerable.Range(0, 40)
            .Select(i => run(new Packet { Src = Client, Dst = VipAddress, SrcPort = (ushort)(42000 + i), DstPort = 80, TcpFlags = Packet.Syn }.Build()))
            .Select(r => (r.Verdict, Backend: LbTopology.BackendIndexOf(Packet.Parse(r.Packet).Dst)))
            .ToList();
        Assert.All(to, t => Assert.Equal(XdpRedirect, (int)t.Verdict));
        Assert.Equal([1, 2], to.Select(t => t.Backend).Distinct().Order());
    }

    [Fact]
    public void A_node_config_with_a_size_that_is_not_prime_is_refused_and_the_applied_one_stays()
    {
        Privileged.Require();
        var (plane, _) = fx.PrivatePlane(null, OneVip(ToBackends("t/web/p", 80, 1, 2)));
        using var __ = plane;
        var bad = OneVip(ToBackends("t/web/p", 80, 1, 2) with { MaglevTableSize = 1000 });
        var e = Assert.Throws<FormatException>(() => plane.Apply(bad));
        Assert.Contains("maglevTableSize 1000 is not prime", e.Message, StringComparison.Ordinal);
        Assert.Equal((uint)Maglev.DefaultSize, Service(plane, 80).RingSize);
    }
}
