using System.Net;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// Announcement mode BGP end to end: manifests → xlb operator → xlb agent, which peers with a real
/// BGP router (BIRD, in the client's namespace) over IPv4 and IPv6. The client has no route to
/// the VIPs of its own: it reaches them only through the host routes the agent advertises, which
/// BIRD installs in its routing table.
/// </summary>
public sealed class BgpAnnouncementTests(ITestOutputHelper output)
{
    private const string Vip = "10.250.0.30";
    private const string Vip6 = "fd00:250::30";

    private const string Shard = """
        apiVersion: xlb.io/v1alpha1
        kind: VipShard
        metadata:
          name: edge
        spec:
          poolRef: demo
          nodeSelector:
            matchLabels:
              xlb.io/lb-node: "true"
          announcement:
            mode: BGP
            peers:
              - address: 10.200.0.2
                asn: 65000
                myAsn: 65001
                holdTime: 9s
              - address: fd00:200::2
                asn: 65000
                myAsn: 65001
        """;

    private static string Mapping(string name, string vip, string backend) => $"""
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata:
          name: {name}
          namespace: demo
        spec:
          shardRef: edge
          vip: {vip}
          ports:
            - name: http
              port: 80
              targetPort: 8080
          backend:
            endpoints:
              - address: {backend}
        """;

    private static readonly string Both = Mapping("web", Vip, "10.201.1.2") + "\n---\n" + Mapping("web6", Vip6, "fd00:201:1::2");

    [Fact]
    public async Task The_router_learns_the_VIPs_from_the_agent_and_loses_them_when_they_go()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("bgp", backends: 1);
        var client = bed.Topology.Client;
        Netns.Ip(client, "route", "del", LbTopology.VipPool);
        Netns.Ip(client, "-6", "route", "del", LbTopology.VipPool6);
        var manifests = Examples.CopyToTemp("demo");
        var shutdownFile = Path.Combine(manifests, "..", Path.GetFileName(manifests) + ".drain");
        var target = new IPEndPoint(IPAddress.Parse(Vip), 80);
        try
        {
            File.WriteAllText(Path.Combine(manifests, "10-pool.yaml"), Examples.DualStackPool);
            File.WriteAllText(Path.Combine(manifests, "20-shard.yaml"), Shard);
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Both);
            using var bird = BirdPeer.Start(client, "10.200.0.2",
            [
                new("lb4", "10.200.0.2", "10.200.0.1", LocalAsn: 65000, Asn: 65001),
                new("lb6", "fd00:200::2", "fd00:200::1", LocalAsn: 65000, Asn: 65001, IPv6: true),
            ], bed.Log);
            // Without the agent's routes the client cannot reach the VIP at all.
            Assert.Contains("unreachable", Assert.Throws<InvalidOperationException>(() => Netns.Ip(client, "route", "get", Vip)).Message, StringComparison.OrdinalIgnoreCase);

            using var stack = StandaloneStack.Start(bed.Topology, manifests, "lb-1", bed.Log, "--shutdown-file", shutdownFile);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            Assert.True(await bird.WaitRoutesAsync(r => r.Contains(Vip + "/32") && r.Contains(Vip6 + "/128"), TimeSpan.FromSeconds(30), ct),
                $"BIRD has {string.Join(", ", bird.KernelRoutes())}\n{bird.Show("lb4")}\n{bird.Show("lb6")}");
            Assert.Contains("via 10.200.0.1", Netns.Ip(client, "route", "get", Vip), StringComparison.Ordinal);
            Assert.Contains("via fd00:200::1", Netns.Ip(client, "-6", "route", "get", Vip6), StringComparison.Ordinal);
            var probe = await HttpProbe.RunAsync(client, target, count: 20, parallel: 2, ct);
            Assert.Equal(0, probe.Failed);
            Assert.Equal(20, bed.Backend(1)!.Served);
            // The agent reports its sessions: each up with its one route, and not degraded.
            Xlb.Crds.XlbNodeConfigStatus Status() =>
                System.Text.Json.JsonSerializer.Deserialize<Xlb.Crds.XlbNodeConfigStatus>(Xlb.Crds.Serialization.Yaml.ReadDocuments(File.ReadAllText(stack.AgentStatusPath))[0].ToJsonString(), Xlb.Crds.Serialization.XlbJson.Options)!;
            Assert.True(await WaitAsync(() => Status().BgpSessions.Count(b => b.State == "Established" && b.AdvertisedRoutes == 1) == 2
                && Status().Conditions.Any(c => c.Type == "Degraded" && c.Reason == "AsExpected"), ct), File.ReadAllText(stack.AgentStatusPath));
            Assert.Equal(["10.200.0.2", "fd00:200::2"], Status().BgpSessions.Select(b => b.Peer));
            // xlb status shows them too, from the agent's status beside its node config.
            var sessions = stack.Status("--node-config", stack.NodeConfigPath);
            Assert.Contains("BGP SESSIONS", sessions, StringComparison.Ordinal);
            Assert.Matches(@"fd00:200::2\s+Established\s+1\s", sessions);

            // The IPv4 mapping goes: its route is withdrawn, the IPv6 one stays.
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Mapping("web6", Vip6, "fd00:201:1::2"));
            Assert.True(await bird.WaitRoutesAsync(r => !r.Contains(Vip + "/32") && r.Contains(Vip6 + "/128"), TimeSpan.FromSeconds(30), ct),
                $"BIRD has {string.Join(", ", bird.KernelRoutes())}");

            // It comes back; then the agent restarts (SIGTERM without a shutdown window): the
            // router keeps the routes through the restart (graceful restart) and traffic flows on.
            File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Both);
            Assert.True(await bird.WaitRoutesAsync(r => r.Contains(Vip + "/32"), TimeSpan.FromSeconds(30), ct));
            stack.StopAgent();
            Assert.True(stack.Agent.HasExited);
            await Task.Delay(1000, ct);
            Assert.Contains(Vip + "/32", bird.KernelRoutes());
            Assert.Contains("lb4", bird.Show("lb4"), StringComparison.Ordinal);
            probe = await HttpProbe.RunAsync(client, target, count: 10, parallel: 1, ct);
            Assert.Equal(0, probe.Failed);
            stack.StartAgent(bed.Topology);
            Assert.True(await WaitAsync(() => bird.Show("lb4").Contains("Established", StringComparison.Ordinal), ct), bird.Show("lb4"));
            await Task.Delay(500, ct);
            Assert.Contains(Vip + "/32", bird.KernelRoutes());

            // A drain, then the stop: the agent ends its sessions with a cease, and the router
            // withdraws at once (not after the 120 s a restart is given).
            File.WriteAllText(shutdownFile, "");
            Assert.True(await WaitAsync(() => { lock (bed.Log) { return bed.Log.ToString().Contains("draining (", StringComparison.Ordinal); } }, ct), "the agent did not start draining");
            stack.StopAgent();
            Assert.True(await bird.WaitRoutesAsync(r => r.Count == 0, TimeSpan.FromSeconds(5), ct), $"BIRD still has {string.Join(", ", bird.KernelRoutes())}");
            Assert.Contains("unreachable", Assert.Throws<InvalidOperationException>(() => Netns.Ip(client, "route", "get", Vip)).Message, StringComparison.OrdinalIgnoreCase);
        }
        finally
        {
            File.Delete(shutdownFile);
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }

    private static async Task<bool> WaitAsync(Func<bool> condition, CancellationToken ct)
    {
        for (var i = 0; i < 200; i++)
        {
            if (condition())
            {
                return true;
            }
            await Task.Delay(100, ct);
        }
        return false;
    }
}
