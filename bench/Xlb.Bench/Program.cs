using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using Xlb.Agent;
using Xlb.Agent.Bpf;
using Xlb.Cli.Testbed;
using Xlb.Crds;

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
using var plane = XdpDataPlane.Load(Path.Combine(dir, "xlb.o"));
plane.Apply(new XlbNodeConfigSpec
{
    NodeName = "bench",
    Vips = [new NodeVip { Address = "10.250.0.10", Role = VipRole.Active, Shard = "s" }],
    Listeners = [new Listener
    {
        Name = "bench/web/http", Vip = "10.250.0.10", Port = 80,
        Backends = [.. Enumerable.Range(1, 3).Select(i => new NodeBackend { Address = LbTopology.BackendAddress(i), Port = 8080 })],
    }],
});
using var harness = BpfObject.Load(Path.Combine(dir, "harness.o"));
var restore = harness.ProgramFd("bench_restore");
var pass = harness.ProgramFd("bench_pass");
var macswap = harness.ProgramFd("bench_macswap");
var packets = harness.Map<uint, BenchPacket>("bench_packet");
var target = harness.Map<uint, int>("bench_target");

var client = IPAddress.Parse(LbTopology.ClientAddress);
var vip = IPAddress.Parse("10.250.0.10");
var syn = new Packet { Src = client, Dst = vip, SrcPort = 40000, DstPort = 80, TcpFlags = Packet.Syn }.Build();
var ack = new Packet { Src = client, Dst = vip, SrcPort = 40001, DstPort = 80, TcpFlags = Packet.Ack }.Build();
var nonVip = new Packet { Src = client, Dst = IPAddress.Parse("10.201.1.2"), SrcPort = 40002, DstPort = 80, TcpFlags = Packet.Ack }.Build();

// One run creates the flow that the established case then hits every time.
Netns.Run(topology.Lb, () => TestRun.Xdp(plane.ProgramFd, ack));

// New flows: each round starts from empty flow tables and makes at most this many flows, so the
// figure is the cost of a new flow, not of FullNAT source-port exhaustion (3 backends x 20,000
// ports), which 700,000 SYNs into one VIP would otherwise measure.
var synRepeat = Math.Min(repeat, 20_000);

double Measure(int prog, byte[] packet, bool wrapped, bool newFlows)
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
            plane.ClearFlows();
        }
        samples.Add(Netns.Run(topology.Lb, () => TestRun.Xdp(fd, packet, newFlows ? synRepeat : repeat)).DurationNs);
    }
    samples.Sort();
    return samples[samples.Count / 2];
}

var passFloor = Measure(pass, nonVip, wrapped: false, newFlows: false);
var swapFloor = Measure(macswap, nonVip, wrapped: false, newFlows: false);
var wrapper = Measure(pass, nonVip, wrapped: true, newFlows: false) - passFloor;
double Program(byte[] p, bool fresh) => Measure(plane.ProgramFd, p, wrapped: true, newFlows: fresh) - wrapper;
var nonVipNs = Program(nonVip, false);
var establishedNs = Program(ack, false);
var synNs = Program(syn, true);

using var stats = BpfObject.Load(Path.Combine(dir, "xlb.o"), null, 4);
var verified = Regex.Match(stats.VerifierLog, @"processed (\d+) insns");

Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"XDP cost per packet: BPF_PROG_TEST_RUN, repeat {repeat}, median of {rounds} rounds, {Environment.ProcessorCount} CPUs"));
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  floor XDP_PASS                 {passFloor,7:F1} ns"));
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  floor MAC-swap XDP_TX          {swapFloor,7:F1} ns   {swapFloor / passFloor,5:F2}x PASS"));
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  restore wrapper (subtracted)   {wrapper,7:F1} ns"));
Row("non-VIP traffic (XDP_PASS)", nonVipNs, 35);
Row("established flow (redirect)", establishedNs, 80);
Row("new flow, SYN (redirect)", synNs, 110);
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  (new flows: {synRepeat} per round from empty tables)"));
Console.WriteLine($"  verified instructions: {(verified.Success ? verified.Groups[1].Value : "n/a")} (limit 1000000)");
return 0;

void Row(string name, double ns, double bar) =>
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"  {name,-30} {ns,7:F1} ns   {ns / passFloor,5:F2}x PASS  {ns / swapFloor,5:F2}x MAC-swap   bar {bar} ns: {(ns <= bar ? "met" : "NOT met")}"));

/// <summary>Mirror of struct bench_pkt in bench/xdp/harness.c.</summary>
[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
internal unsafe struct BenchPacket
{
    public uint VaryFlow;
    public fixed byte Data[54];
    public fixed byte Pad[2];

    public static BenchPacket Of(byte[] packet, bool vary)
    {
        if (packet.Length != 54)
        {
            throw new ArgumentException("bench packets are 54 bytes (Ethernet, IPv4, TCP without options)", nameof(packet));
        }
        var p = new BenchPacket { VaryFlow = vary ? 1u : 0u };
        packet.CopyTo(new Span<byte>(p.Data, 54));
        return p;
    }
}
