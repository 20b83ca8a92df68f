using Xlb.Agent;
using Xlb.Agent.Bpf;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.Tests.Support;
using static Xlb.Tests.Bpf.DataPlaneFixture;

namespace Xlb.Tests.Bpf;

/// <summary>
/// ClientIP affinity through BPF_PROG_TEST_RUN: a client's new connections follow its last one
/// while it stays within the timeout and its backend keeps its place in the service's ring.
/// </summary>
public class AffinityTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    private static Listener Web(TimeSpan? affinity, int draining = 0) => ToBackends("t/aff/p", 80, 1, 2) with
    {
        Affinity = affinity is { } t ? new AffinitySpec { Mode = AffinityMode.ClientIP, Timeout = new Duration(t) } : null,
        Backends = [.. new[] { 1, 2 }.Select(i => new NodeBackend { Address = LbTopology.BackendAddress(i), Port = 8080, Draining = i == draining })],
    };

    private static int _nextPort = 43000;

    /// <summary>The topology's backend a new connection from <paramref name="port"/> went to.</summary>
    private static int Connect(Func<byte[], TestRunResult> run, int port)
    {
        var r = run(new Packet { Src = Client, Dst = VipAddress, SrcPort = (ushort)port, DstPort = 80, TcpFlags = Packet.Syn }.Build());
        Assert.Equal(XdpRedirect, (int)r.Verdict);
        return LbTopology.BackendIndexOf(Packet.Parse(r.Packet).Dst);
    }

    private static List<int> Ports(int n) => [.. Enumerable.Range(0, n).Select(_ => Interlocked.Increment(ref _nextPort))];

    [Fact]
    public void A_client_keeps_its_backend_across_connections_where_maglev_alone_spreads_them()
    {
        Privileged.Require();
        var (sticky, stickyRun) = fx.PrivatePlane(null, OneVip(Web(TimeSpan.FromHours(3))));
        var (plain, plainRun) = fx.PrivatePlane(null, OneVip(Web(null)));
        using var _ = sticky;
        using var __ = plain;
        var ports = Ports(30);
        Assert.Equal([1, 2], ports.Select(p => Connect(plainRun, p)).Distinct().Order());
        Assert.Single(ports.Select(p => Connect(stickyRun, p)).Distinct());
    }

    [Fact]
    public void On_a_least_conn_service_a_client_sticks_where_least_conn_alone_alternates()
    {
        Privileged.Require();
        var lc = Web(TimeSpan.FromHours(3)) with { Algorithm = SchedulingAlgorithm.LeastConn };
        var (sticky, stickyRun) = fx.PrivatePlane(null, OneVip(lc));
        var (plain, plainRun) = fx.PrivatePlane(null, OneVip(lc with { Affinity = null }));
        using var _ = sticky;
        using var __ = plain;
        var ports = Ports(10);
        Assert.Equal([1, 2], ports.Select(p => Connect(plainRun, p)).Distinct().Order());
        // Only the ring's backend positions are taken, never its weights (they follow the backends).
        Assert.Single(ports.Select(p => Connect(stickyRun, p)).Distinct());
    }

    [Fact]
    public void A_client_whose_backend_drains_goes_to_another_and_sticks_to_it()
    {
        Privileged.Require();
        var (plane, run) = fx.PrivatePlane(null, OneVip(Web(TimeSpan.FromHours(3))));
        using var _ = plane;
        var first = Ports(20).Select(p => Connect(run, p)).ToList();
        Assert.Single(first.Distinct());
        var drained = first[0];
        plane.Apply(OneVip(Web(TimeSpan.FromHours(3), draining: drained)));
        var after = Ports(20).Select(p => Connect(run, p)).ToList();
        Assert.Equal([3 - drained], after.Distinct());
        // Backend back in the ring: some positions change hands, and the client may be chosen for
        // afresh once (if its position did), but it sticks to one backend.
        plane.Apply(OneVip(Web(TimeSpan.FromHours(3))));
        Assert.Single(Ports(20).Select(p => Connect(run, p)).Distinct());
    }

    [Fact]
    public void Past_its_timeout_a_client_is_chosen_for_afresh()
    {
        Privileged.Require();
        var (sticky, stickyRun) = fx.PrivatePlane(null, OneVip(Web(TimeSpan.FromSeconds(1))));
        var (plain, plainRun) = fx.PrivatePlane(null, OneVip(Web(null)));
        using var _ = sticky;
        using var __ = plain;
        // The same Maglev table on both: the plain plane says where each port would go without affinity.
        var ports = Ports(40);
        var byMaglev = ports.ToDictionary(p => p, p => Connect(plainRun, p));
        var home = Connect(stickyRun, ports[0]);
        Assert.Equal(byMaglev[ports[0]], home);
        var elsewhere = ports.Where(p => byMaglev[p] != home).ToList();
        Assert.True(elsewhere.Count >= 4, "Maglev sent too few of 40 ports to the other backend");
        Assert.Equal(home, Connect(stickyRun, elsewhere[0]));
        Thread.Sleep(TimeSpan.FromMilliseconds(1300));
        Assert.Equal(3 - home, Connect(stickyRun, elsewhere[1]));
        // And the client now sticks to that one.
        Assert.Equal(3 - home, Connect(stickyRun, ports.First(p => byMaglev[p] == home && p != ports[0])));
    }
}
