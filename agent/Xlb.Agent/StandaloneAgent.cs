using System.Globalization;
using Microsoft.Extensions.Logging;
using Xlb.Hosting;
using Xlb.Agent.Bpf;
using Xlb.Crds;
using Xlb.Crds.Serialization;

namespace Xlb.Agent;

public sealed record AgentOptions
{
    /// <summary>The node config file this agent applies (written by the standalone operator).</summary>
    public required string NodeConfigPath { get; init; }
    /// <summary>Where the agent reports what it applied; default: beside the node config, *.status.yaml.</summary>
    public string? StatusPath { get; init; }
    public required IReadOnlyList<string> Interfaces { get; init; }
    /// <summary>Fall back to generic XDP where the driver has no native XDP (reported in status).</summary>
    public bool AllowGenericXdp { get; init; }
    public string ObjectPath { get; init; } = Xlb.Agent.XdpDataPlane.DefaultObjectPath;
    /// <summary>How often the file is checked and the maps re-diffed (level-triggered resync).</summary>
    public TimeSpan ResyncInterval { get; init; } = TimeSpan.FromMilliseconds(500);
    public DataPlaneOptions DataPlane { get; init; } = new();
    /// <summary>
    /// On exit, detach XDP and remove the pinned maps. Off by default: the program and its maps
    /// stay, traffic keeps flowing on the last applied revision, and the next agent adopts them.
    /// </summary>
    public bool DetachOnExit { get; init; }
}

/// <summary>
/// The agent in standalone mode: loads and attaches the XDP program, applies its node config
/// file and re-applies whenever the file or the maps drift. The first start fails fast if the
/// program cannot load or attach; later, a bad config keeps the last applied one and says so.
/// The maps are pinned: a restarted agent adopts them, replaces the program in place (an atomic
/// swap for packets) and finds nothing to write. On exit the program stays attached unless
/// <see cref="AgentOptions.DetachOnExit"/> is set.
/// </summary>
public sealed partial class StandaloneAgent(AgentOptions options, ILogger<StandaloneAgent> log, TimeProvider time)
{
    private long _appliedRevision;
    private string _appliedHash = "";

    public async Task RunAsync(CancellationToken ct)
    {
        using var dp = XdpDataPlane.Load(options.ObjectPath, options.DataPlane);
        if (dp.Adopted)
        {
            LogAdopted(options.DataPlane.PinRoot!, dp.ActiveGeneration);
        }
        var attached = new List<(string If, XdpMode Mode)>();
        try
        {
            foreach (var ifname in options.Interfaces)
            {
                var mode = Xdp.Attach(ifname, dp.ProgramFd, options.AllowGenericXdp);
                attached.Add((ifname, mode));
                if (mode == XdpMode.Generic)
                {
                    LogGenericMode(ifname);
                }
                LogAttached(ifname, mode);
            }
            var attachMode = string.Join(",", attached.Select(a => $"{a.If}={a.Mode}"));
            using var timer = new PeriodicTimer(options.ResyncInterval, time);
            do
            {
                Reconcile(dp, attachMode);
            }
            while (await Ticks.NextAsync(timer, ct));
        }
        finally
        {
            if (options.DetachOnExit)
            {
                Detach(attached);
            }
            else if (attached.Count > 0)
            {
                LogLeftAttached(attached.Count);
            }
        }
        if (options.DetachOnExit && options.DataPlane.PinRoot is { } root && Directory.Exists(root))
        {
            // Unlinking a pin drops its reference; the maps go when the last user does.
            Directory.Delete(root, recursive: true);
        }
    }

    private void Detach(List<(string If, XdpMode Mode)> attached)
    {
        foreach (var (ifname, mode) in attached)
        {
            try
            {
                Xdp.Detach(ifname, mode);
                LogDetached(ifname);
            }
            catch (BpfException e)
            {
                LogDetachFailed(ifname, e.Message);
            }
        }
    }


    /// <summary>One level-triggered pass: read the file, apply it if it is valid, report.</summary>
    public void Reconcile(XdpDataPlane dp, string attachMode)
    {
        XlbNodeConfig? config;
        try
        {
            config = ReadConfig();
        }
        catch (InvalidDataException e)
        {
            WriteStatus(attachMode, Degraded("InvalidConfig", e.Message));
            return;
        }
        if (config is null)
        {
            WriteStatus(attachMode, Waiting());
            return;
        }
        try
        {
            var result = dp.Apply(config.Spec);
            if (result.Operations > 0)
            {
                LogApplied(config.Spec.Revision, result.Generation, result.Operations, result.Elapsed.TotalMilliseconds);
            }
            _appliedRevision = config.Spec.Revision;
            _appliedHash = config.Spec.ContentHash;
            WriteStatus(attachMode, Applied(config));
        }
        catch (Exception e) when (e is Core.ConfigTooLargeException or BpfException or FormatException)
        {
            LogApplyFailed(config.Spec.Revision, e.Message);
            WriteStatus(attachMode, Degraded("ApplyFailed", $"revision {config.Spec.Revision} not applied, revision {_appliedRevision} stays: {e.Message}"));
        }
    }

    private XlbNodeConfig? ReadConfig()
    {
        if (!File.Exists(options.NodeConfigPath))
        {
            return null;
        }
        var set = Manifests.Read(File.ReadAllText(options.NodeConfigPath), options.NodeConfigPath);
        if (set.Errors.Count > 0)
        {
            throw new InvalidDataException(string.Join("; ", set.Errors));
        }
        return set.NodeConfigs.Count == 1
            ? set.NodeConfigs[0]
            : throw new InvalidDataException($"{options.NodeConfigPath} holds {set.NodeConfigs.Count} XlbNodeConfigs; expected one");
    }

    private List<Condition> Applied(XlbNodeConfig config) =>
    [
        Cond("Applied", "True", "RevisionApplied", $"revision {config.Spec.Revision} is in the data plane", config),
        Cond("Ready", "True", "Forwarding", $"{config.Spec.Listeners.Count} listeners on {config.Spec.Vips.Count} VIPs", config),
        Cond("Degraded", "False", "AsExpected", "", config),
    ];

    private List<Condition> Degraded(string reason, string message) =>
    [
        Cond("Applied", "False", reason, message, null),
        Cond("Ready", _appliedRevision > 0 ? "True" : "False", _appliedRevision > 0 ? "Forwarding" : reason,
            _appliedRevision > 0 ? $"forwarding on revision {_appliedRevision}" : message, null),
        Cond("Degraded", "True", reason, message, null),
    ];

    private List<Condition> Waiting() =>
    [
        Cond("Applied", "False", "NoNodeConfig", $"waiting for {options.NodeConfigPath}", null),
        Cond("Ready", "False", "NoNodeConfig", "no node config yet", null),
        Cond("Degraded", "False", "AsExpected", "", null),
    ];

    private Condition Cond(string type, string status, string reason, string message, XlbNodeConfig? config) => new()
    {
        Type = type,
        Status = status,
        Reason = reason,
        Message = message,
        ObservedGeneration = config?.Spec.Revision,
        LastTransitionTime = time.GetUtcNow().ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
    };

    private void WriteStatus(string attachMode, List<Condition> conditions)
    {
        var path = options.StatusPath ?? Path.ChangeExtension(options.NodeConfigPath, ".status.yaml");
        var status = new XlbNodeConfigStatus
        {
            AppliedRevision = _appliedRevision,
            AppliedHash = _appliedHash,
            AttachMode = attachMode,
            Conditions = conditions,
        };
        var yaml = Yaml.Write(System.Text.Json.JsonSerializer.SerializeToNode(status, XlbJson.Info<XlbNodeConfigStatus>()));
        AtomicFile.Write(path, yaml);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "XDP attached to {Interface} in {Mode} mode")]
    private partial void LogAttached(string @interface, XdpMode mode);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Interface} has no native XDP: running in generic mode, which is slower")]
    private partial void LogGenericMode(string @interface);

    [LoggerMessage(Level = LogLevel.Information, Message = "adopted the pinned maps in {PinRoot}: generation {Generation} active, connection table kept")]
    private partial void LogAdopted(string pinRoot, byte generation);

    [LoggerMessage(Level = LogLevel.Information, Message = "exiting with XDP attached to {Count} interfaces: traffic continues on the applied revision")]
    private partial void LogLeftAttached(int count);

    [LoggerMessage(Level = LogLevel.Information, Message = "XDP detached from {Interface}")]
    private partial void LogDetached(string @interface);

    [LoggerMessage(Level = LogLevel.Error, Message = "detaching XDP from {Interface} failed: {Error}")]
    private partial void LogDetachFailed(string @interface, string error);

    [LoggerMessage(Level = LogLevel.Information, Message = "applied revision {Revision} into generation {Generation}: {Operations} map operations in {Milliseconds:F1} ms")]
    private partial void LogApplied(long revision, byte generation, int operations, double milliseconds);

    [LoggerMessage(Level = LogLevel.Error, Message = "revision {Revision} not applied: {Error}")]
    private partial void LogApplyFailed(long revision, string error);
}
