using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Xlb.ApiServerDouble;
using Xlb.Crds;
using Xlb.Kube;
using Xlb.Operator.Core;

// The operator at scale against the API server double: the operator runs as its own process
// (`xlb operator --kubeconfig`), so its peak RSS is its own. Figures:
//  - full resync: operator start → every node config rendered and every PortMapping status
//    written, beside the reference of one pure Planner.Plan over the same objects in this process;
//  - peak RSS of the operator process (VmHWM);
//  - EndpointSlice change → node config carrying it, p50/p99 over N changes (watch timestamps);
//  - restart resync: a second operator over the converged state, start → first reconcile done
//    (read from its /metrics), with the writes it needed and its peak RSS.
// Usage: xlb-bench-operator [mappings=10000] [endpoints=50] [changes=1000]
var mappings = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 10_000;
var endpoints = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 50;
var changes = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 1_000;
using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(20));
var ct = cancel.Token;

await using var server = await ApiServer.StartAsync();
server.Store.RetainedEvents = 10_000;
// The double's schema checks of custom resources are the API server's work, which a cluster does
// on other machines: here they would take the operator's two cores (XLB_BENCH_CHECK_CRS=1 keeps them).
server.Store.CheckCustomResources = Environment.GetEnvironmentVariable("XLB_BENCH_CHECK_CRS") == "1";
var types = ResourceType.Defaults.ToDictionary(t => t.Kind);
static JsonObject Meta(string name, string? ns = null, params (string Key, string Value)[] labels)
{
    var meta = new JsonObject { ["name"] = name };
    if (ns is not null)
    {
        meta["namespace"] = ns;
    }
    if (labels.Length > 0)
    {
        meta["labels"] = new JsonObject([.. labels.Select(l => KeyValuePair.Create(l.Key, (JsonNode?)l.Value))]);
    }
    return meta;
}
foreach (var ns in new[] { "bench", "xlb-system" })
{
    server.Seed(types["Namespace"], new JsonObject { ["metadata"] = Meta(ns) });
}
foreach (var node in new[] { "lb-1", "lb-2" })
{
    server.Seed(types["Node"], new JsonObject { ["metadata"] = Meta(node, null, ("xlb.io/lb-node", "true")) });
}
server.Seed(types["LoadBalancerPool"], new JsonObject { ["metadata"] = Meta("bench"), ["spec"] = new JsonObject { ["blocks"] = new JsonArray("10.250.0.0/16") } });
server.Seed(types["VipShard"], new JsonObject
{
    ["metadata"] = Meta("edge"),
    ["spec"] = new JsonObject { ["poolRef"] = "bench", ["nodeSelector"] = new JsonObject { ["matchLabels"] = new JsonObject { ["xlb.io/lb-node"] = "true" } } },
});
string Endpoint(int m, int e) => $"10.{100 + (m / 250)}.{m % 250}.{e + 1}";
JsonObject Slice(int m, int skip = -1) => new()
{
    ["apiVersion"] = "discovery.k8s.io/v1",
    ["kind"] = "EndpointSlice",
    ["metadata"] = Meta($"svc-{m}-1", "bench", ("kubernetes.io/service-name", $"svc-{m}")),
    ["addressType"] = "IPv4",
    ["ports"] = new JsonArray(new JsonObject { ["name"] = "http", ["port"] = 8080, ["protocol"] = "TCP" }),
    ["endpoints"] = new JsonArray([.. Enumerable.Range(0, endpoints).Where(e => e != skip).Select(e => (JsonNode)new JsonObject
    {
        ["addresses"] = new JsonArray(Endpoint(m, e)),
        ["conditions"] = new JsonObject { ["ready"] = true },
    })]),
};
var seeding = Stopwatch.StartNew();
for (var m = 0; m < mappings; m++)
{
    server.Seed(types["PortMapping"], new JsonObject
    {
        ["metadata"] = Meta($"svc-{m}", "bench"),
        ["spec"] = new JsonObject
        {
            ["shardRef"] = "edge",
            ["ports"] = new JsonArray(new JsonObject { ["name"] = "http", ["port"] = 80, ["targetPort"] = "http" }),
            ["backend"] = new JsonObject { ["serviceRef"] = new JsonObject { ["name"] = $"svc-{m}" } },
        },
    });
    server.Seed(types["EndpointSlice"], Slice(m));
}
Console.WriteLine($"seeded {mappings} PortMappings with {endpoints} endpoints each in {seeding.Elapsed.TotalSeconds:F1} s");

// Reference: one pure plan over the same objects, read back through the client as the operator reads them.
using var client = new KubeClient(new KubeConnection { Server = server.Url });
var listing = Stopwatch.StartNew();
var input = new PlanInput
{
    Pools = (await client.ListAllAsync<LoadBalancerPool>(KubeResource.LoadBalancerPools, null, ct: ct)).Items,
    Shards = (await client.ListAllAsync<VipShard>(KubeResource.VipShards, null, ct: ct)).Items,
    PortMappings = (await client.ListAllAsync<PortMapping>(KubeResource.PortMappings, null, ct: ct)).Items,
    Nodes = (await client.ListAllAsync<Node>(KubeResource.Nodes, null, ct: ct)).Items,
    EndpointSlices = (await client.ListAllAsync<EndpointSlice>(KubeResource.EndpointSlices, null, ct: ct)).Items,
};
Console.WriteLine($"reference: listing every input through the client (pages of 500): {listing.ElapsedMilliseconds} ms");
var planClock = Stopwatch.StartNew();
var reference = Planner.Plan(input);
var planTime = planClock.Elapsed;
Console.WriteLine($"reference: one pure plan: {planTime.TotalMilliseconds:F0} ms ({reference.NodeConfigs.Sum(c => c.Spec.Listeners.Count)} listeners, {reference.Problems.Count} problems)");
// XLB_BENCH_COLD_PLANS=N plans cold N more times (the code is warm by then): for a profiler, or to
// tell the plan's own cost from the first run's compilation.
if (int.TryParse(Environment.GetEnvironmentVariable("XLB_BENCH_COLD_PLANS"), out var coldPlans) && coldPlans > 0)
{
    var coldTimes = new List<double>();
    var allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
    for (var i = 0; i < coldPlans; i++)
    {
        var clock = Stopwatch.StartNew();
        Planner.Plan(input);
        coldTimes.Add(clock.Elapsed.TotalMilliseconds);
    }
    var allocated = (GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore) / coldPlans;
    coldTimes.Sort();
    Console.WriteLine($"reference: the same pure plan again, warm: median {coldTimes[coldTimes.Count / 2]:F0} ms, min {coldTimes[0]:F0} ms over {coldPlans}, {allocated >> 20} MiB allocated per plan");
}

// The same planner as the operator runs it: with its memo, chunked, each plan continuing from the
// last; one EndpointSlice changed per plan (an endpoint out, then back). This is the floor under
// the EndpointSlice → node config latency.
var memo = new PlanMemo();
var incremental = input with { Memo = memo, ChunkLimit = 256 * 1024, Now = DateTimeOffset.UtcNow };
var previousPlan = Planner.Plan(incremental);
var slicesNow = input.EndpointSlices.ToList();
var pureTimes = new List<double>();
var pureRng = new Random(11);
long pureAllocated = 0;
var pureContinued = 0;
var gcBefore = (GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2), GC.GetTotalPauseDuration());
var purePlans = int.TryParse(Environment.GetEnvironmentVariable("XLB_BENCH_PURE_PLANS"), out var n) ? n : 40;
for (var i = 0; i < purePlans; i++)
{
    var pick = pureRng.Next(slicesNow.Count);
    var slice = input.EndpointSlices[pick];
    slicesNow[pick] = i % 2 == 0 ? slice with { Endpoints = [.. slice.Endpoints.Skip(1)] } : slice;
    incremental = incremental with { EndpointSlices = [.. slicesNow], Previous = Assembled(previousPlan), PortMappings = WithStatuses(incremental.PortMappings, previousPlan) };
    var allocatedBefore = GC.GetAllocatedBytesForCurrentThread();
    var clock = Stopwatch.StartNew();
    previousPlan = Planner.Plan(incremental);
    pureTimes.Add(clock.Elapsed.TotalMilliseconds);
    pureContinued += memo.LastContinued ? 1 : 0;
    pureAllocated += GC.GetAllocatedBytesForCurrentThread() - allocatedBefore;
    slicesNow[pick] = slice;
}
pureTimes.Sort();
Console.WriteLine($"reference: one pure plan after one EndpointSlice change (memo, chunked): p50 {pureTimes[pureTimes.Count / 2]:F1} ms, max {pureTimes[^1]:F1} ms over {pureTimes.Count} ({pureContinued} continued from the last plan), {pureAllocated / pureTimes.Count / (1 << 20)} MiB allocated per plan; GCs gen0/1/2 {GC.CollectionCount(0) - gcBefore.Item1}/{GC.CollectionCount(1) - gcBefore.Item2}/{GC.CollectionCount(2) - gcBefore.Item3}, pause {(GC.GetTotalPauseDuration() - gcBefore.Item4).TotalMilliseconds:F0} ms, heap {GC.GetTotalMemory(false) >> 20} MiB");
if (Environment.GetEnvironmentVariable("XLB_BENCH_PURE_ONLY") == "1")
{
    return 0;
}
input = null;
reference = null;
incremental = null;
previousPlan = null;
memo = null;

var kubeconfig = Path.Combine(Path.GetTempPath(), $"xlb-bench-{Environment.ProcessId}.kubeconfig");
File.WriteAllText(kubeconfig, new JsonObject
{
    ["apiVersion"] = "v1",
    ["kind"] = "Config",
    ["clusters"] = new JsonArray(new JsonObject { ["name"] = "double", ["cluster"] = new JsonObject { ["server"] = server.Url.ToString() } }),
    ["users"] = new JsonArray(new JsonObject { ["name"] = "bench", ["user"] = new JsonObject() }),
    ["contexts"] = new JsonArray(new JsonObject { ["name"] = "bench", ["context"] = new JsonObject { ["cluster"] = "double", ["user"] = "bench" } }),
    ["current-context"] = "bench",
}.ToJsonString());
// The two LB nodes' agents are alive: their Leases are renewed while the bench runs.
using var agents = CancellationTokenSource.CreateLinkedTokenSource(ct);
var renewer = Task.Run(async () =>
{
    while (!agents.IsCancellationRequested)
    {
        foreach (var node in new[] { "lb-1", "lb-2" })
        {
            await client.ApplyAsync<JsonObject>(KubeResource.Leases, new JsonObject
            {
                ["apiVersion"] = "coordination.k8s.io/v1",
                ["kind"] = "Lease",
                ["metadata"] = Meta(XlbApi.AgentLeaseName(node), "xlb-system", (XlbApi.AgentNodeLabel, XlbApi.NodeLabelValue(node))),
                ["spec"] = new JsonObject { ["holderIdentity"] = node, ["renewTime"] = MicroTime.Format(DateTimeOffset.UtcNow) },
            }, "xlb-agent", force: true, ct: CancellationToken.None);
        }
        await Task.Delay(500, agents.Token).ContinueWith(_ => { }, TaskScheduler.Default);
    }
}, CancellationToken.None);
await Task.Delay(100, ct);
// XLB_BENCH_XLB: another build of xlb.dll to run as the operator (a published one, for an A/B).
var xlb = Environment.GetEnvironmentVariable("XLB_BENCH_XLB") is { Length: > 0 } other ? other : Path.Combine(AppContext.BaseDirectory, "xlb.dll");
static int FreePort()
{
    using var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
    probe.Start();
    return ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
}
double Sample(string text, string series) =>
    double.Parse(text.Split('\n').Single(l => l.StartsWith(series + " ", StringComparison.Ordinal))[(series.Length + 1)..], CultureInfo.InvariantCulture);
// An operator's first reconcile, timed by its own /metrics (polling it costs the double nothing).
async Task<string?> FirstReconcileAsync(Process p, int port)
{
    using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
    var clock = Stopwatch.StartNew();
    while (clock.Elapsed < TimeSpan.FromMinutes(5) && !p.HasExited)
    {
        try
        {
            var page = await http.GetStringAsync("/metrics", ct);
            if (Sample(page, "xlb_operator_reconcile_duration_seconds_count") >= 1)
            {
                return page;
            }
        }
        catch (HttpRequestException)
        {
            // Not listening yet.
        }
        await Task.Delay(20, ct);
    }
    return null;
}
// The collector's own account of an operator's memory, sampled from its /metrics while it runs:
// the largest heap after a collection (live objects and fragmentation) and the most it committed.
async Task<(double Heap, double Committed)> HeapWatchAsync(Process p, int port, CancellationToken stop)
{
    var traceMemory = Environment.GetEnvironmentVariable("XLB_BENCH_MEMORY_TRACE") == "1";
    using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
    var (heap, committed) = (0.0, 0.0);
    while (!stop.IsCancellationRequested && !p.HasExited)
    {
        try
        {
            var page = await http.GetStringAsync("/metrics", stop);
            heap = Math.Max(heap, Sample(page, "dotnet_gc_heap_size_bytes"));
            committed = Math.Max(committed, Sample(page, "dotnet_gc_committed_bytes"));
            if (traceMemory)
            {
                // XLB_BENCH_MEMORY_TRACE=1: every sample, on the clock the operator's log uses.
                var rss = File.ReadLines($"/proc/{p.Id}/status").FirstOrDefault(l => l.StartsWith("VmRSS:", StringComparison.Ordinal)) ?? "";
                Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} pid {p.Id} {rss.Replace("\t", " ", StringComparison.Ordinal)} heap {Sample(page, "dotnet_gc_heap_size_bytes") / (1 << 20):F0} MiB committed {Sample(page, "dotnet_gc_committed_bytes") / (1 << 20):F0} MiB");
            }
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException or InvalidOperationException)
        {
            // Not listening yet, or stopping.
        }
        await Task.Delay(100, CancellationToken.None);
    }
    return (heap / (1 << 20), committed / (1 << 20));
}
// `xlb operator` against the double, serving /metrics on the port, logging every reconcile; its
// output is collected and its heap watched until Stop.
Operator StartOperator(int port)
{
    var start = new ProcessStartInfo("dotnet", ["exec", xlb, "operator", "--kubeconfig", kubeconfig, "--leader-elect=false", "--listen", $"127.0.0.1:{port}"])
    {
        RedirectStandardOutput = true,
        RedirectStandardError = true,
        Environment = { ["XLB_LOG_LEVEL"] = "Debug" },
    };
    // XLB_BENCH_OPERATOR_ENV=K=V,K=V: environment for the operator alone (runtime knobs, for an A/B).
    foreach (var pair in (Environment.GetEnvironmentVariable("XLB_BENCH_OPERATOR_ENV") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries))
    {
        var eq = pair.IndexOf('=', StringComparison.Ordinal);
        start.Environment[pair[..eq]] = pair[(eq + 1)..];
    }
    var p = Process.Start(start)!;
    var watchStop = new CancellationTokenSource();
    return new Operator(p, port, p.StandardOutput.ReadToEndAsync(ct), p.StandardError.ReadToEndAsync(ct), watchStop, HeapWatchAsync(p, port, watchStop.Token));
}
var benchCpu = Process.GetCurrentProcess().TotalProcessorTime;
var resync = Stopwatch.StartNew();
var first = StartOperator(FreePort());
var (op, firstPort) = (first.Process, first.Port);
try
{
    async Task<bool> ConvergedAsync()
    {
        var configs = (await client.ListAsync<JsonObject>(KubeResource.XlbNodeConfigs, null, ct: ct)).Items;
        if (configs.Count < 2 || configs.Any(c => c["spec"]?["listenerCount"]?.GetValue<int>() != mappings))
        {
            return false;
        }
        var page = await client.ListAllAsync<PortMapping>(KubeResource.PortMappings, "bench", ct: ct);
        return page.Items.All(p => p.Status?.Vips.Count == 1);
    }
    // The first reconcile writes every status and every chunk: when it is done, so is the resync.
    var firstPage = await FirstReconcileAsync(op, firstPort);
    var resyncTime = resync.Elapsed;
    var (opCpu, doubleCpu) = (op.TotalProcessorTime, Process.GetCurrentProcess().TotalProcessorTime - benchCpu);
    if (firstPage is null)
    {
        throw new InvalidOperationException($"the operator finished no reconcile (exited: {op.HasExited}):\n{(op.HasExited ? await first.LogAsync() : "")}");
    }
    if (!await ConvergedAsync())
    {
        throw new InvalidOperationException("the first reconcile finished, yet not every node config and PortMapping status is there");
    }
    Console.WriteLine($"full resync (start → every node config and PortMapping status written): {resyncTime.TotalMilliseconds:F0} ms, {Sample(firstPage, "xlb_operator_writes_total")} writes; " +
        $"CPU: operator {opCpu.TotalSeconds:F1} s, API double (bench process) {doubleCpu.TotalSeconds:F1} s (target 2000 ms)");

    // EndpointSlice change → node config: watch the node config of lb-1 and time each change.
    var latencies = new List<double>();
    // Each change's latency, when it started, and how long the bench process (the API double) was
    // paused by its own collector meanwhile: the slowest are printed, to be found in the operator's log.
    var slowest = new List<(double Ms, DateTime Started, double DoublePausedMs)>();
    var rng = new Random(7);
    var list = await client.ListAsync<JsonObject>(KubeResource.XlbNodeConfigs, null, ct: ct);
    var seen = new System.Collections.Concurrent.ConcurrentQueue<(DateTime At, long Revision, string Hash)>();
    using var watchStop = CancellationTokenSource.CreateLinkedTokenSource(ct);
    var watcher = Task.Run(async () =>
    {
        try
        {
            await foreach (var e in client.WatchAsync<JsonObject>(KubeResource.XlbNodeConfigs, null, new WatchOptions { ResourceVersion = list.ResourceVersion, FieldSelector = "metadata.name=lb-1" }, watchStop.Token))
            {
                if (e.Object?["spec"] is JsonObject spec)
                {
                    seen.Enqueue((DateTime.UtcNow, spec["revision"]!.GetValue<long>(), spec["contentHash"]!.GetValue<string>()));
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Done.
        }
    }, ct);
    var lastRevision = list.Items.Single(c => c["metadata"]!["name"]!.GetValue<string>() == "lb-1")["spec"]!["revision"]!.GetValue<long>();
    // Even changes take one endpoint out of a random Service's slice; odd ones put it back.
    var m = 0;
    var lost = 0;
    for (var i = 0; i < changes; i++)
    {
        if (i % 2 == 0)
        {
            m = rng.Next(mappings);
        }
        var started = DateTime.UtcNow;
        var pausedBefore = GC.GetTotalPauseDuration();
        await client.ApplyAsync<JsonObject>(KubeResource.EndpointSlices, Slice(m, skip: i % 2 == 0 ? rng.Next(endpoints) : -1), "bench", force: true, ct: ct);
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(30))
        {
            if (seen.TryDequeue(out var update) && update.Revision > lastRevision)
            {
                lastRevision = update.Revision;
                latencies.Add((update.At - started).TotalMilliseconds);
                slowest.Add(((update.At - started).TotalMilliseconds, started, (GC.GetTotalPauseDuration() - pausedBefore).TotalMilliseconds));
                break;
            }
            await Task.Delay(1, ct);
        }
        lost += deadline.Elapsed >= TimeSpan.FromSeconds(30) ? 1 : 0;
    }
    if (lost > 0)
    {
        Console.WriteLine($"{lost} changes reached no node config within 30 s");
    }
    await watchStop.CancelAsync();
    await watcher;
    latencies.Sort();
    double P(double q) => latencies[Math.Min(latencies.Count - 1, (int)(q * latencies.Count))];
    Console.WriteLine($"EndpointSlice → node config over {latencies.Count} changes: p50 {P(0.5):F0} ms, p99 {P(0.99):F0} ms, max {latencies[^1]:F0} ms (target p99 250 ms); p99 = {P(0.99) / planTime.TotalMilliseconds:F1} × one pure plan");
    Console.WriteLine("  slowest: " + string.Join(", ", slowest.OrderByDescending(c => c.Ms).Take(5)
        .Select(c => $"{c.Ms:F0} ms from {c.Started:HH:mm:ss.fff} (the double paused {c.DoublePausedMs:F0} ms)")));
    var (peakHeap, peakCommitted) = await first.HeapAsync();
    Console.WriteLine($"operator peak RSS: {PeakRssMiB(op)} MiB (target 300 MB = 286 MiB); GC heap at most {peakHeap:F0} MiB after a collection, {peakCommitted:F0} MiB committed");

    // Restart: a second operator over the converged state. Its /metrics says when its first
    // reconcile is done and how many writes it needed (none, if nothing is lost on restart).
    op.Kill(entireProcessTree: true);
    await op.WaitForExitAsync(CancellationToken.None);
    // XLB_BENCH_RESTARTS=N restarts N times (for a profiler, or the spread), each with its log.
    var restarts = int.TryParse(Environment.GetEnvironmentVariable("XLB_BENCH_RESTARTS"), out var r) && r > 0 ? r : 1;
    for (var restart = 0; restart < restarts; restart++)
    {
        // The double's own garbage from the phases before (its heap is most of a GiB) is collected
        // first, so that a background collection of it is not counted in the restart.
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        benchCpu = Process.GetCurrentProcess().TotalProcessorTime;
        var restartClock = Stopwatch.StartNew();
        var again = StartOperator(FreePort());
        using var second = again.Process;
        var page = await FirstReconcileAsync(second, again.Port);
        var restartTime = restartClock.Elapsed;
        (opCpu, doubleCpu) = (second.TotalProcessorTime, Process.GetCurrentProcess().TotalProcessorTime - benchCpu);
        var (restartHeap, restartCommitted) = await again.HeapAsync();
        Console.WriteLine(page is null ? "restart: the operator finished no reconcile" :
            $"restart resync (start → first reconcile done over the converged state): {restartTime.TotalMilliseconds:F0} ms, {Sample(page, "xlb_operator_writes_total")} writes, " +
            $"peak RSS {PeakRssMiB(second)} MiB (GC heap at most {restartHeap:F0} MiB, {restartCommitted:F0} MiB committed); CPU: operator {opCpu.TotalSeconds:F1} s, API double (bench process) {doubleCpu.TotalSeconds:F1} s (targets 2000 ms, 300 MB = 286 MiB); " +
            $"operator allocated {Sample(page, "dotnet_gc_allocated_bytes_total") / (1 << 20):F0} MiB, collections gen0/1/2 {Sample(page, "dotnet_gc_collections_total{generation=\"0\"}")}/{Sample(page, "dotnet_gc_collections_total{generation=\"1\"}")}/{Sample(page, "dotnet_gc_collections_total{generation=\"2\"}")}, paused {Sample(page, "dotnet_gc_pause_seconds_total"):F2} s");
        second.Kill(entireProcessTree: true);
        await second.WaitForExitAsync(CancellationToken.None);
        await File.WriteAllTextAsync(Path.Combine(Path.GetTempPath(), $"xlb-bench-operator-restart{(restarts > 1 ? $"-{restart + 1}" : "")}.log"), await again.LogAsync(), CancellationToken.None);
    }
}
finally
{
    await agents.CancelAsync();
    await renewer;
    op.Kill(entireProcessTree: true);
    await op.WaitForExitAsync(CancellationToken.None);
    File.Delete(kubeconfig);
    // The operator's own account of each reconcile (plan time, writes), for reading beside the figures.
    var logPath = Path.Combine(Path.GetTempPath(), "xlb-bench-operator.log");
    await File.WriteAllTextAsync(logPath, await first.LogAsync(), CancellationToken.None);
    Console.WriteLine($"operator log: {logPath}");
}
return 0;

// The mappings as the operator sees them after writing their statuses: a new object where the status changed.
static List<PortMapping> WithStatuses(IReadOnlyList<PortMapping> mappings, PlanResult plan) =>
[
    .. mappings.Select(pm => plan.MappingStatuses.TryGetValue(ObjectRef.Of(pm), out var status) && !ReferenceEquals(pm.Status, status)
        && System.Text.Json.JsonSerializer.Serialize(pm.Status, KubeJson.Options) != System.Text.Json.JsonSerializer.Serialize(status, KubeJson.Options)
        ? pm with { Status = status } : pm),
];

// The previous node configs as the operator passes them: chunked heads with their chunks' VIPs and listeners.
static Dictionary<string, XlbNodeConfig> Assembled(PlanResult plan)
{
    var chunks = plan.Chunks.ToDictionary(c => c.Metadata.Name!, StringComparer.Ordinal);
    return plan.NodeConfigs.ToDictionary(c => c.Metadata.Name!, c => c.Spec.Chunks.Count == 0 ? c : c with
    {
        Spec = c.Spec with
        {
            Vips = [.. c.Spec.Chunks.SelectMany(r => chunks[r.Name].Spec.Vips)],
            Listeners = [.. c.Spec.Chunks.SelectMany(r => chunks[r.Name].Spec.Listeners)],
        },
    }, StringComparer.Ordinal);
}

static long PeakRssMiB(Process p)
{
    var hwm = File.ReadAllLines($"/proc/{p.Id}/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
    return long.Parse(hwm.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024;
}

/// <summary>A running operator: its process, its /metrics port, its output, and the watch on its heap.</summary>
internal sealed record Operator(Process Process, int Port, Task<string> Out, Task<string> Err, CancellationTokenSource WatchStop, Task<(double Heap, double Committed)> Watch)
{
    /// <summary>The largest GC heap and commit seen, once the watch is stopped.</summary>
    public async Task<(double Heap, double Committed)> HeapAsync()
    {
        await WatchStop.CancelAsync();
        return await Watch;
    }

    public async Task<string> LogAsync() => await Out + await Err;
}
