using System.Net;
using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.DataPlane;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

/// <summary>Flow sync's pure parts: the datagrams, what a walk sends, what a receiver writes; and what the planner gives each node.</summary>
public class SyncedFlowsTests
{
    private static XlbFlowKey Key(string client, ushort clientPort, string vip, ushort port = 80, byte proto = XlbAbi.ProtoTcp)
    {
        var c = IPAddress.Parse(client);
        return new XlbFlowKey
        {
            Saddr = Addr16.From(c), Daddr = Addr16.From(IPAddress.Parse(vip)), SportBe = Net.Be(clientPort), DportBe = Net.Be(port), Proto = proto,
            Family = c.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? XlbAbi.FamilyV4 : XlbAbi.FamilyV6,
        };
    }

    private static SyncedFlow Flow(int i, byte mode = XlbAbi.ModeFullNat, string backend = "10.1.0.2") =>
        new(Key($"10.0.{i / 250}.{i % 250 + 1}", (ushort)(1000 + i), "192.0.2.1"), Addr16.From(IPAddress.Parse(backend)), Net.Be(8080), Net.Be((ushort)(40000 + i)),
            XlbAbi.FlowEstablished, mode, (uint)i);

    [Fact]
    public void Flows_go_through_datagrams_unchanged_and_a_datagram_stays_small()
    {
        var flows = Enumerable.Range(0, 100).Select(i => Flow(i)).ToList();
        flows.Add(new SyncedFlow(Key("2001:db8::7", 5555, "2001:db8::1", 443, XlbAbi.ProtoUdp), Addr16.From(IPAddress.Parse("2001:db8::9")), Net.Be(53), 0, XlbAbi.FlowNew, XlbAbi.ModeDnat, 12345));
        var datagrams = SyncedFlows.Encode(flows);
        Assert.Equal((flows.Count + SyncedFlows.RecordsPerDatagram - 1) / SyncedFlows.RecordsPerDatagram, datagrams.Count);
        Assert.All(datagrams, d => Assert.True(d.Length <= 1400));
        Assert.Equal(flows, datagrams.SelectMany(d => SyncedFlows.Decode(d)));
    }

    [Fact]
    public void A_datagram_that_is_not_flow_sync_is_refused()
    {
        var good = SyncedFlows.Encode([Flow(1)])[0];
        Assert.Throws<FormatException>(() => SyncedFlows.Decode(good.AsSpan(0, 7)));
        Assert.Throws<FormatException>(() => SyncedFlows.Decode(good.AsSpan(0, good.Length - 1)));
        var wrongMagic = (byte[])good.Clone();
        wrongMagic[0] ^= 1;
        Assert.Throws<FormatException>(() => SyncedFlows.Decode(wrongMagic));
        var newer = (byte[])good.Clone();
        newer[4] = 2;
        Assert.Contains("version 2", Assert.Throws<FormatException>(() => SyncedFlows.Decode(newer)).Message, StringComparison.Ordinal);
        var badFamily = (byte[])good.Clone();
        badFamily[SyncedFlows.HeaderBytes + 37] = 5; // the key's family
        Assert.Throws<FormatException>(() => SyncedFlows.Decode(badFamily));
    }

    [Fact]
    public void With_a_key_a_datagram_is_taken_only_whole_from_a_holder_of_the_key_and_recent()
    {
        var key = "0123456789abcdef-flow-sync"u8.ToArray();
        const long now = 1_790_000_000_000;
        var flows = Enumerable.Range(0, 30).Select(i => Flow(i) with { Closed = (byte)(i % 2 == 0 ? XlbAbi.FlowFinBackend | XlbAbi.FlowTimeWait : 0) }).ToList();
        var datagrams = SyncedFlows.Encode(flows, key, now);
        Assert.All(datagrams, d => Assert.True(d.Length <= 1400));
        Assert.Equal(flows, datagrams.SelectMany(d => SyncedFlows.Decode(d, key, now + 5_000)));

        var d = datagrams[0];
        string Refusal(byte[] datagram, byte[]? k, long at) => Assert.Throws<FormatException>(() => SyncedFlows.Decode(datagram, k, at)).Message;
        // Every byte counts: a record, the count, the time or the tag changed.
        foreach (var at in (int[])[SyncedFlows.HeaderBytes + 3, 7, d.Length - SyncedFlows.AuthBytes + 2, d.Length - 1])
        {
            var changed = (byte[])d.Clone();
            changed[at] ^= 0x10;
            Assert.Throws<FormatException>(() => SyncedFlows.Decode(changed, key, now));
        }
        Assert.Contains("not this agent's flow-sync key", Refusal(d, "another key, sixteen bytes+"u8.ToArray(), now), StringComparison.Ordinal);
        // A replay half a minute later, or a clock far apart.
        Assert.Contains("s from now", Refusal(d, key, now + 31_000), StringComparison.Ordinal);
        Assert.Contains("s from now", Refusal(d, key, now - 31_000), StringComparison.Ordinal);
        // A node with a key and one without do not take each other's datagrams.
        Assert.Contains("unauthenticated", Refusal(SyncedFlows.Encode(flows)[0], key, now), StringComparison.Ordinal);
        Assert.Contains("has no key (--flow-sync-key-file)", Refusal(d, null, now), StringComparison.Ordinal);

        // While a new key reaches the nodes, a receiver takes datagrams made with it or with the one before.
        var next = "the next key, at least sixteen"u8.ToArray();
        Assert.Equal(flows, datagrams.SelectMany(x => SyncedFlows.Decode(x, [next, key], now)));
        Assert.Equal(flows[..SyncedFlows.RecordsPerDatagram], SyncedFlows.Decode(SyncedFlows.Encode(flows, next, now)[0], [next, key], now));
        Assert.Throws<FormatException>(() => SyncedFlows.Decode(d, [next], now));
    }

    [Fact]
    public void The_key_file_is_read_again_and_the_key_before_a_new_one_is_still_taken()
    {
        var dir = Directory.CreateTempSubdirectory("xlb-key-").FullName;
        try
        {
            var path = Path.Combine(dir, "key");
            var keys = new Xlb.Agent.FlowSyncKeyFile(path);
            Assert.False(keys.Refresh());
            Assert.Null(keys.Current);
            Assert.Empty(keys.Accepted);

            File.WriteAllText(path, "first key, sixteen bytes or more\n");
            Assert.True(keys.Refresh());
            Assert.Equal("first key, sixteen bytes or more"u8.ToArray(), keys.Current);
            Assert.False(keys.Refresh());

            File.WriteAllText(path, "second key, sixteen bytes too");
            Assert.True(keys.Refresh());
            Assert.Equal(["second key, sixteen bytes too", "first key, sixteen bytes or more"], keys.Accepted.Select(k => System.Text.Encoding.ASCII.GetString(k)));

            // A short key, or no file: the last good key stays.
            File.WriteAllText(path, "short");
            Assert.False(keys.Refresh());
            Assert.Contains("the key has 5 bytes", keys.Problem, StringComparison.Ordinal);
            File.Delete(path);
            Assert.False(keys.Refresh());
            Assert.Equal("second key, sixteen bytes too"u8.ToArray(), keys.Current);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_walk_sends_the_flows_of_synchronised_services_seen_since_the_last_walk()
    {
        const ulong now = 10_000_000_000;
        KeyValuePair<XlbFlowKey, XlbFlow> Entry(int i, uint svc, ulong lastSeen, byte state = XlbAbi.FlowEstablished, byte flags = 0) =>
            new(Key("10.0.0.1", (ushort)(1000 + i), "192.0.2.1"), new XlbFlow { SvcId = svc, LastSeenNs = lastSeen, State = state, Flags = flags, Backend = Addr16.From(IPAddress.Parse("10.1.0.2")), NatPortBe = Net.Be(40000) });
        var table = new[]
        {
            Entry(1, 7, now - 2_000_000_000), // synchronised, seen 2 s ago
            Entry(2, 7, now - 500_000_000),   // synchronised, seen 0.5 s ago
            Entry(3, 8, now),                 // another service
            Entry(4, 7, now, XlbAbi.FlowClosing, XlbAbi.FlowFinBackend | XlbAbi.FlowTimeWait | XlbAbi.FlowCounted), // its close: the copy takes the closing timeout, and how it ended
            new(Key("10.0.0.1", 1005, "192.0.2.1"), new XlbFlow { SvcId = 7, LastSeenNs = now, Flags = XlbAbi.FlowSynced }), // a peer's copy
        };
        var all = SyncedFlows.Select(table, new HashSet<uint> { 7 }, 0, now);
        Assert.Equal([1001, 1002, 1004], all.Select(f => Net.FromBe(f.Key.SportBe)));
        Assert.Equal([2000u, 500u, 0u], all.Select(f => f.IdleMs));
        Assert.Equal(XlbAbi.FlowClosing, all[2].State);
        Assert.Equal([0, 0, XlbAbi.FlowFinBackend | XlbAbi.FlowTimeWait], all.Select(f => (int)f.Closed));
        var since = SyncedFlows.Select(table, new HashSet<uint> { 7 }, now - 1_000_000_000, now);
        Assert.Equal([1002, 1004], since.Select(f => Net.FromBe(f.Key.SportBe)));
    }

    [Fact]
    public void A_walk_overlaps_the_one_before_by_an_interval()
    {
        // A flow stamped by the coarse clock just before a walk began, and inserted behind its cursor,
        // must still be sent by the next walk.
        const ulong walk = 50_000_000_000;
        var since = SyncedFlows.NextSince(walk, TimeSpan.FromMilliseconds(200));
        Assert.Equal(walk - 200_000_000, since);
        KeyValuePair<XlbFlowKey, XlbFlow>[] table = [new(Key("10.0.0.1", 1000, "192.0.2.1"), new XlbFlow { SvcId = 7, LastSeenNs = walk - 4_000_000 })];
        Assert.Single(SyncedFlows.Select(table, new HashSet<uint> { 7 }, since, walk + 200_000_000));
        Assert.Equal(0UL, SyncedFlows.NextSince(100, TimeSpan.FromSeconds(1)));
    }

    [Fact]
    public void A_receiver_writes_flows_with_its_own_service_id_and_backend_index_and_their_reverse_translations()
    {
        var backends = new XlbBackend[4];
        backends[2] = new XlbBackend { Addr = Addr16.From(IPAddress.Parse("10.1.0.2")), PortBe = Net.Be(8080), Family = XlbAbi.FamilyV4 }; // index 3
        var svcKey = new XlbSvcKey { Vip = Addr16.From(IPAddress.Parse("192.0.2.1")), PortBe = Net.Be(80), Proto = XlbAbi.ProtoTcp, Family = XlbAbi.FamilyV4 };
        var services = new Dictionary<XlbSvcKey, XlbSvc> { [svcKey] = new XlbSvc { Id = 42, Mode = XlbAbi.ModeFullNat, Flags = XlbAbi.SvcCountFlows } };
        const ulong now = 50_000_000_000;
        var flows = new[]
        {
            Flow(1),                                  // written: 1 ms idle
            Flow(2, backend: "10.9.9.9"),              // no such backend here
            Flow(3, mode: XlbAbi.ModeDnat),           // the mode differs here
            Flow(4) with { Key = Key("10.0.0.9", 999, "192.0.2.77") }, // no such service
        };
        flows[0] = flows[0] with { Closed = XlbAbi.FlowReset };
        var (written, reverse, skipped) = SyncedFlows.Import(flows, services, backends, new HashSet<uint> { 42 }, activeGen: 1, backendSlots: 65536, now);
        Assert.Equal(3, skipped);
        var (key, flow) = Assert.Single(written);
        Assert.Equal(flows[0].Key, key);
        // A copy, uncounted, and ended as the original did (this node frees its NAT port alike).
        Assert.Equal((42u, 65536u + 3, 40001, now - 1_000_000, XlbAbi.FlowEstablished, (byte)(XlbAbi.FlowSynced | XlbAbi.FlowReset)), (flow.SvcId, flow.NhSlot, Net.FromBe(flow.NatPortBe), flow.LastSeenNs, flow.State, flow.Flags));
        var (rk, rnat) = Assert.Single(reverse);
        // FullNAT: the backend's reply comes from backend:8080 to VIP:NAT port.
        Assert.Equal((flow.Backend, Net.Be(8080), key.Daddr, Net.Be(40001)), (rk.Saddr, rk.SportBe, rk.Daddr, rk.DportBe));
        Assert.Equal((key.Daddr, key.Saddr, key.DportBe, key.SportBe, 42u, 3u), (rnat.Vip, rnat.Client, rnat.VipPortBe, rnat.ClientPortBe, rnat.SvcId, rnat.Backend));

        // This node has the flow as its own: the copy does not replace it.
        var kept = SyncedFlows.Import(flows, services, backends, new HashSet<uint> { 42 }, 1, 65536, now, isOwn: k => k == flows[0].Key);
        Assert.Equal((0, 0, 4), (kept.Flows.Count, kept.Reverse.Count, kept.Skipped));

        // Not synchronised here: nothing is written.
        Assert.Empty(SyncedFlows.Import(flows, services, backends, new HashSet<uint>(), 1, 65536, now).Flows);

        // DNAT: the reply comes from the backend to the client itself.
        var dnat = new Dictionary<XlbSvcKey, XlbSvc> { [svcKey] = new XlbSvc { Id = 42, Mode = XlbAbi.ModeDnat } };
        var (_, dReverse, _) = SyncedFlows.Import([flows[2]], dnat, backends, new HashSet<uint> { 42 }, 0, 65536, now);
        var (drk, _) = Assert.Single(dReverse);
        Assert.Equal((flows[2].Key.Saddr, flows[2].Key.SportBe), (drk.Daddr, drk.DportBe));
    }

    [Fact]
    public void A_flow_that_took_a_source_address_carries_its_number_and_the_receiver_translates_replies_to_that_address()
    {
        var flows = new[] { Flow(1) with { Snat = 2 }, Flow(2) with { Snat = 3 }, Flow(3) };
        Assert.Equal(flows, SyncedFlows.Decode(SyncedFlows.Encode(flows)[0]));
        // An older agent's datagram has a zero in that byte: a flow from the VIP.
        Assert.Equal(0, SyncedFlows.Decode(SyncedFlows.Encode([Flow(3)])[0])[0].Snat);

        var backends = new[] { new XlbBackend { Addr = Addr16.From(IPAddress.Parse("10.1.0.2")), PortBe = Net.Be(8080), Family = XlbAbi.FamilyV4 } };
        var svcKey = new XlbSvcKey { Vip = Addr16.From(IPAddress.Parse("192.0.2.1")), PortBe = Net.Be(80), Proto = XlbAbi.ProtoTcp, Family = XlbAbi.FamilyV4 };
        var services = new Dictionary<XlbSvcKey, XlbSvc> { [svcKey] = new XlbSvc { Id = 7, Mode = XlbAbi.ModeFullNat, Flags = XlbAbi.SvcSnat } };
        var sources = new Dictionary<uint, XlbSnat> { [7] = XlbSnat.Of([Addr16.From(IPAddress.Parse("198.51.100.5")), Addr16.From(IPAddress.Parse("198.51.100.6"))]) };
        var (written, reverse, skipped) = SyncedFlows.Import(flows, services, backends, new HashSet<uint> { 7 }, 0, 65536, 50_000_000_000, snat: sources);
        // The second took a third address, which this node's service does not have: left out.
        Assert.Equal(1, skipped);
        Assert.Equal([2, 0], written.Select(w => (int)w.Value.Snat));
        Assert.Equal([IPAddress.Parse("198.51.100.6"), IPAddress.Parse("192.0.2.1")], reverse.Select(r => r.Key.Daddr.ToAddress(XlbAbi.FamilyV4)));
        // Without the service's addresses nothing through one is written.
        Assert.Single(SyncedFlows.Import(flows, services, backends, new HashSet<uint> { 7 }, 0, 65536, 50_000_000_000).Flows);
    }

    private static Node LbNode(string name, string? address) => new()
    {
        Metadata = new ObjectMeta { Name = name },
        Status = address is null ? null : new KubeNodeStatus { Addresses = [new NodeAddress { Type = "Hostname", Address = name }, new NodeAddress { Type = "InternalIP", Address = address }] },
    };

    [Fact]
    public void Each_node_of_a_flowSync_shard_gets_the_others_with_an_address_and_its_listeners_are_marked()
    {
        VipShard Shard(string name, bool sync) => new()
        {
            Metadata = new ObjectMeta { Name = name, Generation = 1 },
            Spec = new VipShardSpec { PoolRef = "p", FlowSync = new FlowSync { Enabled = sync } },
        };
        PortMapping Mapping(string name, string shard) => new()
        {
            Metadata = new ObjectMeta { Name = name, Namespace = "ns", Generation = 1 },
            Spec = new PortMappingSpec { ShardRef = shard, Ports = [new ServicePort { Port = 80, TargetPort = 8080 }], Backend = new BackendSpec { Endpoints = [new StaticEndpoint { Address = "10.1.0.1" }] } },
        };
        var input = new PlanInput
        {
            Pools = [new LoadBalancerPool { Metadata = new ObjectMeta { Name = "p", Generation = 1 }, Spec = new LoadBalancerPoolSpec { Blocks = ["192.0.2.0/28"] } }],
            Shards = [Shard("synced", true), Shard("plain", false)],
            Nodes = [LbNode("a", "10.0.0.1"), LbNode("b", "10.0.0.2"), LbNode("c", null)],
            PortMappings = [Mapping("s", "synced"), Mapping("p", "plain")],
            Now = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero),
        };
        var plan = Planner.Plan(input);
        Assert.Empty(plan.Problems);
        var byNode = plan.NodeConfigs.ToDictionary(c => c.Spec.NodeName);
        Assert.Equal([("b", "10.0.0.2")], byNode["a"].Spec.FlowSyncPeers.Select(p => (p.Node, p.Address)));
        Assert.Equal([("a", "10.0.0.1"), ("b", "10.0.0.2")], byNode["c"].Spec.FlowSyncPeers.Select(p => (p.Node, p.Address)));
        var listeners = plan.NodeConfigs.SelectMany(c => c.Spec.Listeners).ToList();
        Assert.All(listeners.Where(l => l.Name.StartsWith("ns/s/", StringComparison.Ordinal)), l => Assert.True(l.FlowSync));
        Assert.All(listeners.Where(l => l.Name.StartsWith("ns/p/", StringComparison.Ordinal)), l => Assert.Null(l.FlowSync));

        // A node's address is part of its config's content: a new one is a new revision.
        var previous = plan.NodeConfigs.ToDictionary(c => c.Spec.NodeName);
        var moved = Planner.Plan(input with { Nodes = [LbNode("a", "10.0.0.1"), LbNode("b", "10.0.0.22"), LbNode("c", null)], Previous = previous });
        Assert.Equal(previous["a"].Spec.Revision + 1, moved.NodeConfigs.Single(c => c.Spec.NodeName == "a").Spec.Revision);

        // Turned off, with the memo of the plan before: no peers, no marks.
        var memo = new PlanMemo();
        Planner.Plan(input with { Memo = memo });
        var off = Planner.Plan(input with { Memo = memo, Shards = [Shard("synced", false), Shard("plain", false)] });
        Assert.All(off.NodeConfigs, c => Assert.Empty(c.Spec.FlowSyncPeers));
        Assert.All(off.NodeConfigs.SelectMany(c => c.Spec.Listeners), l => Assert.Null(l.FlowSync));
    }

    [Fact]
    public void A_node_reads_its_internal_address_first_then_its_external_one()
    {
        Assert.Equal("10.0.0.1", LbNode("a", "10.0.0.1").ReachableAddress());
        var external = new Node { Metadata = new ObjectMeta { Name = "x" }, Status = new KubeNodeStatus { Addresses = [new NodeAddress { Type = "ExternalIP", Address = "203.0.113.5" }] } };
        Assert.Equal("203.0.113.5", external.ReachableAddress());
        Assert.Null(LbNode("c", null).ReachableAddress());
        var read = Xlb.Crds.Serialization.Manifests.Read("""
            apiVersion: v1
            kind: Node
            metadata: {name: n}
            status:
              addresses: [{type: InternalIP, address: 10.9.0.1}]
              conditions: [{type: Ready, status: "True"}]
            """, "n.yaml");
        Assert.Equal("10.9.0.1", read.Nodes.Single().ReachableAddress());
    }
}
