using System.Diagnostics;
using System.Globalization;
using Xlb.Agent;
using Xlb.Agent.Bpf;
using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.DataPlane;

// The agent's apply of a large revision into real maps, beside a plain batch write of the same
// entries measured in the same run. No packets: private maps, no namespace.
// Usage: xlb-bench-apply [services=10000] [backends=50] [rounds=5]
var services = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 10_000;
var perService = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 50;
var rounds = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 5;
if (Environment.UserName != "root")
{
    Console.Error.WriteLine("xlb-bench-apply needs root (bpf()).");
    return 2;
}

// 40 VIPs × 250 ports; every service has its own backends, as pods of distinct services do.
string VipOf(int s) => $"10.250.{s / 250 / 250}.{(s / 250 % 250) + 1}";
Listener ListenerOf(int s, int generation) => new()
{
    Name = $"bench/svc{s}/tcp",
    Vip = VipOf(s),
    Port = 1000 + (s % 250),
    Backends = [.. Enumerable.Range(0, perService).Select(e => new NodeBackend
    {
        Address = $"10.{100 + (s / 250)}.{s % 250}.{(e + 1 + generation) % 254 + 1}",
        Port = 8080,
    })],
};
var spec = new XlbNodeConfigSpec
{
    NodeName = "bench",
    Vips = [.. Enumerable.Range(0, services).Select(VipOf).Distinct().Select(v => new NodeVip { Address = v, Role = VipRole.Active, Shard = "s" })],
    Listeners = [.. Enumerable.Range(0, services).Select(s => ListenerOf(s, 0))],
};
var capacity = DataPlaneCapacity.For(services * perService, services * Maglev.DefaultSize);
var objectPath = Path.Combine(AppContext.BaseDirectory, "xdp", "xlb.o");

// The reference: the same entries (one generation), written by batch into maps of the same
// sizes, and nothing else: no build, no read, no diff.
var image = MapImage.Build(spec, 1, capacity: capacity);
var backendKeys = Enumerable.Range(1, image.Backends.Count).Select(image.BackendKey).ToArray();
var ringKeys = Enumerable.Range(0, image.Ring.Length).Select(image.RingKey).ToArray();
var ring = image.Ring;
var backendValues = image.Backends.ToArray();
var (svcKeys, svcValues) = (image.Services.Keys.ToArray(), image.Services.Values.ToArray());
var (vipKeys, vipValues) = (image.Vips.Keys.ToArray(), image.Vips.Values.ToArray());
var entries = backendKeys.Length + ringKeys.Length + svcKeys.Length + vipKeys.Length;
double Reference()
{
    using var obj = BpfObject.Load(objectPath, null, 0, capacity.MapSizes());
    var started = Stopwatch.GetTimestamp();
    obj.Map<uint, XlbBackend>("xlb_backends").UpdateBatch(backendKeys, backendValues);
    obj.Map<uint, uint>("xlb_rings").UpdateBatch(ringKeys, ring);
    obj.Map<XlbSvcKey, XlbSvc>("xlb_services").UpdateBatch(svcKeys, svcValues);
    obj.Map<XlbVipKey, uint>("xlb_vips").UpdateBatch(vipKeys, vipValues);
    return Stopwatch.GetElapsedTime(started).TotalMilliseconds;
}

var builds = new List<double>();
for (var r = 0; r < rounds; r++)
{
    var started = Stopwatch.GetTimestamp();
    MapImage.Build(spec, 0, capacity: capacity);
    builds.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
}

var options = new DataPlaneOptions { Capacity = capacity };
var reference = new List<double>();
var first = new List<double>();
var same = new List<double>();
var verified = new List<double>();
var one = new List<double>();
var hundred = new List<double>();
var opsOne = 0;
var opsHundred = 0;
for (var r = 0; r < rounds; r++)
{
    reference.Add(Reference());
    using var plane = XdpDataPlane.Load(objectPath, options);
    first.Add(plane.Apply(spec).Elapsed.TotalMilliseconds);
    // Both generations hold a recent revision, as on a node that has run for a while.
    plane.Apply(spec with { Listeners = [.. spec.Listeners.Skip(1)] });
    plane.Apply(spec);
    verified.Add(plane.Apply(spec, verify: true).Elapsed.TotalMilliseconds);
    same.Add(plane.Apply(spec, verify: false).Elapsed.TotalMilliseconds);
    // One endpoint of one service replaced: the commonest revision (a pod rescheduled).
    XlbNodeConfigSpec OneChanged(int which) => spec with { Listeners = [.. spec.Listeners.Select((l, i) => i == which ? l with { Backends = [.. l.Backends.Take(perService - 1), new NodeBackend { Address = $"10.99.{which % 250}.1", Port = 8080 }] } : l)] };
    // Warm: after a full resync the generation about to be written is read once; from then on
    // both generations are known. The inactive one then holds the revision before last.
    plane.Apply(OneChanged(2 * r), verify: false);
    plane.Apply(spec, verify: false);
    var changedOne = OneChanged((2 * r) + 1);
    var applied = plane.Apply(changedOne, verify: false);
    (one as List<double>).Add(applied.Elapsed.TotalMilliseconds);
    opsOne = applied.Operations;
    // 1% of the services get all new endpoints (a rollout).
    var changedHundred = changedOne with { Listeners = [.. changedOne.Listeners.Select((l, i) => i % 100 == 0 ? ListenerOf(i, 1 + r) : l)] };
    applied = plane.Apply(changedHundred, verify: false);
    hundred.Add(applied.Elapsed.TotalMilliseconds);
    opsHundred = applied.Operations;
}

static double Median(List<double> xs)
{
    var s = xs.Order().ToList();
    return s.Count % 2 == 1 ? s[s.Count / 2] : (s[(s.Count / 2) - 1] + s[s.Count / 2]) / 2;
}
var refMs = Median(reference);
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Agent apply: {services:N0} services × {perService} backends, median of {rounds} rounds, {Environment.ProcessorCount} CPUs"));
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  maps: {capacity.BackendSlots:N0} backend slots, {capacity.RingSlots:N0} ring slots per generation"));
Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  reference: batch write of {entries:N0} entries            {refMs,8:F1} ms"));
void Row(string what, List<double> xs, string extra = "") =>
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {what,-44} {Median(xs),8:F1} ms  {Median(xs) / refMs,6:F2}x reference{extra}"));
Row("image build alone (pure, no maps)", builds);
Row("first apply (empty maps)", first);
Row("same revision, full resync (reads the maps)", verified);
Row("same revision, between resyncs", same);
Row($"one endpoint changed ({opsOne:N0} writes)", one, Median(one) <= 100 ? "   bar 100 ms: met" : "   bar 100 ms: NOT met");
Row($"1% of services rolled ({opsHundred:N0} writes)", hundred, Median(hundred) <= 100 ? "   bar 100 ms: met" : "   bar 100 ms: NOT met");
return 0;
