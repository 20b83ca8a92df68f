using System.Text.Json;
using Xlb.Crds;
using Xlb.Kube;
using Xlb.Operator;

namespace Xlb.Tests.Unit;

/// <summary>Which agent Lease renewals may pass without a plan: only those that keep a live agent alive.</summary>
public class RoutineRenewalTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 22, 12, 0, 0, TimeSpan.Zero);

    // Detection windows: 1 s × 3 and 2 s × 3; the shorter one decides.
    private static readonly VipShard[] Shards =
    [
        new() { Metadata = new ObjectMeta { Name = "fast" }, Spec = new VipShardSpec { PoolRef = "p", Failover = new Failover { Detection = new FailureDetection { Interval = new Duration(TimeSpan.FromSeconds(1)), Multiplier = 3 } } } },
        new() { Metadata = new ObjectMeta { Name = "slow" }, Spec = new VipShardSpec { PoolRef = "p", Failover = new Failover { Detection = new FailureDetection { Interval = new Duration(TimeSpan.FromSeconds(2)), Multiplier = 3 } } } },
    ];

    private static KubeObject Lease(DateTimeOffset? renewed, string node = "lb-1") => new()
    {
        Metadata = new ObjectMeta { Name = $"xlb-agent-{node}", Namespace = "xlb-system", Labels = new() { [ClusterOperator.AgentNodeLabel] = node } },
        Fields = new()
        {
            ["spec"] = JsonSerializer.SerializeToElement(renewed is null ? new Dictionary<string, string>() : new Dictionary<string, string> { ["renewTime"] = MicroTime.Format(renewed.Value) }),
        },
    };

    private static InformerEvent<KubeObject> Renewal(KubeObject before, KubeObject after, string type = "MODIFIED", bool relist = false) => new(type, after, before, relist);

    [Fact]
    public void A_renewal_after_a_fresh_one_changes_nothing_a_plan_reads()
    {
        Assert.True(ClusterOperator.RoutineRenewal(Renewal(Lease(Now.AddSeconds(-2)), Lease(Now)), Shards, Now));
    }

    [Theory]
    [InlineData(-7, "the previous renewal is older than every detection window: the agent may have been judged dead")]
    [InlineData(-3.5, "3.5 s is within the slow shard's 6 s but not the fast shard's 3 s")]
    public void A_renewal_after_a_stale_one_plans(double previousSeconds, string why)
    {
        Assert.False(ClusterOperator.RoutineRenewal(Renewal(Lease(Now.AddSeconds(previousSeconds)), Lease(Now)), Shards, Now), why);
    }

    [Fact]
    public void Anything_else_plans()
    {
        var fresh = Lease(Now.AddSeconds(-1));
        Assert.False(ClusterOperator.RoutineRenewal(Renewal(fresh, Lease(Now, node: "lb-2")), Shards, Now)); // relabelled to another node
        Assert.False(ClusterOperator.RoutineRenewal(Renewal(fresh, Lease(Now.AddSeconds(-2))), Shards, Now)); // renewTime went back
        Assert.False(ClusterOperator.RoutineRenewal(Renewal(fresh, Lease(null)), Shards, Now)); // renewTime gone
        Assert.False(ClusterOperator.RoutineRenewal(Renewal(fresh, Lease(Now), relist: true), Shards, Now));
        Assert.False(ClusterOperator.RoutineRenewal(new InformerEvent<KubeObject>("ADDED", Lease(Now)), Shards, Now));
        Assert.False(ClusterOperator.RoutineRenewal(Renewal(fresh, Lease(Now)), [], Now)); // no shard: nothing to judge by
    }
}
