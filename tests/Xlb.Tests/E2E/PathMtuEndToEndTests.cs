using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// Path MTU discovery through the balancer, with the client's own kernel: a full-size datagram to
/// an IPIP DSR service (IPIP adds 20 or 40 bytes on a 1,500-byte link) comes back as ICMP
/// "fragmentation needed" or "packet too big", and the client's socket learns the path's MTU.
/// </summary>
public sealed class PathMtuEndToEndTests(ITestOutputHelper output)
{
    private const string Vip = "10.250.0.22", Vip6 = "fd00:250::22";
    private const int Port = 9000;

    /// <summary>A UDP IPIP DSR PortMapping on port 9000 of <paramref name="vip"/>, to the testbed's two backends.</summary>
    private static string Mapping(string name, string vip, Func<int, string> backend) => $"""
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: {name}
          namespace: demo
        spec:
          shardRef: edge
          vip: {vip}
          ports:
            - name: bulk
              port: {Port}
              protocol: UDP
          nat:
            mode: DSR
            dsrEncapsulation: IPIP
          backend:
            endpoints:
              - address: {backend(1)}
              - address: {backend(2)}
        """;

    // IP_MTU (linux/in.h) and IPV6_MTU (linux/in6.h): the path MTU a connected socket knows.
    private const int IpMtu = 14, Ipv6Mtu = 24;

    [Fact]
    public async Task A_full_size_datagram_to_an_ipip_service_teaches_the_client_the_path_mtu_in_both_families()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("u", backends: 2);
        var topology = bed.Topology;
        var manifests = Examples.CopyToTemp("demo");
        try
        {
            File.WriteAllText(Path.Combine(manifests, "10-pool.yaml"), Examples.DualStackPool);
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"),
                Mapping("bulk", Vip, LbTopology.BackendAddress) + "\n---\n" + Mapping("bulk6", Vip6, LbTopology.BackendAddress6));
            using var stack = StandaloneStack.Start(topology, manifests, "lb-1", bed.Log, ["--icmp-rate", "50"]);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);

            // A full-size datagram: 1,500 bytes of IP, the link's MTU, too many once encapsulated
            // (IPIP adds 20 bytes to IPv4, 40 to IPv6).
            foreach (var (vip, learn) in new[] { (Vip, 1480), (Vip6, 1460) })
            {
                var v6 = vip.Contains(':', StringComparison.Ordinal);
                var (first, learned) = await Netns.Run(topology.Client, async () =>
                {
                    using var socket = new Socket(v6 ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                    if (!v6)
                    {
                        socket.DontFragment = true;
                    }
                    socket.Connect(new IPEndPoint(IPAddress.Parse(vip), Port));
                    int Mtu()
                    {
                        var value = new byte[4];
                        socket.GetRawSocketOption(v6 ? (int)SocketOptionLevel.IPv6 : (int)SocketOptionLevel.IP, v6 ? Ipv6Mtu : IpMtu, value);
                        return BitConverter.ToInt32(value);
                    }
                    var before = Mtu();
                    socket.Send(new byte[1500 - (v6 ? 40 : 20) - 8]);
                    // The ICMP answer comes back at once; a few looks, 50 ms apart, in case it is slow.
                    for (var i = 0; i < 40 && Mtu() == before; i++)
                    {
                        await Task.Delay(50, ct);
                    }
                    return (before, Mtu());
                });
                output.WriteLine($"{vip}: path MTU before {first}, after {learned}");
                Assert.Equal((1500, learn), (first, learned));
                // The client's kernel holds it for the route, for every socket to the VIP.
                var route = Netns.Exec(topology.Client, "ip", v6 ? "-6" : "-4", "route", "get", vip);
                output.WriteLine(route);
                Assert.Contains($"mtu {learn}", route, StringComparison.Ordinal);
            }

            // The balancer's side of it: one packet answered so per family.
            var status = JsonNode.Parse(stack.Status("--node-config", stack.NodeConfigPath, "-o", "json"))!;
            Assert.Equal(2UL, status["counters"]!["tx_icmp_too_big"]?.GetValue<ulong>());
            // The agent's --icmp-rate is the data plane's limit.
            Assert.Equal(50U, status["limits"]!["icmpRate"]!.GetValue<uint>());
            Assert.Contains("ICMP too-big answers 50", stack.Status("--node-config", stack.NodeConfigPath), StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }
}
