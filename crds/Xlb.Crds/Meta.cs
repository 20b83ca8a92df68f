using System.Text.Json.Serialization;

namespace Xlb.Crds;

/// <summary>The API group and version of every XLB custom resource.</summary>
public static class XlbApi
{
    public const string Group = "xlb.io";
    public const string Version = "v1alpha1";
    public const string ApiVersion = Group + "/" + Version;
}

/// <summary>Kubernetes object metadata: the subset XLB reads and writes.</summary>
[System.Text.Json.Serialization.JsonUnmappedMemberHandling(System.Text.Json.Serialization.JsonUnmappedMemberHandling.Skip)]
public sealed record ObjectMeta
{
    public string? Name { get; init; }
    public string? Namespace { get; init; }
    public string? Uid { get; init; }
    public string? ResourceVersion { get; init; }
    public long? Generation { get; init; }
    public string? CreationTimestamp { get; init; }
    public string? DeletionTimestamp { get; init; }
    public Dictionary<string, string>? Labels { get; init; }
    public Dictionary<string, string>? Annotations { get; init; }
    public List<string>? Finalizers { get; init; }
}

/// <summary>A status condition, as Kubernetes API conventions define it.</summary>
public sealed record Condition
{
    public required string Type { get; init; }
    /// <summary>"True", "False" or "Unknown".</summary>
    public required string Status { get; init; }
    public long? ObservedGeneration { get; init; }
    public string? LastTransitionTime { get; init; }
    /// <summary>CamelCase, machine-readable.</summary>
    public required string Reason { get; init; }
    public string Message { get; init; } = "";
}

/// <summary>A label selector with matchLabels only (matchExpressions come with the cluster mode).</summary>
public sealed record LabelSelector
{
    public Dictionary<string, string>? MatchLabels { get; init; }

    public bool Matches(IReadOnlyDictionary<string, string>? labels)
    {
        if (MatchLabels is null)
        {
            return true;
        }
        foreach (var (key, value) in MatchLabels)
        {
            if (labels is null || !labels.TryGetValue(key, out var actual) || actual != value)
            {
                return false;
            }
        }
        return true;
    }
}

/// <summary>Common shape of every top-level object XLB reads from manifests.</summary>
public interface IKubernetesObject
{
    string ApiVersion { get; }
    string Kind { get; }
    ObjectMeta Metadata { get; }
}

/// <summary>Transport protocol of a port.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<L4Protocol>))]
public enum L4Protocol
{
    TCP,
    UDP,
}
