using System.Diagnostics;
using System.Net;
using Xlb.Agent;
using Xlb.Agent.Bpf;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.DataPlane;
using Xlb.Tests.Support;
using Net = Xlb.DataPlane.Net;

namespace Xlb.Tests.Bpf;

/// <summary>
/// Random and mutated packets through the real program (BPF_PROG_TEST_RUN), each checked against
/// <see cref="XdpModel"/>: verdict, output bytes, checksum validity, and the reason counters.
/// Seeded (XLB_FUZZ_SEED) and bounded in count (XLB_FUZZ_PACKETS) and time (XLB_FUZZ_MINUTES).
/// </summary>
public class FuzzTests(ITestOutputHelper output)
{
    private const string Vip4 = "10.250.0.10";
    private const string Vip6 = "fd00:250::10";
    private const ushort NatMin = 40000, NatMax = 59999;

    private static readonly byte[][] s_flags =
        [[Packet.Syn], [Packet.Ack], [Packet.Ack | 0x08], [Packet.Fin | Packet.Ack], [Packet.Rst], [Packet.Syn | Packet.Ack]];

    private static int Env(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), out var v) ? v : fallback;

    private static XlbNodeConfigSpec Spec() => new()
    {
        NodeName = "lb-1",
        Vips = [new NodeVip { Address = Vip4, Role = VipRole.Active, Shard = "s" }, new NodeVip { Address = Vip6, Role = VipRole.Active, Shard = "s" }],
        Listeners =
        [
            // LeastConn: which backend is not modelled (as for Maglev), but the program's open-flow
            // counts must match its flow tables exactly after every stretch (one CPU, nothing evicted).
            Two("f/web4/http", Vip4, 80, L4Protocol.TCP, 8080, LbTopology.BackendAddress) with { Algorithm = SchedulingAlgorithm.LeastConn },
            Two("f/dns4/dns", Vip4, 53, L4Protocol.UDP, 5353, LbTopology.BackendAddress),
            // ClientIP affinity: a new flow follows the client's last, which the model learns as ever.
            Two("f/web6/http", Vip6, 80, L4Protocol.TCP, 8080, LbTopology.BackendAddress6) with
            {
                Affinity = new AffinitySpec { Mode = AffinityMode.ClientIP, Timeout = new Duration(TimeSpan.FromHours(1)) },
            },
            Two("f/dns6/dns", Vip6, 53, L4Protocol.UDP, 5353, LbTopology.BackendAddress6),
        ],
    };

    private static Listener Two(string name, string vip, int port, L4Protocol proto, int target, Func<int, string> backend) => new()
    {
        Name = name, Vip = vip, Port = port, Protocol = proto,
        Backends = [new NodeBackend { Address = backend(1), Port = target }, new NodeBackend { Address = backend(2), Port = target }],
    };

    [Fact]
    public void A_million_random_and_mutated_packets_agree_with_the_model()
    {
        Privileged.Require();
        var packets = Env("XLB_FUZZ_PACKETS", 1_000_000);
        var seed = Env("XLB_FUZZ_SEED", 20261122);
        var deadline = TimeSpan.FromMinutes(Env("XLB_FUZZ_MINUTES", 10));
        using var topology = LbTopology.Create(LbTopology.NewPrefix("z"), backends: 2);
        using var plane = DataPlaneFixture.Alive(XdpDataPlane.Load(XdpDataPlane.DefaultObjectPath, new DataPlaneOptions
        {
            NatPortMin = NatMin,
            NatPortMax = NatMax,
            // Every flow tracked and every too-big packet answered: the limits depend on the clock, which the model does not follow.
            NewFlowCap = 0,
            IcmpRate = 0,
            // Idle timeouts far beyond the run: the model's flows never expire.
            Timeouts = new FlowTimeouts { TcpNew = TimeSpan.FromHours(1), TcpEstablished = TimeSpan.FromHours(1), TcpClosing = TimeSpan.FromHours(1), Udp = TimeSpan.FromHours(1) },
        }));
        var spec = Spec();
        plane.Apply(spec);

        var filter = new FilterImage();
        filter.AddVip(IPAddress.Parse(Vip4));
        filter.AddVip(IPAddress.Parse(Vip6));
        byte[] Mac(string ns, string ifname) => DataPlaneFixture.MacBytes(LbTopology.Mac(ns, ifname));
        var backendMacs = new Dictionary<string, (byte[], byte[])>();
        for (var i = 1; i <= 2; i++)
        {
            var macs = (Mac(topology.Backends[i - 1], "eth0"), Mac(topology.Lb, LbTopology.BackendIfOnLb(i)));
            backendMacs[Convert.ToHexString(IPAddress.Parse(LbTopology.BackendAddress(i)).GetAddressBytes())] = macs;
            backendMacs[Convert.ToHexString(IPAddress.Parse(LbTopology.BackendAddress6(i)).GetAddressBytes())] = macs;
        }
        byte[] clientMacs = [.. Mac(topology.Client, "eth0"), .. Mac(topology.Lb, LbTopology.ClientIfOnLb)];
        var clients = new[] { LbTopology.ClientAddress, LbTopology.ClientAddress6 }.Select(a => IPAddress.Parse(a).GetAddressBytes()).ToArray();
        var services = spec.Listeners.Select(l => new XdpModel.Service(
            IPAddress.Parse(l.Vip).GetAddressBytes(), (ushort)l.Port, l.Protocol == L4Protocol.TCP ? (byte)6 : (byte)17,
            [.. l.Backends.Select(b => IPAddress.Parse(b.Address).GetAddressBytes())], (ushort)l.Backends[0].Port,
            b => backendMacs[Convert.ToHexString(b)])).ToList();
        // Test runs come in on lo (ifindex 1): ARP and neighbour solicitations for the VIPs are answered with this MAC.
        byte[] ifMac = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
        plane.SetInterfaceMac(1, ifMac);
        // VLAN 7 (802.1Q) has a device on the ingress interface: its answers carry this MAC. The
        // device is the ingress itself (lo), so the FIB answers as for untagged packets.
        byte[] vlanMac = [0x02, 0x00, 0x5e, 0x10, 0x07, 0x01];
        plane.SetVlans([new Xlb.Agent.Core.VlanLink(1, "lo.7", 1, XlbAbi.Vlan8021Q, 7, vlanMac)]);
        var model = new XdpModel(services, filter, NatMin, NatMax,
            a => clients.Any(c => c.AsSpan().SequenceEqual(a)) ? clientMacs : null)
        {
            InterfaceMac = ifMac,
            VlanMacs = new Dictionary<(ushort, ushort), byte[]> { [(XlbAbi.Vlan8021Q, 7)] = vlanMac },
        };

        var rng = new Random(seed);
        var fd = plane.ProgramFd;
        var disagreements = new List<string>();
        var predicted = new Dictionary<XlbStat, long>();
        var fibOpen = 0L;
        var verdicts = new Dictionary<int, long>();
        var totals = new Dictionary<XlbStat, long>();
        var run = 0;
        var clock = Stopwatch.StartNew();
        var before = plane.Stats();

        // Reason counters: every reason the model names must have moved by exactly as much; the
        // FIB's answer for addresses the model does not route is one of redirect or pass.
        string? CompareCounters()
        {
            var after = plane.Stats();
            string[] fib = [nameof(XlbStat.Redirect), nameof(XlbStat.Tx), nameof(XlbStat.PassFibNoNeigh), nameof(XlbStat.PassFibFailed)];
            var problems = new List<string>();
            long fibActual = 0, fibPredicted = fibOpen;
            foreach (var s in Enum.GetValues<XlbStat>().Where(s => s != XlbStat.Count))
            {
                var actual = (long)(after[s] - before[s]);
                var want = predicted.GetValueOrDefault(s);
                if (fib.Contains(s.ToString()))
                {
                    fibActual += actual;
                    fibPredicted += want;
                }
                else if (actual != want)
                {
                    problems.Add($"{s}: {actual}, model {want}");
                }
            }
            if (fibActual != fibPredicted)
            {
                problems.Add($"forwarding outcomes: {fibActual}, model {fibPredicted}");
            }
            return problems.Count == 0 ? null : string.Join("; ", problems);
        }

        Netns.Run(topology.Lb, () =>
        {
            for (run = 0; run < packets && clock.Elapsed < deadline && disagreements.Count < 10; run++)
            {
                if (model.FlowCount > 5000)
                {
                    // Keep NAT ports far from exhaustion: start both tables afresh, counted so far.
                    if (CompareCounters() is { } drift)
                    {
                        disagreements.Add($"counters after {run} packets: {drift}");
                    }
                    if (plane.RecountConnections() is > 0 and var off)
                    {
                        disagreements.Add($"after {run} packets, {off} backends' LeastConn counts differ from the flow tables");
                    }
                    plane.ClearFlows();
                    model.Reset();
                    before = plane.Stats();
                    predicted.Clear();
                    fibOpen = 0;
                }
                var input = Generate(rng, model);
                var expect = model.Predict(input);
                var result = TestRun.Xdp(fd, input);
                foreach (var r in expect.Reasons)
                {
                    predicted[r] = predicted.GetValueOrDefault(r) + 1;
                    totals[r] = totals.GetValueOrDefault(r) + 1;
                }
                if (expect.FibOpen)
                {
                    fibOpen++;
                }
                verdicts[(int)result.Verdict] = verdicts.GetValueOrDefault((int)result.Verdict) + 1;
                // XLB_FUZZ_DEBUG: compare the counters after every packet, to find the one that drifts.
                if (Environment.GetEnvironmentVariable("XLB_FUZZ_DEBUG") is not null && CompareCounters() is { } d)
                {
                    disagreements.Add($"counters at packet {run}: {d}; expected {expect.Outcome} {string.Join(",", expect.Reasons)}; input {Convert.ToHexString(input)}");
                    before = plane.Stats();
                    predicted.Clear();
                    fibOpen = 0;
                }
                var why = model.Check(expect, input, (int)result.Verdict, result.Packet);
                if (why is null && expect.Unobserved is { } hidden)
                {
                    // A new flow whose packet passed (TTL spent): read its backend and NAT port from the table.
                    var f = hidden.Service;
                    var v6 = f.Vip.Length == 16;
                    var key = new XlbFlowKey
                    {
                        Saddr = Addr16.From(new IPAddress(hidden.Client)), Daddr = Addr16.From(new IPAddress(f.Vip)),
                        SportBe = Net.Be(hidden.ClientPort), DportBe = Net.Be(f.Port), Proto = f.Proto,
                        Family = v6 ? XlbAbi.FamilyV6 : XlbAbi.FamilyV4,
                    };
                    why = plane.TryFindFlow(key, out var cf)
                        ? model.Learn(hidden, cf.Backend.ToAddress(key.Family).GetAddressBytes(), (ushort)Net.FromBe(cf.NatPortBe))
                        : "a new flow that passed is not in the flow table";
                }
                if (why is not null)
                {
                    disagreements.Add($"packet {run} (seed {seed}): {why}; input {Convert.ToHexString(input)}");
                }
            }
            return 0;
        });
        if (CompareCounters() is { } final)
        {
            disagreements.Add($"counters at the end: {final}");
        }
        if (plane.RecountConnections() is > 0 and var wrong)
        {
            disagreements.Add($"at the end, {wrong} backends' LeastConn counts differ from the flow tables");
        }

        output.WriteLine($"{run} packets in {clock.Elapsed.TotalSeconds:F1} s, seed {seed}; verdicts {string.Join(", ", verdicts.OrderBy(v => v.Key).Select(v => $"{v.Key}:{v.Value}"))}");
        output.WriteLine($"new flows that took the NAT port of an ended connection: {model.Takeovers}");
        output.WriteLine($"reasons: {string.Join(", ", totals.OrderBy(t => t.Key).Select(t => $"{t.Key} {t.Value}"))}");
        Assert.True(disagreements.Count == 0, string.Join("\n", disagreements));
        Assert.True(run >= packets, $"only {run} of {packets} packets ran within {deadline}");
    }

    /// <summary>A packet: random bytes, a reply to a known flow, or a well-formed request; then perhaps mutated, and perhaps tagged.</summary>
    private static byte[] Generate(Random rng, XdpModel model)
    {
        var p = GenerateUntagged(rng, model);
        if (rng.Next(100) >= 15)
        {
            return p;
        }
        // A VLAN tag: mostly VLAN 7 (known), with random priority bits; sometimes two (QinQ), sometimes cut short.
        var tpid = rng.Next(5) == 0 ? XlbAbi.Vlan8021Ad : XlbAbi.Vlan8021Q;
        var tci = (ushort)((rng.Next(2) == 0 ? 7 : rng.Next(4096)) | rng.Next(16) << 12);
        p = Packet.Tagged(p, tpid, 0);
        p[14] = (byte)(tci >> 8);
        p[15] = (byte)tci;
        if (rng.Next(10) == 0)
        {
            p = Packet.Tagged(p, rng.Next(2) == 0 ? XlbAbi.Vlan8021Ad : XlbAbi.Vlan8021Q, (ushort)rng.Next(4096));
        }
        return rng.Next(20) == 0 ? p[..rng.Next(14, 19)] : p;
    }

    private static byte[] GenerateUntagged(Random rng, XdpModel model)
    {
        var kind = rng.Next(100);
        byte[] p;
        if (kind < 4)
        {
            p = new byte[rng.Next(14, 128)];
            rng.NextBytes(p);
            if (rng.Next(2) == 0)
            {
                (p[12], p[13]) = rng.Next(2) == 0 ? ((byte)0x08, (byte)0x00) : ((byte)0x86, (byte)0xdd);
            }
            return p;
        }
        if (kind < 7)
        {
            p = Resolution(rng);
            return rng.Next(2) == 0 ? Mutate(rng, p) : p;
        }
        var flags = s_flags[rng.Next(s_flags.Length)][0];
        var replies = kind < 20 ? model.KnownReplies().Take(64).ToList() : [];
        if (replies.Count > 0)
        {
            var (backend, target, vip, nat, proto) = replies[rng.Next(replies.Count)];
            p = new Packet
            {
                Src = new IPAddress(backend), Dst = new IPAddress(vip), SrcPort = target, DstPort = nat, Protocol = proto,
                TcpFlags = flags, Payload = RandomBytes(rng, 12),
            }.Build();
        }
        else
        {
            var v6 = rng.Next(10) < 4;
            var client = IPAddress.Parse(v6 ? LbTopology.ClientAddress6 : LbTopology.ClientAddress);
            var dst = rng.Next(10) switch
            {
                < 8 => IPAddress.Parse(v6 ? Vip6 : Vip4),
                8 => IPAddress.Parse(v6 ? LbTopology.BackendAddress6(1) : LbTopology.BackendAddress(1)),
                _ => IPAddress.Parse(v6 ? "fd00:250::11" : "10.250.0.11"),
            };
            var proto = rng.Next(10) < 7 ? (byte)6 : (byte)17;
            var port = rng.Next(10) switch { < 8 => proto == 6 ? 80 : 53, 8 => 443, _ => rng.Next(1, 65536) };
            IReadOnlyList<(byte, byte[])> ext = [];
            if (v6 && rng.Next(5) == 0)
            {
                ext = [.. Enumerable.Range(0, rng.Next(1, 4)).Select(_ => (rng.Next(3) switch { 0 => (byte)0, 1 => (byte)60, _ => (byte)43 }, new byte[8 * rng.Next(1, 3)]))];
            }
            p = new Packet
            {
                Src = client, Dst = dst, SrcPort = (ushort)(1000 + rng.Next(64)), DstPort = (ushort)port, Protocol = proto,
                TcpFlags = flags, Payload = RandomBytes(rng, 16), Extensions = ext,
            }.Build();
        }
        if (rng.Next(10) < 4)
        {
            p = Mutate(rng, p);
        }
        return p;
    }

    /// <summary>An ARP request or an IPv6 neighbour solicitation, for a VIP or not, from a host or not.</summary>
    private static byte[] Resolution(Random rng)
    {
        byte[] mac = [0x02, 0xaa, 0, 0, 0, (byte)rng.Next(256)];
        var v6 = rng.Next(2) == 0;
        var target = IPAddress.Parse(rng.Next(4) switch { < 3 => v6 ? Vip6 : Vip4, _ => v6 ? "fd00:250::11" : "10.250.0.11" });
        var sender = IPAddress.Parse(rng.Next(8) switch
        {
            0 => v6 ? "::" : "0.0.0.0",
            1 => target.ToString(),
            _ => v6 ? LbTopology.ClientAddress6 : LbTopology.ClientAddress,
        });
        // With a valid checksum; mutation may spoil it (the program does not check it).
        return v6 ? Packet.NeighbourSolicitation(mac, sender, target) : Packet.ArpRequest(mac, sender, target);
    }

    private static byte[] RandomBytes(Random rng, int max)
    {
        var b = new byte[rng.Next(max + 1)];
        rng.NextBytes(b);
        return b;
    }

    private static byte[] Mutate(Random rng, byte[] p)
    {
        var v6 = p[12] == 0x86 && p[13] == 0xdd;
        for (var m = rng.Next(1, 4); m > 0; m--)
        {
            switch (rng.Next(9))
            {
                case 0:
                case 1:
                    p[rng.Next(p.Length)] = (byte)rng.Next(256);
                    break;
                case 2:
                    p = p[..rng.Next(14, p.Length + 1)];
                    break;
                case 3:
                    p = [.. p, .. RandomBytes(rng, 20)];
                    break;
                case 4 when p.Length > 22:
                    p[v6 ? 21 : 22] = (byte)rng.Next(3); // TTL / hop limit 0..2
                    break;
                case 5 when p.Length > 21 && !v6:
                    p[20] = (byte)rng.Next(256); // flags and fragment offset
                    break;
                case 6 when p.Length > 14 && !v6:
                    p[14] = (byte)(0x40 | rng.Next(16)); // header length
                    break;
                case 7 when p.Length > 23:
                    p[v6 ? 20 : 23] = (byte)(rng.Next(3) switch { 0 => 6, 1 => 17, _ => rng.Next(256) }); // protocol / next header
                    break;
                case 8 when p.Length > 19:
                    p[v6 ? 18 : 16] = (byte)rng.Next(256); // datagram length, high byte
                    p[v6 ? 19 : 17] = (byte)rng.Next(256);
                    break;
            }
        }
        return p;
    }
}
