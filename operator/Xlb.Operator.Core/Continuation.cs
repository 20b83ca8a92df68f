using System.Net;
using Xlb.Crds;

namespace Xlb.Operator.Core;

public static partial class Planner
{
    private static readonly IComparer<Chunking.Item> ListenerOrder = Comparer<Chunking.Item>.Create(ByListenerName);

    /// <summary>
    /// The plan for <paramref name="input"/> made from the last one, when only what a mapping's
    /// backends and status are made of changed: EndpointSlices, Services, mapping objects whose
    /// allocation inputs (requested VIP, shareKey, shard, ports, the VIP their status records) stay
    /// as they were, agent progress, and the time. Pools, shards, nodes, namespaces and node
    /// liveness must be the very same, and the previous node configs the ones the last plan made
    /// (same revisions and hashes), so allocation and placement cannot move. Only the changed
    /// mappings are validated and rendered again; each node's content is patched in place (a
    /// mapping's listener names do not change) and split again. Statuses are computed again for
    /// the changed mappings, for those whose status holds this plan's time, and for those at a
    /// node revision that moved (see <see cref="StatusTrack"/>); all of them when an agent's
    /// progress or health report changed. Null: a full plan is needed. The result is the one a
    /// full plan gives; PlanMemoTests compare the two over random change sequences.
    /// </summary>
    private static PlanResult? Continue(PlanInput input, PlanState last, PlanMemo memo)
    {
        var was = last.Input;
        var slots = last.Slots;
        if (!last.Continuable || input.ChunkLimit != was.ChunkLimit || (input.AgentRenewals is null) != (was.AgentRenewals is null)
            || !SameButStatus(input.Pools, was.Pools, p => p.Metadata, memo.SameSpec) || !SameButStatus(input.Shards, was.Shards, s => s.Metadata, memo.SameSpec) || !SameItems(input.Nodes, was.Nodes) || !SameItems(input.Namespaces, was.Namespaces)
            || !SameLiveness(input, last.Shards))
        {
            return null;
        }
        if (input.Previous.Count != last.Nodes.Count)
        {
            return null;
        }
        var progressMoved = false;
        foreach (var node in last.Nodes)
        {
            var made = node.Config.Spec;
            if (!input.Previous.TryGetValue(node.Node, out var before) || before.Spec.Revision != made.Revision || before.Spec.ContentHash != made.ContentHash || before.Spec.ChunkBuckets != made.ChunkBuckets)
            {
                return null;
            }
            progressMoved |= !ReferenceEquals(before.Status, was.Previous.GetValueOrDefault(node.Node)?.Status);
        }

        // From here on the state is changed in place: a plan that cannot continue after all is made in full, and replaces it.
        memo.State = null;
        var dirty = new HashSet<string>(StringComparer.Ordinal);
        var objects = new Dictionary<string, PortMapping>(StringComparer.Ordinal);
        if (!MappingChanges(input.PortMappings, was.PortMappings, slots, objects)
            || !ServiceChanges(input.Services, was.Services, last, dirty)
            || !SliceChanges(input.EndpointSlices, was.EndpointSlices, last, dirty))
        {
            return null;
        }
        // Mappings that got a VIP without recording it: each must now record the very VIP it got.
        foreach (var key in last.Unrecorded)
        {
            if (!objects.TryGetValue(key, out var now) || slots[key].Valid is not { } got
                || !last.Vips.Assigned.TryGetValue(got, out var vip) || !vip.Equals(StatusVip(now)))
            {
                return null;
            }
        }
        dirty.UnionWith(objects.Keys);
        var changes = new List<(MappingSlot Slot, PortMapping Object, (string Reason, string Message)? Error, ValidMapping? Valid)>(dirty.Count);
        foreach (var key in dirty)
        {
            var slot = slots[key];
            var pm = objects.GetValueOrDefault(key) ?? slot.Object;
            var (error, valid) = ValidateOne(pm, memo, last.Shards, last.Index);
            if ((!Equals(StatusVip(pm), StatusVip(slot.Object)) && !last.Unrecorded.Contains(key)) || ServiceOf(pm) != ServiceOf(slot.Object) || !SameAllocation(slot.Valid, valid))
            {
                return null;
            }
            changes.Add((slot, pm, error, valid));
        }

        var touched = new List<(ValidMapping Mapping, IPAddress Vip)>();
        var problems = last.Problems;
        foreach (var (slot, pm, error, valid) in changes)
        {
            if (valid is not null)
            {
                last.Mappings[slot.Index] = valid;
                if (last.Vips.Assigned.Remove(slot.Valid!, out var vip))
                {
                    last.Vips.Assigned[valid] = vip;
                    touched.Add((valid, vip));
                }
            }
            else
            {
                // The last list went out with the last plan's result: change a copy.
                problems = ReferenceEquals(problems, last.Problems) ? [.. problems] : problems;
                problems[slot.Problem] = new Problem(ObjectRef.Of(pm), error!.Value.Reason, error.Value.Message);
            }
            slot.Object = pm;
            slot.Valid = valid;
        }
        last.Problems = problems;

        var renders = last.Nodes.ToDictionary(n => n.Node, StringComparer.Ordinal);
        foreach (var (m, vip) in touched)
        {
            if (!last.Placements.TryGetValue(vip, out var placed))
            {
                continue;
            }
            foreach (var node in (ReadOnlySpan<string?>)[placed.Placement.ActiveNode, placed.Placement.StandbyNode])
            {
                if (node is null || !renders.TryGetValue(node, out var render))
                {
                    continue;
                }
                var own = new Chunking.Item[m.Ports.Count];
                for (var i = 0; i < own.Length; i++)
                {
                    own[i] = RenderListener(m, m.Ports[i], vip, node, memo);
                    var at = render.ListenerItems.BinarySearch(own[i], ListenerOrder);
                    if (at < 0)
                    {
                        throw new InvalidOperationException($"listener {own[i].Listener!.Name} of an unchanged allocation is missing from node {node}");
                    }
                    render.ListenerItems[at] = own[i];
                }
                last.Digests[(m.Key, node)] = memo.MappingDigest(m.Key, node, own);
            }
        }
        foreach (var render in last.Nodes)
        {
            render.Finish(input.Previous, input.ChunkLimit, memo);
        }
        var configs = last.Nodes.ConvertAll(n => n.Config);

        // Every VIP stays where it was, so none has moved since the configs this plan continues from.
        last.Placements = Settled(last.Placements);
        var problemOf = ByObject(problems);
        var context = new StatusContext(input, last.Vips, last.Placements, configs, last.Digests, problemOf);
        var track = last.Track;
        Dictionary<ObjectRef, PortMappingStatus> statuses;
        if (progressMoved)
        {
            track.Clear();
            track.Revise(configs);
            statuses = MappingStatuses(input, last.Mappings, context, track);
        }
        else
        {
            var redo = new HashSet<string>(dirty, StringComparer.Ordinal);
            redo.UnionWith(track.Stamped);
            foreach (var c in configs)
            {
                if (track.Revisions.GetValueOrDefault(c.Spec.NodeName) != c.Spec.Revision && track.AtRevision.TryGetValue(c.Spec.NodeName, out var at))
                {
                    redo.UnionWith(at);
                }
            }
            track.Revise(configs);
            statuses = new Dictionary<ObjectRef, PortMappingStatus>(last.Result.MappingStatuses);
            foreach (var key in redo)
            {
                var slot = slots[key];
                track.Forget(key);
                var computed = context.Status(slot.Object, key, slot.Valid);
                statuses[computed.Self] = computed.Status;
                track.Learn(key, computed);
            }
        }
        memo.Continued(slots.Count - dirty.Count);
        last.Unrecorded = [];
        last.Input = input;
        last.Result = last.Result with
        {
            NodeConfigs = configs,
            Chunks = [.. last.Nodes.SelectMany(n => n.Chunks)],
            Problems = problems,
            PoolStatuses = PoolStatuses(input, last.Pools, last.Vips, problemOf),
            ShardStatuses = ShardStatuses(input, last.Shards, last.Placements, problemOf),
            MappingStatuses = statuses,
            NextExpiry = NextExpiry(input),
        };
        memo.State = last;
        return last.Result;
    }

    /// <summary>
    /// The same pools or shards as the last plan's, but for their status and their metadata besides
    /// the generation: what the operator's own status writes change. A plan reads their status only
    /// to make their own statuses, which are computed from these objects in any case.
    /// </summary>
    private static bool SameButStatus<T>(IReadOnlyList<T> a, IReadOnlyList<T> b, Func<T, ObjectMeta> meta, Func<T, T, bool> sameSpec) where T : class
    {
        if (a.Count != b.Count)
        {
            return false;
        }
        for (var i = 0; i < a.Count; i++)
        {
            if (ReferenceEquals(a[i], b[i]))
            {
                continue;
            }
            var (x, y) = (meta(a[i]), meta(b[i]));
            if (x.Name != y.Name || x.Namespace != y.Namespace || x.Uid != y.Uid || x.Generation != y.Generation || !sameSpec(a[i], b[i]))
            {
                return false;
            }
        }
        return true;
    }

    private static bool SameItems<T>(IReadOnlyList<T> a, IReadOnlyList<T> b) where T : class
    {
        if (a.Count != b.Count)
        {
            return false;
        }
        for (var i = 0; i < a.Count; i++)
        {
            if (!ReferenceEquals(a[i], b[i]))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>Whether each shard's ready nodes are the ones the last plan had.</summary>
    private static bool SameLiveness(PlanInput input, Dictionary<string, ResolvedShard> shards)
    {
        foreach (var shard in shards.Values)
        {
            var i = 0;
            foreach (var node in shard.Selected)
            {
                if (!Alive(input, node, shard.Shard))
                {
                    continue;
                }
                if (i >= shard.Ready.Count || shard.Ready[i] != node)
                {
                    return false;
                }
                i++;
            }
            if (i != shard.Ready.Count)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>Whether a mapping's allocation inputs are the same: both invalid, or both valid with the same request, shareKey, shard and ports.</summary>
    private static bool SameAllocation(ValidMapping? before, ValidMapping? now) =>
        before is null || now is null ? before is null && now is null
        : Equals(before.RequestedVip, now.RequestedVip) && before.ShareKey == now.ShareKey && before.Shard.Name == now.Shard.Name
          && before.Sources.SequenceEqual(now.Sources)
          && before.Ports.Count == now.Ports.Count
          && before.Ports.Zip(now.Ports).All(p => p.First.Name == p.Second.Name && p.First.Port == p.Second.Port && p.First.Protocol == p.Second.Protocol);

    /// <summary>
    /// Objects at a position where the other list has another object: (now, before) pairs. An
    /// informer's list keeps an object's position while it changes, so this is short when little changed.
    /// </summary>
    private static (List<T> Now, List<T> Before) Displaced<T>(IReadOnlyList<T> now, IReadOnlyList<T> before) where T : class
    {
        var (a, b) = (new List<T>(), new List<T>());
        for (var i = 0; i < Math.Max(now.Count, before.Count); i++)
        {
            var x = i < now.Count ? now[i] : null;
            var y = i < before.Count ? before[i] : null;
            if (!ReferenceEquals(x, y))
            {
                if (x is not null)
                {
                    a.Add(x);
                }
                if (y is not null)
                {
                    b.Add(y);
                }
            }
        }
        return (a, b);
    }

    /// <summary>The mapping objects that changed, by key; false when one came or went (allocation may then move).</summary>
    private static bool MappingChanges(IReadOnlyList<PortMapping> now, IReadOnlyList<PortMapping> before, Dictionary<string, MappingSlot> slots, Dictionary<string, PortMapping> changed)
    {
        var (added, removed) = Displaced(now, before);
        if (added.Count != removed.Count)
        {
            return false;
        }
        var gone = new HashSet<string>(StringComparer.Ordinal);
        foreach (var pm in removed)
        {
            gone.Add(KeyOf(pm));
        }
        foreach (var pm in added)
        {
            var key = KeyOf(pm);
            if (!gone.Remove(key) || !slots.TryGetValue(key, out var slot))
            {
                return false; // a new name, or one listed twice
            }
            if (!ReferenceEquals(slot.Object, pm))
            {
                changed[key] = pm;
            }
        }
        return gone.Count == 0;
    }

    /// <summary>Services that came, went or changed: the index follows them, and their mappings are marked.</summary>
    private static bool ServiceChanges(IReadOnlyList<Service> now, IReadOnlyList<Service> before, PlanState last, HashSet<string> dirty)
    {
        var (added, removed) = Displaced(now, before);
        var services = last.Index.Services;
        var gone = new Dictionary<(string, string), Service>();
        foreach (var s in removed)
        {
            gone[InputIndex.ServiceKey(s)] = s;
        }
        foreach (var s in added)
        {
            var key = InputIndex.ServiceKey(s);
            if (gone.Remove(key, out var old))
            {
                if (ReferenceEquals(old, s))
                {
                    continue;
                }
            }
            else if (services.ContainsKey(key))
            {
                return false; // listed twice
            }
            services[key] = s;
            Mark(last, key, dirty);
        }
        foreach (var key in gone.Keys)
        {
            services.Remove(key);
            Mark(last, key, dirty);
        }
        return true;
    }

    /// <summary>EndpointSlices that came, went or changed: each Service's list follows them, and the mappings of those Services are marked.</summary>
    private static bool SliceChanges(IReadOnlyList<EndpointSlice> now, IReadOnlyList<EndpointSlice> before, PlanState last, HashSet<string> dirty)
    {
        var (added, removed) = Displaced(now, before);
        var index = last.Index;
        var gone = new Dictionary<(string?, string?), EndpointSlice>();
        foreach (var s in removed)
        {
            gone[(s.Metadata.Namespace, s.Metadata.Name)] = s;
        }
        foreach (var s in added)
        {
            var name = (s.Metadata.Namespace, s.Metadata.Name);
            if (gone.Remove(name, out var old))
            {
                if (ReferenceEquals(old, s))
                {
                    continue;
                }
                Unindex(old);
            }
            else if (!index.SliceNames.Add(name))
            {
                return false; // listed twice
            }
            if (InputIndex.OwnerOf(s) is { } owner)
            {
                if (!index.Slices.TryGetValue(owner, out var list))
                {
                    index.Slices[owner] = list = [];
                }
                list.Add(s);
                Mark(last, owner, dirty);
            }
        }
        foreach (var (name, old) in gone)
        {
            index.SliceNames.Remove(name);
            Unindex(old);
        }
        return true;

        void Unindex(EndpointSlice old)
        {
            if (InputIndex.OwnerOf(old) is { } owner && index.Slices.TryGetValue(owner, out var list))
            {
                list.RemoveAll(x => ReferenceEquals(x, old));
                if (list.Count == 0)
                {
                    index.Slices.Remove(owner);
                }
                Mark(last, owner, dirty);
            }
        }
    }

    private static void Mark(PlanState last, (string Namespace, string Name) service, HashSet<string> dirty)
    {
        if (last.MappingsByService.TryGetValue(service, out var keys))
        {
            dirty.UnionWith(keys);
        }
    }

    /// <summary>The placements as a plan continuing from their own node configs finds them: no VIP has moved since.</summary>
    private static Dictionary<IPAddress, PlacedVip> Settled(Dictionary<IPAddress, PlacedVip> placements)
    {
        if (placements.Values.All(p => p.PreviousActive is null || p.PreviousActive == p.Placement.ActiveNode))
        {
            return placements;
        }
        return placements.ToDictionary(p => p.Key, p => p.Value.PreviousActive is null || p.Value.PreviousActive == p.Value.Placement.ActiveNode ? p.Value : p.Value with { PreviousActive = p.Value.Placement.ActiveNode });
    }
}
