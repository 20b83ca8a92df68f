using System.Diagnostics;
using Xlb.Crds;
using Xlb.Crds.Serialization;

namespace Xlb.Cli.Testbed;

/// <summary>
/// The standalone operator and agent as real processes: the operator renders node configs from a
/// manifest folder, the agent (inside the LB namespace) attaches XDP and applies its node config.
/// </summary>
public sealed class StandaloneStack : IDisposable
{
    private readonly TextWriter _log;
    private readonly List<Process> _processes = [];

    public string StateDir { get; }
    public string NodeName { get; }
    public string NodeConfigPath => Path.Combine(StateDir, NodeName + ".yaml");
    public string AgentStatusPath => Path.Combine(StateDir, NodeName + ".status.yaml");

    /// <summary>
    /// The bpffs the testbed's agents pin into. Not under /sys: `ip netns exec` gives a process a
    /// fresh /sys, and pins made there would vanish with the agent's mount namespace.
    /// </summary>
    public const string TestBpffs = "/run/xlb/bpffs";

    /// <summary>This stack's data-plane instance: its maps live in TestBpffs/xlb/Instance.</summary>
    public string Instance { get; }
    public Process Agent { get; private set; } = null!;
    public Process Operator { get; private set; } = null!;

    private StandaloneStack(string stateDir, string nodeName, string instance, TextWriter log)
    {
        StateDir = stateDir;
        NodeName = nodeName;
        Instance = instance;
        _log = log;
    }

    public static void EnsureTestBpffs()
    {
        if (!Xlb.Agent.Bpf.Bpffs.IsMounted(TestBpffs))
        {
            Directory.CreateDirectory(TestBpffs);
            Netns.Sh("mount", "-t", "bpf", "bpf", TestBpffs);
        }
    }

    /// <summary>`xlb status` over this stack's data plane (its pinned maps), with <paramref name="args"/>: its output.</summary>
    public string Status(params string[] args) => StatusOfInstance(Instance, args);

    /// <summary>`xlb status` over the data plane pinned under <paramref name="instance"/> of the testbed's bpffs, with <paramref name="args"/>.</summary>
    public static string StatusOfInstance(string instance, params string[] args)
    {
        var self = Self();
        return Netns.Sh(self[0], [.. self[1..], "status", "--bpffs", TestBpffs, "--instance", instance, .. args]);
    }

    /// <summary>`xlb status` over the data plane of node <paramref name="nodeName"/>'s agent, with its node config (listener names), and <paramref name="args"/>.</summary>
    public string StatusOf(string nodeName, params string[] args) =>
        StatusOfInstance(nodeName == NodeName ? Instance : OtherInstance(nodeName), ["--node-config", Path.Combine(StateDir, nodeName + ".yaml"), .. args]);

    /// <summary>Extra arguments for every agent this stack starts.</summary>
    public IReadOnlyList<string> AgentArgs { get; private set; } = [];

    public static StandaloneStack Start(LbTopology topology, string manifestDir, string nodeName, TextWriter log, params string[] agentArgs) =>
        Start(topology.Lb, topology.LbInterfaces, topology.Prefix.TrimEnd('-'), manifestDir, nodeName, log, agentArgs);

    /// <summary>The operator, and the agent of <paramref name="nodeName"/> in namespace <paramref name="lbNs"/> attached to <paramref name="interfaces"/>, its maps under <paramref name="instance"/>.</summary>
    public static StandaloneStack Start(string lbNs, IReadOnlyList<string> interfaces, string instance, string manifestDir, string nodeName, TextWriter log, params string[] agentArgs)
    {
        EnsureTestBpffs();
        var state = Directory.CreateTempSubdirectory("xlb-state-").FullName;
        var stack = new StandaloneStack(state, nodeName, instance, log) { AgentArgs = agentArgs };
        try
        {
            stack.Operator = stack.Spawn("operator", "operator", "--manifests", manifestDir, "--out", state, "--node", nodeName);
            stack.Agent = stack.SpawnAgent("agent", lbNs, interfaces, nodeName, stack.Instance);
            return stack;
        }
        catch
        {
            stack.Dispose();
            throw;
        }
    }

    /// <summary>Starts the agent inside the LB namespace, attached to every LB interface.</summary>
    public void StartAgent(LbTopology topology) => StartAgent(topology.Lb, topology.LbInterfaces);

    /// <summary>Starts the agent inside namespace <paramref name="ns"/>, attached to <paramref name="interfaces"/>.</summary>
    public void StartAgent(string ns, IReadOnlyList<string> interfaces) => Agent = SpawnAgent("agent", ns, interfaces, NodeName, Instance);

    private readonly List<string> _otherInstances = [];

    /// <summary>
    /// The agent of another node of the same operator, in namespace <paramref name="ns"/>, with a
    /// data-plane instance of its own (this stack's instance and the node's name); removed with the stack.
    /// </summary>
    public Process StartOtherAgent(string nodeName, string ns, IReadOnlyList<string> interfaces, params string[] extraArgs)
    {
        var instance = $"{Instance}-{nodeName}";
        if (!_otherInstances.Contains(instance))
        {
            _otherInstances.Add(instance);
        }
        return SpawnAgent($"agent {nodeName}", ns, interfaces, nodeName, instance, extraArgs);
    }

    /// <summary>The data-plane instance of another node's agent (for `xlb status --instance`).</summary>
    public string OtherInstance(string nodeName) => $"{Instance}-{nodeName}";

    private Process SpawnAgent(string tag, string ns, IReadOnlyList<string> interfaces, string nodeName, string instance, params string[] extraArgs)
    {
        List<string> args = ["netns", "exec", ns, .. Self(), "agent", "--node-config", Path.Combine(StateDir, nodeName + ".yaml"), "--bpffs", TestBpffs, "--instance", instance];
        foreach (var i in interfaces)
        {
            args.AddRange(["--interface", i]);
        }
        args.AddRange(AgentArgs);
        args.AddRange(extraArgs);
        return SpawnRaw(tag, "ip", [.. args]);
    }

    /// <summary>Stops the agent the way an orchestrator does: SIGTERM, then SIGKILL after a grace period.</summary>
    public void StopAgent() => Netns.Stop(Agent, TimeSpan.FromSeconds(10));

    /// <summary>Waits until the agent reports a revision (at least <paramref name="minRevision"/>) applied.</summary>
    public Task<XlbNodeConfig> WaitAppliedAsync(long minRevision, TimeSpan timeout, CancellationToken ct) =>
        WaitAppliedAsync(NodeName, Agent, minRevision, timeout, ct);

    /// <summary>Waits until the agent of <paramref name="nodeName"/> reports a revision (at least <paramref name="minRevision"/>) applied.</summary>
    public async Task<XlbNodeConfig> WaitAppliedAsync(string nodeName, Process agent, long minRevision, TimeSpan timeout, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        var last = "no status yet";
        var statusPath = Path.Combine(StateDir, nodeName + ".status.yaml");
        var configPath = Path.Combine(StateDir, nodeName + ".yaml");
        while (deadline.Elapsed < timeout)
        {
            if (agent.HasExited)
            {
                throw new InvalidOperationException($"the agent exited with code {agent.ExitCode}; see its log above");
            }
            if (File.Exists(statusPath) && File.Exists(configPath))
            {
                var status = Yaml.ReadDocuments(await File.ReadAllTextAsync(statusPath, ct))[0];
                var applied = status["appliedRevision"]?.GetValue<long>() ?? 0;
                last = status.ToJsonString();
                if (applied >= minRevision)
                {
                    var config = Manifests.Read(await File.ReadAllTextAsync(configPath, ct), configPath).NodeConfigs.Single();
                    if (config.Spec.Revision == applied)
                    {
                        return config;
                    }
                }
            }
            await Task.Delay(100, ct);
        }
        throw new TimeoutException($"the agent did not apply revision {minRevision} within {timeout.TotalSeconds:F0} s; last status: {last}");
    }

    /// <summary>How to run this very binary: its apphost if there is one, else through dotnet.</summary>
    public static string[] Self()
    {
        var dll = typeof(StandaloneStack).Assembly.Location;
        var apphost = Path.Combine(Path.GetDirectoryName(dll)!, "xlb");
        return File.Exists(apphost) ? [apphost] : ["dotnet", dll];
    }

    private Process Spawn(string tag, params string[] args)
    {
        var self = Self();
        return SpawnRaw(tag, self[0], [.. self[1..], .. args]);
    }

    private Process SpawnRaw(string tag, string file, string[] args)
    {
        var p = Netns.Start(file, args, _log, tag);
        _processes.Add(p);
        return p;
    }

    public void Dispose()
    {
        foreach (var p in Enumerable.Reverse(_processes))
        {
            Netns.Stop(p, TimeSpan.FromSeconds(10));
            p.Dispose();
        }
        _processes.Clear();
        foreach (var dir in (string[])[StateDir, Path.Combine(TestBpffs, "xlb", Instance), .. _otherInstances.Select(i => Path.Combine(TestBpffs, "xlb", i))])
        {
            try
            {
                // On bpffs, unlinking the pins releases the maps.
                if (Directory.Exists(dir))
                {
                    Directory.Delete(dir, recursive: true);
                }
            }
            catch (IOException)
            {
                // A leftover temp folder is harmless.
            }
        }
    }
}
