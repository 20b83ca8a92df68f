using System.Net;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// A FullNAT UDP flow holds its source port toward its backend until the UDP idle timeout: each
/// DNS-like query from a new client port is a flow of its own, so the timeout bounds how many new
/// flows a second a backend takes (the range over the timeout). The agent's `--udp-timeout` sets
/// it for the node, a mapping's `idleTimeout` for the mapping: with two NAT ports and 2 s, two
/// queries are answered, a third is refused, and two seconds later two more are answered. Real UDP
/// sockets at both ends.
/// </summary>
public sealed class UdpTimeoutEndToEndTests(ITestOutputHelper output)
{
    private const string Vip = "10.250.0.20";

    private const string Mapping = """
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: dns
          namespace: demo
        spec:
          shardRef: edge
          vip: 10.250.0.20
          ports:
            - name: dns
              port: 53
              protocol: UDP
              targetPort: 5353
          backend:
            endpoints:
              - address: 10.201.1.2
        """;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_shorter_udp_timeout_frees_fullnat_ports_of_one_off_datagrams_sooner(bool mappingSetsIt)
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("ut", backends: 1);
        await using var echo = UdpEcho.Start(bed.Topology.Backends[0], "dns-1", new IPEndPoint(IPAddress.Parse(LbTopology.BackendAddress(1)), 5353));
        var manifests = Examples.CopyToTemp("demo");
        try
        {
            File.WriteAllText(Path.Combine(manifests, "30-dns.yaml"), mappingSetsIt ? Mapping + "\n  idleTimeout: 2s\n" : Mapping);
            using var stack = StandaloneStack.Start(bed.Topology, manifests, "lb-1", bed.Log,
                mappingSetsIt ? ["--nat-ports", "45000-45001"] : ["--nat-ports", "45000-45001", "--udp-timeout", "2"]);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            var vip = new IPEndPoint(IPAddress.Parse(Vip), 53);
            async Task<int> Answered(int queries) =>
                (await UdpEcho.ProbeAsync(bed.Topology.Client, vip, queries, TimeSpan.FromSeconds(1), ct)).ByBackend.GetValueOrDefault("dns-1");

            // Each query from a new client port takes one of the two ports; the third finds none.
            Assert.Equal(2, await Answered(2));
            Assert.Equal(0, await Answered(1));
            // Two idle seconds later both ports are free again (the default, 300 s, would hold them).
            await Task.Delay(2500, ct);
            Assert.Equal(2, await Answered(2));
            output.WriteLine($"answered by the backend: {echo.Answered}");
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }
}
