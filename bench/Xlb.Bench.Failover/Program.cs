using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Crds.Serialization;

// Failover (DESIGN.md §4: VIP takeover ≤ 1 s after the active agent dies; established flows
// survive with flow sync on). Each round builds two one-armed LB nodes behind a router namespace
// running BIRD, with the standalone operator and both agents (real XDP, BGP, flow sync), holds
// connections open through the active node, then kills it: its agent is SIGKILLed and the
// router's link to it loses carrier, as with a dead machine. It measures, from the kill: when the
// standby reports the takeover (its status file), when the router's route moves, and when the
// first new connection through the VIP is answered (a new attempt every 10 ms, each with its own
// timeout); and how many held connections carry on. The detection window is the shard's
// interval × multiplier; the ratio is against it.
// With `hang` the node hangs instead of dying: its agent is stopped (SIGSTOP: its BGP session
// lives on until its hold time, 9 s, passes), its XDP program is detached and it forwards
// nothing, but its link keeps carrier, so the router learns of it only from BGP.
// Usage: xlb-bench-failover [rounds=5] [interval-ms=250] [multiplier=3] [kill|hang]
var rounds = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 5;
var intervalMs = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 250;
var multiplier = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 3;
var hang = args.Length > 3 && args[3] == "hang";
if (!Netns.IsRoot)
{
    Console.Error.WriteLine("xlb-bench-failover needs root (network namespaces and XDP).");
    return 2;
}
if (!OnPath("bird"))
{
    Console.Error.WriteLine("xlb-bench-failover needs BIRD 2: run ./setup.sh (installs bird2)");
    return 2;
}

const string Vip = "10.250.0.90";
const int Held = 4;
var window = intervalMs * multiplier;
var results = new List<(double Detected, double Routed, double Answered, int Survived)>();
using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(10 + rounds));
var ct = stop.Token;
Console.WriteLine($"failover: {rounds} rounds, detection {intervalMs} ms x {multiplier} = {window} ms, BGP to BIRD, flow sync on, {Held} connections held through the {(hang ? "hanging" : "dying")} node");
for (var round = 1; round <= rounds; round++)
{
    var log = new StringWriter();
    try
    {
        var r = await RoundAsync(log);
        results.Add(r);
        Console.WriteLine($"  round {round}: standby took over {r.Detected,5:F0} ms, router moved {r.Routed,5:F0} ms, first new connection answered {r.Answered,5:F0} ms after the kill; {r.Survived}/{Held} held connections carried on");
    }
    catch (Exception e) when (e is not OperationCanceledException)
    {
        Console.WriteLine($"  round {round} failed: {e.Message}");
        Console.WriteLine(log.ToString());
        return 1;
    }
}
static double Median(IEnumerable<double> values)
{
    var sorted = values.Order().ToList();
    return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
}
var answered = results.Select(r => r.Answered).ToList();
Console.WriteLine($"first new connection answered after the kill: median {Median(answered):F0} ms, min {answered.Min():F0}, max {answered.Max():F0} ms " +
    $"({Median(answered) / window:F2}x the detection window); bar 1000 ms: met in {answered.Count(a => a <= 1000)} of {answered.Count} rounds");
Console.WriteLine($"standby took over: median {Median(results.Select(r => r.Detected)):F0} ms ({Median(results.Select(r => r.Detected)) / window:F2}x the window: the last heartbeat came up to an interval before the kill)");
Console.WriteLine($"held connections that carried on: {results.Sum(r => r.Survived)}/{Held * results.Count}");
return 0;

async Task<(double Detected, double Routed, double Answered, int Survived)> RoundAsync(TextWriter log)
{
    using var topology = RoutedPairTopology.Create(LbTopology.NewPrefix("fo"));
    using var bird = topology.StartBgpRouter(log);
    await using var backend1 = HttpBackend.Start(topology.Backends[0], "backend-1", IPAddress.Parse(RoutedPairTopology.BackendAddress(1)), Testbed.BackendPort);
    await using var backend2 = HttpBackend.Start(topology.Backends[1], "backend-2", IPAddress.Parse(RoutedPairTopology.BackendAddress(2)), Testbed.BackendPort);
    var manifests = Directory.CreateTempSubdirectory("xlb-bench-failover-").FullName;
    var held = new List<KeepAliveClient>();
    try
    {
        File.WriteAllText(Path.Combine(manifests, "all.yaml"), Manifests());
        using var stack = StandaloneStack.Start(topology.Lbs[0], [RoutedPairTopology.LbInterface], topology.Prefix.TrimEnd('-'), manifests, "lb-1", log,
            "--flow-sync-interval", "0.2");
        var lb2 = stack.StartOtherAgent("lb-2", topology.Lbs[1], [RoutedPairTopology.LbInterface]);
        await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
        await stack.WaitAppliedAsync("lb-2", lb2, 1, TimeSpan.FromSeconds(60), ct);
        if (!await bird.WaitRoutesAsync(r => r.Contains(Vip + "/32"), TimeSpan.FromSeconds(60), ct))
        {
            throw new TimeoutException($"no route to {Vip} at the router");
        }
        var target = new IPEndPoint(IPAddress.Parse(Vip), 80);
        var on = new List<string>();
        for (var i = 0; i < Held; i++)
        {
            held.Add(await KeepAliveClient.ConnectAsync(topology.Client, target, ct));
            on.Add(await held[i].GetAsync(ct));
        }
        // The standby holds a copy of each before the kill (flow sync every 200 ms, all flows again every 10 s).
        var copied = Stopwatch.StartNew();
        while (Copies(stack) < Held && copied.Elapsed < TimeSpan.FromSeconds(25))
        {
            await Task.Delay(50, ct);
        }
        if (Copies(stack) < Held)
        {
            throw new TimeoutException($"the standby has {Copies(stack)} of the {Held} held connections");
        }
        for (var i = 0; i < Held; i++)
        {
            on[i] = await held[i].GetAsync(ct); // each answers once more just before
        }

        try
        {
            var clock = Stopwatch.StartNew();
            if (hang)
            {
                Netns.Sh("kill", "-STOP", stack.Agent.Id.ToString(CultureInfo.InvariantCulture));
                Netns.Ip(topology.Lbs[0], "link", "set", "dev", RoutedPairTopology.LbInterface, "xdp", "off");
                Netns.Exec(topology.Lbs[0], "sysctl", "-q", "-w", "net.ipv4.ip_forward=0");
            }
            else
            {
                stack.Agent.Kill(entireProcessTree: true);
                Netns.Ip(topology.Router, "link", "set", "r1", "down");
            }
            var detected = Measure(clock, () => TookOver(stack), ct);
            var routed = Measure(clock, () => RoutedVia(topology.Router, RoutedPairTopology.LbAddress(2)), ct);
            var first = FirstAnswerAsync(topology.Client, target, clock, ct);
            var (d, r, a) = (await detected, await routed, await first);
            var survived = 0;
            for (var i = 0; i < Held; i++)
            {
                try
                {
                    survived += await held[i].GetAsync(ct) == on[i] ? 1 : 0;
                }
                catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or InvalidDataException)
                {
                    // broken: not counted
                }
            }
            return (d, r, a, survived);
        }
        finally
        {
            if (hang)
            {
                Resume(stack.Agent);
            }
        }
    }
    finally
    {
        foreach (var c in held)
        {
            c.Dispose();
        }
        Directory.Delete(manifests, recursive: true);
    }
}

// A hung agent is let go before its stack stops it.
static void Resume(Process agent)
{
    try
    {
        if (!agent.HasExited)
        {
            Netns.Sh("kill", "-CONT", agent.Id.ToString(CultureInfo.InvariantCulture));
        }
    }
    catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception)
    {
        // gone already
    }
}

// Polls a condition every 5 ms (at most 10 s): the milliseconds on the clock when it first held.
static Task<double> Measure(Stopwatch clock, Func<bool> condition, CancellationToken ct) => Task.Run(async () =>
{
    while (clock.Elapsed < TimeSpan.FromSeconds(10))
    {
        if (condition())
        {
            return clock.Elapsed.TotalMilliseconds;
        }
        await Task.Delay(5, ct);
    }
    throw new TimeoutException("not within 10 s of the kill");
}, ct);

// A new connection attempt every 10 ms, each given 2 s (a SYN lost on the way waits for its
// retry; the next attempt does not): when the first answer came, at most 600 attempts.
static async Task<double> FirstAnswerAsync(string ns, IPEndPoint target, Stopwatch clock, CancellationToken ct)
{
    using var done = CancellationTokenSource.CreateLinkedTokenSource(ct);
    var answered = new TaskCompletionSource<double>(TaskCreationOptions.RunContinuationsAsynchronously);
    var attempts = new List<Task>();
    for (var i = 0; i < 600 && !answered.Task.IsCompleted; i++)
    {
        attempts.Add(Task.Run(async () =>
        {
            try
            {
                await HttpProbe.GetAsync(ns, target, TimeSpan.FromSeconds(2), done.Token);
                answered.TrySetResult(clock.Elapsed.TotalMilliseconds);
            }
            catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
            {
                // not yet
            }
        }, CancellationToken.None));
        await Task.WhenAny(answered.Task, Task.Delay(10, ct));
    }
    var first = await answered.Task.WaitAsync(TimeSpan.FromSeconds(10), ct);
    await done.CancelAsync();
    await Task.WhenAll(attempts);
    return first;
}

// Whether the router's route to the VIP goes to the node at that address (none, between the two: no).
static bool RoutedVia(string router, string node)
{
    try
    {
        return Netns.Ip(router, "route", "get", Vip).Contains("via " + node, StringComparison.Ordinal);
    }
    catch (InvalidOperationException)
    {
        return false; // "No route to host"
    }
}

static int Copies(StandaloneStack stack)
{
    var text = stack.StatusOf("lb-2", "--flows");
    var at = text.IndexOf("FLOWS (", StringComparison.Ordinal);
    return at < 0 ? 0 : text[at..].Split(Vip + ":80 ").Length - 1;
}

static bool TookOver(StandaloneStack stack)
{
    try
    {
        var status = Yaml.ReadDocuments(File.ReadAllText(Path.Combine(stack.StateDir, "lb-2.status.yaml")))[0];
        return status["conditions"]?.AsArray().Any(c => c?["type"]?.GetValue<string>() == "Degraded" && c["reason"]?.GetValue<string>() == "PeerSilent") == true;
    }
    catch (Exception e) when (e is IOException or FormatException or YamlDotNet.Core.YamlException or InvalidOperationException)
    {
        return false; // written while read
    }
}

string Manifests() => RoutedPairTopology.FailoverManifests(Vip, $"{intervalMs}ms", multiplier, RoutedPairTopology.BgpAnnouncement);

static bool OnPath(string tool) =>
    (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => File.Exists(Path.Combine(d, tool)));
