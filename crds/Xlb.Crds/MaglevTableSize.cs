namespace Xlb.Crds;

/// <summary>What scheduling.maglevTableSize may be: a prime, so that every backend's walk of the table reaches every slot.</summary>
public static class MaglevTableSize
{
    public const int Min = 251;

    /// <summary>65537, the prime just past 2^16.</summary>
    public const int Max = 65537;

    /// <summary>Why <paramref name="size"/> cannot be a table size, naming the primes around it; null when it can.</summary>
    public static string? Problem(int size)
    {
        if (size is < Min or > Max)
        {
            return $"{size} is outside {Min}-{Max}";
        }
        if (IsPrime(size))
        {
            return null;
        }
        var below = size - 1;
        while (!IsPrime(below))
        {
            below--;
        }
        var above = size + 1;
        while (!IsPrime(above))
        {
            above++;
        }
        return $"{size} is not prime (every backend's walk of the table must reach every slot): {below} and {above} are";
    }

    private static bool IsPrime(int n)
    {
        for (var d = 2; d * d <= n; d++)
        {
            if (n % d == 0)
            {
                return false;
            }
        }
        return n >= 2;
    }
}
