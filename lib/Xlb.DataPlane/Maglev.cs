namespace Xlb.DataPlane;

/// <summary>One backend as Maglev sees it: a stable identity and a relative weight.</summary>
public readonly record struct MaglevBackend(string Key, int Weight);

/// <summary>
/// Maglev consistent hashing (Eisenbud et al., NSDI 2016): each backend walks its own
/// permutation of the table and claims the next free slot on its turn, so every backend gets an
/// almost equal share, and adding or removing one moves few slots. Weights give a backend turns
/// in proportion to its weight. Deterministic: every node builds the same table for the same set.
/// </summary>
public static class Maglev
{
    /// <summary>
    /// The table size when a service names none. It must not follow the backend count: a table
    /// that changes size reshuffles every flow, which is what Maglev exists to avoid.
    /// 1021 slots keep shares within a few percent up to a few dozen backends.
    /// </summary>
    public const int DefaultSize = 1021;

    /// <summary>Builds a table of <paramref name="size"/> slots holding indexes into <paramref name="backends"/>.</summary>
    /// <returns>The table; empty when no backend has a positive weight.</returns>
    public static int[] Build(IReadOnlyList<MaglevBackend> backends, int size)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 2);
        // Turns go in key order, so the table depends on the set of backends, not on list order.
        var live = Enumerable.Range(0, backends.Count)
            .Where(i => backends[i].Weight > 0)
            .OrderBy(i => backends[i].Key, StringComparer.Ordinal)
            .ToArray();
        if (live.Length == 0)
        {
            return [];
        }
        var offset = new long[live.Length];
        var skip = new long[live.Length];
        var next = new long[live.Length];
        var credit = new long[live.Length];
        for (var i = 0; i < live.Length; i++)
        {
            var key = backends[live[i]].Key;
            offset[i] = (long)(Fnv1a(key, 0xcbf29ce484222325UL) % (ulong)size);
            skip[i] = (long)(Fnv1a(key, 0x84222325cbf29ce4UL) % (ulong)(size - 1)) + 1;
            // A walk whose step shares a factor with the size misses slots, and the fill would
            // never end: sizes are prime, so that every step is coprime to them.
            if (Gcd(skip[i], size) != 1)
            {
                throw new ArgumentOutOfRangeException(nameof(size), size, "a Maglev table size must be prime");
            }
        }
        var maxWeight = live.Max(i => backends[i].Weight);
        var table = new int[size];
        Array.Fill(table, -1);
        var filled = 0;
        while (true)
        {
            for (var i = 0; i < live.Length; i++)
            {
                credit[i] += backends[live[i]].Weight;
                if (credit[i] < maxWeight)
                {
                    continue;
                }
                credit[i] -= maxWeight;
                long slot;
                do
                {
                    slot = (offset[i] + next[i] * skip[i]) % size;
                    next[i]++;
                }
                while (table[slot] >= 0);
                table[slot] = live[i];
                if (++filled == size)
                {
                    return table;
                }
            }
        }
    }

    private static long Gcd(long a, long b)
    {
        while (b != 0)
        {
            (a, b) = (b, a % b);
        }
        return a;
    }

    /// <summary>FNV-1a 64 over UTF-16 code units with a chosen basis: stable across processes and machines.</summary>
    private static ulong Fnv1a(string s, ulong basis)
    {
        var h = basis;
        foreach (var ch in s)
        {
            h ^= ch;
            h *= 0x100000001b3UL;
        }
        // FNV's low bits mix poorly for similar keys; finish with a 64-bit avalanche.
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdUL;
        h ^= h >> 33;
        return h;
    }
}
