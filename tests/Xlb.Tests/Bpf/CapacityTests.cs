using Xlb.Agent;
using Xlb.Agent.Bpf;
using Xlb.Agent.Core;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.DataPlane;
using Xlb.Tests.Support;
using static Xlb.Tests.Bpf.DataPlaneFixture;

namespace Xlb.Tests.Bpf;

/// <summary>
/// Map sizes chosen by the agent (--max-backends, --ring-slots) rather than compiled in, and the
/// batch operations of the map interop, on the real program and real maps.
/// </summary>
public sealed class CapacityTests(DataPlaneFixture fx) : IClassFixture<DataPlaneFixture>
{
    /// <summary>A listener on VIP:port toward backends 1 and 2 of the topology, or (3 and up) addresses no packet reaches.</summary>
    private static Listener Web(int port, params int[] backends) => new()
    {
        Name = $"t/web{port}/p", Vip = Vip, Port = port,
        Backends = [.. backends.Select(i => new NodeBackend { Address = i <= 2 ? LbTopology.BackendAddress(i) : $"198.51.100.{i}", Port = 8080 })],
    };

    [Fact]
    public void A_data_plane_sized_by_the_agent_forwards_from_both_generations_and_refuses_what_does_not_fit()
    {
        Privileged.Require();
        // 3 backends (4 slots a generation) and two Maglev tables: generation 1 starts at backend
        // slot 4 and ring slot 2042, where the compiled sizes would put it at 65536 and 4194304.
        // The topology has two backends; the rest stand for backends that do not fit.
        var capacity = DataPlaneCapacity.For(3, 2 * Maglev.DefaultSize);
        Assert.Equal(4, capacity.BackendSlots);
        using var plane = XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath, new DataPlaneOptions { Capacity = capacity });
        var fd = plane.ProgramFd;
        TestRunResult Run(Packet p) => Netns.Run(fx.Topology.Lb, () => TestRun.Xdp(fd, p.Build()));
        string BackendOf(ushort clientPort, int vipPort)
        {
            var r = Run(new Packet { Src = Client, Dst = VipAddress, SrcPort = clientPort, DstPort = (ushort)vipPort, TcpFlags = Packet.Syn });
            Assert.Equal(XdpRedirect, (int)r.Verdict);
            return Packet.Parse(r.Packet).Dst.ToString();
        }

        Assert.Equal(1, plane.Apply(OneVip(Web(80, 1), Web(81, 2))).Generation);
        Assert.Equal(LbTopology.BackendAddress(1), BackendOf(41001, 80));
        Assert.Equal(LbTopology.BackendAddress(2), BackendOf(41002, 81));
        Assert.Equal((uint)capacity.BackendSlots, plane.ReadConfig().BackendSlots);

        Assert.Equal(0, plane.Apply(OneVip(Web(80, 2), Web(81, 1))).Generation);
        Assert.Equal(LbTopology.BackendAddress(2), BackendOf(41003, 80));
        Assert.Equal(LbTopology.BackendAddress(1), BackendOf(41004, 81));
        // Per-backend counters are indexed within the smaller array as well: two new flows each.
        Assert.All(plane.BackendStats().Values, s => Assert.Equal(2UL, s.NewFlows));

        // A fourth backend, or a third table, does not fit: refused, and the revision before stays.
        var tooMany = Assert.Throws<ConfigTooLargeException>(() => plane.Apply(OneVip(Web(80, 1, 2), Web(81, 3, 4))));
        Assert.Contains("--max-backends", tooMany.Message, StringComparison.Ordinal);
        var tooLong = Assert.Throws<ConfigTooLargeException>(() => plane.Apply(OneVip(Web(80, 1), Web(81, 2), Web(82, 3))));
        Assert.Contains("--ring-slots", tooLong.Message, StringComparison.Ordinal);
        Assert.Equal(0, plane.ActiveGeneration);
        Assert.Equal(LbTopology.BackendAddress(2), BackendOf(41005, 80));
    }

    [Fact]
    public void Pinned_maps_of_another_size_are_refused_with_the_size_they_have()
    {
        Privileged.Require();
        StandaloneStack.EnsureTestBpffs();
        var root = Bpffs.PinRoot(StandaloneStack.TestBpffs, "capacity-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var small = DataPlaneCapacity.For(1000, 100_000);
            using (var first = XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath, new DataPlaneOptions { PinRoot = root, Capacity = small }))
            {
                Assert.False(first.Adopted);
            }
            var error = Assert.Throws<BpfException>(() => XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath, new DataPlaneOptions { PinRoot = root }));
            Assert.Contains($"xlb_backends of {2 * 1024} entries", error.Message, StringComparison.Ordinal);
            Assert.Contains("--max-backends", error.Message, StringComparison.Ordinal);
            using var again = XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath, new DataPlaneOptions { PinRoot = root, Capacity = small });
            Assert.True(again.Adopted);
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(root)!, recursive: true);
        }
    }

    [Fact]
    public void Batch_update_lookup_and_delete_move_many_entries_in_few_calls()
    {
        Privileged.Require();
        using var plane = XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath);
        var keys = Enumerable.Range(0, 5000).Select(i => new XlbFlowKey
        {
            Saddr = Addr16.From(System.Net.IPAddress.Parse($"10.{i / 250}.{i % 250}.1")),
            Daddr = Addr16.From(VipAddress),
            SportBe = Net.Be((ushort)(1024 + i)),
            DportBe = Net.Be(80),
            Proto = XlbAbi.ProtoTcp,
            Family = XlbAbi.FamilyV4,
        }).ToArray();
        var values = keys.Select((k, i) => new XlbFlow { SvcId = (uint)i + 1, NatPortBe = k.SportBe }).ToArray();

        plane.Flows.UpdateBatch(keys, values);
        var read = plane.Flows.Entries();
        Assert.Equal(keys.Length, read.Count);
        Assert.All(keys.Zip(values), kv => Assert.Equal(kv.Second, read[kv.First]));
        Assert.Equal(10, plane.Flows.Entries(k => Net.FromBe(k.SportBe) < 1034).Count);

        // A second write of the same keys replaces the values.
        values[7] = values[7] with { SvcId = 99 };
        plane.Flows.UpdateBatch(keys, values);
        Assert.Equal(99u, plane.Flows.Entries()[keys[7]].SvcId);

        plane.Flows.DeleteBatch(keys.AsSpan(0, 4000));
        Assert.Equal(1000, plane.Flows.Entries().Count);
        var missing = Assert.Throws<BpfException>(() => plane.Flows.DeleteBatch(keys.AsSpan(3999, 2)));
        Assert.Contains("ENOENT", missing.Message, StringComparison.Ordinal);
        Assert.Contains("entry 0 of 2", missing.Message, StringComparison.Ordinal);
        Assert.Equal(1000, plane.Flows.Entries().Count);
    }
}
