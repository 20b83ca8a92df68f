namespace Xlb.Tests.Support;

/// <summary>Waits for a condition that other threads make true; fails with what was expected when it does not come.</summary>
public static class Eventually
{
    public static async Task TrueAsync(Func<bool> condition, string what, int seconds = 10)
    {
        for (var i = 0; i < seconds * 20 && !condition(); i++)
        {
            await Task.Delay(50, TestContext.Current.CancellationToken);
        }
        Assert.True(condition(), what);
    }
}
