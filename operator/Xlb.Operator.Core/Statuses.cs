using System.Net;
using System.Net.Sockets;
using System.Numerics;
using Xlb.Crds;
using static Xlb.Operator.Core.Conditions;

namespace Xlb.Operator.Core;

public static partial class Planner
{
    /// <summary>The first problem of each object (the one its conditions report).</summary>
    private static Dictionary<ObjectRef, Problem> ByObject(List<Problem> problems)
    {
        var result = new Dictionary<ObjectRef, Problem>();
        foreach (var p in problems)
        {
            result.TryAdd(p.Object, p);
        }
        return result;
    }

    /// <summary>Ready/Stalled/Reconciling for an object that is either fine or has a problem (kstatus: Stalled is abnormal-true).</summary>
    private static IEnumerable<Condition> Verdict(Problem? problem, long? generation, string readyReason, string readyMessage) =>
    [
        Make(Ready, problem is null, problem?.Reason ?? readyReason, problem?.Message ?? readyMessage, generation),
        Make(Stalled, problem is not null, problem?.Reason ?? readyReason, problem?.Message ?? "", generation),
        Make(Reconciling, false, problem?.Reason ?? readyReason, "", generation),
    ];

    private static Dictionary<string, LoadBalancerPoolStatus> PoolStatuses(PlanInput input, Dictionary<string, ResolvedPool> pools, Ipam.Result vips, Dictionary<ObjectRef, Problem> problems)
    {
        var result = new Dictionary<string, LoadBalancerPoolStatus>(StringComparer.Ordinal);
        var addresses = vips.Assigned.Values.Concat(vips.Held.Values).Distinct().ToList();
        foreach (var pool in input.Pools)
        {
            var name = pool.Metadata.Name ?? "";
            var generation = pool.Metadata.Generation;
            var problem = problems.GetValueOrDefault(ObjectRef.Of(pool));
            if (!pools.TryGetValue(name, out var resolved))
            {
                result[name] = new LoadBalancerPoolStatus { ObservedGeneration = generation, Conditions = Merge(pool.Status?.Conditions, [.. Verdict(problem, generation, "", ""), Make(Exhausted, false, problem!.Reason, "", generation)], input.Now) };
                continue;
            }
            var families = new List<FamilyUsage>();
            foreach (var (family, af) in new[] { (IpFamily.IPv4, AddressFamily.InterNetwork), (IpFamily.IPv6, AddressFamily.InterNetworkV6) })
            {
                var blocks = resolved.Blocks.Where(b => b.Family == af).ToList();
                if (blocks.Count == 0)
                {
                    continue;
                }
                var total = blocks.Aggregate(BigInteger.Zero, (sum, b) => sum + b.Size - resolved.Reserved.Aggregate(BigInteger.Zero, (r, x) => r + b.OverlapSize(x)));
                total = BigInteger.Max(total, BigInteger.Zero);
                var allocated = addresses.Count(a => a.AddressFamily == af && resolved.Offers(a));
                families.Add(new FamilyUsage { Family = family, Total = Saturate(total), Allocated = allocated, Available = Saturate(BigInteger.Max(total - allocated, 0)) });
            }
            var available = families.Aggregate(BigInteger.Zero, (s, f) => s + f.Available);
            var exhausted = available == 0;
            var message = string.Join(", ", families.Select(f => $"{f.Family}: {f.Allocated} of {f.Total} allocated"));
            result[name] = new LoadBalancerPoolStatus
            {
                ObservedGeneration = generation,
                Allocated = families.Sum(f => f.Allocated),
                Available = Saturate(available),
                Families = families,
                Conditions = Merge(pool.Status?.Conditions,
                [
                    .. Verdict(problem, generation, "Allocatable", message),
                    Make(Exhausted, exhausted, exhausted ? "NoAddressLeft" : "AddressesLeft", exhausted ? "every address is allocated; new automatic VIPs of this pool fail" : message, generation),
                ], input.Now),
            };
        }
        return result;
    }

    private static Dictionary<string, VipShardStatus> ShardStatuses(PlanInput input, Dictionary<string, ResolvedShard> shards, Dictionary<IPAddress, PlacedVip> placements, Dictionary<ObjectRef, Problem> problems)
    {
        var result = new Dictionary<string, VipShardStatus>(StringComparer.Ordinal);
        foreach (var shard in input.Shards)
        {
            var name = shard.Metadata.Name ?? "";
            var generation = shard.Metadata.Generation;
            var problem = problems.GetValueOrDefault(ObjectRef.Of(shard));
            var placed = placements.Values.Where(p => p.Shard == name).Select(p => p.Placement).OrderBy(p => p.Address, StringComparer.Ordinal).ToList();
            var moved = placements.Values.Count(p => p.Shard == name && p.PreviousActive is not null && p.PreviousActive != p.Placement.ActiveNode);
            var ready = shards.TryGetValue(name, out var resolved) ? resolved.Ready : [];
            var dead = resolved?.Selected.Except(ready).ToList() ?? [];
            var noStandby = placed.Where(p => p.StandbyNode is null).Select(p => p.Address).ToList();
            var degraded = problem is null && (dead.Count > 0 || noStandby.Count > 0);
            var degradedMessage = dead.Count > 0 ? $"agents not alive on {string.Join(", ", dead)}" + (noStandby.Count > 0 ? $"; no standby for {string.Join(", ", noStandby)}" : "")
                : noStandby.Count > 0 ? $"no standby node for {string.Join(", ", noStandby)}" : "";
            // A problem-free shard with no ready node serves nothing: not Ready, but not Stalled either (it heals when a node comes).
            var served = problem is not null || ready.Count > 0;
            var conditions = served
                ? Verdict(problem, generation, "Placed", $"{placed.Count} VIPs on {ready.Count} ready nodes").ToList()
                : [Make(Ready, false, "NoReadyNodes", resolved!.Selected.Count == 0 ? "spec.nodeSelector selects no node" : "no selected node has a live agent", generation),
                   Make(Stalled, false, "NoReadyNodes", "", generation), Make(Reconciling, true, "NoReadyNodes", "waiting for a node with a live agent", generation)];
            conditions.Add(Make(Degraded, degraded, degraded ? (dead.Count > 0 ? "NodesNotReady" : "NoStandby") : "AllNodesReady", degradedMessage, generation));
            result[name] = new VipShardStatus
            {
                ObservedGeneration = generation,
                Vips = placed,
                VipCount = placed.Count,
                ReadyNodes = ready,
                ReadyNodeCount = ready.Count,
                Transitions = (shard.Status?.Transitions ?? 0) + moved,
                Conditions = Merge(shard.Status?.Conditions, conditions, input.Now),
            };
        }
        return result;
    }

    /// <summary>Every mapping's status, computed through <paramref name="context"/>; <paramref name="track"/> learns which to recompute next time.</summary>
    private static Dictionary<ObjectRef, PortMappingStatus> MappingStatuses(PlanInput input, List<ValidMapping> mappings, StatusContext context, StatusTrack track)
    {
        var result = new Dictionary<ObjectRef, PortMappingStatus>(input.PortMappings.Count);
        var byObject = new Dictionary<PortMapping, ValidMapping>(mappings.Count, ReferenceEqualityComparer.Instance);
        foreach (var vm in mappings)
        {
            byObject[vm.Object] = vm;
        }
        // Each status is computed from its own mapping (the context and the memo are safe for
        // that); they are gathered in order after.
        var all = input.PortMappings;
        var keys = new string[all.Count];
        var computed = new ComputedStatus[all.Count];
        void Compute(int i)
        {
            keys[i] = KeyOf(all[i]);
            computed[i] = context.Status(all[i], keys[i], byObject.GetValueOrDefault(all[i]));
        }
        if (InParallel(all.Count, input.MaxParallelism) is { } parallel)
        {
            Parallel.For(0, all.Count, parallel, Compute);
        }
        else
        {
            for (var i = 0; i < all.Count; i++)
            {
                Compute(i);
            }
        }
        for (var i = 0; i < all.Count; i++)
        {
            result[computed[i].Self] = computed[i].Status;
            track.Learn(keys[i], computed[i]);
        }
        return result;
    }

    /// <summary>What one mapping's status computation yields beyond the status: what decides whether the next plan must redo it.</summary>
    internal readonly record struct ComputedStatus(ObjectRef Self, PortMappingStatus Status, NodeProgressKey First, NodeProgressKey Second, bool Stamped);

    /// <summary>
    /// Which mapping statuses a continued plan (see <see cref="Continue"/>) must compute again
    /// although their mapping did not change: those that stamped a condition transition with the
    /// plan's time (a later time stamps differently), and per node those whose progress there is
    /// at the node's revision (when the revision moves, "applied" is judged anew for them only:
    /// a mapping behind the revision is applied when the agent's applied revision reaches it).
    /// </summary>
    internal sealed class StatusTrack
    {
        public HashSet<string> Stamped { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, HashSet<string>> AtRevision { get; } = new(StringComparer.Ordinal);
        /// <summary>Per node, the config revision AtRevision refers to.</summary>
        public Dictionary<string, long> Revisions { get; } = new(StringComparer.Ordinal);

        public void Learn(string key, ComputedStatus computed)
        {
            if (computed.Stamped)
            {
                Stamped.Add(key);
            }
            else
            {
                Stamped.Remove(key);
            }
            foreach (var progress in (ReadOnlySpan<NodeProgressKey>)[computed.First, computed.Second])
            {
                if (progress.Node is { } node && Revisions.TryGetValue(node, out var revision) && progress.Revision == revision)
                {
                    AtRevision[node].Add(key);
                }
            }
        }

        public void Clear()
        {
            Stamped.Clear();
            AtRevision.Clear();
            Revisions.Clear();
        }

        /// <summary>Forget a mapping's progress before it is learned again.</summary>
        public void Forget(string key)
        {
            foreach (var set in AtRevision.Values)
            {
                set.Remove(key);
            }
        }

        /// <summary>Start tracking the nodes at these revisions; a node whose revision moved starts with no mapping at it.</summary>
        public void Revise(IEnumerable<XlbNodeConfig> configs)
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var c in configs)
            {
                seen.Add(c.Spec.NodeName);
                if (!Revisions.TryGetValue(c.Spec.NodeName, out var was) || was != c.Spec.Revision)
                {
                    Revisions[c.Spec.NodeName] = c.Spec.Revision;
                    AtRevision[c.Spec.NodeName] = new HashSet<string>(StringComparer.Ordinal);
                }
            }
            foreach (var gone in Revisions.Keys.Where(n => !seen.Contains(n)).ToList())
            {
                Revisions.Remove(gone);
                AtRevision.Remove(gone);
            }
        }
    }

    /// <summary>Everything a mapping's status is made of besides the mapping itself.</summary>
    internal sealed class StatusContext(
        PlanInput input, Ipam.Result vips, Dictionary<IPAddress, PlacedVip> placements, IReadOnlyList<XlbNodeConfig> configs,
        Dictionary<(string Mapping, string Node), string> digests, Dictionary<ObjectRef, Problem> problems)
    {
        private readonly Dictionary<string, XlbNodeConfig> _configByNode = configs.ToDictionary(c => c.Spec.NodeName, StringComparer.Ordinal);
        private readonly bool _tracked = input.AgentRenewals is not null;
        // What each node's health checks took out, as a set; null when nothing is out there.
        private readonly Dictionary<string, HashSet<string>?> _unhealthyByNode = new(StringComparer.Ordinal);

        private HashSet<string>? UnhealthyOn(string node)
        {
            lock (_unhealthyByNode)
            {
                if (!_unhealthyByNode.TryGetValue(node, out var set))
                {
                    var list = input.Previous.GetValueOrDefault(node)?.Status?.UnhealthyBackends;
                    _unhealthyByNode[node] = set = list is { Count: > 0 } ? list.ToHashSet(StringComparer.Ordinal) : null;
                }
                return set;
            }
        }

        /// <summary>The status of mapping <paramref name="pm"/> (key <paramref name="key"/>), valid as <paramref name="m"/> or not valid (null).</summary>
        public ComputedStatus Status(PortMapping pm, string key, ValidMapping? m)
        {
            var self = ObjectRef.Of(pm);
            var generation = pm.Metadata.Generation;
            var problem = problems.GetValueOrDefault(self);
            IPAddress? vip = m is not null && vips.Assigned.TryGetValue(m, out var a) ? a : vips.Held.GetValueOrDefault(key);
            if (m is null || vip is null)
            {
                var rejected = new PortMappingStatus
                {
                    ObservedGeneration = generation,
                    Vips = vip is null ? [] : [vip.ToString()],
                    Conditions = Merge(pm.Status?.Conditions,
                    [
                        Make(Accepted, false, problem?.Reason ?? "NotAccepted", problem?.Message ?? "", generation),
                        Make(Programmed, false, problem?.Reason ?? "NotAccepted", "", generation),
                        .. Verdict(problem ?? new Problem(self, "NotAccepted", "not accepted"), generation, "", ""),
                    ], input.Now),
                };
                return new ComputedStatus(self, rejected, default, default, StampedNow(pm, rejected));
            }
            placements.TryGetValue(vip, out var placed);
            var progress = (Progress(key, pm.Status, placed?.Placement.ActiveNode, VipRole.Active), Progress(key, pm.Status, placed?.Placement.StandbyNode, VipRole.Standby));
            // Everything else the status is made of comes with the memo's mapping entry (same object, same resolution).
            var statusKey = new StatusKey(vip, placed?.Placement.ActiveNode, placed?.Placement.StandbyNode, progress.Item1, progress.Item2,
                placed?.Placement.ActiveNode is { } active ? input.Previous.GetValueOrDefault(active)?.Status?.UnhealthyBackends : null, _tracked);
            if (input.Memo?.Status(key, pm, statusKey, input.Now) is { } same)
            {
                return new ComputedStatus(self, same, progress.Item1, progress.Item2, StampedNow(pm, same));
            }
            var nodes = new List<NodeProgress>();
            foreach (var p in new[] { progress.Item1, progress.Item2 })
            {
                if (p.Node is not null)
                {
                    nodes.Add(new NodeProgress { Node = p.Node, Role = p.Role, Revision = p.Revision, ContentDigest = p.Digest, Applied = p.Applied });
                }
            }
            var all = m.DistinctBackends;
            var terminating = all.Count(b => b.Draining);
            var readyCount = all.Count - terminating;
            var unhealthy = placed?.Placement.ActiveNode is { } activeNode ? UnhealthyOn(activeNode) : null;
            var healthy = unhealthy is null ? readyCount : all.Count(b => !b.Draining && !unhealthy.Contains(FormatEndpoint(b.Address, b.Port)));
            var counts = new BackendCounts
            {
                Total = all.Count + m.NotReady,
                Ready = readyCount,
                Healthy = healthy,
                Terminating = terminating,
                Summary = $"{readyCount}/{all.Count + m.NotReady}",
            };
            var (programmed, programmedReason, programmedMessage) =
                placed is null ? (false, "NoReadyNodes", $"VipShard {m.Shard.Name} has no ready node to serve {vip}")
                : !_tracked ? (true, "Rendered", "node configs rendered; agent progress is not tracked in standalone mode")
                : nodes.All(n => n.Applied) ? (true, "Applied", $"applied on {string.Join(", ", nodes.Select(n => $"{n.Node} ({n.Role}, revision {n.Revision})"))}")
                : (false, "Pending", $"waiting for {string.Join(", ", nodes.Where(n => !n.Applied).Select(n => $"{n.Node} to apply revision {n.Revision}"))}");
            var backendsReady = healthy > 0;
            var backendsMessage = backendsReady ? $"{healthy} of {counts.Total} backends ready and healthy"
                : m.Object.Spec.Backend.ServiceRef is { } svc && counts.Total == 0 ? $"Service {svc.Name} has no endpoints"
                : $"no backend is ready and healthy ({counts.Ready} ready, {counts.Total} total)";
            var ready = programmed && backendsReady;
            var computed = new PortMappingStatus
            {
                ObservedGeneration = generation,
                Vips = [vip.ToString()],
                ActiveNodes = placed is null ? [] : [placed.Placement.ActiveNode],
                Backends = counts,
                Nodes = nodes,
                Conditions = Merge(pm.Status?.Conditions,
                [
                    Make(Accepted, true, "Accepted", $"VIP {vip} from LoadBalancerPool {m.Shard.Pool.Name}", generation),
                    Make(Programmed, programmed, programmedReason, programmedMessage, generation),
                    Make(BackendsReady, backendsReady, backendsReady ? "BackendsReady" : "NoReadyBackends", backendsMessage, generation),
                    Make(Ready, ready, ready ? "Ready" : !programmed ? programmedReason : "NoReadyBackends", ready ? $"{vip} served by {placed!.Placement.ActiveNode}" : !programmed ? programmedMessage : backendsMessage, generation),
                    Make(Reconciling, !programmed && placed is not null, programmedReason, programmed ? "" : programmedMessage, generation),
                    Make(Stalled, false, "Accepted", "", generation),
                ], input.Now),
            };
            // The object's own status when it says the same: a plan then holds no second copy of the
            // statuses it wrote before (at 10,000 mappings, about 20 MB of conditions and messages).
            var status = computed.SameAs(pm.Status) ? pm.Status! : computed;
            input.Memo?.RememberStatus(key, pm, statusKey, status, input.Now);
            return new ComputedStatus(self, status, progress.Item1, progress.Item2, StampedNow(pm, status));
        }

        /// <summary>Whether a condition of the status carries this plan's time: one that transitioned from the object's own (see <see cref="Conditions.Merge"/>).</summary>
        private static bool StampedNow(PortMapping pm, PortMappingStatus status)
        {
            foreach (var c in status.Conditions)
            {
                if (Find(pm.Status?.Conditions, c.Type) is not { } before || before.Status != c.Status || before.LastTransitionTime is null)
                {
                    return true;
                }
            }
            return false;
        }

        // Where the mapping stands on one node. The revision moves only when this mapping's listeners
        // on the node change, so a change elsewhere in the node config does not touch this mapping's status.
        private NodeProgressKey Progress(string key, PortMappingStatus? current, string? node, VipRole role)
        {
            if (node is null || !_configByNode.TryGetValue(node, out var config))
            {
                return default;
            }
            var digest = digests.GetValueOrDefault((key, node));
            NodeProgress? before = null;
            foreach (var n in current?.Nodes ?? [])
            {
                if (n.Node == node)
                {
                    before = n;
                    break;
                }
            }
            var revision = before is not null && before.ContentDigest == digest && before.Revision <= config.Spec.Revision ? before.Revision : config.Spec.Revision;
            var status = input.Previous.GetValueOrDefault(node)?.Status;
            var applied = status is not null && status.AppliedRevision >= revision
                && (status.AppliedRevision > config.Spec.Revision || revision < config.Spec.Revision || status.AppliedHash == config.Spec.ContentHash);
            return new NodeProgressKey(node, role, revision, digest, applied);
        }
    }

    /// <summary>One node's line of a mapping's status, before it becomes a <see cref="NodeProgress"/>.</summary>
    internal readonly record struct NodeProgressKey(string? Node, VipRole Role, long Revision, string? Digest, bool Applied);

    /// <summary>
    /// What a valid mapping's status is made of beyond its memo entry (the object, its validation and
    /// backends): equal keys, equal statuses. Unhealthy backends are compared as the very list the
    /// node's status carries.
    /// </summary>
    internal readonly record struct StatusKey(IPAddress Vip, string? Active, string? Standby, NodeProgressKey First, NodeProgressKey Second, List<string>? Unhealthy, bool Tracked);

    /// <summary>How agents name a backend in status.unhealthyBackends.</summary>
    private static string FormatEndpoint(string address, int port) => $"{address}:{port}";
}
