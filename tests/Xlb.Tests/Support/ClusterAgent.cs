using System.Diagnostics;
using System.Net;
using Xlb.Cli.Testbed;
using Xlb.Tests.ControlPlane;

namespace Xlb.Tests.Support;

/// <summary>An agent in cluster mode as a process inside a namespace, reaching the API server double through a relay there.</summary>
public static class ClusterAgent
{
    /// <summary>A kubeconfig (a temporary file) that points at <paramref name="server"/> without credentials.</summary>
    public static async Task<string> WriteKubeconfigAsync(IPEndPoint server, CancellationToken ct)
    {
        var path = Path.Combine(Path.GetTempPath(), $"xlb-k-{Guid.NewGuid():N}.kubeconfig");
        await File.WriteAllTextAsync(path, $$$"""
            {"apiVersion": "v1", "kind": "Config", "current-context": "t",
             "clusters": [{"name": "double", "cluster": {"server": "http://{{{server}}}"}}],
             "users": [{"name": "t", "user": {}}],
             "contexts": [{"name": "t", "context": {"cluster": "double", "user": "t"}}]}
            """, ct);
        return path;
    }

    /// <summary>`xlb agent --node NODE` in namespace <paramref name="ns"/>, attached to <paramref name="interfaces"/>, its maps under <paramref name="instance"/>; its output goes to <paramref name="log"/> tagged with the node.</summary>
    public static Process Start(string node, string ns, string instance, IEnumerable<string> interfaces, string kubeconfig, TextWriter log, params string[] extraArgs)
    {
        var self = StandaloneStack.Self();
        // XLB_TEST_AGENT_LOG_LEVEL=Debug: the agents log what they would not otherwise (e.g. each flow-sync walk).
        var level = Environment.GetEnvironmentVariable("XLB_TEST_AGENT_LOG_LEVEL");
        return Netns.Start("ip", ["netns", "exec", ns, .. self, "agent", "--node", node, "--kubeconfig", kubeconfig,
            "--lease-namespace", OperatorHarness.LeaseNs, "--bpffs", StandaloneStack.TestBpffs, "--instance", instance,
            .. interfaces.SelectMany(i => new[] { "--interface", i }), .. extraArgs], log, node,
            level is { Length: > 0 } ? new Dictionary<string, string> { ["XLB_LOG_LEVEL"] = level } : null);
    }
}
