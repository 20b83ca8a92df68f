using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Xlb.Agent.Bpf;
using Xlb.Agent.Core;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// When the agent's node takes a VIP, the link hears it: a gratuitous ARP for an IPv4 VIP and an
/// unsolicited neighbour advertisement for an IPv6 VIP, from the LB interface's MAC, observed by
/// a raw socket in the client's namespace. A standby VIP is never announced.
/// </summary>
public sealed class L2AnnouncementTests(ITestOutputHelper output)
{
    private const string Vip4 = "10.250.0.40";
    private const string Vip6 = "fd00:250::40";

    private static readonly string Mappings = $$"""
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata: {name: web4, namespace: demo}
        spec:
          shardRef: edge
          vip: {{Vip4}}
          ports: [{name: http, port: 80, targetPort: 8080}]
          backend:
            endpoints: [{address: {{LbTopology.BackendAddress(1)}}}]
        ---
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata: {name: web6, namespace: demo}
        spec:
          shardRef: edge
          vip: {{Vip6}}
          ports: [{name: http, port: 80, targetPort: 8080}]
          backend:
            endpoints: [{address: {{LbTopology.BackendAddress6(1)}}}]
        """;

    /// <summary>The VIP a frame announces, if it is a gratuitous ARP or an unsolicited advertisement from <paramref name="mac"/>.</summary>
    private static IPAddress? Announced(byte[] f, byte[] mac)
    {
        var type = f.Length >= 14 ? BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(12)) : 0;
        if (type == 0x0806 && f.Length >= 42 && f.AsSpan(6, 6).SequenceEqual(mac) && !f.AsSpan(0, 6).ContainsAnyExcept((byte)0xff) &&
            f[21] == 1 && f.AsSpan(22, 6).SequenceEqual(mac) && f.AsSpan(28, 4).SequenceEqual(f.AsSpan(38, 4)))
        {
            return new IPAddress(f.AsSpan(28, 4));
        }
        if (type == 0x86dd && f.Length >= 86 && f[20] == 58 && f[21] == 255 && f[54] == 136 && (f[58] & 0xe0) == 0x20 &&
            f.AsSpan(38, 16).SequenceEqual(IPAddress.Parse("ff02::1").GetAddressBytes()) &&
            f[78] == 2 && f.AsSpan(80, 6).SequenceEqual(mac) && Packet.ChecksumsValid(f))
        {
            return new IPAddress(f.AsSpan(62, 16));
        }
        return null;
    }

    [Fact]
    public async Task A_node_that_takes_a_vip_announces_it_and_a_standby_stays_quiet()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("g", backends: 1);
        var topology = bed.Topology;
        var mac = DataPlaneFixtureMac(topology);
        var manifests = DemoManifests();
        using var capture = FrameCapture.Start(topology.Client);
        try
        {
            using var stack = StandaloneStack.Start(topology, manifests, "lb-1", bed.Log);
            var config = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            Assert.All(config.Spec.Vips, v => Assert.Equal(VipRole.Active, v.Role));

            // Taking both VIPs at start: three rounds (the default), each VIP once per round.
            List<IPAddress> Heard(TimeSpan timeout, int enough) => HeardOn(capture, mac, timeout, enough);
            var first = Heard(TimeSpan.FromSeconds(10), 6);
            Assert.Equal(3, first.Count(a => a.Equals(IPAddress.Parse(Vip4))));
            Assert.Equal(3, first.Count(a => a.Equals(IPAddress.Parse(Vip6))));

            // From here the node config is edited by hand: the operator would put it back.
            Netns.Stop(stack.Operator, TimeSpan.FromSeconds(5));
            Task Roles(VipRole role, long revision) =>
                WriteConfigAsync(stack, config with { Spec = config.Spec with { Revision = revision, Vips = [.. config.Spec.Vips.Select(v => v with { Role = role })] } }, ct);

            // The VIPs move to standby here: nothing is announced.
            await Roles(VipRole.Standby, config.Spec.Revision + 1);
            Assert.Empty(Heard(TimeSpan.FromSeconds(2), 1));

            // The node takes them back, as on a failover: announced again, at once.
            await Roles(VipRole.Active, config.Spec.Revision + 2);
            var again = Heard(TimeSpan.FromSeconds(5), 2);
            Assert.Equal([IPAddress.Parse(Vip4), IPAddress.Parse(Vip6)], again.Take(2).OrderBy(a => a.AddressFamily));
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }

    [Fact]
    public async Task A_standby_whose_active_node_falls_silent_takes_its_vips_and_announces_them_and_gives_them_back_when_it_is_heard_again()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("gt", backends: 1);
        var topology = bed.Topology;
        var mac = DataPlaneFixtureMac(topology);
        var manifests = DemoManifests();
        using var capture = FrameCapture.Start(topology.Client);
        // The test plays the VIPs' active node, lb-0, at the client's address: its heartbeats go to the LB's address on the client's link.
        using var peer = PeerSocket(topology);
        using var beating = new CancellationTokenSource();
        // On a thread of its own: the test process runs many tests at once, and a starved thread
        // pool once held this peer's heartbeats back for longer than its takeover time.
        Task BeatAsync(CancellationToken stop) => Task.Factory.StartNew(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                peer.SendTo(Heartbeats.Encode(new Heartbeat("lb-0", false)), AgentPeerPort);
                stop.WaitHandle.WaitOne(100);
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        try
        {
            var (started, config) = await StartByHandAsync(bed, manifests, capture, mac, ct);
            using var stack = started;
            List<IPAddress> Heard(TimeSpan timeout, int enough) => HeardOn(capture, mac, timeout, enough);

            // This node stands by for lb-0, which takes 1 s of silence to be taken from. lb-0
            // holds the VIPs: the client's kernel answers ARP and ND for them, as lb-0's program
            // would (so until its first heartbeat is heard, this node's probes are answered).
            Netns.Ip(topology.Client, "addr", "add", Vip4 + "/32", "dev", "eth0");
            Netns.Ip(topology.Client, "addr", "add", Vip6 + "/128", "dev", "eth0", "nodad");
            var beats = BeatAsync(beating.Token);
            var standby = config with
            {
                Spec = config.Spec with
                {
                    Revision = config.Spec.Revision + 1,
                    Vips = [.. config.Spec.Vips.Select(v => v with { Role = VipRole.Standby, ActiveNode = "lb-0", TakeoverAfter = new Duration(TimeSpan.FromSeconds(1)) })],
                    FailoverPeers = [PlayedPeer],
                },
            };
            await WriteConfigAsync(stack, standby, ct);
            // Heard: nothing is taken, nothing announced.
            Assert.Empty(Heard(TimeSpan.FromSeconds(2), 1));
            Assert.Matches(@"10\.250\.0\.40 +standby", stack.Status());

            // lb-0 falls silent: this node takes both VIPs and tells the link, at once.
            await beating.CancelAsync();
            await beats;
            var silent = System.Diagnostics.Stopwatch.StartNew();
            var taken = Heard(TimeSpan.FromSeconds(5), 2);
            output.WriteLine($"both VIPs announced {silent.ElapsedMilliseconds} ms after the last heartbeat");
            Assert.Equal([IPAddress.Parse(Vip4), IPAddress.Parse(Vip6)], taken.Take(2).OrderBy(a => a.AddressFamily));
            Assert.Matches(@"10\.250\.0\.40 +active", stack.Status());

            // lb-0 is heard again: the VIPs are its own again, and this node no longer answers for them.
            using var again = new CancellationTokenSource();
            var resumed = BeatAsync(again.Token);
            var back = System.Diagnostics.Stopwatch.StartNew();
            while (!System.Text.RegularExpressions.Regex.IsMatch(stack.Status(), @"10\.250\.0\.40 +standby") && back.Elapsed < TimeSpan.FromSeconds(5))
            {
                await Task.Delay(50, ct);
            }
            Assert.Matches(@"10\.250\.0\.40 +standby", stack.Status());
            Assert.Matches(@"fd00:250::40 +standby", stack.Status());
            await again.CancelAsync();
            await resumed;
        }
        finally
        {
            await beating.CancelAsync();
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }

    [Fact]
    public async Task An_active_node_announces_its_vips_again_when_the_peer_that_had_taken_them_gives_them_back()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("ga", backends: 1);
        var topology = bed.Topology;
        var mac = DataPlaneFixtureMac(topology);
        var manifests = DemoManifests();
        using var capture = FrameCapture.Start(topology.Client);
        // The test plays this node's peer lb-0, at the client's address, which took its VIPs over and serves them.
        using var peer = PeerSocket(topology);
        Task Beat(bool holding) => peer.SendToAsync(Heartbeats.Encode(new Heartbeat("lb-0", false, holding)), AgentPeerPort, ct).AsTask();
        try
        {
            var (started, config) = await StartByHandAsync(bed, manifests, capture, mac, ct);
            using var stack = started;
            List<IPAddress> Heard(TimeSpan timeout, int enough) => HeardOn(capture, mac, timeout, enough);
            Netns.Stop(stack.Operator, TimeSpan.FromSeconds(5));
            var withPeer = config with
            {
                Spec = config.Spec with
                {
                    Revision = config.Spec.Revision + 1,
                    FailoverPeers = [PlayedPeer],
                },
            };
            await WriteConfigAsync(stack, withPeer, ct);

            // lb-0 says it serves this node's VIPs: nothing to do yet (this node still holds them).
            for (var i = 0; i < 5; i++)
            {
                await Beat(holding: true);
                await Task.Delay(100, ct);
            }
            Assert.Empty(Heard(TimeSpan.FromSeconds(1), 1));
            // It gives them back: this node tells the link again, so its neighbours leave lb-0.
            await Beat(holding: false);
            var again = Heard(TimeSpan.FromSeconds(5), 2);
            Assert.Equal([IPAddress.Parse(Vip4), IPAddress.Parse(Vip6)], again.Take(2).OrderBy(a => a.AddressFamily));
            // Heartbeats that never said so: nothing more.
            for (var i = 0; i < 5; i++)
            {
                await Beat(holding: false);
                await Task.Delay(100, ct);
            }
            Assert.Empty(Heard(TimeSpan.FromSeconds(1), 1));
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }

    /// <summary>
    /// The program outlives its agent (killed here), and went on answering ARP and neighbour
    /// solicitations for the VIPs of its last configuration beside the standby that took them over.
    /// Now, once the agent has been silent two seconds, it leaves a VIP another host has announced
    /// since to that host, and keeps forwarding what still comes to it; a live agent's node
    /// answers whatever others announce; the agent back, the node answers again. The test plays
    /// the standby: its announcements and the client's requests come from the client's link.
    /// </summary>
    [Fact]
    public async Task A_node_whose_agent_is_gone_leaves_the_vips_its_standby_announced_and_answers_again_when_the_agent_is_back()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("gy", backends: 1);
        var topology = bed.Topology;
        var mac = DataPlaneFixtureMac(topology);
        var manifests = DemoManifests();
        using var capture = FrameCapture.Start(topology.Client);
        var (vip4, vip6) = (IPAddress.Parse(Vip4), IPAddress.Parse(Vip6));
        byte[] standby = [0x02, 0x5b, 0x00, 0x00, 0x00, 0x02];
        var client = Bpf.DataPlaneFixture.MacBytes(LbTopology.Mac(topology.Client, "eth0"));
        var clientIf = Netns.Run(topology.Client, () => Xdp.IfIndex("eth0"));
        using var wire = Netns.Run(topology.Client, () => new PacketSocket(clientIf));
        bool Answers(IPAddress vip)
        {
            var v4 = vip.AddressFamily == AddressFamily.InterNetwork;
            wire.Send(v4 ? Packet.ArpRequest(client, IPAddress.Parse(LbTopology.ClientAddress), vip)
                : Packet.NeighbourSolicitation(client, IPAddress.Parse(LbTopology.ClientAddress6), vip));
            return capture.Collect(f => AnswerFor(f, mac) is { } a && a.Equals(vip), fs => fs.Count > 0, TimeSpan.FromSeconds(1)).Count > 0;
        }
        void StandbyAnnounces()
        {
            wire.Send(Announcements.GratuitousArp(standby, vip4));
            wire.Send(Announcements.UnsolicitedAdvert(standby, vip6));
        }
        try
        {
            var health = new IPEndPoint(IPAddress.Loopback, 9473);
            var (started, _) = await StartByHandAsync(bed, manifests, capture, mac, ct, "--listen", health.ToString());
            using var stack = started;
            Assert.True(Answers(vip4));
            Assert.True(Answers(vip6));

            // The agent runs: another host announcing the VIPs (a partition, a peer's mistake) changes nothing.
            StandbyAnnounces();
            await Task.Delay(2500, ct);
            Assert.True(Answers(vip4), "a node whose agent runs left its VIP to another host");
            Assert.True(Answers(vip6), "a node whose agent runs left its IPv6 VIP to another host");
            // Its node config says so.
            var degraded = Xlb.Crds.Serialization.Yaml.ReadDocuments(File.ReadAllText(stack.AgentStatusPath))[0]["conditions"]!.AsArray()
                .Single(c => c!["type"]!.GetValue<string>() == "Degraded")!;
            Assert.Equal(("True", "VipAnnouncedElsewhere"), (degraded["status"]!.GetValue<string>(), degraded["reason"]!.GetValue<string>()));
            Assert.Contains($"{Vip4} by 02:5b:00:00:00:02 on {LbTopology.ClientIfOnLb}; {Vip6} by 02:5b:00:00:00:02 on {LbTopology.ClientIfOnLb}",
                degraded["message"]!.GetValue<string>(), StringComparison.Ordinal);
            Assert.Contains("xlb_vips_announced_elsewhere 2\n", (await HttpProbe.StatusAsync(topology.Lb, health, "/metrics", ct)).Body, StringComparison.Ordinal);
            Assert.Matches(@"10\.250\.0\.40 +active +02:5b:00:00:00:02 \d+ s ago", stack.Status());

            // The agent dies; the program stays. The standby takes the VIPs over (after the window) and announces them.
            stack.Agent.Kill();
            await stack.Agent.WaitForExitAsync(ct);
            await Task.Delay(800, ct);
            StandbyAnnounces();
            await Task.Delay(1500, ct);
            Assert.False(Answers(vip4), "the node of a dead agent still answers for the VIP its standby took");
            Assert.False(Answers(vip6), "the node of a dead agent still answers for the IPv6 VIP its standby took");
            // `xlb status`, which reads the pinned maps with no agent, says so.
            var status = stack.Status();
            Assert.Matches(@"10\.250\.0\.40 +active, left to it \(the agent is silent\) +02:5b:00:00:00:02 \d+ s ago", status);
            Assert.Matches(@"fd00:250::40 +active, left to it \(the agent is silent\) +02:5b:00:00:00:02 \d+ s ago", status);
            // What still comes to it (a neighbour that has not heard yet) is forwarded as before.
            Assert.Equal("backend-1", await HttpProbe.GetAsync(topology.Client, new IPEndPoint(vip4, 80), TimeSpan.FromSeconds(5), ct));

            // The agent is back: it stamps, and the node answers again (each ask waits a second for its answer).
            stack.StartAgent(topology);
            var answered = false;
            for (var i = 0; i < 20 && !answered; i++)
            {
                answered = Answers(vip4);
            }
            Assert.True(answered, "the node does not answer for its VIP with its agent back");
            Assert.True(Answers(vip6));
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }

    /// <summary>The VIP an ARP reply or a neighbour advertisement from <paramref name="mac"/> resolves, if the frame is one.</summary>
    private static IPAddress? AnswerFor(byte[] f, byte[] mac)
    {
        var type = f.Length >= 14 ? BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(12)) : 0;
        if (!f.AsSpan(6, 6).SequenceEqual(mac))
        {
            return null;
        }
        if (type == 0x0806 && f.Length >= 42 && f[21] == 2 && f.AsSpan(22, 6).SequenceEqual(mac))
        {
            return new IPAddress(f.AsSpan(28, 4));
        }
        return type == 0x86dd && f.Length >= 78 && f[20] == 58 && f[54] == 136 ? new IPAddress(f.AsSpan(62, 16)) : null;
    }

    /// <summary>
    /// The stack with one announcement round, once its agent has applied the first config and
    /// announced both VIPs; its operator is stopped, so the node config is the test's to edit.
    /// </summary>
    private static async Task<(StandaloneStack Stack, XlbNodeConfig Config)> StartByHandAsync(Testbed bed, string manifests, FrameCapture capture, byte[] mac, CancellationToken ct,
        params string[] agentArgs)
    {
        var stack = StandaloneStack.Start(bed.Topology, manifests, "lb-1", bed.Log, ["--announce-count", "1", .. agentArgs]);
        try
        {
            var config = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            Assert.Equal(2, HeardOn(capture, mac, TimeSpan.FromSeconds(10), 2).Count);
            Netns.Stop(stack.Operator, TimeSpan.FromSeconds(5));
            return (stack, config);
        }
        catch
        {
            stack.Dispose();
            throw;
        }
    }

    /// <summary>The failover peer the test plays: lb-0 at the client's address, a heartbeat every 200 ms.</summary>
    private static readonly NodeFailoverPeer PlayedPeer = new() { Node = "lb-0", Address = LbTopology.ClientAddress, Interval = new Duration(TimeSpan.FromMilliseconds(200)) };

    /// <summary>A node config written by hand where the agent reads it (the operator stopped), once the agent has applied it.</summary>
    private static async Task WriteConfigAsync(StandaloneStack stack, XlbNodeConfig config, CancellationToken ct)
    {
        await File.WriteAllTextAsync(stack.NodeConfigPath + ".tmp", Manifests.ToYaml(config), ct);
        File.Move(stack.NodeConfigPath + ".tmp", stack.NodeConfigPath, overwrite: true);
        await stack.WaitAppliedAsync(config.Spec.Revision, TimeSpan.FromSeconds(30), ct);
    }

    /// <summary>The agent's UDP port (flow sync and heartbeats) at its address on the client's link.</summary>
    private static readonly IPEndPoint AgentPeerPort = new(IPAddress.Parse("10.200.0.1"), SyncedFlows.DefaultPort);

    /// <summary>A UDP socket in the client's namespace, for the heartbeats of a peer the test plays.</summary>
    private static Socket PeerSocket(LbTopology topology) =>
        Netns.Run(topology.Client, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));

    /// <summary>The demo's manifests with a dual-stack pool and the two mappings, in a folder of their own.</summary>
    private static string DemoManifests()
    {
        var manifests = Examples.CopyToTemp("demo");
        File.WriteAllText(Path.Combine(manifests, "10-pool.yaml"), Examples.DualStackPool);
        File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Mappings);
        return manifests;
    }

    /// <summary>The VIPs announced from <paramref name="mac"/>, in order, once <paramref name="enough"/> came or the time is up.</summary>
    private static List<IPAddress> HeardOn(FrameCapture capture, byte[] mac, TimeSpan timeout, int enough) =>
        [.. capture.Collect(f => Announced(f, mac) is not null, fs => fs.Count >= enough, timeout).Select(f => Announced(f, mac)!)];

    private static byte[] DataPlaneFixtureMac(LbTopology topology) =>
        Bpf.DataPlaneFixture.MacBytes(LbTopology.Mac(topology.Lb, LbTopology.ClientIfOnLb));
}
