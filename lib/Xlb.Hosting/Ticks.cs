namespace Xlb.Hosting;

public static class Ticks
{
    /// <summary>Waits for the next tick; false once <paramref name="ct"/> is cancelled (a normal stop, not an error).</summary>
    public static async Task<bool> NextAsync(PeriodicTimer timer, CancellationToken ct)
    {
        try
        {
            return await timer.WaitForNextTickAsync(ct);
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
