using System.Net;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// DNAT and L2 DSR with real TCP connections: manifests → xlb operator → xlb agent → XDP in the
/// LB namespace, clients and backends in their own namespaces.
/// </summary>
public sealed class NatModeEndToEndTests(ITestOutputHelper output)
{
    private const string DnatVip = "10.250.0.20";
    private const string DsrVip = "10.250.0.21";

    private const string Mappings = """
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: web-dnat
          namespace: demo
        spec:
          shardRef: edge
          vip: 10.250.0.20
          ports:
            - name: http
              port: 80
              targetPort: 8080
          nat:
            mode: DNAT
          backend:
            endpoints:
              - address: 10.201.1.2
              - address: 10.201.2.2
        ---
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: web-dsr
          namespace: demo
        spec:
          shardRef: edge
          vip: 10.250.0.21
          ports:
            - name: http
              port: 8080
          nat:
            mode: DSR
            dsrEncapsulation: L2
          backend:
            endpoints:
              - address: 10.201.1.2
              - address: 10.201.2.2
        """;

    /// <summary>
    /// With a new-flow cap of one per CPU per second, almost every DSR connection is served by the
    /// Maglev hash alone, without a flow-table entry, and still completes; DNAT keeps state as ever.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Dnat_backends_see_the_client_and_dsr_backends_answer_from_the_vip(bool capped)
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("m", backends: 2);
        var topology = bed.Topology;
        var manifests = Examples.CopyToTemp("demo");
        var dsrServers = new List<HttpBackend>();
        try
        {
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Mappings);
            // DSR backends hold the VIP on their loopback and serve on it.
            for (var i = 1; i <= 2; i++)
            {
                Netns.Ip(topology.Backends[i - 1], "addr", "add", DsrVip + "/32", "dev", "lo");
                dsrServers.Add(HttpBackend.Start(topology.Backends[i - 1], $"dsr-{i}", IPAddress.Parse(DsrVip), 8080));
            }
            // No static neighbours on the LB: DNAT hands its first rewritten packet to the kernel,
            // which resolves the backend; L2 DSR cannot (its packet is to the VIP), so the agent
            // has the kernel resolve its backends.
            for (var i = 1; i <= 2; i++)
            {
                Netns.Ip(topology.Lb, "neigh", "del", LbTopology.BackendAddress(i), "dev", LbTopology.BackendIfOnLb(i));
            }
            using var stack = StandaloneStack.Start(topology, manifests, "lb-1", bed.Log, capped ? ["--new-flow-cap", "1"] : []);
            var config = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            Assert.Equal(2, config.Spec.Listeners.Count);

            var client = IPAddress.Parse(LbTopology.ClientAddress);
            // DSR first: nothing has made the kernel resolve the backends but the agent.
            var dsr = await HttpProbe.RunAsync(topology.Client, new IPEndPoint(IPAddress.Parse(DsrVip), 8080), count: 60, parallel: 4, ct);
            Assert.True(dsr.Failed == 0, $"DSR: {dsr.Failed} of 60 failed: {string.Join("; ", dsr.Errors)}");
            Assert.Equal(["dsr-1", "dsr-2"], dsr.ByBackend.Keys.Order(StringComparer.Ordinal));
            Assert.All(dsrServers, s => Assert.Equal([client], s.Peers));

            var dnat = await HttpProbe.RunAsync(topology.Client, new IPEndPoint(IPAddress.Parse(DnatVip), 80), count: 60, parallel: 4, ct);
            Assert.True(dnat.Failed == 0, $"DNAT: {dnat.Failed} of 60 failed: {string.Join("; ", dnat.Errors)}");
            Assert.Equal(["backend-1", "backend-2"], dnat.ByBackend.Keys.Order(StringComparer.Ordinal));
            // The client's own address reached the backends: no source translation.
            Assert.All(new[] { 1, 2 }, i => Assert.Equal([client], bed.Backend(i)!.Peers));

            // Every DSR connection's client packets (SYN, ACK, request, FIN...), bar those of the
            // few flows the cap let in, went without a flow; the DNAT ones were all tracked.
            var counters = JsonNode.Parse(stack.Status("--node-config", stack.NodeConfigPath, "-o", "json"))!["counters"]!;
            var untracked = counters["fwd_untracked"]?.GetValue<ulong>() ?? 0;
            Assert.True(capped ? untracked >= 60 * 3 : untracked == 0, $"{untracked} packets forwarded without a flow");
            Assert.True(counters["fwd_new_flow"]!.GetValue<ulong>() >= 60, "fewer tracked new flows than DNAT connections");
        }
        finally
        {
            foreach (var s in dsrServers)
            {
                await s.DisposeAsync();
            }
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }
}
