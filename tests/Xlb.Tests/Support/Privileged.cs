using Xlb.Cli.Testbed;

namespace Xlb.Tests.Support;

/// <summary>
/// Gate for tests that need root, bpf() and network namespaces. Where they cannot run, the test
/// is reported as skipped with the reason, never passed; with XLB_REQUIRE_PRIVILEGED=1 (CI) it
/// fails instead, because there it must run.
/// </summary>
public static class Privileged
{
    public static void Require()
    {
        var reason = Missing();
        if (reason is null)
        {
            return;
        }
        if (Environment.GetEnvironmentVariable("XLB_REQUIRE_PRIVILEGED") == "1")
        {
            Assert.Fail($"privileged test cannot run, and XLB_REQUIRE_PRIVILEGED=1: {reason}");
        }
        Assert.Skip($"privileged test skipped: {reason}");
    }

    private static string? Missing()
    {
        if (!Netns.IsRoot)
        {
            return "not root (needs bpf() and network namespaces)";
        }
        if (!File.Exists("/usr/lib/x86_64-linux-gnu/libbpf.so.1") && !File.Exists("/lib/x86_64-linux-gnu/libbpf.so.1"))
        {
            return "libbpf.so.1 is not installed";
        }
        if (!File.Exists(Xlb.Agent.XdpDataPlane.DefaultObjectPath))
        {
            return $"the XDP object {Xlb.Agent.XdpDataPlane.DefaultObjectPath} was not built";
        }
        foreach (var tool in new[] { "/usr/sbin/ip", "/usr/sbin/ethtool" })
        {
            if (!File.Exists(tool) && !File.Exists(tool.Replace("/usr/sbin", "/sbin", StringComparison.Ordinal)))
            {
                return $"{Path.GetFileName(tool)} is not installed";
            }
        }
        return null;
    }
}
