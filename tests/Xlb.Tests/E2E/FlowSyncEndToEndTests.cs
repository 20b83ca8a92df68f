using System.Diagnostics;
using System.Net;
using System.Text.RegularExpressions;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// Flow sync end to end: two LB nodes behind a router (one-armed, FullNAT), each with its agent
/// and XDP; the standalone operator renders both. A client holds keep-alive connections through
/// LB 1; then the router sends the VIPs to LB 2, as it does when their announcement moves. With
/// flowSync a connection carries on through LB 2 (same backend, same NAT port, so the backend
/// sees the same connection). Without it LB 2 chooses afresh: the mappings use LeastConn, and LB 2
/// has opened one connection of its own to the backend the held one is on, so it chooses the
/// other backend, which has never seen the connection, and the connection breaks. A third
/// mapping, synchronised, translates from four source addresses beside its VIP: its connections
/// through those carry on as well (the copies say which address each took).
/// </summary>
public sealed class FlowSyncEndToEndTests(ITestOutputHelper output)
{
    private const string Synced = "10.250.0.50";
    private const string Plain = "10.250.0.51";
    private const string Sourced = "10.250.0.52";
    private static readonly string[] Sources = ["10.250.0.90", "10.250.0.91", "10.250.0.92", "10.250.0.93"];

    private static string Manifests() => $$$"""
        apiVersion: v1
        kind: Node
        metadata: {name: lb-1, labels: {xlb.io/lb-node: "true"}}
        status:
          addresses:
            - type: InternalIP
              address: {{{RoutedPairTopology.LbAddress(1)}}}
        ---
        apiVersion: v1
        kind: Node
        metadata: {name: lb-2, labels: {xlb.io/lb-node: "true"}}
        status:
          addresses:
            - type: Hostname
              address: lb-2
            - type: InternalIP
              address: {{{RoutedPairTopology.LbAddress(2)}}}
        ---
        apiVersion: xlb.io/v1alpha1
        kind: LoadBalancerPool
        metadata: {name: pool}
        spec: {blocks: ["{{{RoutedPairTopology.VipPool}}}"], reserved: ["10.250.0.90-10.250.0.93"]}
        ---
        apiVersion: xlb.io/v1alpha1
        kind: VipShard
        metadata: {name: synced}
        spec:
          poolRef: pool
          placement: {strategy: Pinned, nodes: [lb-1, lb-2]}
          flowSync: {enabled: true}
        ---
        apiVersion: xlb.io/v1alpha1
        kind: VipShard
        metadata: {name: plain}
        spec:
          poolRef: pool
          placement: {strategy: Pinned, nodes: [lb-1, lb-2]}
        ---
        {{{RoutedPairTopology.Mapping("synced", Synced)}}}
        ---
        {{{RoutedPairTopology.Mapping("plain", Plain)}}}
        ---
        {{{RoutedPairTopology.Mapping("synced", Sourced, "web-sourced")}}}
          nat: {sourceAddresses: [{{{string.Join(", ", Sources)}}}]}
        """;

    private static Task<KeepAliveClient> Connect(RoutedPairTopology t, string vip, CancellationToken ct) =>
        KeepAliveClient.ConnectAsync(t.Client, new IPEndPoint(IPAddress.Parse(vip), 80), ct);

    private static (HttpBackend, HttpBackend) Backends(RoutedPairTopology t) =>
        (HttpBackend.Start(t.Backends[0], "backend-1", IPAddress.Parse(RoutedPairTopology.BackendAddress(1)), Testbed.BackendPort),
         HttpBackend.Start(t.Backends[1], "backend-2", IPAddress.Parse(RoutedPairTopology.BackendAddress(2)), Testbed.BackendPort));

    /// <summary>The manifests written into <paramref name="manifests"/>; the operator, and LB 1's agent with <paramref name="agentArgs"/> (the stack's: LB 2's too).</summary>
    private static StandaloneStack StartLb1(RoutedPairTopology topology, string manifests, StringWriter log, params string[] agentArgs)
    {
        File.WriteAllText(Path.Combine(manifests, "all.yaml"), Manifests());
        return StandaloneStack.Start(topology.Lbs[0], [RoutedPairTopology.LbInterface], topology.Prefix.TrimEnd('-'), manifests, "lb-1", log, agentArgs);
    }

    [Fact]
    public async Task A_synchronised_connection_survives_the_move_to_the_other_LB_node_and_an_unsynchronised_one_does_not()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        var log = new StringWriter();
        using var topology = RoutedPairTopology.Create(LbTopology.NewPrefix("fs"));
        var (backend1, backend2) = Backends(topology);
        await using var b1 = backend1;
        await using var b2 = backend2;
        var manifests = Directory.CreateTempSubdirectory("xlb-flowsync-").FullName;
        var keyDir = Directory.CreateTempSubdirectory("xlb-flowsync-key-").FullName;
        try
        {
            // Both nodes hold one key: every datagram between them is authenticated (a trailing newline is not part of the key).
            var key = Path.Combine(keyDir, "flow-sync.key");
            File.WriteAllText(key, "a shared flow-sync key, 32 bytes\n");
            using var stack = StartLb1(topology, manifests, log, "--flow-sync-interval", "0.2", "--flow-sync-key-file", key);
            var lb2 = stack.StartOtherAgent("lb-2", topology.Lbs[1], [RoutedPairTopology.LbInterface]);
            var config1 = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            var config2 = await stack.WaitAppliedAsync("lb-2", lb2, 1, TimeSpan.FromSeconds(60), ct);
            Assert.Equal(("lb-2", RoutedPairTopology.LbAddress(2)), (config1.Spec.FlowSyncPeers.Single().Node, config1.Spec.FlowSyncPeers.Single().Address));
            Assert.Equal(RoutedPairTopology.LbAddress(1), config2.Spec.FlowSyncPeers.Single().Address);
            Assert.Contains(config1.Spec.Listeners, l => l.Vip == Synced && l.FlowSync == true);
            Assert.Contains(config1.Spec.Listeners, l => l.Vip == Plain && l.FlowSync is null);

            // Two held connections per mapping through LB 1: LeastConn puts them on both backends.
            var synced = new[] { await Connect(topology, Synced, ct), await Connect(topology, Synced, ct) };
            var plain = new[] { await Connect(topology, Plain, ct), await Connect(topology, Plain, ct) };
            var syncedOn = new[] { await synced[0].GetAsync(ct), await synced[1].GetAsync(ct) };
            var plainOn = new[] { await plain[0].GetAsync(ct), await plain[1].GetAsync(ct) };
            Assert.Equal(["backend-1", "backend-2"], syncedOn.Order());
            Assert.Equal(["backend-1", "backend-2"], plainOn.Order());

            // LB 2's flow table gets the synchronised connections within a few walks, and only them.
            string Flows2() => stack.StatusOf("lb-2", "--flows") is var s ? s[s.IndexOf("FLOWS (", StringComparison.Ordinal)..] : "";
            var flows2 = Flows2();
            for (var i = 0; i < 50 && flows2.Split(Synced + ":80 ").Length < 3; i++)
            {
                await Task.Delay(100, ct);
                flows2 = Flows2();
            }
            Assert.Equal(3, flows2.Split(Synced + ":80 ").Length);
            Assert.Equal(3, flows2.Split("established (copy)").Length);
            Assert.DoesNotContain(Plain + ":80", flows2, StringComparison.Ordinal);

            // Six more through the mapping with source addresses: the backends see some of them
            // from those addresses (each takes the VIP with a chance of one in five), and LB 2
            // gets their copies too.
            var sourced = new KeepAliveClient[6];
            var sourcedOn = new string[6];
            for (var i = 0; i < sourced.Length; i++)
            {
                sourced[i] = await Connect(topology, Sourced, ct);
                sourcedOn[i] = await sourced[i].GetAsync(ct);
            }
            var seen = backend1.Peers.Concat(backend2.Peers).Select(a => a.ToString()).ToHashSet();
            output.WriteLine($"the backends saw connections from {string.Join(", ", seen.Order(StringComparer.Ordinal))}");
            Assert.Contains(seen, Sources.Contains);
            for (var i = 0; i < 50 && Flows2().Split(Sourced + ":80 ").Length < 7; i++)
            {
                await Task.Delay(100, ct);
            }
            Assert.Equal(7, Flows2().Split(Sourced + ":80 ").Length);
            // They came authenticated: both agents listen with the key.
            lock (log)
            {
                Assert.Equal(2, log.ToString().Split("datagrams authenticated").Length - 1);
            }
            // A new key (a Secret updated in place): both agents take it up at their next walk.
            File.WriteAllText(key, "the next shared flow-sync key, 32\n");
            var rotated = Stopwatch.StartNew();
            int NewKeys()
            {
                lock (log)
                {
                    return log.ToString().Split("peers: a new key in").Length - 1;
                }
            }
            while (NewKeys() < 2 && rotated.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(100, ct);
            }
            Assert.Equal(2, NewKeys());

            topology.RouteVipsTo(2);
            // A connection LB 2 opens itself, on one backend: LeastConn there now prefers the other
            // (its counts are per backend, over both mappings: this is the only flow it counts).
            using var fresh = await Connect(topology, Plain, ct);
            var freshOn = await fresh.GetAsync(ct);

            // Synchronised: both connections carry on, each on its backend; so do those through source addresses.
            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(syncedOn[i], await synced[i].GetAsync(ct));
                Assert.Equal(syncedOn[i], await synced[i].GetAsync(ct));
            }
            for (var i = 0; i < sourced.Length; i++)
            {
                Assert.Equal(sourcedOn[i], await sourced[i].GetAsync(ct));
            }
            // Not synchronised: the connection on the backend LB 2 now avoids goes to the other one, which resets it.
            var broken = plain[Array.IndexOf(plainOn, freshOn)];
            await Assert.ThrowsAnyAsync<Exception>(() => broken.GetAsync(ct));
            Assert.Contains("demo/web-synced/http", stack.StatusOf("lb-2"), StringComparison.Ordinal);
            foreach (var c in synced.Concat(plain).Concat(sourced))
            {
                c.Dispose();
            }
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            Directory.Delete(keyDir, recursive: true);
            output.WriteLine(log.ToString());
        }
    }

    /// <summary>
    /// A node whose agent comes back with empty tables (an upgrade to another ABI; here its pins
    /// removed while it was stopped) gets its peer's copies of its connections as soon as the peer
    /// hears it again, not at the peer's next full resend (set to ten minutes here): the held
    /// connections, idle meanwhile, are in its table again and carry on through it.
    /// </summary>
    [Fact]
    public async Task A_node_back_with_empty_tables_gets_its_peers_copies_of_its_connections_at_once()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        var log = new StringWriter();
        using var topology = RoutedPairTopology.Create(LbTopology.NewPrefix("fr"));
        var (backend1, backend2) = Backends(topology);
        await using var b1 = backend1;
        await using var b2 = backend2;
        var manifests = Directory.CreateTempSubdirectory("xlb-flowsync-").FullName;
        try
        {
            using var stack = StartLb1(topology, manifests, log, "--flow-sync-interval", "0.2", "--flow-sync-full-resend", "600");
            var lb2 = stack.StartOtherAgent("lb-2", topology.Lbs[1], [RoutedPairTopology.LbInterface]);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            await stack.WaitAppliedAsync("lb-2", lb2, 1, TimeSpan.FromSeconds(60), ct);

            var synced = new[] { await Connect(topology, Synced, ct), await Connect(topology, Synced, ct) };
            var syncedOn = new[] { await synced[0].GetAsync(ct), await synced[1].GetAsync(ct) };
            int Copies(string node) => stack.StatusOf(node, "--flows") is var s && s.Contains("FLOWS (", StringComparison.Ordinal)
                ? s[s.IndexOf("FLOWS (", StringComparison.Ordinal)..].Split('\n').Count(l => l.Contains(Synced + ":80 ", StringComparison.Ordinal) && l.Contains("established (copy)", StringComparison.Ordinal))
                : 0;
            for (var i = 0; i < 50 && Copies("lb-2") < 2; i++)
            {
                await Task.Delay(100, ct);
            }
            Assert.Equal(2, Copies("lb-2"));

            // LB 1's agent stops; its pins go (the program, still attached, keeps its maps and
            // forwards); the next agent makes new, empty tables.
            stack.StopAgent();
            Directory.Delete(Path.Combine(StandaloneStack.TestBpffs, "xlb", stack.Instance), recursive: true);
            File.Delete(stack.AgentStatusPath);
            stack.StartAgent(topology.Lbs[0], [RoutedPairTopology.LbInterface]);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            Assert.DoesNotContain("adopted the pinned maps", log.ToString(), StringComparison.Ordinal);
            var back = Stopwatch.StartNew();
            while (Copies("lb-1") < 2 && back.Elapsed < TimeSpan.FromSeconds(20))
            {
                await Task.Delay(200, ct);
            }
            output.WriteLine($"LB 1 had both copies {back.Elapsed.TotalSeconds:F1} s after its agent applied");
            Assert.Equal(2, Copies("lb-1"));
            lock (log)
            {
                // LB 2 took LB 1's VIPs while it was away, and gave them back only once it had sent the copies.
                var text = log.ToString();
                var took = text.IndexOf("took over 7 VIP(s) from lb-1", StringComparison.Ordinal);
                Assert.True(took >= 0, "LB 2 did not take LB 1's VIPs");
                var gave = text.IndexOf(" back to lb-1, heard again", took, StringComparison.Ordinal);
                Assert.True(gave > took, "LB 2 did not give LB 1's VIPs back");
                // All seven at once: a peer's VIPs go back together.
                Assert.Equal(["7"], Regex.Matches(text[took..], @"gave (\d+) VIP\(s\) back to lb-1").Select(m => m.Groups[1].Value));
                var sent = text.LastIndexOf("flow sync: lb-1 is heard again after a silence: sent it every flow, ", gave, StringComparison.Ordinal);
                Assert.True(sent > took, "LB 2 gave LB 1's VIPs back before it sent LB 1 its flows");
            }
            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(syncedOn[i], await synced[i].GetAsync(ct));
                synced[i].Dispose();
            }
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(log.ToString());
        }
    }
}
