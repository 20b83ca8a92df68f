using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Tests.Unit;

public class MapDiffTests
{
    private static XlbNodeConfigSpec Spec(params string[] backends) => new()
    {
        NodeName = "n",
        Vips = [new NodeVip { Address = "192.0.2.1", Role = VipRole.Active, Shard = "s" }],
        Listeners = [new Listener
        {
            Name = "ns/m/http",
            Vip = "192.0.2.1",
            Port = 80,
            Backends = [.. backends.Select(b => new NodeBackend { Address = b, Port = 8080 })],
        }],
    };

    private static ObservedGeneration Empty => new(new Dictionary<XlbVipKey, uint>(), new Dictionary<XlbSvcKey, XlbSvc>(), [], [], new FilterImage());

    private static ObservedGeneration AsObserved(MapImage image) => image.AsObserved();

    private static int RingWrites(IReadOnlyList<MapOp> ops) => ops.OfType<MapOp.PutRing>().Sum(r => r.Slots.Length);

    [Fact]
    public void Into_empty_maps_everything_is_written_and_the_flip_comes_last()
    {
        var image = MapImage.Build(Spec("10.0.0.1", "10.0.0.2"), 1);
        var ops = MapDiff.Plan(image, Empty, default);
        Assert.Equal(2, ops.OfType<MapOp.PutBackend>().Count());
        Assert.Equal(Maglev.DefaultSize, Assert.Single(ops.OfType<MapOp.PutRing>()).Slots.Length);
        Assert.Single(ops.OfType<MapOp.PutService>());
        Assert.Single(ops.OfType<MapOp.PutVip>());
        Assert.True(Assert.Single(ops.OfType<MapOp.PutFilter>()).Filter.MayBeVip(System.Net.IPAddress.Parse("192.0.2.1")));
        var flip = Assert.IsType<MapOp.Flip>(ops[^1]);
        Assert.Equal(1u, flip.Config.ActiveGen);
        Assert.Equal((uint)XlbAbi.RingCapacity, ops.OfType<MapOp.PutRing>().Single().Key);
        Assert.Equal(2 + Maglev.DefaultSize + 1 + 1 + 1 + 1, MapDiff.Writes(ops));
    }

    [Fact]
    public void When_maps_already_hold_the_image_only_the_flip_remains()
    {
        var image = MapImage.Build(Spec("10.0.0.1", "10.0.0.2"), 0);
        Assert.Equal([typeof(MapOp.Flip)], MapDiff.Plan(image, AsObserved(image), default).Select(o => o.GetType()));
    }

    [Fact]
    public void Removed_listeners_and_vips_are_deleted_and_changed_ring_slots_rewritten()
    {
        var before = MapImage.Build(Spec("10.0.0.1", "10.0.0.2", "10.0.0.3"), 0);
        var after = MapImage.Build(Spec("10.0.0.1", "10.0.0.2"), 0);
        var ops = MapDiff.Plan(after, AsObserved(before), default);
        var rewritten = RingWrites(ops);
        // Each run holds only slots that differ, and its slots are the image's.
        foreach (var run in ops.OfType<MapOp.PutRing>())
        {
            var from = (int)run.Key;
            Assert.All(Enumerable.Range(0, run.Slots.Length), i => Assert.NotEqual(before.Ring[from + i], after.Ring[from + i]));
            Assert.Equal(after.Ring.AsSpan(from, run.Slots.Length).ToArray(), run.Slots.ToArray());
        }
        // Maglev: only about the removed backend's third of the slots change.
        Assert.InRange(rewritten, Maglev.DefaultSize / 4, Maglev.DefaultSize * 2 / 5);
        var gone = MapImage.Build(Spec() with { Vips = [], Listeners = [] }, 0);
        var ops2 = MapDiff.Plan(gone, AsObserved(before), default);
        Assert.Single(ops2.OfType<MapOp.DeleteService>());
        Assert.Single(ops2.OfType<MapOp.DeleteVip>());
    }

    [Fact]
    public void An_image_rebased_onto_the_other_generation_equals_one_built_for_it()
    {
        var spec = Spec("10.0.0.1", "10.0.0.2", "10.0.0.3");
        var rebased = MapImage.Build(spec, 0).WithGeneration(1);
        var built = MapImage.Build(spec, 1);
        Assert.Equal(built.Vips, rebased.Vips);
        Assert.Equal(built.Services, rebased.Services);
        Assert.Equal(built.Backends, rebased.Backends);
        Assert.Equal(built.Ring, rebased.Ring);
        Assert.Equal(built.BackendKey(1), rebased.BackendKey(1));
        Assert.Equal(built.RingKey(0), rebased.RingKey(0));
    }

    [Fact]
    public void A_config_larger_than_the_maps_is_refused_before_anything_is_written()
    {
        var huge = Spec() with
        {
            // One ring slot more than the data plane holds, at the default table size.
            Listeners = [.. Enumerable.Range(0, (XlbAbi.RingCapacity / Maglev.DefaultSize) + 1).Select(i => new Listener
            {
                Name = $"ns/m{i}/p",
                Vip = "192.0.2.1",
                Port = 1000 + i,
                Backends = [new NodeBackend { Address = "10.0.0.1", Port = 80 }],
            })],
        };
        Assert.Throws<ConfigTooLargeException>(() => MapImage.Build(huge, 0));
    }

    private static Listener L(string name, int port, params string[] backends) => new()
    {
        Name = name,
        Vip = "192.0.2.1",
        Port = port,
        Backends = [.. backends.Select(b => new NodeBackend { Address = b, Port = 8080 })],
    };

    [Fact]
    public void A_service_keeps_its_id_across_revisions_and_new_services_take_free_ids()
    {
        var first = MapImage.Build(Spec() with { Listeners = [L("ns/b/p", 81, "10.0.0.1"), L("ns/c/p", 82, "10.0.0.1")] }, 0);
        Assert.Equal([1u, 2u], first.Services.Values.Select(s => s.Id).Order());
        // "ns/a/p" sorts first; without the previous ids it would take id 1 and shift the others.
        var second = MapImage.Build(Spec() with { Listeners = [L("ns/a/p", 80, "10.0.0.1"), L("ns/c/p", 82, "10.0.0.1")] }, 1, first.ServiceBasis());
        var byPort = second.Services.ToDictionary(s => Net.FromBe(s.Key.PortBe), s => s.Value.Id);
        Assert.Equal(2u, byPort[82]);
        Assert.Equal(1u, byPort[80]);
    }

    [Fact]
    public void A_backend_keeps_its_index_across_revisions_and_a_removed_backends_index_rests_one_revision()
    {
        static int IndexOf(MapImage image, string address) =>
            image.BackendIndexes().Single(b => b.Key.Addr.ToAddress(b.Key.Family).ToString() == address).Value;

        var first = MapImage.Build(Spec("10.0.0.1", "10.0.0.2", "10.0.0.3"), 0);
        Assert.Equal([1, 2, 3], new[] { "10.0.0.1", "10.0.0.2", "10.0.0.3" }.Select(a => IndexOf(first, a)));

        // 10.0.0.1 leaves and 10.0.0.4 arrives: the others keep theirs, and the new one does not
        // take index 1, which the flows of the backend that left still count to.
        var second = MapImage.Build(Spec("10.0.0.4", "10.0.0.3", "10.0.0.2"), 1, null, first.BackendIndexes());
        Assert.Equal([4, 3, 2], new[] { "10.0.0.4", "10.0.0.3", "10.0.0.2" }.Select(a => IndexOf(second, a)));
        Assert.Equal(0, second.Backends[0].Family); // slot 1 is empty
        // Every ring slot names one of this revision's backends.
        Assert.All(second.Ring, i => Assert.Contains((int)i, new[] { 2, 3, 4 }));

        // A revision later index 1 is free again.
        var third = MapImage.Build(Spec("10.0.0.4", "10.0.0.3", "10.0.0.2", "10.0.0.5"), 0, null, second.BackendIndexes());
        Assert.Equal(1, IndexOf(third, "10.0.0.5"));
        Assert.Equal(4, IndexOf(third, "10.0.0.4"));
    }

    [Fact]
    public void Modes_and_algorithms_reach_the_service_entry_and_dnat_backends_the_filter()
    {
        var spec = Spec() with
        {
            Listeners =
            [
                L("ns/a/p", 80, "10.0.0.1") with { NatMode = NatMode.DNAT, Algorithm = SchedulingAlgorithm.SourceHash },
                L("ns/b/p", 81, "10.0.0.2") with { NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.L2, Algorithm = SchedulingAlgorithm.RoundRobin },
                L("ns/c/p", 82, "10.0.0.3") with { NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.IPIP },
            ],
        };
        var image = MapImage.Build(spec, 0);
        var byPort = image.Services.ToDictionary(s => Net.FromBe(s.Key.PortBe), s => s.Value);
        Assert.Equal((XlbAbi.ModeDnat, XlbAbi.AlgoSourceHash), (byPort[80].Mode, byPort[80].Algo));
        Assert.Equal((XlbAbi.ModeDsrL2, XlbAbi.AlgoRoundRobin), (byPort[81].Mode, byPort[81].Algo));
        Assert.Equal((XlbAbi.ModeDsrIpip, XlbAbi.AlgoMaglev), (byPort[82].Mode, byPort[82].Algo));
        Assert.Equal(1u, byPort[81].RingSize); // one backend: a cycle of one
        Assert.True(image.Filter.MayBeReplySource(System.Net.IPAddress.Parse("10.0.0.1")));
        Assert.False(image.Filter.MayBeReplySource(System.Net.IPAddress.Parse("10.0.0.2")));
        Assert.False(image.Filter.MayBeVip(System.Net.IPAddress.Parse("10.0.0.1")));
    }

    [Theory]
    [InlineData(new[] { 1, 1, 1 }, new[] { 0, 1, 2 })]
    [InlineData(new[] { 3, 1 }, new[] { 0, 0, 1, 0 })]
    [InlineData(new[] { 2, 0, 4 }, new[] { 2, 0, 2 })]
    [InlineData(new[] { 0, 0 }, new int[0])]
    public void Round_robin_cycles_are_smooth_and_proportional(int[] weights, int[] expected) =>
        Assert.Equal(expected, RoundRobin.Cycle(weights));

    [Fact]
    public void Round_robin_cycles_give_every_backend_its_weight_in_turns()
    {
        var weights = new[] { 5, 3, 2, 7 };
        var cycle = RoundRobin.Cycle(weights);
        Assert.Equal(weights.Sum(), cycle.Length);
        Assert.Equal(weights, Enumerable.Range(0, 4).Select(i => cycle.Count(c => c == i)));
        // Smooth: the heaviest never takes more than two turns in a row here.
        Assert.DoesNotContain(Enumerable.Range(0, cycle.Length - 2), i => cycle[i] == cycle[i + 1] && cycle[i + 1] == cycle[i + 2]);
    }

    [Fact]
    public void A_service_keeps_its_ring_span_so_a_service_added_before_it_rewrites_only_its_own_slots()
    {
        var first = MapImage.Build(Spec() with { Listeners = [L("ns/b/p", 81, "10.0.0.1", "10.0.0.2"), L("ns/c/p", 82, "10.0.0.3")] }, 0);
        // "ns/a/p" sorts first: laid out end to end by name, it would move both rings.
        var second = MapImage.Build(Spec() with { Listeners = [L("ns/a/p", 80, "10.0.0.4"), L("ns/b/p", 81, "10.0.0.1", "10.0.0.2"), L("ns/c/p", 82, "10.0.0.3")] },
            0, first.ServiceBasis(), first.BackendIndexes());
        var ops = MapDiff.Plan(second, first.AsObserved(), default);
        Assert.Equal(Maglev.DefaultSize, RingWrites(ops));
        Assert.Equal((uint)(2 * Maglev.DefaultSize), Assert.Single(ops.OfType<MapOp.PutRing>()).Key);

        // b leaves: its span is a gap, and the next new service of that size takes it.
        var third = MapImage.Build(Spec() with { Listeners = [L("ns/a/p", 80, "10.0.0.4"), L("ns/c/p", 82, "10.0.0.3"), L("ns/d/p", 83, "10.0.0.5")] },
            0, second.ServiceBasis(), second.BackendIndexes());
        var byPort = third.Services.ToDictionary(s => Net.FromBe(s.Key.PortBe), s => s.Value.RingOff);
        Assert.Equal((0u, (uint)Maglev.DefaultSize, (uint)(2 * Maglev.DefaultSize)), (byPort[83], byPort[82], byPort[80]));
    }

    [Fact]
    public void Ring_spans_never_overlap_and_fit_the_capacity_or_are_laid_out_afresh()
    {
        XlbSvcKey K(int port) => new() { PortBe = Net.Be(port), Proto = XlbAbi.ProtoTcp, Family = XlbAbi.FamilyV4 };
        XlbSvc Was(int off, int size) => new() { RingOff = (uint)off, RingSize = (uint)size };
        static void NoOverlap(RingSpans.Layout layout, (XlbSvcKey Key, int Size)[] services) =>
            Assert.All(services, a => Assert.All(services.Where(b => !b.Key.Equals(a.Key) && a.Size > 0 && b.Size > 0),
                b => Assert.True(layout.Offsets[a.Key] + a.Size <= layout.Offsets[b.Key] || layout.Offsets[b.Key] + b.Size <= layout.Offsets[a.Key])));

        // Kept: 1 at 10..20 and 3 at 30..35 (4 changed size); 2 (size 10) takes the gap 0..10, 4 (size 8) the gap 20..30.
        (XlbSvcKey, int)[] services = [(K(1), 10), (K(2), 10), (K(3), 5), (K(4), 8), (K(5), 0)];
        var previous = new Dictionary<XlbSvcKey, XlbSvc> { [K(1)] = Was(10, 10), [K(3)] = Was(30, 5), [K(4)] = Was(0, 4) };
        var layout = RingSpans.Assign(services, previous, 100);
        Assert.Equal([10, 0, 30, 20], new[] { 1, 2, 3, 4 }.Select(p => layout.Offsets[K(p)]));
        Assert.Equal(35, layout.End);
        NoOverlap(layout, services);

        // Room for 34 only: 3 cannot stay at 30..35 and moves into a gap.
        var moved = RingSpans.Assign(services, previous, 34);
        Assert.Equal([10, 0, 20, 25], new[] { 1, 2, 3, 4 }.Select(p => moved.Offsets[K(p)]));
        NoOverlap(moved, services);
        Assert.Throws<ConfigTooLargeException>(() => RingSpans.Assign(services, previous, 32));

        // 1 kept at 5..15 leaves gaps too small for 2 and 3: laid out afresh, end to end in the given order.
        (XlbSvcKey, int)[] three = [(K(1), 10), (K(2), 10), (K(3), 10)];
        var fresh = RingSpans.Assign(three, new Dictionary<XlbSvcKey, XlbSvc> { [K(1)] = Was(5, 10) }, 30);
        Assert.Equal([0, 10, 20], new[] { 1, 2, 3 }.Select(p => fresh.Offsets[K(p)]));
        Assert.Equal(30, fresh.End);

        // Spans that overlap (maps changed by hand) are not kept.
        var clash = RingSpans.Assign([(K(1), 10), (K(2), 10)], new Dictionary<XlbSvcKey, XlbSvc> { [K(1)] = Was(0, 10), [K(2)] = Was(5, 10) }, 100);
        NoOverlap(clash, [(K(1), 10), (K(2), 10)]);
    }

    [Fact]
    public void The_memo_builds_a_listeners_table_once_and_a_changed_listener_afresh()
    {
        var memo = new ListenerMemo();
        var spec = Spec() with { Listeners = [L("ns/a/p", 80, "10.0.0.1", "10.0.0.2"), L("ns/b/p", 81, "10.0.0.1", "10.0.0.2"), L("ns/c/p", 82, "10.0.0.3")] };
        var first = MapImage.Build(spec, 0, memo: memo);
        // a and b have the same backends: one table for both.
        Assert.Equal(2, memo.Compiled);
        var again = MapImage.Build(spec with { Listeners = [.. spec.Listeners.Select(l => l with { Backends = [.. l.Backends.Select(b => b with { })] })] }, 0, memo: memo);
        Assert.Equal(2, memo.Compiled);
        Assert.Equal(first.Ring, again.Ring);
        // A weight changes: that listener is compiled afresh, and the result is what a build without memo gives.
        var heavier = spec with { Listeners = [spec.Listeners[0] with { Backends = [spec.Listeners[0].Backends[0] with { Weight = 3 }, spec.Listeners[0].Backends[1]] }] };
        var weighted = MapImage.Build(heavier, 0, memo: memo);
        Assert.Equal(3, memo.Compiled);
        Assert.Equal(MapImage.Build(heavier, 0).Ring, weighted.Ring);
        Assert.NotEqual(first.Ring.AsSpan(0, Maglev.DefaultSize).ToArray(), weighted.Ring);
    }

    [Fact]
    public void Two_listeners_on_one_service_key_give_one_service_and_a_ring_that_fits()
    {
        // A hand-written config: the same VIP:port/TCP twice, with rings of different sizes.
        var spec = Spec() with { Listeners = [L("ns/a/p", 80, "10.0.0.1"), L("ns/b/p", 80, "10.0.0.2") with { Algorithm = SchedulingAlgorithm.RoundRobin }] };
        var image = MapImage.Build(spec, 0);
        var svc = Assert.Single(image.Services).Value;
        Assert.Equal(1u, svc.RingSize); // ns/b/p, the later by name
        Assert.Equal(image.Ring.Length, (int)(svc.RingOff + svc.RingSize));
    }
}
