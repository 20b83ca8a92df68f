using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Tests.Unit;

/// <summary>The incremental build: each revision's image equals the one built from scratch over the same basis.</summary>
public sealed class ImageBuilderTests
{
    private static readonly string[] Vips = ["192.0.2.1", "192.0.2.2", "2001:db8::1"];

    private static Listener RandomListener(Random rng, string name)
    {
        var vip = Vips[rng.Next(Vips.Length)];
        var v6 = vip.Contains(':', StringComparison.Ordinal);
        return new Listener
        {
            Name = name,
            Vip = vip,
            Port = rng.Next(1, 12),
            Protocol = rng.Next(4) == 0 ? L4Protocol.UDP : L4Protocol.TCP,
            Algorithm = (SchedulingAlgorithm)rng.Next(4),
            NatMode = (NatMode)rng.Next(3),
            DsrEncapsulation = rng.Next(2) == 0 ? DsrEncapsulation.L2 : DsrEncapsulation.IPIP,
            Backends = [.. Enumerable.Range(0, rng.Next(0, 7)).Select(_ => Backend(rng, v6))],
        };
    }

    private static NodeBackend Backend(Random rng, bool v6) => new()
    {
        Address = v6 ? $"2001:db8:1::{rng.Next(1, 30):x}" : $"10.1.0.{rng.Next(1, 30)}",
        Port = 8080 + rng.Next(2),
        Weight = rng.Next(1, 4),
        Draining = rng.Next(6) == 0,
    };

    /// <summary>
    /// A revision: listeners come, go, change in any field, are renamed, repeated by name or by
    /// VIP:port, or reordered; backends change weight, state, port, or are replaced.
    /// </summary>
    private static XlbNodeConfigSpec Revision(Random rng, XlbNodeConfigSpec? before)
    {
        var listeners = before?.Listeners.ToList() ?? [];
        for (var c = rng.Next(0, 5); c >= 0; c--)
        {
            var roll = rng.Next(12);
            if (roll < 3 || listeners.Count == 0)
            {
                listeners.Insert(rng.Next(listeners.Count + 1), RandomListener(rng, $"ns/svc{rng.Next(25)}/p"));
            }
            else if (roll < 5)
            {
                listeners.RemoveAt(rng.Next(listeners.Count));
            }
            else if (roll < 9)
            {
                var i = rng.Next(listeners.Count);
                var backends = listeners[i].Backends.ToList();
                var v6 = listeners[i].Vip.Contains(':', StringComparison.Ordinal);
                if (backends.Count > 0 && rng.Next(2) == 0)
                {
                    var j = rng.Next(backends.Count);
                    backends[j] = rng.Next(3) switch
                    {
                        0 => backends[j] with { Weight = rng.Next(1, 4) },
                        1 => backends[j] with { Draining = !backends[j].Draining },
                        _ => Backend(rng, v6),
                    };
                }
                else
                {
                    backends.Add(Backend(rng, v6));
                }
                listeners[i] = listeners[i] with { Backends = backends };
            }
            else if (roll < 10)
            {
                var i = rng.Next(listeners.Count);
                listeners[i] = rng.Next(3) switch
                {
                    0 => listeners[i] with { Port = rng.Next(1, 12) },
                    1 => listeners[i] with { Algorithm = (SchedulingAlgorithm)rng.Next(4) },
                    _ => listeners[i] with { Name = $"ns/svc{rng.Next(25)}/q" },
                };
            }
            else
            {
                // The same listener once more, as a copy with equal content (a fresh object).
                var i = rng.Next(listeners.Count);
                listeners.Add(listeners[i] with { Backends = [.. listeners[i].Backends.Select(b => b with { })] });
            }
        }
        return new XlbNodeConfigSpec
        {
            NodeName = "lb-1",
            Vips = [.. Vips.Take(rng.Next(1, 4)).Select(v => new NodeVip { Address = v, Role = rng.Next(3) == 0 ? VipRole.Standby : VipRole.Active, Shard = "s" })],
            // Each revision arrives as new objects, as a parsed node config does.
            Listeners = [.. listeners.Select(l => l with { Backends = [.. l.Backends.Select(b => b with { })] })],
        };
    }

    private static void AssertSame(MapImage expected, MapImage actual, string step)
    {
        Assert.True(expected.Vips.Count == actual.Vips.Count && expected.Vips.All(v => actual.Vips.TryGetValue(v.Key, out var a) && a == v.Value), $"{step}: VIPs differ");
        Assert.True(expected.Services.Count == actual.Services.Count && expected.Services.All(s => actual.Services.TryGetValue(s.Key, out var a) && a == s.Value), $"{step}: services differ");
        Assert.True(expected.Backends.SequenceEqual(actual.Backends), $"{step}: backend slots differ");
        Assert.True(expected.Ring.AsSpan().SequenceEqual(actual.Ring), $"{step}: ring differs");
        Assert.True(expected.Filter.Equals(actual.Filter), $"{step}: filter differs");
    }

    [Theory]
    [InlineData(1, 200)]
    [InlineData(2, 200)]
    [InlineData(3, 200)]
    public void Every_incremental_image_equals_the_image_built_from_scratch_over_the_same_basis(int seed, int revisions)
    {
        var rng = new Random(seed);
        // Small maps: rings fragment and are laid out afresh, backend indexes run out and rested ones are taken.
        var capacity = DataPlaneCapacity.For(63, 14 * Maglev.DefaultSize);
        var builder = new ImageBuilder(capacity);
        XlbNodeConfigSpec? spec = null;
        MapImage? last = null;
        var built = 0;
        for (var r = 0; r < revisions; r++)
        {
            spec = Revision(rng, spec);
            var generation = (byte)(r & 1);
            MapImage expected;
            try
            {
                expected = MapImage.Build(spec, generation, last?.ServiceBasis(), last?.BackendIndexes(), capacity);
            }
            catch (ConfigTooLargeException)
            {
                // The same refusal, and the builder then starts again from the last image that fit.
                Assert.Throws<ConfigTooLargeException>(() => last is null ? builder.Build(spec, generation, null, null) : builder.Next(spec, generation));
                Assert.False(builder.HasBasis);
                if (last is not null)
                {
                    var (services, indexes) = PreviousOf[last];
                    AssertSame(last, builder.Build(LastSpec!, last.Generation, services, indexes), $"revision {r}, the last image again");
                }
                spec = LastSpec;
                continue;
            }
            IReadOnlyDictionary<XlbBackend, int> before = last?.BackendIndexes() ?? new Dictionary<XlbBackend, int>();
            var actual = last is null ? builder.Build(spec, generation, null, null) : builder.Next(spec, generation);
            AssertSame(expected, actual, $"revision {r}");
            // Counters restart exactly for the backends that took an index they did not hold.
            Assert.Equal(
                actual.BackendIndexes().Where(b => before.GetValueOrDefault(b.Key) != b.Value).Select(b => b.Value).Order(),
                builder.Renumbered.Select(f => f.Index).Order());
            Assert.All(builder.Renumbered, f => Assert.Equal(actual.Backends[f.Index - 1], f.Backend));
            Assert.Equal(actual.BackendIndexes().OrderBy(b => b.Value), builder.Indexes.OrderBy(b => b.Value));
            PreviousOf[actual] = (last?.ServiceBasis(), last?.BackendIndexes());
            LastSpec = spec;
            last = actual;
            built++;
        }
        Assert.True(built > revisions / 2, $"only {built} of {revisions} revisions fit the maps");
    }

    private XlbNodeConfigSpec? LastSpec { get; set; }

    private Dictionary<MapImage, (IReadOnlyDictionary<XlbSvcKey, XlbSvc>? Services, IReadOnlyDictionary<XlbBackend, int>? Indexes)> PreviousOf { get; } = new(ReferenceEqualityComparer.Instance);

    [Fact]
    public void A_revision_that_changes_one_listener_fills_one_ring_and_keeps_every_other_index()
    {
        var listeners = Enumerable.Range(0, 200).Select(s => new Listener
        {
            Name = $"ns/svc{s}/p",
            Vip = "192.0.2.1",
            Port = 1000 + s,
            Backends = [.. Enumerable.Range(1, 5).Select(e => new NodeBackend { Address = $"10.{s / 200}.{s % 200}.{e}", Port = 8080 })],
        }).ToList();
        var spec = new XlbNodeConfigSpec { NodeName = "n", Vips = [new NodeVip { Address = "192.0.2.1", Role = VipRole.Active, Shard = "s" }], Listeners = [.. listeners] };
        var builder = new ImageBuilder();
        var first = builder.Build(spec, 0, null, null);
        Assert.Equal(200, builder.Filled);

        listeners[17] = listeners[17] with { Backends = [.. listeners[17].Backends.Take(4), new NodeBackend { Address = "10.9.9.9", Port = 8080 }] };
        var second = builder.Next(spec with { Listeners = [.. listeners.Select(l => l with { Backends = [.. l.Backends] })] }, 1);
        Assert.Equal(1, builder.Filled);
        Assert.Equal([("10.9.9.9", 1001)], builder.Renumbered.Select(f => (f.Backend.Addr.ToAddress(f.Backend.Family).ToString(), f.Index)));
        // Only listener 17's span differs, and the ring is a copy: the first image is untouched.
        var span = second.Services.Single(s => Net.FromBe(s.Key.PortBe) == 1017).Value;
        var differing = Enumerable.Range(0, first.Ring.Length).Where(i => first.Ring[i] != second.Ring[i]).ToList();
        Assert.NotEmpty(differing);
        Assert.All(differing, i => Assert.InRange(i, (int)span.RingOff, (int)(span.RingOff + span.RingSize - 1)));
        Assert.Equal(MapImage.Build(spec, 0).Ring, first.Ring);
    }
}

/// <summary>The chunked slot list under the backend slots: every copy reads as a plain list would.</summary>
public sealed class SlotsTests
{
    [Fact]
    public void Edited_copies_read_like_lists_share_what_they_did_not_touch_and_leave_the_original_alone()
    {
        var rng = new Random(7);
        var model = new List<int>();
        var slots = Slots<int>.Empty;
        var history = new List<(Slots<int> Slots, int[] Model)>();
        for (var round = 0; round < 300; round++)
        {
            var editor = slots.Edit();
            for (var op = rng.Next(1, 20); op > 0; op--)
            {
                var roll = rng.Next(10);
                if (roll < 2)
                {
                    // Grow or shrink, across chunk boundaries.
                    var count = rng.Next(0, 5 * Slots<int>.ChunkSize);
                    editor.Count = count;
                    if (count < model.Count)
                    {
                        model.RemoveRange(count, model.Count - count);
                    }
                    model.AddRange(Enumerable.Repeat(0, count - model.Count));
                }
                else if (model.Count > 0)
                {
                    var i = rng.Next(model.Count);
                    editor[i] = model[i] = rng.Next(1, 1000);
                }
            }
            var next = editor.Done();
            Assert.Equal(model, next);
            for (var from = 0; from + Slots<int>.ChunkSize <= Math.Min(next.Count, slots.Count); from += Slots<int>.ChunkSize)
            {
                if (next.SharesChunk(slots, from))
                {
                    Assert.Equal(slots.Skip(from).Take(Slots<int>.ChunkSize), next.Skip(from).Take(Slots<int>.ChunkSize));
                }
            }
            history.Add((next, [.. model]));
            slots = next;
        }
        // No edit reached back into an earlier copy.
        Assert.All(history, h => Assert.Equal(h.Model, h.Slots));
        Assert.Contains(history.Zip(history.Skip(1)), p => p.First.Slots.Count >= Slots<int>.ChunkSize && p.Second.Slots.SharesChunk(p.First.Slots, 0));
    }
}
