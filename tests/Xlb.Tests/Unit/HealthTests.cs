using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.Crds.Serialization;

namespace Xlb.Tests.Unit;

public class HealthTests
{
    private static readonly HealthCheckSpec Check = new()
    {
        Type = HealthCheckType.HTTP, Port = 8080, Path = "/hz", HealthyThreshold = 2, UnhealthyThreshold = 3,
        Interval = new Duration(TimeSpan.FromSeconds(1)), Timeout = new Duration(TimeSpan.FromMilliseconds(300)),
    };

    private static XlbNodeConfigSpec Spec(params string[] backends) => new()
    {
        NodeName = "n",
        Listeners = [new Listener
        {
            Name = "ns/m/http", Vip = "192.0.2.1", Port = 80, HealthCheck = Check,
            Backends = [.. backends.Select(b => new NodeBackend { Address = b, Port = 8080 })],
        }],
    };

    [Fact]
    public void A_target_flips_only_after_the_threshold_of_consecutive_results()
    {
        var plan = HealthTracker.Plans(Spec("10.0.0.1")).Single();
        var t = new HealthTracker();
        Assert.True(t.IsHealthy(plan.Target));
        Assert.False(t.Observe(plan, false));
        Assert.False(t.Observe(plan, false));
        Assert.False(t.Observe(plan, true)); // the streak breaks
        Assert.False(t.Observe(plan, false));
        Assert.False(t.Observe(plan, false));
        Assert.True(t.Observe(plan, false));
        Assert.False(t.IsHealthy(plan.Target));
        Assert.False(t.Observe(plan, true));
        Assert.True(t.Observe(plan, true));
        Assert.True(t.IsHealthy(plan.Target));
    }

    [Fact]
    public void Unhealthy_backends_get_weight_zero_and_an_all_down_listener_fails_open()
    {
        var spec = Spec("10.0.0.1", "10.0.0.2");
        var one = HealthFilter.Apply(spec, t => t.Address != "10.0.0.2");
        Assert.Equal([1, 0], one.Effective.Listeners[0].Backends.Select(b => b.Weight));
        Assert.Equal(["10.0.0.2:8080"], one.Unhealthy);
        Assert.Empty(one.FailedOpen);
        var all = HealthFilter.Apply(spec, _ => false);
        Assert.Equal([1, 1], all.Effective.Listeners[0].Backends.Select(b => b.Weight));
        Assert.Equal(["ns/m/http"], all.FailedOpen);
    }

    [Fact]
    public void One_probe_per_distinct_target_even_when_listeners_share_backends()
    {
        var spec = Spec("10.0.0.1") with { Listeners = [.. Spec("10.0.0.1").Listeners, Spec("10.0.0.1").Listeners[0] with { Name = "ns/m/other", Port = 81 }] };
        var plan = Assert.Single(HealthTracker.Plans(spec));
        Assert.Equal("http://10.0.0.1:8080/hz", plan.Target.ToString());
    }

    [Theory]
    [InlineData("500ms", 500)]
    [InlineData("5s", 5000)]
    [InlineData("1m30s", 90000)]
    [InlineData("1.5s", 1500)]
    public void Durations_read_as_kubernetes_writes_them(string text, int ms)
    {
        Assert.True(Duration.TryParse(text, out var d));
        Assert.Equal(ms, d.Value.TotalMilliseconds);
        Assert.True(Duration.TryParse(d.ToString(), out var again));
        Assert.Equal(d, again);
    }

    [Theory]
    [InlineData("5")]
    [InlineData("5 s")]
    [InlineData("s")]
    [InlineData("5d")]
    public void Malformed_durations_are_rejected_with_an_example(string text)
    {
        var set = Manifests.Read($$$"""
            apiVersion: xlb.io/v1alpha1
            kind: PortMapping
            metadata: {name: m}
            spec: {shardRef: s, backend: {}, healthCheck: {interval: "{{{text}}}"}}
            """, "t.yaml");
        Assert.Contains("is not a duration", Assert.Single(set.Errors).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void The_planner_rejects_a_timeout_not_shorter_than_the_interval_and_checks_the_target_port()
    {
        var pool = new LoadBalancerPool { Metadata = new ObjectMeta { Name = "p" }, Spec = new LoadBalancerPoolSpec { Blocks = ["192.0.2.0/29"] } };
        var shard = new VipShard { Metadata = new ObjectMeta { Name = "s" }, Spec = new VipShardSpec { PoolRef = "p" } };
        PortMapping Pm(string name, HealthCheckSpec hc) => new()
        {
            Metadata = new ObjectMeta { Name = name, Namespace = "ns" },
            Spec = new PortMappingSpec
            {
                ShardRef = "s", Ports = [new ServicePort { Port = 80, TargetPort = 8080 }], HealthCheck = hc,
                Backend = new BackendSpec { Endpoints = [new StaticEndpoint { Address = "10.0.0.1" }] },
            },
        };
        var plan = Operator.Core.Planner.Plan(new Operator.Core.PlanInput
        {
            Pools = [pool], Shards = [shard], Nodes = [new Node { Metadata = new ObjectMeta { Name = "n" } }],
            PortMappings = [Pm("bad", new HealthCheckSpec { Timeout = new Duration(TimeSpan.FromSeconds(5)) }), Pm("good", new HealthCheckSpec())],
        });
        Assert.Contains("shorter than", Assert.Single(plan.Problems).Message, StringComparison.Ordinal);
        var listener = plan.NodeConfigs.Single().Spec.Listeners.Single();
        Assert.Null(listener.HealthCheck!.Port); // no port: each backend is checked on its own (target) port
        Assert.Equal("tcp://10.0.0.1:8080", Assert.Single(HealthTracker.Plans(plan.NodeConfigs.Single().Spec)).Target.ToString());
    }
}
