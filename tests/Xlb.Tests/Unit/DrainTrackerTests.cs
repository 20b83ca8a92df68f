using System.Net;
using Xlb.Agent.Core;
using Xlb.Crds;

namespace Xlb.Tests.Unit;

/// <summary>Drain timeouts: when a draining backend leaves its listener, and which flows end.</summary>
public class DrainTrackerTests
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 22, 10, 0, 0, TimeSpan.Zero);

    private static NodeBackend B(int i, bool draining = false) => new() { Address = $"10.1.0.{i}", Port = 8080, Draining = draining };

    private static Listener L(string name, int port, int timeoutSeconds, params NodeBackend[] backends) => new()
    {
        Name = name, Vip = "10.250.0.10", Port = port, DrainTimeout = new Duration(TimeSpan.FromSeconds(timeoutSeconds)), Backends = [.. backends],
    };

    private static XlbNodeConfigSpec Spec(params Listener[] listeners) => new() { NodeName = "lb-1", Listeners = [.. listeners] };

    private static IEnumerable<string> Addresses(XlbNodeConfigSpec spec, string listener) => spec.Listeners.Single(l => l.Name == listener).Backends.Select(b => b.Address);

    [Fact]
    public void A_draining_backend_stays_until_its_listeners_timeout_then_leaves_and_is_reported_once()
    {
        var drains = new DrainTracker();
        var spec = Spec(L("a/web/http", 80, 30, B(1), B(2, draining: true)), L("a/api/http", 81, 10, B(2, draining: true), B(3)));
        var first = drains.Apply(spec, T0);
        Assert.Same(spec, first.Effective);
        Assert.Empty(first.Drained);
        Assert.Equal(T0.AddSeconds(10), first.NextExpiry);

        // Each listener has its own timeout: the backend leaves the API listener first.
        var later = drains.Apply(spec, T0.AddSeconds(10));
        Assert.Equal(["10.1.0.1", "10.1.0.2"], Addresses(later.Effective, "a/web/http"));
        Assert.Equal(["10.1.0.3"], Addresses(later.Effective, "a/api/http"));
        var drained = Assert.Single(later.Drained);
        Assert.Equal(new DrainedBackend("a/api/http", IPAddress.Parse("10.250.0.10"), 81, L4Protocol.TCP, IPAddress.Parse("10.1.0.2"), 8080), drained);
        Assert.Equal(T0.AddSeconds(30), later.NextExpiry);

        var last = drains.Apply(spec, T0.AddSeconds(31));
        Assert.Equal(["10.1.0.1"], Addresses(last.Effective, "a/web/http"));
        Assert.Equal(["10.1.0.3"], Addresses(last.Effective, "a/api/http"));
        Assert.Equal("a/web/http", Assert.Single(last.Drained).Listener);
        Assert.Null(last.NextExpiry);

        // Over is over: no second report, and the backends stay out while the config still lists them draining.
        var again = drains.Apply(spec, T0.AddSeconds(60));
        Assert.Empty(again.Drained);
        Assert.Equal(["10.1.0.1"], Addresses(again.Effective, "a/web/http"));
        Assert.Equal(2, drains.Count);
    }

    [Fact]
    public void A_backend_active_again_or_gone_has_its_clock_forgotten()
    {
        var drains = new DrainTracker();
        var draining = Spec(L("a/web/http", 80, 30, B(1), B(2, draining: true)));
        drains.Apply(draining, T0);
        // Back to active at 20 s: draining again at 25 s starts a new clock.
        drains.Apply(Spec(L("a/web/http", 80, 30, B(1), B(2))), T0.AddSeconds(20));
        Assert.Equal(0, drains.Count);
        Assert.Equal(T0.AddSeconds(55), drains.Apply(draining, T0.AddSeconds(25)).NextExpiry);
        Assert.Empty(drains.Apply(draining, T0.AddSeconds(40)).Drained);
        // Gone, then back draining: a new clock too.
        drains.Apply(Spec(L("a/web/http", 80, 30, B(1))), T0.AddSeconds(41));
        var back = drains.Apply(draining, T0.AddSeconds(50));
        Assert.Equal(T0.AddSeconds(80), back.NextExpiry);
        Assert.Equal(["10.1.0.1", "10.1.0.2"], Addresses(back.Effective, "a/web/http"));
    }

    [Fact]
    public void A_zero_timeout_ends_a_drain_at_once()
    {
        var drains = new DrainTracker();
        var result = drains.Apply(Spec(L("a/web/http", 80, 0, B(1, draining: true), B(2), B(3, draining: true))), T0);
        Assert.Equal(["10.1.0.2"], Addresses(result.Effective, "a/web/http"));
        Assert.Equal(["10.1.0.1", "10.1.0.3"], result.Drained.Select(d => d.Backend.ToString()));
        Assert.Null(result.NextExpiry);
    }
}
