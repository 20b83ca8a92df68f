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
    public const int BackendPort = 8080;

    public static async Task<int> RunAsync(string manifestDir, int requests, TextWriter output, CancellationToken ct)
    {
        if (!Netns.IsRoot)
        {
            await output.WriteLineAsync("xlb demo needs root: it creates network namespaces and attaches XDP programs.");
            return 2;
        }
        output.WriteLine($"XLB demo: {LbTopology.Describe(3)}; manifests from {manifestDir}");
        var topology = LbTopology.Create(LbTopology.NewPrefix("d"), backends: 3);
        var backends = new List<HttpBackend>();
        try
        {
            for (var i = 1; i <= 3; i++)
            {
                backends.Add(HttpBackend.Start(topology.Backends[i - 1], $"backend-{i}", IPAddress.Parse(LbTopology.BackendAddress(i)), BackendPort));
            }
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
            foreach (var b in backends)
            {
                var n = result.ByBackend.GetValueOrDefault(b.Name);
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{b.Name,-12} {n,8}   {100.0 * n / Math.Max(1, requests),5:F1}%"));
            }
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{"failed",-12} {result.Failed,8}"));
            foreach (var e in result.Errors)
            {
                output.WriteLine($"  error: {e}");
            }
            var allAnswered = backends.All(b => result.ByBackend.GetValueOrDefault(b.Name) > 0);
            output.WriteLine(result.Failed == 0 && allAnswered
                ? $"OK: all {requests} requests answered through XDP, by all 3 backends."
                : "FAILED: not every request was answered by the backends.");
            return result.Failed == 0 && allAnswered ? 0 : 1;
        }
        finally
        {
            foreach (var b in backends)
            {
                await b.DisposeAsync();
            }
            topology.Dispose();
            output.WriteLine("cleaned up: namespaces, links and processes removed.");
        }
    }
}
