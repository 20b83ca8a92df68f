using System.Globalization;
using Xlb.Crds;

namespace Xlb.Operator.Core;

/// <summary>
/// Conditions as Kubernetes API conventions and kstatus want them: one per type, CamelCase
/// reasons, observedGeneration, and a lastTransitionTime that moves only when the status does.
/// </summary>
public static class Conditions
{
    public const string Ready = "Ready";
    public const string Stalled = "Stalled";
    public const string Reconciling = "Reconciling";
    public const string Accepted = "Accepted";
    public const string Programmed = "Programmed";
    public const string BackendsReady = "BackendsReady";
    public const string Degraded = "Degraded";
    public const string Exhausted = "Exhausted";

    public static Condition Make(string type, bool status, string reason, string message, long? generation) => new()
    {
        Type = type,
        Status = status ? "True" : "False",
        Reason = reason,
        Message = message,
        ObservedGeneration = generation,
    };

    /// <summary>A condition's lastTransitionTime for a transition at <paramref name="now"/> (RFC 3339, whole seconds).</summary>
    public static string Stamp(DateTimeOffset now) => now.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    /// <summary>
    /// The desired conditions, with transition times carried over from <paramref name="existing"/>
    /// where the status did not change. A condition that comes out equal to the existing one is
    /// that very object: a converged status holds no second copy of its conditions.
    /// </summary>
    public static List<Condition> Merge(IReadOnlyList<Condition>? existing, IEnumerable<Condition> desired, DateTimeOffset now)
    {
        string? stamp = null;
        var result = desired.TryGetNonEnumeratedCount(out var count) ? new List<Condition>(count) : [];
        foreach (var c in desired)
        {
            var before = Find(existing, c.Type);
            var time = before is not null && before.Status == c.Status && before.LastTransitionTime is not null ? before.LastTransitionTime : stamp ??= Stamp(now);
            result.Add(before is not null && before.LastTransitionTime == time && before.Reason == c.Reason && before.Message == c.Message
                && before.ObservedGeneration == c.ObservedGeneration && before.Status == c.Status
                ? before
                : c with { LastTransitionTime = time });
        }
        return result;
    }

    /// <summary>The condition of this type, if any.</summary>
    public static Condition? Find(IReadOnlyList<Condition>? conditions, string type)
    {
        for (var i = 0; i < (conditions?.Count ?? 0); i++)
        {
            if (conditions![i].Type == type)
            {
                return conditions[i];
            }
        }
        return null;
    }
}
