using System.Net;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// ClientIP affinity with real HTTP connections: manifests → xlb operator → xlb agent → XDP in the
/// LB namespace. Every connection of the client lands on one backend; the same mapping without
/// affinity spreads them.
/// </summary>
public sealed class AffinityEndToEndTests(ITestOutputHelper output)
{
    private static string Mappings(string affinity) => $"""
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: web-sticky
          namespace: demo
        spec:
          shardRef: edge
          vip: 10.250.0.23
          ports:
            - name: http
              port: 80
              targetPort: 8080
          affinity:
            mode: {affinity}
            timeout: 10m
          backend:
            endpoints:
              - address: 10.201.1.2
              - address: 10.201.2.2
        """;

    [Fact]
    public async Task Every_connection_of_a_client_goes_to_one_backend()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("af", backends: 2);
        var manifests = Examples.CopyToTemp("demo");
        try
        {
            var target = new IPEndPoint(IPAddress.Parse("10.250.0.23"), 80);
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Mappings("None"));
            using (var stack = StandaloneStack.Start(bed.Topology, manifests, "lb-1", bed.Log, []))
            {
                await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
                var spread = await HttpProbe.RunAsync(bed.Topology.Client, target, count: 40, parallel: 4, ct);
                Assert.True(spread.Failed == 0, string.Join("; ", spread.Errors));
                Assert.Equal(["backend-1", "backend-2"], spread.ByBackend.Keys.Order(StringComparer.Ordinal));
            }
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Mappings("ClientIP"));
            using (var stack = StandaloneStack.Start(bed.Topology, manifests, "lb-1", bed.Log, []))
            {
                await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
                // The first connection makes the client's entry (two racing first connections could each make one).
                var home = await HttpProbe.GetAsync(bed.Topology.Client, target, TimeSpan.FromSeconds(5), ct);
                var sticky = await HttpProbe.RunAsync(bed.Topology.Client, target, count: 40, parallel: 4, ct);
                Assert.True(sticky.Failed == 0, string.Join("; ", sticky.Errors));
                Assert.Equal(KeyValuePair.Create(home, 40), Assert.Single(sticky.ByBackend));
            }
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }
}
