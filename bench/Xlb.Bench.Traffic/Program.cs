using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Xlb.Bench.Traffic;
using Xlb.Cli.Testbed;

// End to end through veth namespaces: HTTP requests/s and latency from a client namespace to one
// nginx backend, through the LB namespace four ways: routed by the kernel (direct, no load
// balancer), through HAProxy in TCP mode, and through XLB (the standalone operator and agent, real
// XDP) in FullNAT, DNAT and L2 DSR. Two loads: keep-alive connections, and a new connection per
// request. Ratios against direct and HAProxy measured in the same run.
// Usage: xlb-bench-traffic [seconds=5] [rounds=3] [connections=50]
var seconds = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 5;
var rounds = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 3;
var connections = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 50;
if (!Netns.IsRoot)
{
    Console.Error.WriteLine("xlb-bench-traffic needs root (network namespaces and XDP).");
    return 2;
}
var missing = new[] { "wrk", "nginx", "haproxy" }.Where(t => !OnPath(t)).ToList();
if (missing.Count > 0)
{
    Console.Error.WriteLine($"xlb-bench-traffic needs {string.Join(", ", missing)}: run ./setup.sh --bench (installs wrk, nginx-light and haproxy)");
    return 2;
}

const string FullNatVip = "10.250.0.20";
const string DnatVip = "10.250.0.21";
const string DsrVip = "10.250.0.22";
// FullNAT again, from four source addresses beside the VIP (spec.nat.sourceAddresses): addresses
// the pool reserves, so IPAM never hands them out.
const string SnatVip = "10.250.0.23";
const string HaproxyAddress = "10.200.0.1";
const int HaproxyPort = 8000;
var backend = LbTopology.BackendAddress(1);
(string Load, bool Close)[] Loads = [("keep-alive", false), ("new connections", true)];

var log = new StringWriter();
var work = Directory.CreateTempSubdirectory("xlb-bench-traffic-").FullName;
using var topology = LbTopology.Create(LbTopology.NewPrefix("traffic"), backends: 1);
var processes = new List<System.Diagnostics.Process>();
var results = new Dictionary<(string Load, string Row), List<WrkResult>>();
var drops = new Dictionary<(string Load, string Row), Dictionary<string, ulong>>();
try
{
    // Ports: the backend serves each way in on a port of its own (direct 8080, HAProxy 8081,
    // FullNAT 8082, DNAT 8083, DSR 8084, FullNAT with source addresses 8085). A backend keeps
    // the connections it closed in TIME_WAIT for 60 s, and takes a new SYN on such a tuple only with a newer TCP timestamp; Linux clients
    // draw a timestamp offset per connection, so a DNAT row after the direct one (the same
    // client address and port to the same backend port, through other destinations) would have
    // half its SYNs refused for a second.
    // The client opens a connection per request: every local port, and TIME_WAIT ports reused.
    Netns.Exec(topology.Client, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535");
    Netns.Exec(topology.Client, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1");
    // Direct: the client reaches the backend through the LB namespace, routed by its kernel.
    Netns.Ip(topology.Client, "route", "add", "10.201.0.0/16", "via", "10.200.0.1");
    // The L2 DSR backend holds that VIP on its loopback; nginx answers on every address.
    Netns.Ip(topology.Backends[0], "addr", "add", DsrVip + "/32", "dev", "lo");
    processes.Add(StartNginx(topology.Backends[0], work, log));
    WaitListening(topology.Client, new IPEndPoint(IPAddress.Parse(backend), 8080));

    var manifests = Path.Combine(work, "manifests");
    Directory.CreateDirectory(manifests);
    foreach (var f in Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "manifests")))
    {
        File.Copy(f, Path.Combine(manifests, Path.GetFileName(f)));
    }
    File.WriteAllText(Path.Combine(manifests, "30-bench.yaml"), Mappings(backend));

    Console.WriteLine($"End to end: client -> LB namespace -> one nginx backend, wrk 2 threads, {connections} connections, {seconds} s a run, {rounds} rounds, 2 CPUs shared by all");
    for (var round = 1; round <= rounds; round++)
    {
        foreach (var (load, close) in Loads)
        {
            Measure(load, "direct (kernel routing)", $"http://{backend}:8080/", close);
        }
        var haproxy = StartHaproxy(topology.Lb, work, backend, log);
        processes.Add(haproxy);
        WaitListening(topology.Client, new IPEndPoint(IPAddress.Parse(HaproxyAddress), HaproxyPort));
        foreach (var (load, close) in Loads)
        {
            Measure(load, "HAProxy TCP mode", $"http://{HaproxyAddress}:{HaproxyPort}/", close);
        }
        Netns.Stop(haproxy, TimeSpan.FromSeconds(5));
        processes.Remove(haproxy);

        using (var stack = StandaloneStack.Start(topology, manifests, "lb-1", log))
        {
            await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), CancellationToken.None);
            foreach (var (load, close) in Loads)
            {
                foreach (var (row, url) in (ReadOnlySpan<(string, string)>)[
                    ("XLB FullNAT", $"http://{FullNatVip}/"), ("XLB FullNAT, 4 sources", $"http://{SnatVip}/"),
                    ("XLB DNAT", $"http://{DnatVip}/"), ("XLB DSR (L2)", $"http://{DsrVip}:8084/")])
                {
                    var before = Counters(stack);
                    Measure(load, row, url, close);
                    var after = Counters(stack);
                    var d = drops.TryGetValue((load, row), out var x) ? x : drops[(load, row)] = [];
                    foreach (var (name, value) in after)
                    {
                        var delta = value - before.GetValueOrDefault(name);
                        if (name.StartsWith("drop_", StringComparison.Ordinal) && delta > 0)
                        {
                            d[name] = d.GetValueOrDefault(name) + delta;
                        }
                    }
                }
            }
        }
    }
    Report();
    return 0;
}
catch
{
    Console.Error.WriteLine(log.ToString());
    throw;
}
finally
{
    foreach (var p in processes)
    {
        Netns.Stop(p, TimeSpan.FromSeconds(5));
        p.Dispose();
    }
    Directory.Delete(work, recursive: true);
}

void Measure(string load, string row, string url, bool close)
{
    if (Environment.GetEnvironmentVariable("XLB_BENCH_ONLY") is { } only && !$"{load} {row}".Contains(only, StringComparison.Ordinal))
    {
        return;
    }
    var tcp = (Client: TcpStats(topology.Client), Backend: TcpStats(topology.Backends[0]));
    var cpu = CpuTimes();
    var r = Wrk.Run(topology.Client, url, seconds, connections, close);
    var idle = Idle(cpu, CpuTimes());
    var synRetrans = Delta(tcp.Client, TcpStats(topology.Client), "TcpExt:TCPSynRetrans");
    var backendNow = TcpStats(topology.Backends[0]);
    var refused = Delta(tcp.Backend, backendNow, "TcpExt:PAWSTimewait") + Delta(tcp.Backend, backendNow, "TcpExt:ListenOverflows");
    var list = results.TryGetValue((load, row), out var l) ? l : results[(load, row)] = [];
    list.Add(r with { SynRetransmits = synRetrans, IdlePercent = idle });
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"  {load,-16} {row,-24} {r.RequestsPerSecond,10:F0} req/s  p50 {r.P50Ms,6:F2} ms  p99 {r.P99Ms,6:F2} ms  errors {r.Errors}  CPU idle {idle,3:F0}%  SYNs sent again {synRetrans} (backend refused {refused})"));
}

void Report()
{
    Console.WriteLine();
    Console.WriteLine($"Median of {rounds} rounds (targets: XLB >= 0.9x direct and >= 2x HAProxy)");
    foreach (var (load, _) in Loads)
    {
        var direct = results.TryGetValue((load, "direct (kernel routing)"), out var dl) ? Median(dl, r => r.RequestsPerSecond) : double.NaN;
        var ha = results.TryGetValue((load, "HAProxy TCP mode"), out var hl) ? Median(hl, r => r.RequestsPerSecond) : double.NaN;
        Console.WriteLine($"  {load}:");
        foreach (var ((l, row), list) in results.Where(e => e.Key.Load == load))
        {
            var rps = Median(list, r => r.RequestsPerSecond);
            var p99 = Median(list, r => r.P99Ms);
            var errors = list.Sum(r => r.Errors);
            var again = list.Sum(r => r.SynRetransmits);
            var idle = Median(list, r => r.IdlePercent);
            var line = string.Create(CultureInfo.InvariantCulture,
                $"    {row,-24} {rps,10:F0} req/s  p99 {p99,7:F2} ms  {rps / direct,5:F2}x direct  {rps / ha,5:F2}x HAProxy  errors {errors}  SYNs sent again {again}  CPU idle {idle:F0}%");
            if (row.StartsWith("XLB", StringComparison.Ordinal))
            {
                line += $"  bars: {(rps >= 0.9 * direct ? "met" : "NOT met")} / {(rps >= 2 * ha ? "met" : "NOT met")}";
                if (drops.TryGetValue((l, row), out var d) && d.Count > 0)
                {
                    line += "  dropped: " + string.Join(", ", d.Select(e => $"{e.Key} {e.Value}"));
                }
            }
            Console.WriteLine(line);
        }
    }
}

static double Median(List<WrkResult> list, Func<WrkResult, double> f)
{
    var v = list.Select(f).Order().ToList();
    return v.Count % 2 == 1 ? v[v.Count / 2] : (v[(v.Count / 2) - 1] + v[v.Count / 2]) / 2;
}

static Dictionary<string, ulong> Counters(StandaloneStack stack)
{
    var counters = JsonNode.Parse(stack.Status("--node-config", stack.NodeConfigPath, "-o", "json"))!["counters"]!.AsObject();
    return counters.ToDictionary(e => e.Key, e => e.Value!.GetValue<ulong>());
}

static long Delta(Dictionary<string, long> before, Dictionary<string, long> after, string name) =>
    after.GetValueOrDefault(name) - before.GetValueOrDefault(name);

// The machine's CPU times (user, nice, system, idle, ...) from /proc/stat, and the idle share between two readings.
static long[] CpuTimes() => [.. File.ReadAllLines("/proc/stat")[0].Split(' ', StringSplitOptions.RemoveEmptyEntries)[1..].Select(v => long.Parse(v, CultureInfo.InvariantCulture))];

static double Idle(long[] before, long[] after)
{
    var d = after.Zip(before, (a, b) => a - b).ToArray();
    return d.Sum() == 0 ? 0 : d[3] * 100.0 / d.Sum();
}

// The TCP counters of a namespace (/proc/net/netstat and /proc/net/snmp, as nstat reads them), by "Group:Name".
static Dictionary<string, long> TcpStats(string ns)
{
    var d = new Dictionary<string, long>();
    foreach (var file in (string[])["/proc/net/netstat", "/proc/net/snmp"])
    {
        var lines = Netns.Exec(ns, "cat", file).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        for (var i = 0; i + 1 < lines.Length; i += 2)
        {
            var names = lines[i].Split(' ');
            var values = lines[i + 1].Split(' ');
            for (var j = 1; j < names.Length && j < values.Length; j++)
            {
                d[names[0] + names[j]] = long.Parse(values[j], CultureInfo.InvariantCulture);
            }
        }
    }
    return d;
}

static bool OnPath(string tool) =>
    (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin").Split(':').Append("/usr/sbin").Any(d => File.Exists(Path.Combine(d, tool)));

static System.Diagnostics.Process StartNginx(string ns, string work, TextWriter log)
{
    var prefix = Path.Combine(work, "nginx");
    Directory.CreateDirectory(prefix);
    var conf = Path.Combine(prefix, "nginx.conf");
    // One process, one worker: the same backend for every row.
    File.WriteAllText(conf, $$"""
        daemon off;
        master_process off;
        pid {{prefix}}/nginx.pid;
        error_log stderr warn;
        events { worker_connections 20000; }
        http {
            access_log off;
            keepalive_requests 100000000;
            keepalive_timeout 60s;
            server {
                # A port per way in (see Ports): no way meets another's TIME_WAIT tuples.
                listen 8080 backlog=4096 reuseport;
                listen 8081 backlog=4096 reuseport;
                listen 8082 backlog=4096 reuseport;
                listen 8083 backlog=4096 reuseport;
                listen 8084 backlog=4096 reuseport;
                listen 8085 backlog=4096 reuseport;
                location / { return 200 "ok\n"; }
            }
        }
        """);
    return Netns.Start("ip", ["netns", "exec", ns, "nginx", "-p", prefix, "-c", conf], log, "nginx");
}

static System.Diagnostics.Process StartHaproxy(string ns, string work, string backend, TextWriter log)
{
    var conf = Path.Combine(work, "haproxy.cfg");
    File.WriteAllText(conf, $"""
        global
            maxconn 8000
        defaults
            mode tcp
            timeout connect 5s
            timeout client 60s
            timeout server 60s
        frontend bench
            bind {HaproxyAddress}:{HaproxyPort}
            default_backend one
        backend one
            server b1 {backend}:8081

        """);
    return Netns.Start("ip", ["netns", "exec", ns, "haproxy", "-db", "-f", conf], log, "haproxy");
}

static void WaitListening(string ns, IPEndPoint at)
{
    for (var i = 0; i < 100; i++)
    {
        var up = Netns.Run(ns, () =>
        {
            using var s = new Socket(at.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                s.Connect(at);
                return true;
            }
            catch (SocketException)
            {
                return false;
            }
        });
        if (up)
        {
            return;
        }
        Thread.Sleep(100);
    }
    throw new TimeoutException($"nothing listens on {at} (seen from {ns})");
}

// One PortMapping per XLB row, each to the one backend on its own port (see Ports above).
static string Mappings(string backend) => string.Join("---\n",
    Mapping("fullnat", FullNatVip, "port: 80, targetPort: 8082", "{mode: FullNAT}", backend),
    Mapping("snat", SnatVip, "port: 80, targetPort: 8085", "{mode: FullNAT, sourceAddresses: [10.250.0.5, 10.250.0.6, 10.250.0.7, 10.250.0.8]}", backend),
    Mapping("dnat", DnatVip, "port: 80, targetPort: 8083", "{mode: DNAT}", backend),
    // DSR leaves the port as it is: the backend serves the VIP on it.
    Mapping("dsr", DsrVip, "port: 8084", "{mode: DSR, dsrEncapsulation: L2}", backend));

static string Mapping(string name, string vip, string port, string nat, string backend) => $$"""
    apiVersion: xlb.io/v1alpha1
    kind: PortMapping
    metadata: {name: {{name}}, namespace: bench}
    spec:
      shardRef: edge
      vip: {{vip}}
      ports: [{name: http, {{port}}}]
      nat: {{nat}}
      backend: {endpoints: [{address: {{backend}}}]}

    """;
