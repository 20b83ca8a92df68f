using System.Globalization;
using System.Net;
using Xlb.Cli.Testbed;

namespace Xlb.Cli;

/// <summary>
/// The one-machine demo: a client, an LB node and three HTTP backends in network namespaces;
/// the standalone operator and agent on examples/demo; real requests through XDP to the VIP.
/// Everything it creates is removed, on success, failure and Ctrl-C alike.
/// </summary>
public static class Demo
{
    public const string NodeName = "lb-1";

    public static async Task<int> RunAsync(string manifestDir, int requests, TextWriter output, CancellationToken ct)
    {
        if (!Netns.IsRoot)
        {
            await output.WriteLineAsync("xlb demo needs root: it creates network namespaces and attaches XDP programs.");
            return 2;
        }
        var ok = false;
        output.WriteLine($"XLB demo: {LbTopology.Describe(3)}; manifests from {manifestDir}");
        await using (var bed = Testbed.Testbed.Create("d", backends: 3))
        {
            var topology = bed.Topology;
            output.WriteLine($"namespaces: {topology.Client}, {topology.Lb}, {string.Join(", ", topology.Backends)}");
            using var stack = StandaloneStack.Start(topology, manifestDir, NodeName, output);
            var config = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            var listener = config.Spec.Listeners.FirstOrDefault()
                ?? throw new InvalidOperationException($"node {NodeName} got no listener: see {stack.StateDir}/status.yaml");
            var vip = new IPEndPoint(IPAddress.Parse(listener.Vip), listener.Port);
            output.WriteLine($"agent applied revision {config.Spec.Revision}: {listener.Name} {vip} -> {string.Join(", ", listener.Backends.Select(b => $"{b.Address}:{b.Port}"))}");
            output.WriteLine($"sending {requests} HTTP requests from {topology.Client} to {vip}, one TCP connection each ...");

            var result = await HttpProbe.RunAsync(topology.Client, vip, requests, parallel: 8, ct);
            output.WriteLine();
            output.WriteLine("backend      answered   share");
            var names = Enumerable.Range(1, 3).Select(i => bed.Backend(i)!.Name).ToList();
            foreach (var name in names)
            {
                var n = result.ByBackend.GetValueOrDefault(name);
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name,-12} {n,8}   {100.0 * n / Math.Max(1, requests),5:F1}%"));
            }
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{"failed",-12} {result.Failed,8}"));
            foreach (var e in result.Errors)
            {
                output.WriteLine($"  error: {e}");
            }
            ok = result.Failed == 0 && names.All(n => result.ByBackend.GetValueOrDefault(n) > 0);
            output.WriteLine(ok
                ? $"OK: all {requests} requests answered through XDP, by all 3 backends."
                : "FAILED: not every request was answered by the backends.");
        }
        output.WriteLine("cleaned up: namespaces, links and processes removed.");
        return ok ? 0 : 1;
    }
}
