using System.Globalization;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Xlb.Kube;

public sealed record LeaderElectionOptions
{
    public required string Namespace { get; init; }
    public required string LeaseName { get; init; }
    /// <summary>Who is asking: the pod name (POD_NAME, from the downward API), else the host name plus a random suffix.</summary>
    public string Identity { get; init; } = DefaultIdentity();
    /// <summary>How long a holder's lease is honoured by the others after its last observed renewal.</summary>
    public TimeSpan LeaseDuration { get; init; } = TimeSpan.FromSeconds(15);
    /// <summary>A leader that has not renewed for this long steps down (must be shorter than LeaseDuration).</summary>
    public TimeSpan RenewDeadline { get; init; } = TimeSpan.FromSeconds(10);
    public TimeSpan RetryPeriod { get; init; } = TimeSpan.FromSeconds(2);

    public static string DefaultIdentity() =>
        Environment.GetEnvironmentVariable("POD_NAME") is { Length: > 0 } pod ? pod
            : $"{Environment.MachineName}_{Guid.NewGuid():N}"[..Math.Min(63, Environment.MachineName.Length + 33)];
}

/// <summary>
/// Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules: a lease is taken
/// over only when its record has not changed for LeaseDuration as measured on this node's
/// clock (so clock skew between nodes does not matter); every write is a compare-and-swap on
/// resourceVersion; the leader renews every RetryPeriod and steps down when it could not renew
/// within RenewDeadline; on shutdown it releases the lease so a successor need not wait.
/// </summary>
public sealed partial class LeaderElector(KubeClient client, LeaderElectionOptions options, TimeProvider? time = null, ILogger? logger = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly ILogger _log = logger ?? NullLogger.Instance;
    private string? _observedRecord;
    private DateTimeOffset _observedAt;

    public bool IsLeader { get; private set; }
    public string Identity => options.Identity;

    /// <summary>
    /// Waits for leadership, runs <paramref name="lead"/> with a token that is cancelled when
    /// leadership is lost, and returns (without throwing) when it is lost or <paramref name="ct"/> is cancelled.
    /// </summary>
    public async Task RunAsync(Func<CancellationToken, Task> lead, CancellationToken ct)
    {
        try
        {
            while (!await TryAcquireOrRenewAsync(ct))
            {
                await Task.Delay(options.RetryPeriod, _time, ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return;
        }
        IsLeader = true;
        LogAcquired(_log, options.Identity, options.Namespace, options.LeaseName);
        using var leading = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var work = Task.Run(() => lead(leading.Token), CancellationToken.None);
        var renewed = _time.GetUtcNow();
        try
        {
            while (!ct.IsCancellationRequested && !work.IsCompleted)
            {
                try
                {
                    await Task.Delay(options.RetryPeriod, _time, ct);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
                if (await TryAcquireOrRenewAsync(ct))
                {
                    renewed = _time.GetUtcNow();
                }
                else if (_time.GetUtcNow() - renewed > options.RenewDeadline)
                {
                    LogLost(_log, options.Identity, options.RenewDeadline.TotalSeconds);
                    break;
                }
            }
        }
        finally
        {
            IsLeader = false;
            await leading.CancelAsync();
            try
            {
                await work;
            }
            catch (OperationCanceledException)
            {
                // The leader's work stopped because leadership ended.
            }
            if (ct.IsCancellationRequested)
            {
                await ReleaseAsync();
            }
        }
    }

    /// <summary>One compare-and-swap attempt; false when someone else holds a live lease or a write lost a race.</summary>
    public async Task<bool> TryAcquireOrRenewAsync(CancellationToken ct)
    {
        var now = _time.GetUtcNow();
        try
        {
            var lease = await client.GetAsync<JsonObject>(KubeResource.Leases, options.Namespace, options.LeaseName, ct);
            if (lease is null)
            {
                await client.CreateAsync(KubeResource.Leases, new JsonObject
                {
                    ["apiVersion"] = "coordination.k8s.io/v1",
                    ["kind"] = "Lease",
                    ["metadata"] = new JsonObject { ["name"] = options.LeaseName, ["namespace"] = options.Namespace },
                    ["spec"] = Spec(now, now, 0),
                }, ct: ct);
                Observe("created", now);
                return true;
            }
            var spec = lease["spec"] as JsonObject ?? [];
            var holder = spec["holderIdentity"]?.GetValue<string>() ?? "";
            var record = spec.ToJsonString();
            if (record != _observedRecord)
            {
                Observe(record, now);
            }
            var mine = holder == options.Identity;
            if (!mine && holder.Length > 0 && now - _observedAt < options.LeaseDuration)
            {
                return false;
            }
            var transitions = spec["leaseTransitions"]?.GetValue<int>() ?? 0;
            var acquired = mine && spec["acquireTime"]?.GetValue<string>() is { } a ? DateTimeOffset.Parse(a, CultureInfo.InvariantCulture) : now;
            lease["spec"] = Spec(acquired, now, mine ? transitions : transitions + 1);
            var updated = await client.ReplaceAsync(KubeResource.Leases, lease, ct: ct);
            Observe(updated["spec"]!.ToJsonString(), now);
            return true;
        }
        catch (KubeApiException e) when (e.IsConflict || e.Reason == "AlreadyExists")
        {
            return false;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // Shutting down mid-request: not renewed; the caller's loop ends on the token.
            return false;
        }
        catch (KubeApiException e)
        {
            LogError(_log, options.LeaseName, e.Message);
            return false;
        }
    }

    private void Observe(string record, DateTimeOffset at) => (_observedRecord, _observedAt) = (record, at);

    private JsonObject Spec(DateTimeOffset acquired, DateTimeOffset renewed, int transitions) => new()
    {
        ["holderIdentity"] = options.Identity,
        ["leaseDurationSeconds"] = (int)options.LeaseDuration.TotalSeconds,
        ["acquireTime"] = MicroTime.Format(acquired),
        ["renewTime"] = MicroTime.Format(renewed),
        ["leaseTransitions"] = transitions,
    };

    /// <summary>Gives the lease up (holder cleared, duration 1 s) if this process still holds it.</summary>
    private async Task ReleaseAsync()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            var lease = await client.GetAsync<JsonObject>(KubeResource.Leases, options.Namespace, options.LeaseName, timeout.Token);
            if (lease?["spec"]?["holderIdentity"]?.GetValue<string>() != options.Identity)
            {
                return;
            }
            lease["spec"]!["holderIdentity"] = "";
            lease["spec"]!["leaseDurationSeconds"] = 1;
            await client.ReplaceAsync(KubeResource.Leases, lease, ct: timeout.Token);
            LogReleased(_log, options.Identity);
        }
        catch (Exception e) when (e is KubeApiException or OperationCanceledException)
        {
            LogError(_log, options.LeaseName, "release failed: " + e.Message);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "{Identity} became leader (lease {Namespace}/{Lease})")]
    private static partial void LogAcquired(ILogger logger, string identity, string @namespace, string lease);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{Identity} lost leadership: no renewal within {Seconds} s")]
    private static partial void LogLost(ILogger logger, string identity, double seconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "{Identity} released the lease")]
    private static partial void LogReleased(ILogger logger, string identity);

    [LoggerMessage(Level = LogLevel.Warning, Message = "lease {Lease}: {Why}")]
    private static partial void LogError(ILogger logger, string lease, string why);
}
