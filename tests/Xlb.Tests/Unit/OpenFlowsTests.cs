using Xlb.Agent.Core;
using Xlb.DataPlane;

namespace Xlb.Tests.Unit;

public class OpenFlowsTests
{
    private static XlbFlow Flow(uint slot, byte state = XlbAbi.FlowEstablished, byte flags = XlbAbi.FlowCounted) =>
        new() { NhSlot = slot, State = state, Flags = flags };

    [Fact]
    public void Counted_flows_that_have_not_closed_count_for_their_backend_index_in_any_generation()
    {
        const int slots = 8;
        var counts = OpenFlows.Count(
        [
            Flow(1), Flow(1, XlbAbi.FlowNew), Flow(slots + 1), // generation 1's slot of backend 1
            Flow(2, XlbAbi.FlowClosing), // closed: no longer counts
            Flow(3, flags: 0), // another algorithm's flow
            Flow(5),
        ], slots);
        Assert.Equal([0, 3, 0, 0, 0, 1, 0, 0], counts);
    }

    [Fact]
    public void Corrections_are_the_differences_of_the_counters_that_differ()
    {
        Assert.Equal([(1, -2L), (3, 4L)], OpenFlows.Corrections([0, 5, 1, 0], [0, 3, 1, 4]));
        Assert.Empty(OpenFlows.Corrections([1, 2], [1, 2]));
    }
}
