using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// Path MTU discovery through the balancer, with the client's own kernel: a full-size datagram to
/// an IPIP DSR service (IPIP adds 20 bytes to a 1,500-byte link) comes back as ICMP
/// "fragmentation needed", and the client's socket learns the path's MTU from it.
/// </summary>
public sealed class PathMtuEndToEndTests(ITestOutputHelper output)
{
    private const string Vip = "10.250.0.22";
    private const int Port = 9000;

    private const string Mapping = """
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: bulk
          namespace: demo
        spec:
          shardRef: edge
          vip: 10.250.0.22
          ports:
            - name: bulk
              port: 9000
              protocol: UDP
          nat:
            mode: DSR
            dsrEncapsulation: IPIP
          backend:
            endpoints:
              - address: 10.201.1.2
              - address: 10.201.2.2
        """;

    // IPPROTO_IP's IP_MTU (linux/in.h): the path MTU a connected socket knows.
    private const int IpMtu = 14;

    [Fact]
    public async Task A_full_size_datagram_to_an_ipip_service_teaches_the_client_the_path_mtu()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("u", backends: 2);
        var topology = bed.Topology;
        var manifests = Examples.CopyToTemp("demo");
        try
        {
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Mapping);
            using var stack = StandaloneStack.Start(topology, manifests, "lb-1", bed.Log);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);

            var (first, learned) = await Netns.Run(topology.Client, async () =>
            {
                using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { DontFragment = true };
                socket.Connect(new IPEndPoint(IPAddress.Parse(Vip), Port));
                int Mtu()
                {
                    var value = new byte[4];
                    socket.GetRawSocketOption((int)SocketOptionLevel.IP, IpMtu, value);
                    return BitConverter.ToInt32(value);
                }
                var before = Mtu();
                // 1,472 bytes of payload: 1,500 of IP, the link's MTU, 20 too many once encapsulated.
                socket.Send(new byte[1472]);
                // The ICMP answer comes back at once; a few tries, 50 ms apart, in case it is slow.
                for (var i = 0; i < 40 && Mtu() == before; i++)
                {
                    await Task.Delay(50, ct);
                }
                return (before, Mtu());
            });
            output.WriteLine($"path MTU before {first}, after {learned}");
            // The client's kernel holds it for the route, for every socket to the VIP.
            var route = Netns.Exec(topology.Client, "ip", "route", "get", Vip);
            output.WriteLine(route);
            Assert.Contains("mtu 1480", route, StringComparison.Ordinal);
            Assert.Equal(1500, first);
            Assert.Equal(1480, learned);

            // The balancer's side of it: one packet answered so.
            var counters = JsonNode.Parse(stack.Status("--node-config", stack.NodeConfigPath, "-o", "json"))!["counters"]!;
            Assert.Equal(1UL, counters["tx_icmp_too_big"]?.GetValue<ulong>());
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }
}
