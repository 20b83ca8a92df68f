using System.Text.Json.Nodes;

namespace Xlb.Tests.Kube;

/// <summary>The Lease the Kubernetes tests create: the simplest namespaced kind every cluster has.</summary>
public static class Leases
{
    public static JsonObject Of(string ns, string name, string holder = "a", Dictionary<string, string>? labels = null)
    {
        var meta = new JsonObject { ["name"] = name, ["namespace"] = ns };
        if (labels is not null)
        {
            meta["labels"] = new JsonObject([.. labels.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))]);
        }
        return new JsonObject
        {
            ["apiVersion"] = "coordination.k8s.io/v1",
            ["kind"] = "Lease",
            ["metadata"] = meta,
            ["spec"] = new JsonObject { ["holderIdentity"] = holder },
        };
    }
}
