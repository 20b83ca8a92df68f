using System.Text.Json.Serialization;

namespace Xlb.Crds;

/// <summary>The API group and version of every XLB custom resource.</summary>
public static class XlbApi
{
    public const string Group = "xlb.io";
    public const string Version = "v1alpha1";
    public const string ApiVersion = Group + "/" + Version;
    /// <summary>
    /// Label of the agents' liveness Leases (<see cref="AgentLeaseName"/>): the node the agent runs
    /// on, as <see cref="NodeLabelValue"/> gives it. The Lease's holderIdentity is the node's name itself.
    /// </summary>
    public const string AgentNodeLabel = "xlb.io/agent-node";

    /// <summary>The longest object name (an RFC 1123 subdomain) and the longest label value.</summary>
    public const int NameMax = 253, LabelValueMax = 63;

    /// <summary>A node's agent Lease: xlb-agent-NODE, the node's name shortened (<see cref="ObjectName"/>) where it would be too long.</summary>
    public static string AgentLeaseName(string node) => ObjectName("xlb-agent-", node, "");

    /// <summary>
    /// A node's name as a label value. A label value holds 63 characters and a node's name up to
    /// 253 (a subdomain, whose characters a label value may hold): a longer name is its first 46
    /// characters and a hash of the whole, so it stays recognisable and distinct.
    /// </summary>
    public static string NodeLabelValue(string node) =>
        node.Length <= LabelValueMax ? node : $"{node[..46].TrimEnd('.', '-')}-{Hash16(node)}";

    /// <summary>
    /// prefix + name + suffix as an object name: as it is when it fits in 253 characters, otherwise
    /// with the name cut short (at a character a subdomain may end a part with) and followed by a hash
    /// of the whole name. The prefix ends and the suffix starts with a character that keeps it a subdomain.
    /// </summary>
    public static string ObjectName(string prefix, string name, string suffix)
    {
        if (prefix.Length + name.Length + suffix.Length <= NameMax)
        {
            return prefix + name + suffix;
        }
        var keep = NameMax - prefix.Length - suffix.Length - 17;
        return $"{prefix}{name[..keep].TrimEnd('.', '-')}-{Hash16(name)}{suffix}";
    }

    private static string Hash16(string value) =>
        Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(value)))[..16];
}

/// <summary>Kubernetes object metadata: the subset XLB reads and writes.</summary>
[System.Text.Json.Serialization.JsonUnmappedMemberHandling(System.Text.Json.Serialization.JsonUnmappedMemberHandling.Skip)]
public sealed record ObjectMeta
{
    public string? Name { get; init; }
    [JsonConverter(typeof(SharedStringConverter))]
    public string? Namespace { get; init; }
    public string? Uid { get; init; }
    public string? ResourceVersion { get; init; }
    public long? Generation { get; init; }
    [JsonConverter(typeof(SharedStringConverter))]
    public string? CreationTimestamp { get; init; }
    public string? DeletionTimestamp { get; init; }
    [JsonConverter(typeof(SharedStringMapConverter))]
    public Dictionary<string, string>? Labels { get; init; }
    [JsonConverter(typeof(SharedStringMapConverter))]
    public Dictionary<string, string>? Annotations { get; init; }
    public List<string>? Finalizers { get; init; }
    public List<OwnerReference>? OwnerReferences { get; init; }
}

/// <summary>The object that owns this one; Kubernetes' garbage collector deletes owned objects with their owner.</summary>
[System.Text.Json.Serialization.JsonUnmappedMemberHandling(System.Text.Json.Serialization.JsonUnmappedMemberHandling.Skip)]
public sealed record OwnerReference
{
    public required string ApiVersion { get; init; }
    public required string Kind { get; init; }
    public required string Name { get; init; }
    public required string Uid { get; init; }
    public bool? Controller { get; init; }
    public bool? BlockOwnerDeletion { get; init; }
}

/// <summary>A status condition, as Kubernetes API conventions define it (metav1.Condition).</summary>
public sealed record Condition
{
    /// <summary>The aspect this condition reports: Ready, Stalled, Reconciling, Programmed, and so on.</summary>
    [Schema.Length(1, 316)]
    [JsonConverter(typeof(SharedStringConverter))]
    public required string Type { get; init; }
    /// <summary>"True", "False" or "Unknown".</summary>
    [Schema.Pattern("^(True|False|Unknown)$")]
    [JsonConverter(typeof(SharedStringConverter))]
    public required string Status { get; init; }
    /// <summary>The metadata.generation this condition was computed from.</summary>
    public long? ObservedGeneration { get; init; }
    /// <summary>When the status last changed.</summary>
    [Schema.Format("date-time")]
    [JsonConverter(typeof(SharedStringConverter))]
    public string? LastTransitionTime { get; init; }
    /// <summary>Why, in one CamelCase word that programs can match on.</summary>
    [Schema.Pattern("^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    [Schema.Length(1, 1024)]
    [JsonConverter(typeof(SharedStringConverter))]
    public required string Reason { get; init; }
    /// <summary>Why, for people.</summary>
    [Schema.Length(0, 32768)]
    [JsonConverter(typeof(SharedStringConverter))]
    public string Message { get; init; } = "";
}

/// <summary>A label selector, as metav1.LabelSelector: every matchLabels pair and every expression must hold. An empty selector selects everything.</summary>
public sealed record LabelSelector
{
    /// <summary>Labels that must be present with exactly these values.</summary>
    public Dictionary<string, string>? MatchLabels { get; init; }
    /// <summary>Set-based requirements (In, NotIn, Exists, DoesNotExist).</summary>
    [Schema.Length(0, 32)]
    public List<LabelSelectorRequirement>? MatchExpressions { get; init; }

    public bool Matches(IReadOnlyDictionary<string, string>? labels)
    {
        foreach (var (key, value) in MatchLabels ?? [])
        {
            if (labels is null || !labels.TryGetValue(key, out var actual) || actual != value)
            {
                return false;
            }
        }
        return (MatchExpressions ?? []).All(e => e.Matches(labels));
    }
}

[JsonConverter(typeof(JsonStringEnumConverter<SelectorOperator>))]
public enum SelectorOperator
{
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// <summary>One set-based requirement of a label selector.</summary>
[Schema.Validation("self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0", "In and NotIn need values; Exists and DoesNotExist take none")]
public sealed record LabelSelectorRequirement
{
    /// <summary>The label key.</summary>
    public required string Key { get; init; }
    /// <summary>In, NotIn, Exists or DoesNotExist.</summary>
    public required SelectorOperator Operator { get; init; }
    /// <summary>The values for In and NotIn.</summary>
    [Schema.Length(0, 64)]
    public List<string> Values { get; init; } = [];

    public bool Matches(IReadOnlyDictionary<string, string>? labels)
    {
        string? actual = null;
        var present = labels is not null && labels.TryGetValue(Key, out actual);
        return Operator switch
        {
            SelectorOperator.In => present && Values.Contains(actual!),
            SelectorOperator.NotIn => !present || !Values.Contains(actual!),
            SelectorOperator.Exists => present,
            _ => !present,
        };
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
