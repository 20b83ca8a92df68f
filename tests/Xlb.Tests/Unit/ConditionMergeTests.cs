using Xlb.Crds;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

/// <summary>Conditions.Merge: transition times move only with the status, and an unchanged condition is the existing object.</summary>
public class ConditionMergeTests
{
    private static readonly DateTimeOffset Then = new(2026, 11, 22, 10, 0, 0, TimeSpan.Zero);
    private static readonly DateTimeOffset Now = Then.AddMinutes(5);

    [Fact]
    public void Times_move_only_with_the_status_and_an_unchanged_condition_is_kept_as_it_is()
    {
        List<Condition> existing = Conditions.Merge(null,
        [
            Conditions.Make("Ready", true, "Ready", "10.0.0.1 served by lb-1", 3),
            Conditions.Make("Programmed", true, "Applied", "applied on lb-1", 3),
            Conditions.Make("Stalled", false, "Accepted", "", 3),
        ], Then);
        Assert.All(existing, c => Assert.Equal("2026-11-22T10:00:00Z", c.LastTransitionTime));

        var merged = Conditions.Merge(existing,
        [
            Conditions.Make("Ready", true, "Ready", "10.0.0.1 served by lb-1", 3),         // the same
            Conditions.Make("Programmed", true, "Applied", "applied on lb-2", 3),          // another message
            Conditions.Make("Stalled", true, "InvalidSpec", "port 80 listed twice", 4),    // another status
            Conditions.Make("Reconciling", false, "Applied", "", 4),                       // new
        ], Now);

        Assert.Same(existing[0], merged[0]);
        Assert.NotSame(existing[1], merged[1]);
        Assert.Equal(("applied on lb-2", "2026-11-22T10:00:00Z"), (merged[1].Message, merged[1].LastTransitionTime));
        Assert.Equal(("True", "2026-11-22T10:05:00Z"), (merged[2].Status, merged[2].LastTransitionTime));
        Assert.Equal("2026-11-22T10:05:00Z", merged[3].LastTransitionTime);
        // A generation alone is a change too.
        var regenerated = Conditions.Merge(existing, [Conditions.Make("Ready", true, "Ready", "10.0.0.1 served by lb-1", 4)], Now);
        Assert.NotSame(existing[0], regenerated[0]);
        Assert.Equal((4L, "2026-11-22T10:00:00Z"), (regenerated[0].ObservedGeneration!.Value, regenerated[0].LastTransitionTime));
    }
}
