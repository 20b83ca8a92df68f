using Xlb.Agent;
using Xlb.Crds;
using Xlb.DataPlane;
using Xlb.Tests.Support;

namespace Xlb.Tests.Bpf;

/// <summary>The agent's apply path on real maps: what it writes between full resyncs.</summary>
public sealed class ApplyTests
{
    /// <summary>A random revision of a node config: listeners come and go, backends, weights, states and algorithms change.</summary>
    private static XlbNodeConfigSpec Revision(Random rng, XlbNodeConfigSpec? before)
    {
        var listeners = before?.Listeners.ToList() ?? [];
        var changes = rng.Next(1, 6);
        for (var c = 0; c < changes; c++)
        {
            var roll = rng.Next(10);
            if (roll < 3 || listeners.Count == 0)
            {
                var port = rng.Next(1, 60);
                listeners.RemoveAll(l => l.Port == port);
                listeners.Add(new Listener
                {
                    Name = $"t/svc{port}/p",
                    Vip = "192.0.2.1",
                    Port = port,
                    Algorithm = rng.Next(6) switch { 0 => SchedulingAlgorithm.WeightedRoundRobin, 1 => SchedulingAlgorithm.LeastConn, _ => SchedulingAlgorithm.Maglev },
                    MaglevTableSize = rng.Next(4) == 0 ? 251 : null,
                    Backends = [.. Enumerable.Range(0, rng.Next(0, 8)).Select(_ => new NodeBackend { Address = $"10.1.0.{rng.Next(1, 40)}", Port = 8080 }).DistinctBy(b => b.Address)],
                });
            }
            else if (roll < 5)
            {
                listeners.RemoveAt(rng.Next(listeners.Count));
            }
            else
            {
                var i = rng.Next(listeners.Count);
                var backends = listeners[i].Backends.ToList();
                if (backends.Count > 0 && rng.Next(2) == 0)
                {
                    var j = rng.Next(backends.Count);
                    backends[j] = backends[j] with { Weight = rng.Next(1, 4), Draining = rng.Next(3) == 0 };
                }
                else if (rng.Next(4) == 0)
                {
                    // A new table size: the ring changes size, and the span with it.
                    listeners[i] = listeners[i] with { MaglevTableSize = listeners[i].MaglevTableSize is null ? 251 : null };
                }
                else
                {
                    backends.Add(new NodeBackend { Address = $"10.1.0.{rng.Next(40, 80)}", Port = 8080 });
                }
                listeners[i] = listeners[i] with { Backends = [.. backends.DistinctBy(b => b.Address)] };
            }
        }
        return new XlbNodeConfigSpec
        {
            NodeName = "lb-1",
            Vips = [new NodeVip { Address = "192.0.2.1", Role = VipRole.Active, Shard = "s" }],
            Listeners = listeners,
        };
    }

    [Fact]
    public void Applies_between_resyncs_leave_the_maps_exactly_as_applies_that_read_them_do()
    {
        Privileged.Require();
        // Twin data planes on the same revisions: one diffs against what it knows it wrote, the
        // other reads both generations every time. Their maps must not differ in any slot.
        var capacity = DataPlaneCapacity.For(200, 80 * Maglev.DefaultSize);
        using var known = XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath, new DataPlaneOptions { Capacity = capacity });
        using var read = XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath, new DataPlaneOptions { Capacity = capacity });
        var rng = new Random(20261122);
        XlbNodeConfigSpec? spec = null;
        var written = 0;
        for (var revision = 0; revision < 60; revision++)
        {
            spec = Revision(rng, spec);
            var fast = known.Apply(spec, verify: false);
            var full = read.Apply(spec, verify: true);
            Assert.Equal(full.Generation, fast.Generation);
            // The fast path may write more (slots past what it knows it wrote are written again), never less.
            Assert.True(fast.Operations >= full.Operations, $"revision {revision}: {fast.Operations} writes, the reading apply {full.Operations}");
            written += fast.Operations;
            foreach (var gen in new byte[] { 0, 1 })
            {
                var a = known.ReadGeneration(gen, capacity.MaxBackends, 80 * Maglev.DefaultSize);
                var b = read.ReadGeneration(gen, capacity.MaxBackends, 80 * Maglev.DefaultSize);
                Assert.Equal(b.Vips, a.Vips);
                Assert.Equal(b.Services, a.Services);
                Assert.Equal(b.Backends, a.Backends);
                Assert.True(b.Ring.AsSpan().SequenceEqual(a.Ring), $"revision {revision}: ring of generation {gen} differs");
                Assert.Equal(b.Filter, a.Filter);
            }
            // And what the fast path left active is the revision: a resync finds nothing to write.
            Assert.Equal(0, known.Apply(spec, verify: false).Operations);
        }
        Assert.True(written > 1000, $"only {written} writes: the revisions hardly changed anything");
    }
}
