using System.Net;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// FullNAT source addresses end to end (spec.nat.sourceAddresses): with five NAT ports, the
/// backend holds every connection it closed first in TIME_WAIT, so from the VIP alone a sixth gets
/// no port (NatPortReuseEndToEndTests). With two source addresses beside the VIP the same backend
/// takes nine such connections, from those addresses, and its replies to them come back.
/// </summary>
public sealed class SourceAddressEndToEndTests(ITestOutputHelper output)
{
    private static readonly IPAddress[] Sources = [IPAddress.Parse("10.250.0.5"), IPAddress.Parse("10.250.0.6")];

    [Fact]
    public async Task Connections_past_the_vips_ports_take_the_source_addresses_and_are_answered()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("sa", backends: 1);
        var manifests = Examples.CopyToTemp("demo");
        try
        {
            // The demo pool reserves 10.250.0.1-9: addresses IPAM never hands out, on the VIPs' segment.
            using var stack = await OneBackendWeb.StartAsync(bed, manifests, ct, OneBackendWeb.Mapping + """

                  nat:
                    sourceAddresses: [10.250.0.5, 10.250.0.6]
                """);
            var vip = new IPEndPoint(IPAddress.Parse(OneBackendWeb.Vip), 80);
            for (var i = 0; i < 9; i++)
            {
                Assert.Equal("backend-1", await HttpProbe.GetAsync(bed.Topology.Client, vip, TimeSpan.FromSeconds(10), ct));
            }
            Assert.Equal(9, bed.Backend(1)!.Served);
            // Nine connections in TIME_WAIT on the backend: more than the VIP's five ports, so from
            // more than the VIP, and from nothing but the VIP and its source addresses.
            var peers = bed.Backend(1)!.Peers;
            output.WriteLine($"the backend saw connections from {string.Join(", ", peers)}");
            Assert.True(peers.Count >= 2, string.Join(", ", peers));
            Assert.Subset(new HashSet<IPAddress>([vip.Address, .. Sources]), peers.ToHashSet());
            // xlb status counts the ports held toward the backend over all its sources.
            var backend = JsonNode.Parse(stack.Status("--node-config", stack.NodeConfigPath, "-o", "json"))!["services"]![0]!["backends"]![0]!;
            Assert.Equal(9, backend["natPorts"]!.GetValue<int>());
            Assert.Equal(0ul, OneBackendWeb.Counter(stack, "drop_nat_ports_busy"));
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }
}
