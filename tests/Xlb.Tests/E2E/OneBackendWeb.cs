using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;

namespace Xlb.Tests.E2E;

/// <summary>The demo's shard with one FullNAT mapping, VIP:80 to backend 1's 8080, and the agent's packet counters as `xlb status` reads them.</summary>
internal static class OneBackendWeb
{
    public const string Vip = "10.250.0.20";

    public const string Mapping = """
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: web
          namespace: demo
        spec:
          shardRef: edge
          vip: 10.250.0.20
          ports:
            - name: http
              port: 80
              targetPort: 8080
          backend:
            endpoints:
              - address: 10.201.1.2
        """;

    /// <summary>Where the agent <see cref="StartAsync"/> starts serves its health endpoints and metrics.</summary>
    public static readonly System.Net.IPEndPoint Health = new(System.Net.IPAddress.Loopback, 9473);

    /// <summary>
    /// The standalone stack over <paramref name="manifests"/> (the demo's, copied) with this
    /// mapping (or <paramref name="mapping"/>) in place of the demo's, five FullNAT ports
    /// (45000-45004) and its endpoints on <see cref="Health"/>, once the agent has applied its
    /// first revision.
    /// </summary>
    public static async Task<StandaloneStack> StartAsync(Testbed bed, string manifests, CancellationToken ct, string mapping = Mapping)
    {
        File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), mapping);
        var stack = StandaloneStack.Start(bed.Topology, manifests, "lb-1", bed.Log, "--nat-ports", "45000-45004", "--listen", Health.ToString());
        try
        {
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            return stack;
        }
        catch
        {
            stack.Dispose();
            throw;
        }
    }

    /// <summary>A packet counter by its reason (drop_nat_ports_busy, …), 0 while none was counted.</summary>
    public static ulong Counter(StandaloneStack stack, string name) =>
        JsonNode.Parse(stack.Status("--node-config", stack.NodeConfigPath, "-o", "json"))!["counters"]![name]?.GetValue<ulong>() ?? 0;
}
