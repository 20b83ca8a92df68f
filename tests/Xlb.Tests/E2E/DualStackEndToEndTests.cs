using System.Net;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// IPv6 and UDP with real sockets: manifests → xlb operator → xlb agent → XDP in the LB
/// namespace. An IPv6 VIP serves TCP and UDP from IPv6 backends; an IPv4 VIP serves UDP to a
/// client that finds the VIPs on its own link by ARP and neighbour discovery, answered by XDP.
/// </summary>
public sealed class DualStackEndToEndTests(ITestOutputHelper output)
{
    private const string Vip6 = "fd00:250::10";
    private const string Vip4 = "10.250.0.30";
    private const int UdpTargetPort = 5353;

    private const string Mappings = """
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: web6
          namespace: demo
        spec:
          shardRef: edge
          vip: fd00:250::10
          ports:
            - name: http
              port: 80
              targetPort: 8080
            - name: dns
              port: 53
              protocol: UDP
              targetPort: 5353
          backend:
            endpoints:
              - address: fd00:201:1::2
              - address: fd00:201:2::2
        ---
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: dns4
          namespace: demo
        spec:
          shardRef: edge
          vip: 10.250.0.30
          ports:
            - name: dns
              port: 53
              protocol: UDP
              targetPort: 5353
          backend:
            endpoints:
              - address: 10.201.1.2
              - address: 10.201.2.2
        """;

    [Fact]
    public async Task Ipv6_tcp_and_udp_and_ipv4_udp_are_balanced_with_every_answer_from_the_vip()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("d", backends: 2);
        var topology = bed.Topology;
        var manifests = Examples.CopyToTemp("demo");
        var servers = new List<IAsyncDisposable>();
        try
        {
            File.WriteAllText(Path.Combine(manifests, "10-pool.yaml"), Examples.DualStackPool);
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Mappings);
            var http6 = new List<HttpBackend>();
            var udp = new List<UdpEcho>();
            for (var i = 1; i <= 2; i++)
            {
                var ns = topology.Backends[i - 1];
                http6.Add(HttpBackend.Start(ns, $"backend-{i}", IPAddress.Parse(LbTopology.BackendAddress6(i)), 8080));
                udp.Add(UdpEcho.Start(ns, $"udp4-{i}", new IPEndPoint(IPAddress.Parse(LbTopology.BackendAddress(i)), UdpTargetPort)));
                udp.Add(UdpEcho.Start(ns, $"udp6-{i}", new IPEndPoint(IPAddress.Parse(LbTopology.BackendAddress6(i)), UdpTargetPort)));
            }
            servers.AddRange(http6);
            servers.AddRange(udp);
            using var stack = StandaloneStack.Start(topology, manifests, "lb-1", bed.Log);
            var config = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            Assert.Equal(3, config.Spec.Listeners.Count);

            var tcp6 = await HttpProbe.RunAsync(topology.Client, new IPEndPoint(IPAddress.Parse(Vip6), 80), count: 60, parallel: 4, ct);
            Assert.True(tcp6.Failed == 0, $"IPv6 TCP: {tcp6.Failed} of 60 failed: {string.Join("; ", tcp6.Errors)}");
            Assert.Equal(["backend-1", "backend-2"], tcp6.ByBackend.Keys.Order(StringComparer.Ordinal));
            // FullNAT: the backends saw the VIP as the source, never the client.
            Assert.All(http6, b => Assert.Equal([IPAddress.Parse(Vip6)], b.Peers));

            // The IPv6 VIP on the client's own link as well: found by neighbour discovery, which
            // XDP answers. Each datagram from a new socket: a new flow; the answer must come from
            // VIP:53 (connected socket).
            Netns.Ip(topology.Client, "-6", "route", "add", Vip6 + "/128", "dev", "eth0");
            var udp6 = await UdpEcho.ProbeAsync(topology.Client, new IPEndPoint(IPAddress.Parse(Vip6), 53), count: 40, TimeSpan.FromSeconds(3), ct);
            Assert.True(udp6.Failed == 0, $"IPv6 UDP: {udp6.Failed} of 40 failed: {string.Join("; ", udp6.Errors)}");
            Assert.Equal(["udp6-1", "udp6-2"], udp6.ByBackend.Keys.Order(StringComparer.Ordinal));
            using (var neigh = System.Text.Json.JsonDocument.Parse(Netns.Ip(topology.Client, "-j", "neigh", "show", Vip6, "dev", "eth0")))
            {
                Assert.Equal(LbTopology.Mac(topology.Lb, LbTopology.ClientIfOnLb), neigh.RootElement[0].GetProperty("lladdr").GetString());
            }

            // The IPv4 VIP on the client's own link: the client asks ARP for it, and XDP on the LB
            // answers (the LB's kernel does not hold the VIP, so it would not).
            Netns.Ip(topology.Client, "route", "add", Vip4 + "/32", "dev", "eth0");
            var udp4 = await UdpEcho.ProbeAsync(topology.Client, new IPEndPoint(IPAddress.Parse(Vip4), 53), count: 40, TimeSpan.FromSeconds(3), ct);
            Assert.True(udp4.Failed == 0, $"IPv4 UDP: {udp4.Failed} of 40 failed: {string.Join("; ", udp4.Errors)}");
            Assert.Equal(["udp4-1", "udp4-2"], udp4.ByBackend.Keys.Order(StringComparer.Ordinal));
            using (var neigh = System.Text.Json.JsonDocument.Parse(Netns.Ip(topology.Client, "-j", "neigh", "show", Vip4, "dev", "eth0")))
            {
                Assert.Equal(LbTopology.Mac(topology.Lb, LbTopology.ClientIfOnLb), neigh.RootElement[0].GetProperty("lladdr").GetString());
            }
            // FullNAT again: the UDP backends saw the VIP of their family as the source.
            Assert.All(udp, s => Assert.Single(s.Peers));
            Assert.All(udp.Where((_, i) => i % 2 == 0), s => Assert.Equal([IPAddress.Parse(Vip4)], s.Peers));
            Assert.All(udp.Where((_, i) => i % 2 == 1), s => Assert.Equal([IPAddress.Parse(Vip6)], s.Peers));
        }
        finally
        {
            foreach (var s in servers)
            {
                await s.DisposeAsync();
            }
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }
}
