using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Xlb.Agent;
using Xlb.Agent.Bpf;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.DataPlane;

// XDP cost per packet through BPF_PROG_TEST_RUN, as ratios against floors measured in the same
// run. Runs inside an LB namespace of the testbed so the program's FIB lookups resolve.
// Usage: xlb-bench [repeat] [rounds]
var repeat = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 100_000;
var rounds = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 7;
if (!Netns.IsRoot)
{
    Console.Error.WriteLine("xlb-bench needs root (bpf() and network namespaces).");
    return 2;
}

var dir = Path.Combine(AppContext.BaseDirectory, "xdp");
using var topology = LbTopology.Create(LbTopology.NewPrefix("bench"), backends: 3);
// Every flow tracked here; `capped` is the same configuration with a new-flow cap of one per
// CPU per second, so its DSR flows are forwarded without state (see stateless() in xdp/xlb.c).
using var plane = XdpDataPlane.Load(Path.Combine(dir, "xlb.o"), new DataPlaneOptions { NewFlowCap = 0 });
using var capped = XdpDataPlane.Load(Path.Combine(dir, "xlb.o"), new DataPlaneOptions { NewFlowCap = 1 });
// The same without the per-CPU flow cache: every packet of an established flow looks it up in the flow table.
using var uncached = XdpDataPlane.Load(Path.Combine(dir, "xlb.o"), new DataPlaneOptions { NewFlowCap = 0, FlowCache = false });
var spec = new XlbNodeConfigSpec
{
    NodeName = "bench",
    Vips = [new NodeVip { Address = "10.250.0.10", Role = VipRole.Active, Shard = "s" }, new NodeVip { Address = "fd00:250::10", Role = VipRole.Active, Shard = "s" }],
    Listeners =
    [
        new Listener
        {
            Name = "bench/web/http", Vip = "10.250.0.10", Port = 80,
            Backends = [.. Enumerable.Range(1, 3).Select(i => new NodeBackend { Address = LbTopology.BackendAddress(i), Port = 8080 })],
        },
        new Listener
        {
            Name = "bench/web6/http", Vip = "fd00:250::10", Port = 80,
            Backends = [.. Enumerable.Range(1, 3).Select(i => new NodeBackend { Address = LbTopology.BackendAddress6(i), Port = 8080 })],
        },
        new Listener
        {
            Name = "bench/web/lc", Vip = "10.250.0.10", Port = 84, Algorithm = SchedulingAlgorithm.LeastConn,
            Backends = [.. Enumerable.Range(1, 3).Select(i => new NodeBackend { Address = LbTopology.BackendAddress(i), Port = 8080 })],
        },
        new Listener
        {
            Name = "bench/web/sticky", Vip = "10.250.0.10", Port = 85, Affinity = new AffinitySpec { Mode = AffinityMode.ClientIP, Timeout = new Duration(TimeSpan.FromHours(3)) },
            Backends = [.. Enumerable.Range(1, 3).Select(i => new NodeBackend { Address = LbTopology.BackendAddress(i), Port = 8080 })],
        },
        new Listener
        {
            Name = "bench/dsr/ipip", Vip = "10.250.0.10", Port = 83, NatMode = NatMode.DSR, DsrEncapsulation = DsrEncapsulation.IPIP,
            Backends = [.. Enumerable.Range(1, 3).Select(i => new NodeBackend { Address = LbTopology.BackendAddress(i), Port = 83 })],
        },
    ],
};
plane.Apply(spec);
capped.Apply(spec);
uncached.Apply(spec);
using var harness = BpfObject.Load(Path.Combine(dir, "harness.o"));
var restore = harness.ProgramFd("bench_restore");
var pass = harness.ProgramFd("bench_pass");
var macswap = harness.ProgramFd("bench_macswap");
var packets = harness.Map<uint, BenchPacket>("bench_packet");
var target = harness.Map<uint, int>("bench_target");

// Every bench packet is 74 bytes: IPv6 TCP, or IPv4 TCP with 20 bytes of payload.
static byte[] Tcp(string src, string dst, ushort sport, byte flags, ushort dport = 80) => new Packet
{
    Src = IPAddress.Parse(src), Dst = IPAddress.Parse(dst), SrcPort = sport, DstPort = dport, TcpFlags = flags,
    Payload = IPAddress.Parse(src).AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? new byte[20] : [],
}.Build();
var syn = Tcp(LbTopology.ClientAddress, "10.250.0.10", 40000, Packet.Syn);
var ack = Tcp(LbTopology.ClientAddress, "10.250.0.10", 40001, Packet.Ack);
var nonVip = Tcp(LbTopology.ClientAddress, "10.201.1.2", 40002, Packet.Ack);
var synDsr = Tcp(LbTopology.ClientAddress, "10.250.0.10", 40000, Packet.Syn, 83);
var synLc = Tcp(LbTopology.ClientAddress, "10.250.0.10", 40000, Packet.Syn, 84);
var synSticky = Tcp(LbTopology.ClientAddress, "10.250.0.10", 40000, Packet.Syn, 85);
var syn6 = Tcp(LbTopology.ClientAddress6, "fd00:250::10", 40000, Packet.Syn);
var ack6 = Tcp(LbTopology.ClientAddress6, "fd00:250::10", 40001, Packet.Ack);
var nonVip6 = Tcp(LbTopology.ClientAddress6, LbTopology.BackendAddress6(1), 40002, Packet.Ack);

// One run creates the flow that the established case then hits every time.
Netns.Run(topology.Lb, () => TestRun.Xdp(plane.ProgramFd, ack));
Netns.Run(topology.Lb, () => TestRun.Xdp(plane.ProgramFd, ack6));
Netns.Run(topology.Lb, () => TestRun.Xdp(uncached.ProgramFd, ack));

// The backend's reply on the established flow: backend:8080 -> VIP:its NAT port (FullNAT).
var ackKey = new XlbFlowKey
{
    Saddr = Addr16.From(IPAddress.Parse(LbTopology.ClientAddress)), Daddr = Addr16.From(IPAddress.Parse("10.250.0.10")),
    SportBe = Net.Be(40001), DportBe = Net.Be(80), Proto = XlbAbi.ProtoTcp, Family = XlbAbi.FamilyV4,
};
if (!plane.TryFindFlow(ackKey, out var ackFlow))
{
    Console.Error.WriteLine("the established flow was not created");
    return 1;
}
var backendAddress = ackFlow.Backend.ToAddress(XlbAbi.FamilyV4);
var reply = Tcp(backendAddress.ToString(), "10.250.0.10", 8080, Packet.Ack, (ushort)Net.FromBe(ackFlow.NatPortBe));
// Ingress interfaces: the client's link, and the link of the flow's backend. A packet that
// leaves by the link it came in on is sent back with XDP_TX (one-armed: clients and backends
// behind one interface); by another link, with bpf_redirect.
var clientLink = Netns.Run(topology.Lb, () => Xdp.IfIndex(LbTopology.ClientIfOnLb));
var backendLink = Netns.Run(topology.Lb, () => Xdp.IfIndex(LbTopology.BackendIfOnLb(LbTopology.BackendIndexOf(backendAddress))));

// New flows: each round starts from empty flow tables and makes at most this many flows, so the
// figure is the cost of a new flow, not of FullNAT source-port exhaustion (3 backends x 20,000
// ports), which 700,000 SYNs into one VIP would otherwise measure.
var synRepeat = Math.Min(repeat, 20_000);

double Measure(int prog, byte[] packet, bool wrapped, bool newFlows, int ingress = 0, XdpDataPlane? owner = null)
{
    if (wrapped)
    {
        packets.Update(0, BenchPacket.Of(packet, newFlows));
        target.Update(0, prog);
    }
    var fd = wrapped ? restore : prog;
    var samples = new List<double>();
    for (var r = 0; r < rounds; r++)
    {
        if (newFlows)
        {
            (owner ?? plane).ClearFlows();
        }
        samples.Add(Netns.Run(topology.Lb, () => TestRun.Xdp(fd, packet, newFlows ? synRepeat : repeat, ingress)).DurationNs);
    }
    samples.Sort();
    return samples[samples.Count / 2];
}

var passFloor = Measure(pass, nonVip, wrapped: false, newFlows: false);
var swapFloor = Measure(macswap, nonVip, wrapped: false, newFlows: false);
var wrapper = Measure(pass, nonVip, wrapped: true, newFlows: false) - passFloor;
// XLB_BENCH_ONLY=<row name part> times only the matching rows (for a profiler); the rest print 0.
var only = Environment.GetEnvironmentVariable("XLB_BENCH_ONLY");
var current = "";
double Program(byte[] p, bool fresh, int ingress = 0, XdpDataPlane? of = null) =>
    only is null || current.Contains(only, StringComparison.OrdinalIgnoreCase) ? Measure((of ?? plane).ProgramFd, p, wrapped: true, newFlows: fresh, ingress, of) - wrapper : double.NaN;
current = "non-VIP";
var nonVipNs = Program(nonVip, false);
current = "established";
var establishedNs = Program(ack, false);
current = "established one-armed";
var oneArmedNs = Program(ack, false, backendLink);
current = "established no-cache";
var uncachedNs = Program(ack, false, of: uncached);
current = "established one-armed no-cache";
var uncachedOneArmedNs = Program(ack, false, backendLink, uncached);
current = "reply";
var replyNs = Program(reply, false, backendLink);
current = "reply one-armed";
var replyOneArmedNs = Program(reply, false, clientLink);
current = "SYN";
var synNs = Program(syn, true);
current = "SYN LeastConn";
var synLcNs = Program(synLc, true);
current = "SYN affinity";
var synStickyNs = Program(synSticky, true);
current = "SYN DSR";
var synDsrNs = Program(synDsr, true);
current = "SYN DSR past the cap";
var synDsrCappedNs = Program(synDsr, true, of: capped);
current = "IPv6 non-VIP";
var nonVip6Ns = Program(nonVip6, false);
current = "IPv6 established";
var established6Ns = Program(ack6, false);
current = "IPv6 SYN";
var syn6Ns = Program(syn6, true);

using var stats = BpfObject.Load(Path.Combine(dir, "xlb.o"), null, 4);
var verified = Regex.Match(stats.VerifierLog, @"processed (\d+) insns");

Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"XDP cost per packet: BPF_PROG_TEST_RUN, repeat {repeat}, median of {rounds} rounds, {Environment.ProcessorCount} CPUs"));
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  floor XDP_PASS                 {passFloor,7:F1} ns"));
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  floor MAC-swap XDP_TX          {swapFloor,7:F1} ns   {swapFloor / passFloor,5:F2}x PASS"));
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  restore wrapper (subtracted)   {wrapper,7:F1} ns"));
Row("non-VIP traffic (XDP_PASS)", nonVipNs, 35);
Row("established flow (redirect)", establishedNs, 80);
Row("established, one-armed (TX)", oneArmedNs, 80);
Row("  without the flow cache", uncachedNs, 0);
Row("  one-armed, without it", uncachedOneArmedNs, 0);
Row("new flow, SYN (redirect)", synNs, 110);
Row("new flow, SYN, LeastConn", synLcNs, 0);
Row("new flow, SYN, affinity (new)", synStickyNs, 0);
Row("new flow, SYN, DSR IPIP", synDsrNs, 110);
Row("DSR IPIP SYN, past the cap", synDsrCappedNs, 110);
Row("FullNAT reply (redirect)", replyNs, 0);
Row("FullNAT reply, one-armed (TX)", replyOneArmedNs, 0);
Row("IPv6 non-VIP (XDP_PASS)", nonVip6Ns, 35);
Row("IPv6 established (redirect)", established6Ns, 80);
Row("IPv6 new flow, SYN (redirect)", syn6Ns, 110);
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  (new flows: {synRepeat} per round from empty tables)"));
Console.WriteLine($"  verified instructions: {(verified.Success ? verified.Groups[1].Value : "n/a")} (limit 1000000)");
return 0;

void Row(string name, double ns, double bar) =>
    Console.WriteLine(double.IsNaN(ns)
        ? $"  {name,-30}     not measured (XLB_BENCH_ONLY)"
        : string.Create(CultureInfo.InvariantCulture,
            $"  {name,-30} {ns,7:F1} ns   {ns / passFloor,5:F2}x PASS  {ns / swapFloor,5:F2}x MAC-swap{(bar > 0 ? $"   bar {bar} ns: {(ns <= bar ? "met" : "NOT met")}" : "")}"));

/// <summary>Mirror of struct bench_pkt in bench/xdp/harness.c.</summary>
[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
internal unsafe struct BenchPacket
{
    public const int Length = 74;
    public uint VaryFlow;
    public ushort AddrOff;
    public ushort PortOff;
    public fixed byte Data[Length];
    public fixed byte Pad[2];

    public static BenchPacket Of(byte[] packet, bool vary)
    {
        if (packet.Length != Length)
        {
            throw new ArgumentException($"bench packets are {Length} bytes", nameof(packet));
        }
        var v6 = packet[12] == 0x86 && packet[13] == 0xdd;
        // Source address bytes 2-3 (IPv4) or 14-15 (IPv6), and the TCP source port.
        var p = new BenchPacket { VaryFlow = vary ? 1u : 0u, AddrOff = (ushort)(v6 ? 14 + 8 + 14 : 14 + 12 + 2), PortOff = (ushort)(v6 ? 54 : 34) };
        packet.CopyTo(new Span<byte>(p.Data, Length));
        return p;
    }
}
