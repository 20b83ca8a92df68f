using System.Text.Json.Nodes;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Operator.Core;

namespace Xlb.Operator;

/// <summary>
/// The standalone stand-in for status subresources: one document listing, per object, whether it
/// is programmed and why not. Kubernetes-style: Ready or Stalled with a CamelCase reason.
/// </summary>
public static class StatusReport
{
    public static string Render(ManifestSet set, PlanResult plan)
    {
        var objects = new JsonArray();
        IEnumerable<IKubernetesObject> all = [.. set.Pools, .. set.Shards, .. set.PortMappings];
        foreach (var obj in all)
        {
            var self = ObjectRef.Of(obj);
            var problem = plan.Problems.FirstOrDefault(p => p.Object == self);
            var entry = new JsonObject
            {
                ["kind"] = self.Kind,
                ["name"] = self.Namespace is null ? self.Name : $"{self.Namespace}/{self.Name}",
                ["ready"] = problem is null,
                ["reason"] = problem?.Reason ?? "Programmed",
            };
            if (problem is not null)
            {
                entry["message"] = problem.Message;
            }
            if (plan.Vips.TryGetValue(self, out var vip))
            {
                entry["vip"] = vip.ToString();
            }
            if (obj is VipShard shard && plan.Placements.TryGetValue(shard.Metadata.Name ?? "", out var placed))
            {
                entry["vips"] = new JsonArray([.. placed.Select(p => (JsonNode)new JsonObject
                {
                    ["address"] = p.Address,
                    ["activeNode"] = p.ActiveNode,
                    ["standbyNode"] = p.StandbyNode,
                })]);
            }
            objects.Add(entry);
        }
        var errors = new JsonArray([.. set.Errors.Select(e => (JsonNode)JsonValue.Create(e.ToString()))]);
        return Yaml.Write(new JsonObject { ["objects"] = objects, ["manifestErrors"] = errors });
    }
}
