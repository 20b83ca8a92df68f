using System.Text;
using Xlb.Crds;

namespace Xlb.Kube;

/// <summary>Where a kind lives in the API: group, version, URL plural and scope.</summary>
public sealed record KubeResource(string Group, string Version, string Plural, string Kind, bool Namespaced)
{
    public string ApiVersion => Group.Length == 0 ? Version : $"{Group}/{Version}";

    /// <summary>The URL path of a collection (name null) or an object, optionally one of its subresources.</summary>
    public string Path(string? ns, string? name = null, string? subresource = null)
    {
        var path = new StringBuilder(Group.Length == 0 ? $"/api/{Version}" : $"/apis/{Group}/{Version}");
        if (Namespaced && ns is not null)
        {
            path.Append("/namespaces/").Append(Uri.EscapeDataString(ns));
        }
        path.Append('/').Append(Plural);
        if (name is not null)
        {
            path.Append('/').Append(Uri.EscapeDataString(name));
            if (subresource is not null)
            {
                path.Append('/').Append(subresource);
            }
        }
        return path.ToString();
    }

    public static KubeResource Namespaces { get; } = new("", "v1", "namespaces", "Namespace", false);
    public static KubeResource Nodes { get; } = new("", "v1", "nodes", "Node", false);
    public static KubeResource Services { get; } = new("", "v1", "services", "Service", true);
    public static KubeResource EndpointSlices { get; } = new("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true);
    public static KubeResource Leases { get; } = new("coordination.k8s.io", "v1", "leases", "Lease", true);
    public static KubeResource Events { get; } = new("events.k8s.io", "v1", "events", "Event", true);
    public static KubeResource LoadBalancerPools { get; } = new(XlbApi.Group, XlbApi.Version, "loadbalancerpools", "LoadBalancerPool", false);
    public static KubeResource VipShards { get; } = new(XlbApi.Group, XlbApi.Version, "vipshards", "VipShard", false);
    public static KubeResource PortMappings { get; } = new(XlbApi.Group, XlbApi.Version, "portmappings", "PortMapping", true);
    public static KubeResource XlbNodeConfigs { get; } = new(XlbApi.Group, XlbApi.Version, "xlbnodeconfigs", "XlbNodeConfig", false);
    public static KubeResource XlbNodeConfigChunks { get; } = new(XlbApi.Group, XlbApi.Version, "xlbnodeconfigchunks", "XlbNodeConfigChunk", false);
}
