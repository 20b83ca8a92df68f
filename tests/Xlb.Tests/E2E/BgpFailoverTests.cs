using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.Kube;
using Xlb.Operator;
using Xlb.Tests.ControlPlane;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// A node dies, in cluster mode: the API server double, the operator, and two LB nodes' agents in
/// cluster mode (real XDP, one-armed behind a router namespace), which announce the VIP by BGP to
/// BIRD on the router and synchronise flows. First the router drops the active node's UDP to the
/// standby (a partition between the LB nodes): the standby takes the VIP, sees the active node's
/// Lease still renewed, gives the VIP back and says why. Then the active node's agent is killed
/// and its namespace deleted; its heartbeats stop and the standby takes the VIP over and
/// advertises it, the router moves to it, connections that were open through the dead node carry
/// on, and the operator, when the dead agent's Lease is as old, makes the standby the VIP's active node.
/// </summary>
public sealed class BgpFailoverTests(ITestOutputHelper output)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private const string Vip = "10.250.0.60";

    private static string Cluster() => $$$"""
        apiVersion: v1
        kind: Namespace
        metadata: {name: demo}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: {{{OperatorHarness.LeaseNs}}}}
        ---
        apiVersion: v1
        kind: Node
        metadata: {name: lb-1, labels: {xlb.io/lb-node: "true"}}
        ---
        apiVersion: v1
        kind: Node
        metadata: {name: lb-2, labels: {xlb.io/lb-node: "true"}}
        ---
        apiVersion: xlb.io/v1alpha1
        kind: LoadBalancerPool
        metadata: {name: pool}
        spec: {blocks: ["{{{RoutedPairTopology.VipPool}}}"]}
        ---
        apiVersion: xlb.io/v1alpha1
        kind: VipShard
        metadata: {name: edge}
        spec:
          poolRef: pool
          nodeSelector: {matchLabels: {xlb.io/lb-node: "true"}}
          placement: {strategy: Pinned, nodes: [lb-1, lb-2]}
          failover: {detection: {interval: 300ms, multiplier: 3}}
          announcement: {{{RoutedPairTopology.BgpAnnouncement}}}
          flowSync: {enabled: true}
        ---
        {{{RoutedPairTopology.Mapping("edge", Vip, "web")}}}
        """;

    [Fact]
    public async Task When_the_active_node_dies_the_router_moves_to_the_standby_and_open_connections_carry_on()
    {
        Privileged.Require();
        StandaloneStack.EnsureTestBpffs();
        var log = new StringWriter();
        await using var h = await OperatorHarness.StartAsync();
        using var topology = RoutedPairTopology.Create(LbTopology.NewPrefix("bf"));
        using var bird = topology.StartBgpRouter(log);
        await using var backend1 = HttpBackend.Start(topology.Backends[0], "backend-1", IPAddress.Parse(RoutedPairTopology.BackendAddress(1)), Testbed.BackendPort);
        await using var backend2 = HttpBackend.Start(topology.Backends[1], "backend-2", IPAddress.Parse(RoutedPairTopology.BackendAddress(2)), Testbed.BackendPort);
        var instances = new[] { topology.Prefix + "n1", topology.Prefix + "n2" };
        var agents = new Process?[2];
        var kubeconfigs = new List<string>();
        var relays = new List<NetnsRelay>();
        try
        {
            await h.ApplyAsync(Cluster());
            for (var i = 1; i <= 2; i++)
            {
                var status = new JsonObject
                {
                    ["apiVersion"] = "v1", ["kind"] = "Node", ["metadata"] = new JsonObject { ["name"] = $"lb-{i}" },
                    ["status"] = new JsonObject { ["addresses"] = new JsonArray(new JsonObject { ["type"] = "InternalIP", ["address"] = RoutedPairTopology.LbAddress(i) }) },
                };
                await h.Client.ApplyAsync<JsonObject>(KubeResource.Nodes, status, "kubelet", subresource: "status", ct: Ct);
            }
            var (_, run, stop) = h.StartOperator(new ClusterOperatorOptions { AgentLeaseNamespace = OperatorHarness.LeaseNs });
            for (var i = 0; i < 2; i++)
            {
                var relay = NetnsRelay.Start(topology.Lbs[i], new IPEndPoint(IPAddress.Loopback, h.Server.Url.Port));
                relays.Add(relay);
                var kubeconfig = await ClusterAgent.WriteKubeconfigAsync(relay.Endpoint, Ct);
                agents[i] = ClusterAgent.Start($"lb-{i + 1}", topology.Lbs[i], instances[i], [RoutedPairTopology.LbInterface], kubeconfig, log,
                    "--lease-renew", "0.1", "--flow-sync-interval", "0.2");
            }

            Assert.True(await bird.WaitRoutesAsync(r => r.Contains(Vip + "/32"), TimeSpan.FromSeconds(60), Ct), $"no route to {Vip} at the router:\n{bird.Show("lb1")}");
            // The VIP went to whichever agent was alive first (placement is sticky from then on).
            var active = (await h.GetAsync<VipShard>(KubeResource.VipShards, null, "edge"))!.Status!.Vips.Single().ActiveNode == "lb-1" ? 0 : 1;
            var standby = 1 - active;
            Assert.Contains("via " + RoutedPairTopology.LbAddress(active + 1), Netns.Ip(topology.Router, "route", "get", Vip), StringComparison.Ordinal);

            // Two connections held open through the active node, one per backend (LeastConn).
            var target = new IPEndPoint(IPAddress.Parse(Vip), 80);
            var held = new[] { await KeepAliveClient.ConnectAsync(topology.Client, target, Ct), await KeepAliveClient.ConnectAsync(topology.Client, target, Ct) };
            var on = new[] { await held[0].GetAsync(Ct), await held[1].GetAsync(Ct) };
            var since = Stopwatch.StartNew();
            Assert.Equal(["backend-1", "backend-2"], on.Order());
            // Within a walk or two; at the latest with the full resend (every 10 s), when the standby
            // was not yet listening as the first walks went out.
            while (Flows(instances[standby]).Split(Vip + ":80 ").Length != 3 && since.Elapsed < TimeSpan.FromSeconds(25))
            {
                await Task.Delay(100, Ct);
            }
            Assert.Equal(3, Flows(instances[standby]).Split(Vip + ":80 ").Length);
            output.WriteLine($"the standby held both flows {since.ElapsedMilliseconds} ms after the connections' first answers");

            // The path between the nodes breaks, not the active node: the router drops its UDP 9476
            // (heartbeats and flow sync). The standby takes the VIP, then sees the active node's
            // Lease still renewed and gives it back; its status says why.
            var link = $"r{active + 1}";
            string[] rule = ["iif", link, "ipproto", "udp", "dport", "9476", "blackhole"];
            Netns.Ip(topology.Router, ["rule", "add", .. rule]);
            var partition = Stopwatch.StartNew();
            Assert.True(await DegradedAsync(h, standby, "PeerUnreachable", TimeSpan.FromSeconds(15)), "the standby does not say its peer is unreachable");
            output.WriteLine($"partition: the standby said PeerUnreachable {partition.ElapsedMilliseconds} ms after the heartbeats stopped");
            var peerStatus = (await h.GetAsync<XlbNodeConfig>(KubeResource.XlbNodeConfigs, null, $"lb-{standby + 1}"))!.Status!.FailoverPeers.Single();
            Assert.Equal(($"lb-{active + 1}", "Unreachable", 0), (peerStatus.Node, peerStatus.State, peerStatus.VipsTakenOver));
            lock (log)
            {
                Assert.Contains($"gave 1 VIP(s) back to lb-{active + 1}, it renews its Lease: {Vip}", log.ToString(), StringComparison.Ordinal);
            }
            var back = Stopwatch.StartNew();
            while (!Netns.Ip(topology.Router, "route", "get", Vip).Contains("via " + RoutedPairTopology.LbAddress(active + 1), StringComparison.Ordinal) && back.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(50, Ct);
            }
            Assert.Contains("via " + RoutedPairTopology.LbAddress(active + 1), Netns.Ip(topology.Router, "route", "get", Vip), StringComparison.Ordinal);
            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(on[i], await held[i].GetAsync(Ct));
            }
            Assert.Equal($"lb-{active + 1}", (await h.GetAsync<VipShard>(KubeResource.VipShards, null, "edge"))!.Status!.Vips.Single().ActiveNode);
            // Mended: heard again, nothing to report.
            Netns.Ip(topology.Router, ["rule", "del", .. rule]);
            Assert.True(await DegradedAsync(h, standby, "AsExpected", TimeSpan.FromSeconds(15)), "the standby still reports its peer");

            // The active node dies: its agent is killed and its namespace (with its link to the router) goes.
            // Each held connection answers once more just before (the backends close a connection idle for 30 s).
            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(on[i], await held[i].GetAsync(Ct));
            }
            var clock = Stopwatch.StartNew();
            agents[active]!.Kill(entireProcessTree: true);
            // The router's end of its link loses carrier at once, as with a dead machine.
            Netns.Ip(topology.Router, "link", "set", $"r{active + 1}", "down");
            // The relay's sockets would hold the namespace (its pipes end with the agent's connections).
            await relays[active].DisposeAsync();
            relays.RemoveAt(active);
            Netns.Delete(topology.Lbs[active]);
            string? answer = null;
            while (answer is null && clock.Elapsed < TimeSpan.FromSeconds(30))
            {
                try
                {
                    answer = await HttpProbe.GetAsync(topology.Client, target, TimeSpan.FromMilliseconds(300), Ct);
                }
                catch (Exception e) when (e is not OperationCanceledException || !Ct.IsCancellationRequested)
                {
                    await Task.Delay(20, Ct);
                }
            }
            var takeover = clock.Elapsed;
            output.WriteLine($"first new connection answered {takeover.TotalMilliseconds:F0} ms after lb-{active + 1} died (detection 300 ms x 3)");
            Assert.NotNull(answer);
            Assert.Contains("via " + RoutedPairTopology.LbAddress(standby + 1), Netns.Ip(topology.Router, "route", "get", Vip), StringComparison.Ordinal);
            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(on[i], await held[i].GetAsync(Ct));
            }
            // The standby took the VIP by itself (heartbeats); the operator follows when the Lease is as old.
            var moved = Stopwatch.StartNew();
            string? activeNode = null;
            while (activeNode != $"lb-{standby + 1}" && moved.Elapsed < TimeSpan.FromSeconds(10))
            {
                activeNode = (await h.GetAsync<VipShard>(KubeResource.VipShards, null, "edge"))!.Status!.Vips.Single().ActiveNode;
                await Task.Delay(50, Ct);
            }
            Assert.Equal($"lb-{standby + 1}", activeNode);
            output.WriteLine($"the operator made lb-{standby + 1} active {clock.ElapsedMilliseconds} ms after lb-{active + 1} died");
            await Task.Delay(500, Ct); // the standby applies the config that says so
            lock (log)
            {
                Assert.Contains($"1 VIP(s) taken over from lb-{active + 1} are this node's in its config now (the operator moved them): {Vip}", log.ToString(), StringComparison.Ordinal);
            }
            foreach (var c in held)
            {
                c.Dispose();
            }
            await stop.CancelAsync();
            await run;
        }
        finally
        {
            foreach (var agent in agents)
            {
                if (agent is not null)
                {
                    Netns.Stop(agent, TimeSpan.FromSeconds(10));
                }
            }
            foreach (var relay in relays)
            {
                await relay.DisposeAsync();
            }
            foreach (var file in kubeconfigs)
            {
                File.Delete(file);
            }
            foreach (var instance in instances)
            {
                var pins = Path.Combine(StandaloneStack.TestBpffs, "xlb", instance);
                if (Directory.Exists(pins))
                {
                    Directory.Delete(pins, recursive: true);
                }
            }
            output.WriteLine(log.ToString());
            output.WriteLine(h.Log.ToString());
        }
    }

    /// <summary>Waits until the node config of the node at <paramref name="index"/> reports Degraded with <paramref name="reason"/>.</summary>
    private static async Task<bool> DegradedAsync(OperatorHarness h, int index, string reason, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            var config = await h.GetAsync<XlbNodeConfig>(KubeResource.XlbNodeConfigs, null, $"lb-{index + 1}");
            if (config?.Status?.Conditions.FirstOrDefault(c => c.Type == "Degraded")?.Reason == reason)
            {
                return true;
            }
            await Task.Delay(50, Ct);
        }
        return false;
    }

    private static string Flows(string instance)
    {
        var text = StandaloneStack.StatusOfInstance(instance, "--flows");
        var at = text.IndexOf("FLOWS (", StringComparison.Ordinal);
        return at < 0 ? "" : text[at..];
    }
}
