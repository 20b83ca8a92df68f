using System.Diagnostics;
using System.Net;
using System.Text.RegularExpressions;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// Agent-to-agent failure detection end to end, in standalone mode, where no operator watches
/// Leases: the only thing that can move a VIP is the standby's own agent. Two one-armed LB nodes
/// behind a router namespace running BIRD, a shard with BGP, flow sync and detection 200 ms × 3.
/// First the active node's agent is frozen (SIGSTOP: its heartbeats stop, its XDP keeps
/// forwarding): the standby takes the VIP and advertises it, and gives it back when the agent
/// runs again. Then the active node dies (agent killed, its link to the router down): the standby
/// takes over, new connections are answered through it, and connections that were open through
/// the dead node carry on. On one Ethernet segment (<see cref="SegmentPairTopology"/>, L2), a
/// standby that never hears its active node takes its VIP only when nobody answers ARP for it.
/// </summary>
public sealed class AgentFailoverTests(ITestOutputHelper output)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private const string Vip = "10.250.0.70";
    private static string Manifests(bool bgp = true) =>
        RoutedPairTopology.FailoverManifests(Vip, "200ms", 3, bgp ? RoutedPairTopology.BgpAnnouncement : "{mode: L2}");

    [Fact]
    public async Task A_standby_takes_the_VIP_from_a_silent_active_node_by_itself_and_gives_it_back_when_it_is_heard_again()
    {
        Privileged.Require();
        var log = new StringWriter();
        using var topology = RoutedPairTopology.Create(LbTopology.NewPrefix("af"));
        using var bird = topology.StartBgpRouter(log);
        await using var backend1 = HttpBackend.Start(topology.Backends[0], "backend-1", IPAddress.Parse(RoutedPairTopology.BackendAddress(1)), Testbed.BackendPort);
        await using var backend2 = HttpBackend.Start(topology.Backends[1], "backend-2", IPAddress.Parse(RoutedPairTopology.BackendAddress(2)), Testbed.BackendPort);
        var manifests = Directory.CreateTempSubdirectory("xlb-failover-").FullName;
        Process? frozen = null;
        try
        {
            File.WriteAllText(Path.Combine(manifests, "all.yaml"), Manifests());
            using var stack = StandaloneStack.Start(topology.Lbs[0], [RoutedPairTopology.LbInterface], topology.Prefix.TrimEnd('-'), manifests, "lb-1", log,
                "--flow-sync-interval", "0.2");
            var lb2 = stack.StartOtherAgent("lb-2", topology.Lbs[1], [RoutedPairTopology.LbInterface], "--listen", Health.ToString());
            var config1 = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), Ct);
            var config2 = await stack.WaitAppliedAsync("lb-2", lb2, 1, TimeSpan.FromSeconds(60), Ct);
            // What the operator wrote: each node hears the other every 200 ms; lb-2 stands by for lb-1 and waits 600 ms.
            Assert.Equal(("lb-2", RoutedPairTopology.LbAddress(2), 200.0), config1.Spec.FailoverPeers.Select(p => (p.Node, p.Address, p.Interval.Value.TotalMilliseconds)).Single());
            var standby = config2.Spec.Vips.Single();
            Assert.Equal((VipRole.Standby, "lb-1", 600.0), (standby.Role, standby.ActiveNode, standby.TakeoverAfter?.Value.TotalMilliseconds));
            Assert.True(await bird.WaitRoutesAsync(r => r.Contains(Vip + "/32"), TimeSpan.FromSeconds(60), Ct), $"no route to {Vip} at the router:\n{bird.Show("lb1")}");
            Assert.Contains("via " + RoutedPairTopology.LbAddress(1), Netns.Ip(topology.Router, "route", "get", Vip), StringComparison.Ordinal);

            // Two connections held open through lb-1, one per backend (LeastConn), copied to lb-2.
            var target = new IPEndPoint(IPAddress.Parse(Vip), 80);
            var held = new[] { await KeepAliveClient.ConnectAsync(topology.Client, target, Ct), await KeepAliveClient.ConnectAsync(topology.Client, target, Ct) };
            var on = new[] { await held[0].GetAsync(Ct), await held[1].GetAsync(Ct) };
            Assert.Equal(["backend-1", "backend-2"], on.Order());
            var copied = Stopwatch.StartNew();
            while (Flows(stack).Split(Vip + ":80 ").Length != 3 && copied.Elapsed < TimeSpan.FromSeconds(25))
            {
                await Task.Delay(100, Ct);
            }
            Assert.Equal(3, Flows(stack).Split(Vip + ":80 ").Length);

            // lb-1's agent stops for 2 s (its program forwards on): lb-2 takes the VIP and says why.
            frozen = stack.Agent;
            Signal(frozen, "STOP");
            var paused = Stopwatch.StartNew();
            Assert.True(await WaitAsync(() => Degraded(stack) is { Reason: "PeerSilent" }, TimeSpan.FromSeconds(10)), $"lb-2 did not take over: {Degraded(stack)}");
            var tookOver = paused.Elapsed;
            Assert.Contains("1 VIP(s) from lb-1 (no heartbeat", Degraded(stack)!.Value.Message, StringComparison.Ordinal);
            Assert.Contains("xlb_vips_taken_over 1\n", (await HttpProbe.StatusAsync(topology.Lbs[1], Health, "/metrics", Ct)).Body, StringComparison.Ordinal);
            Assert.Matches(Vip.Replace(".", "\\.", StringComparison.Ordinal) + " +active", stack.StatusOf("lb-2"));
            Assert.Matches(@"FAILOVER PEERS\n +NODE +STATE +VIPS TAKEN OVER\n +lb-1 +Silent +1\n", stack.StatusOf("lb-2"));
            Assert.True(await bird.WaitRoutesAsync(_ => bird.Show("lb2").Contains("Routes:         1 imported", StringComparison.Ordinal), TimeSpan.FromSeconds(10), Ct),
                $"lb-2 does not advertise {Vip}:\n{bird.Show("lb2")}");
            // lb-1's session is up still (its hold time has not passed), and its route with it; the
            // router prefers lb-2's (LOCAL_PREF 200), so a hung node's traffic moves now, not when its session ends.
            Assert.True(await WaitAsync(() => Netns.Ip(topology.Router, "route", "get", Vip).Contains("via " + RoutedPairTopology.LbAddress(2), StringComparison.Ordinal), TimeSpan.FromSeconds(5)),
                $"the router still sends {Vip} to the frozen node: {Netns.Ip(topology.Router, "route", "get", Vip)}");
            Assert.Contains("Routes:         1 imported", bird.Show("lb1"), StringComparison.Ordinal);
            if (TimeSpan.FromSeconds(2) - paused.Elapsed is { Ticks: > 0 } left)
            {
                await Task.Delay(left, Ct);
            }
            Signal(frozen, "CONT");
            frozen = null;
            // Heard again: it gives the VIP back and withdraws its route.
            Assert.True(await WaitAsync(() => Degraded(stack) is { Status: "False" }, TimeSpan.FromSeconds(10)), $"lb-2 kept the VIP: {Degraded(stack)}");
            Assert.Matches(Vip.Replace(".", "\\.", StringComparison.Ordinal) + " +standby", stack.StatusOf("lb-2"));
            Assert.Matches(@" +lb-1 +Heard +0\n", stack.StatusOf("lb-2"));
            Assert.True(await bird.WaitRoutesAsync(_ => bird.Show("lb2").Contains("Routes:         0 imported", StringComparison.Ordinal), TimeSpan.FromSeconds(10), Ct),
                $"lb-2 still advertises {Vip}:\n{bird.Show("lb2")}");
            lock (log)
            {
                Assert.Contains("gave 1 VIP(s) back to lb-1, heard again: " + Vip, log.ToString(), StringComparison.Ordinal);
            }
            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(on[i], await held[i].GetAsync(Ct));
            }

            // lb-1 dies: its agent is killed and the router's link to it loses carrier, as with a dead machine.
            var clock = Stopwatch.StartNew();
            stack.Agent.Kill(entireProcessTree: true);
            Netns.Ip(topology.Router, "link", "set", "r1", "down");
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
            output.WriteLine($"frozen agent: taken over {tookOver.TotalMilliseconds:F0} ms after SIGSTOP; dead node: first new connection answered {takeover.TotalMilliseconds:F0} ms after the kill (detection 200 ms x 3, no operator involved)");
            Assert.NotNull(answer);
            Assert.Contains("via " + RoutedPairTopology.LbAddress(2), Netns.Ip(topology.Router, "route", "get", Vip), StringComparison.Ordinal);
            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(on[i], await held[i].GetAsync(Ct));
            }
            // The operator still places the VIP on lb-1 (standalone mode has no Leases): the move was lb-2's own.
            var path = Path.Combine(stack.StateDir, "lb-2.yaml");
            Assert.Equal(VipRole.Standby, Xlb.Crds.Serialization.Manifests.Read(File.ReadAllText(path), path).NodeConfigs.Single().Spec.Vips.Single().Role);
            foreach (var c in held)
            {
                c.Dispose();
            }
        }
        finally
        {
            if (frozen is not null)
            {
                Signal(frozen, "CONT");
            }
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(log.ToString());
        }
    }

    [Theory]
    [InlineData(Vip)]
    [InlineData("fd00:250::70")]
    public async Task A_standby_that_never_hears_its_active_node_says_so_and_takes_nothing_over_while_that_node_answers_ARP_or_ND(string vip)
    {
        Privileged.Require();
        var log = new StringWriter();
        await using var segment = Segment.Create("au", vip);
        var (topology, manifests, key) = (segment.Topology, segment.Manifests, segment.Key);
        Process? frozen = null;
        try
        {
            // Only lb-2 has a key: each refuses the other's heartbeats, as across a closed port.
            string[] eth0 = [SegmentPairTopology.LbInterface];
            using var stack = StandaloneStack.Start(topology.Lbs[0], eth0, topology.Prefix.TrimEnd('-'), manifests, "lb-1", log);
            var lb2 = stack.StartOtherAgent("lb-2", topology.Lbs[1], eth0, "--flow-sync-key-file", key);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), Ct);
            await stack.WaitAppliedAsync("lb-2", lb2, 1, TimeSpan.FromSeconds(60), Ct);
            // Had lb-2 been probing before lb-1's program held the VIP (a loaded machine starts
            // lb-1 late), it took the VIP while nobody served it, and gives it back once lb-1
            // announces it (an answer too). A second after lb-1 applied, lb-1 answers.
            await Task.Delay(TimeSpan.FromSeconds(1), Ct);
            Assert.True(await WaitAsync(() => Regex.IsMatch(stack.StatusOf("lb-2"), Regex.Escape(vip) + " +standby"), TimeSpan.FromSeconds(10)), stack.StatusOf("lb-2"));
            int settled;
            lock (log)
            {
                settled = log.ToString().Length;
            }
            var started = Stopwatch.StartNew();
            Assert.True(await WaitAsync(() => Degraded(stack) is { Reason: "PeerUnheard" }, TimeSpan.FromSeconds(20)), $"lb-2 does not say it never heard lb-1: {Degraded(stack)}");
            output.WriteLine($"PeerUnheard {started.ElapsedMilliseconds} ms after lb-2 applied: {Degraded(stack)!.Value.Message}");
            Assert.StartsWith("no heartbeat from lb-1 since they became peers", Degraded(stack)!.Value.Message, StringComparison.Ordinal);
            Assert.Matches(@" +lb-1 +Unheard +0\n", stack.StatusOf("lb-2"));
            // lb-2 has asked ARP or ND for the VIP all along (every 150 ms), and lb-1 answered: lb-2 took nothing.
            Assert.Matches(Regex.Escape(vip) + " +standby", stack.StatusOf("lb-2"));
            Assert.Equal("backend", await HttpProbe.GetAsync(topology.Client, new IPEndPoint(IPAddress.Parse(vip), 80), TimeSpan.FromSeconds(5), Ct));

            // lb-1's agent stops for 2 s: its program answers on, and lb-2 does not take its VIP.
            frozen = stack.Agent;
            Signal(frozen, "STOP");
            await Task.Delay(TimeSpan.FromSeconds(2), Ct);
            Assert.Matches(Regex.Escape(vip) + " +standby", stack.StatusOf("lb-2"));
            Signal(frozen, "CONT");
            frozen = null;
            Assert.Equal("PeerUnheard", Degraded(stack)?.Reason);
            lock (log)
            {
                var since = log.ToString()[settled..];
                Assert.DoesNotContain("took over", since, StringComparison.Ordinal);
                Assert.DoesNotContain("nobody answers ARP/ND", since, StringComparison.Ordinal);
                Assert.Contains("heartbeats: refusing datagrams from " + SegmentPairTopology.LbAddress(1), log.ToString(), StringComparison.Ordinal);
            }
        }
        finally
        {
            if (frozen is not null)
            {
                Signal(frozen, "CONT");
            }
            output.WriteLine(log.ToString());
        }
    }

    [Theory]
    [InlineData(Vip, true)]
    [InlineData("fd00:250::70", true)]
    [InlineData(Vip, false)]
    public async Task A_standby_whose_active_node_never_came_takes_its_VIP_when_nobody_answers_ARP_or_ND_and_gives_it_back_when_the_node_comes(string vip, bool heard)
    {
        Privileged.Require();
        var log = new StringWriter();
        await using var segment = Segment.Create("aw", vip);
        var (topology, manifests) = (segment.Topology, segment.Manifests);
        try
        {
            string[] eth0 = [SegmentPairTopology.LbInterface];
            var target = new IPEndPoint(IPAddress.Parse(vip), 80);
            // Not heard: only lb-1 has a key, so when it comes each refuses the other's heartbeats;
            // its announcement alone gets the VIP back.
            string[] lb1Args = heard ? [] : ["--flow-sync-key-file", segment.Key];
            // lb-1, the VIP's active node, is down from the start: only lb-2, its standby, runs.
            using var stack = StandaloneStack.Start(topology.Lbs[1], eth0, topology.Prefix.TrimEnd('-'), manifests, "lb-2", log);
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), Ct);
            var applied = Stopwatch.StartNew();
            Assert.True(await WaitAsync(() => Degraded(stack) is { Reason: "PeerSilent" }, TimeSpan.FromSeconds(10)), $"lb-2 did not take the VIP: {Degraded(stack)}");
            output.WriteLine($"taken {applied.ElapsedMilliseconds} ms after lb-2 applied (takeover time 600 ms): {Degraded(stack)!.Value.Message}");
            Assert.Contains("1 VIP(s) from lb-1 (never heard, nobody answers ARP/ND for them: " + vip, Degraded(stack)!.Value.Message, StringComparison.Ordinal);
            Assert.Matches(Regex.Escape(vip) + " +active", stack.StatusOf("lb-2"));
            Assert.Matches(@" +lb-1 +Unheard +1\n", stack.StatusOf("lb-2"));
            Assert.Equal("backend", await HttpProbe.GetAsync(topology.Client, target, TimeSpan.FromSeconds(5), Ct));
            lock (log)
            {
                Assert.Contains("nobody answers ARP/ND for " + vip + ", whose active node was never heard", log.ToString(), StringComparison.Ordinal);
            }

            // lb-1 comes: it announces the VIP (and is heard, or not); lb-2 gives the VIP back, and lb-1 serves it.
            var lb1 = stack.StartOtherAgent("lb-1", topology.Lbs[0], eth0, lb1Args);
            await stack.WaitAppliedAsync("lb-1", lb1, 1, TimeSpan.FromSeconds(60), Ct);
            Assert.True(await WaitAsync(() => Regex.IsMatch(stack.StatusOf("lb-2"), Regex.Escape(vip) + " +standby"), TimeSpan.FromSeconds(10)), $"lb-2 did not give the VIP back: {Degraded(stack)}");
            Assert.True(await WaitAsync(() => Degraded(stack) is { Reason: "AsExpected" or "PeerUnheard" }, TimeSpan.FromSeconds(10)), $"{Degraded(stack)}");
            if (!heard)
            {
                Assert.Matches(@" +lb-1 +Unheard +0\n", stack.StatusOf("lb-2"));
                lock (log)
                {
                    Assert.Contains("heartbeats: refusing datagrams from " + SegmentPairTopology.LbAddress(1), log.ToString(), StringComparison.Ordinal);
                }
            }
            Assert.Matches(Regex.Escape(vip) + " +active", stack.StatusOf("lb-1"));
            Assert.Equal("backend", await HttpProbe.GetAsync(topology.Client, target, TimeSpan.FromSeconds(5), Ct));
            // lb-1 announces three times a second apart: a neighbour entry updated by lb-2 less than
            // a second before (Linux's locktime) takes a later one.
            var lb1Mac = LbTopology.Mac(topology.Lbs[0], SegmentPairTopology.LbInterface);
            Assert.True(await WaitAsync(() => Netns.Ip(topology.Client, "neigh", "show", vip).Contains(lb1Mac, StringComparison.Ordinal), TimeSpan.FromSeconds(5)),
                Netns.Ip(topology.Client, "neigh", "show", vip));
            lock (log)
            {
                Assert.Contains("gave 1 VIP(s) back to lb-1", log.ToString(), StringComparison.Ordinal);
            }
        }
        finally
        {
            output.WriteLine(log.ToString());
        }
    }

    /// <summary>
    /// A <see cref="SegmentPairTopology"/> with its backend serving the family of
    /// <paramref name="vip"/>, the standalone manifests (detection 200 ms × 3) in a folder of their
    /// own, and a flow-sync key file that a test gives one agent only.
    /// </summary>
    private sealed class Segment(SegmentPairTopology topology, HttpBackend backend, string manifests, string keyDir) : IAsyncDisposable
    {
        public SegmentPairTopology Topology => topology;
        public string Manifests => manifests;
        public string Key => Path.Combine(keyDir, "key");

        public static Segment Create(string tag, string vip)
        {
            var topology = SegmentPairTopology.Create(LbTopology.NewPrefix(tag));
            var v6 = vip.Contains(':', StringComparison.Ordinal);
            HttpBackend backend;
            try
            {
                backend = HttpBackend.Start(topology.Backend, "backend", IPAddress.Parse(v6 ? SegmentPairTopology.BackendAddress6 : SegmentPairTopology.BackendAddress), Testbed.BackendPort);
            }
            catch
            {
                topology.Dispose();
                throw;
            }
            var manifests = Directory.CreateTempSubdirectory("xlb-failover-").FullName;
            var keyDir = Directory.CreateTempSubdirectory("xlb-failover-key-").FullName;
            File.WriteAllText(Path.Combine(manifests, "all.yaml"), SegmentPairTopology.Manifests(vip, "200ms", 3));
            File.WriteAllText(Path.Combine(keyDir, "key"), "a key that only one of the agents has");
            return new Segment(topology, backend, manifests, keyDir);
        }

        public async ValueTask DisposeAsync()
        {
            await backend.DisposeAsync();
            topology.Dispose();
            Directory.Delete(manifests, recursive: true);
            Directory.Delete(keyDir, recursive: true);
        }
    }

    [Fact]
    public async Task A_draining_node_says_it_is_leaving_and_its_standby_takes_over_at_once()
    {
        Privileged.Require();
        var log = new StringWriter();
        using var topology = RoutedPairTopology.Create(LbTopology.NewPrefix("al"));
        var manifests = Directory.CreateTempSubdirectory("xlb-failover-").FullName;
        try
        {
            // A long detection window: a takeover within it can only come from the leaving heartbeat.
            File.WriteAllText(Path.Combine(manifests, "all.yaml"), RoutedPairTopology.FailoverManifests(Vip, "2s", 10, "{mode: L2}"));
            using var stack = StandaloneStack.Start(topology.Lbs[0], [RoutedPairTopology.LbInterface], topology.Prefix.TrimEnd('-'), manifests, "lb-1", log, "--shutdown-timeout", "3");
            var lb2 = stack.StartOtherAgent("lb-2", topology.Lbs[1], [RoutedPairTopology.LbInterface], "--listen", Health.ToString());
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), Ct);
            await stack.WaitAppliedAsync("lb-2", lb2, 1, TimeSpan.FromSeconds(60), Ct);
            async Task<bool> Heard() => (await HttpProbe.StatusAsync(topology.Lbs[1], Health, "/metrics", Ct)).Body.Contains("xlb_heartbeats_received_total 0\n", StringComparison.Ordinal) is false;
            var heard = Stopwatch.StartNew();
            while (!await Heard() && heard.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(50, Ct);
            }
            Assert.True(await Heard());

            // SIGTERM: lb-1 drains for 3 s, and its heartbeats say it is leaving.
            var clock = Stopwatch.StartNew();
            Signal(stack.Agent, "TERM");
            Assert.True(await WaitAsync(() => Degraded(stack) is { Reason: "PeerSilent" }, TimeSpan.FromSeconds(10)), $"lb-2 did not take over: {Degraded(stack)}");
            output.WriteLine($"taken over {clock.ElapsedMilliseconds} ms after SIGTERM (detection window 20 s)");
            Assert.Contains("1 VIP(s) from lb-1 (leaving: " + Vip, Degraded(stack)!.Value.Message, StringComparison.Ordinal);
            Assert.Matches(@" +lb-1 +Leaving +1\n", stack.StatusOf("lb-2"));
            Assert.Matches(Vip.Replace(".", "\\.", StringComparison.Ordinal) + " +active", stack.StatusOf("lb-2"));
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(log.ToString());
        }
    }

    [Fact]
    public async Task A_node_whose_peer_port_is_taken_says_so()
    {
        Privileged.Require();
        var log = new StringWriter();
        using var topology = RoutedPairTopology.Create(LbTopology.NewPrefix("ap"));
        var manifests = Directory.CreateTempSubdirectory("xlb-failover-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(manifests, "all.yaml"), Manifests(bgp: false));
            // Another process holds lb-2's UDP port.
            using var squatter = Netns.Run(topology.Lbs[1], () => new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp));
            squatter.Bind(new IPEndPoint(IPAddress.Any, 9477));
            using var stack = StandaloneStack.Start(topology.Lbs[0], [RoutedPairTopology.LbInterface], topology.Prefix.TrimEnd('-'), manifests, "lb-1", log);
            var lb2 = stack.StartOtherAgent("lb-2", topology.Lbs[1], [RoutedPairTopology.LbInterface], "--flow-sync-listen", "0.0.0.0:9477");
            await stack.WaitAppliedAsync("lb-2", lb2, 1, TimeSpan.FromSeconds(60), Ct);
            Assert.True(await WaitAsync(() => Degraded(stack) is { Reason: "PeerPortUnavailable" }, TimeSpan.FromSeconds(10)), $"lb-2 does not say its port is taken: {Degraded(stack)}");
            Assert.StartsWith("cannot listen on 0.0.0.0:9477 (UDP)", Degraded(stack)!.Value.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(log.ToString());
        }
    }

    private static void Signal(Process p, string signal)
    {
        try
        {
            Process.Start("kill", ["-" + signal, p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
        }
        catch (InvalidOperationException)
        {
            // gone already (the stack stopped it)
        }
    }

    private static string Flows(StandaloneStack stack)
    {
        var text = stack.StatusOf("lb-2", "--flows");
        var at = text.IndexOf("FLOWS (", StringComparison.Ordinal);
        return at < 0 ? "" : text[at..];
    }

    /// <summary>lb-2's Degraded condition, as its agent last wrote it.</summary>
    private static (string Status, string Reason, string Message)? Degraded(StandaloneStack stack)
    {
        var path = Path.Combine(stack.StateDir, "lb-2.status.yaml");
        try
        {
            var conditions = File.Exists(path) ? Yaml.ReadDocuments(File.ReadAllText(path))[0]["conditions"]?.AsArray() : null;
            var c = conditions?.FirstOrDefault(c => c?["type"]?.GetValue<string>() == "Degraded");
            return c is null ? null : (c["status"]!.GetValue<string>(), c["reason"]!.GetValue<string>(), c["message"]?.GetValue<string>() ?? "");
        }
        catch (Exception e) when (e is IOException or FormatException or YamlDotNet.Core.YamlException)
        {
            return null; // written while read
        }
    }

    private static readonly IPEndPoint Health = new(IPAddress.Loopback, 19481);

    private static async Task<bool> WaitAsync(Func<bool> condition, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (!condition())
        {
            if (clock.Elapsed > timeout)
            {
                return false;
            }
            await Task.Delay(50, Ct);
        }
        return true;
    }
}
