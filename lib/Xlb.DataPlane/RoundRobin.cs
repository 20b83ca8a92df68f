namespace Xlb.DataPlane;

/// <summary>
/// The ring of a round-robin service: one cycle of smooth weighted round robin. Each turn every
/// backend gains its weight in credit and the richest one is picked and pays the total, so a
/// backend of weight 3 beside one of weight 1 comes as A A B A, not A A A B. The data plane walks
/// the cycle with a per-CPU cursor.
/// </summary>
public static class RoundRobin
{
    /// <summary>Indexes into <paramref name="weights"/>, one cycle long (the weights divided by their common divisor).</summary>
    /// <returns>The cycle; empty when no weight is positive.</returns>
    public static int[] Cycle(IReadOnlyList<int> weights)
    {
        var live = Enumerable.Range(0, weights.Count).Where(i => weights[i] > 0).ToArray();
        if (live.Length == 0)
        {
            return [];
        }
        var divisor = live.Aggregate(0, (g, i) => Gcd(g, weights[i]));
        var w = live.Select(i => (long)(weights[i] / divisor)).ToArray();
        var total = w.Sum();
        var credit = new long[live.Length];
        var cycle = new int[total];
        for (var turn = 0; turn < total; turn++)
        {
            var best = 0;
            for (var i = 0; i < live.Length; i++)
            {
                credit[i] += w[i];
                if (credit[i] > credit[best])
                {
                    best = i;
                }
            }
            credit[best] -= total;
            cycle[turn] = live[best];
        }
        return cycle;
    }

    private static int Gcd(int a, int b) => b == 0 ? a : Gcd(b, a % b);
}
