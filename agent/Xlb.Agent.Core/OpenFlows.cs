using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>
/// LeastConn's open-flow counts (xlb_backend_conns, by backend index) as the flow tables say they
/// should be: the flows marked counted (<see cref="XlbAbi.FlowCounted"/>) that have not closed.
/// The program keeps the counts as flows open and close; a flow that leaves the tables without a
/// packet (swept idle, evicted, ended by a drain, cleared) is not taken away there, and the agent's
/// recount corrects that (XdpDataPlane.RecountConnections). Pure.
/// </summary>
public static class OpenFlows
{
    /// <summary>The counted, unclosed flows of each backend index (an array of <paramref name="backendSlots"/>, a power of two).</summary>
    public static long[] Count(IEnumerable<XlbFlow> flows, int backendSlots)
    {
        var counts = new long[backendSlots];
        foreach (var f in flows)
        {
            if ((f.Flags & XlbAbi.FlowCounted) != 0 && f.State != XlbAbi.FlowClosing)
            {
                counts[f.NhSlot & (uint)(backendSlots - 1)]++;
            }
        }
        return counts;
    }

    /// <summary>
    /// What to add to each counter, read as <paramref name="before"/> just before the tables were
    /// read, to make it what the tables hold: the counters that differ, with their deltas. Adding
    /// (not writing) keeps what the program added and took away meanwhile; what the tables' read
    /// saw of that is counted twice until the next recount.
    /// </summary>
    public static List<(int Index, long Delta)> Corrections(ReadOnlySpan<long> before, ReadOnlySpan<long> counted)
    {
        var corrections = new List<(int, long)>();
        for (var i = 0; i < Math.Min(before.Length, counted.Length); i++)
        {
            if (before[i] != counted[i])
            {
                corrections.Add((i, counted[i] - before[i]));
            }
        }
        return corrections;
    }
}
