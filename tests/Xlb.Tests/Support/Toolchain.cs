namespace Xlb.Tests.Support;

/// <summary>Build tools a test needs: skipped with the reason locally, a failure in CI.</summary>
public static class Toolchain
{
    public static void Missing(string reason)
    {
        if (Environment.GetEnvironmentVariable("XLB_REQUIRE_PRIVILEGED") == "1")
        {
            Assert.Fail($"{reason}, and XLB_REQUIRE_PRIVILEGED=1");
        }
        Assert.Skip(reason);
    }
}
