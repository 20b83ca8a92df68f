using System.Text;
using Microsoft.Extensions.Logging;
using Xlb.Hosting;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Operator.Core;

namespace Xlb.Operator;

public sealed record OperatorOptions
{
    /// <summary>The folder of CR manifests (*.yaml, *.yml, *.json) to read.</summary>
    public required string ManifestDir { get; init; }
    /// <summary>Where node configs (&lt;node&gt;.yaml) and the status report (status.yaml) are written.</summary>
    public required string OutputDir { get; init; }
    /// <summary>LB nodes in addition to the Node objects found in the manifests.</summary>
    public IReadOnlyList<string> Nodes { get; init; } = [];
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromMilliseconds(300);
}

/// <summary>
/// The operator in standalone mode: a folder of manifests stands in for the API server.
/// Every change in the folder re-runs the same pure <see cref="Planner"/> the cluster mode uses.
/// </summary>
public sealed partial class StandaloneOperator(OperatorOptions options, ILogger<StandaloneOperator> log, TimeProvider time)
{
    private string _lastFingerprint = "";
    private string? _polled;

    public async Task RunAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(options.PollInterval, time);
        do
        {
            Poll();
        }
        while (await Ticks.NextAsync(timer, ct));
    }

    /// <summary>
    /// One look at the folder (every <see cref="OperatorOptions.PollInterval"/>). A change is
    /// planned once the folder has read the same on two looks in a row: a file caught while it
    /// is written in place (truncated, half written) is not taken for what the user meant, which
    /// could be a config with the mapping gone. The first look plans at once. True when it planned.
    /// </summary>
    public bool Poll()
    {
        var fingerprint = Fingerprint();
        var settled = _polled is null || fingerprint == _polled;
        _polled = fingerprint;
        if (!settled || fingerprint == _lastFingerprint)
        {
            return false;
        }
        _lastFingerprint = fingerprint;
        ReconcileOnce();
        return true;
    }

    /// <summary>Reads the folder, plans, and writes what changed. Returns the plan.</summary>
    public PlanResult ReconcileOnce()
    {
        var set = ReadManifests(options.ManifestDir);
        var nodes = set.Nodes.ToList();
        foreach (var name in options.Nodes.Where(n => nodes.All(x => x.Metadata.Name != n)))
        {
            nodes.Add(new Node { Metadata = new ObjectMeta { Name = name } });
        }
        var previous = ReadManifests(options.OutputDir).NodeConfigs
            .Where(c => c.Metadata.Name is not null)
            .ToDictionary(c => c.Metadata.Name!, StringComparer.Ordinal);
        var plan = Planner.Plan(new PlanInput
        {
            Pools = set.Pools,
            Shards = set.Shards,
            PortMappings = set.PortMappings,
            Nodes = nodes,
            Previous = previous,
        });
        foreach (var error in set.Errors)
        {
            LogManifestError(error.ToString());
        }
        foreach (var problem in plan.Problems)
        {
            LogProblem(problem.ToString());
        }
        foreach (var config in plan.NodeConfigs)
        {
            var name = config.Metadata.Name!;
            if (previous.TryGetValue(name, out var before) && before.Spec.Revision == config.Spec.Revision && before.Spec.ContentHash == config.Spec.ContentHash)
            {
                continue;
            }
            AtomicFile.Write(Path.Combine(options.OutputDir, name + ".yaml"), Manifests.ToYaml(config));
            LogRendered(name, config.Spec.Revision, config.Spec.Listeners.Count);
        }
        AtomicFile.Write(Path.Combine(options.OutputDir, "status.yaml"), StatusReport.Render(set, plan));
        return plan;
    }

    private static ManifestSet ReadManifests(string dir)
    {
        var set = new ManifestSet();
        if (!Directory.Exists(dir))
        {
            return set;
        }
        foreach (var file in ManifestFiles(dir))
        {
            Manifests.Read(File.ReadAllText(file), Path.GetFileName(file), set);
        }
        return set;
    }

    private static IEnumerable<string> ManifestFiles(string dir) =>
        Directory.EnumerateFiles(dir)
            .Where(f => f.EndsWith(".yaml", StringComparison.Ordinal) || f.EndsWith(".yml", StringComparison.Ordinal) || f.EndsWith(".json", StringComparison.Ordinal))
            .Where(f => !IsNotAManifest(Path.GetFileName(f)))
            .Order(StringComparer.Ordinal);

    /// <summary>Hidden files, our own status files and kustomize's file, which GitOps folders often hold.</summary>
    private static bool IsNotAManifest(string name) =>
        name.StartsWith('.') || name.EndsWith(".status.yaml", StringComparison.Ordinal) || name is "status.yaml" or "kustomization.yaml" or "kustomization.yml" or "Kustomization";

    private string Fingerprint()
    {
        var sb = new StringBuilder();
        if (Directory.Exists(options.ManifestDir))
        {
            foreach (var f in ManifestFiles(options.ManifestDir))
            {
                var info = new FileInfo(f);
                sb.Append(f).Append('|').Append(info.Length).Append('|').Append(info.LastWriteTimeUtc.Ticks).Append('\n');
            }
        }
        return sb.ToString();
    }


    [LoggerMessage(Level = LogLevel.Warning, Message = "manifest: {Error}")]
    private partial void LogManifestError(string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "not programmed: {Problem}")]
    private partial void LogProblem(string problem);

    [LoggerMessage(Level = LogLevel.Information, Message = "node {Node}: rendered revision {Revision} with {Listeners} listeners")]
    private partial void LogRendered(string node, long revision, int listeners);
}
