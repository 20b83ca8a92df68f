using System.Globalization;
using System.Net;
using System.Numerics;
using System.Security.Cryptography;
using Xlb.Crds;
using Xlb.Crds.Serialization;

namespace Xlb.Operator.Core;

/// <summary>
/// The operator's pure core: custom resources, Services, EndpointSlices and agent liveness in;
/// one fully resolved config per LB node and the status of every object out. No I/O, and the
/// clock is an input: the same input always gives the same output. One invalid object never
/// blocks the others; it is reported as a <see cref="Problem"/> and left out.
/// </summary>
public static partial class Planner
{
    private const int PortLimit = 65535;

    public static PlanResult Plan(PlanInput input)
    {
        input.Memo?.Begin();
        var result = PlanOnce(input);
        input.Memo?.End();
        return result;
    }

    private static PlanResult PlanOnce(PlanInput input)
    {
        if (input.Memo is { State: { } last } memo && Continue(input, last, memo) is { } continued)
        {
            return continued;
        }
        var problems = new List<Problem>();
        var pools = ResolvePools(input.Pools, problems);
        var shards = ResolveShards(input, pools, problems);
        var index = InputIndex.Of(input);
        var (mappings, slots) = ValidateMappings(input, shards, index, problems);
        var vips = Ipam.Allocate(mappings, input, problems);
        var placements = Place(vips, mappings, input.Previous);
        var (nodes, digests) = Render(shards, mappings, vips, placements, NodeAddresses(input.Nodes), input.Previous, input.ChunkLimit, input.Memo, input.MaxParallelism);
        var configs = nodes.ConvertAll(n => n.Config);
        var byShard = placements
            .GroupBy(p => p.Value.Shard)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<VipPlacement>)[.. g.Select(p => p.Value.Placement).OrderBy(p => p.Address, StringComparer.Ordinal)]);
        var problemOf = ByObject(problems);
        var track = new StatusTrack();
        track.Revise(configs);
        var result = new PlanResult
        {
            NodeConfigs = configs,
            Chunks = [.. nodes.SelectMany(n => n.Chunks)],
            Problems = problems,
            Vips = vips.Assigned.ToDictionary(v => ObjectRef.Of(v.Key.Object), v => v.Value),
            Placements = byShard,
            PoolStatuses = PoolStatuses(input, pools, vips, problemOf),
            ShardStatuses = ShardStatuses(input, shards, placements, problemOf),
            MappingStatuses = MappingStatuses(input, mappings, new StatusContext(input, vips, placements, configs, digests, problemOf), track),
            NextExpiry = NextExpiry(input),
        };
        if (input.Memo is { } kept)
        {
            kept.State = new PlanState
            {
                Input = input, Pools = pools, Shards = shards, Index = index, Problems = problems, Mappings = mappings, Slots = slots,
                Vips = vips, Placements = placements, Nodes = nodes, Digests = digests, Result = result, Track = track,
                Continuable = Continuable(input, index, slots, vips),
                Unrecorded = Unrecorded(vips),
            }.IndexServices();
        }
        return result;
    }

    internal sealed record ResolvedPool(LoadBalancerPool Pool, List<AddressBlock> Blocks, List<AddressBlock> Reserved)
    {
        public string Name => Pool.Metadata.Name ?? "";

        public bool Offers(IPAddress a)
        {
            var inside = false;
            foreach (var b in Blocks)
            {
                inside |= b.Contains(a);
            }
            foreach (var r in Reserved)
            {
                inside &= !r.Contains(a);
            }
            return inside;
        }
    }

    /// <summary>A shard that can be served: its pool, its selected and ready nodes, and (mode BGP) each selected node's neighbours.</summary>
    internal sealed record ResolvedShard(VipShard Shard, ResolvedPool Pool, List<string> Selected, List<string> Ready)
    {
        public string Name => Shard.Metadata.Name ?? "";

        /// <summary>Mode BGP: the neighbours each selected node opens a session to (those whose nodeSelector matches it).</summary>
        public Dictionary<string, List<BgpPeer>> PeersByNode { get; init; } = new(StringComparer.Ordinal);
    }

    internal sealed record ValidMapping(
        PortMapping Object, ResolvedShard Shard, IPAddress? RequestedVip, List<ValidPort> Ports,
        Dictionary<ValidPort, PortBackends> Backends, int NotReady)
    {
        private IReadOnlyList<NodeBackend>? _distinct;
        private string? _key;

        public string Key => _key ??= KeyOf(Object);
        public string? ShareKey => Object.Spec.ShareKey;

        /// <summary>spec.nat.sourceAddresses, parsed, in the mapping's order (FullNAT only).</summary>
        public IReadOnlyList<IPAddress> Sources { get; init; } = [];

        // Identity, not content: a plan keys allocations by the mapping it validated, and hashing
        // the whole object graph (spec, backends, shard) for every lookup costs more than the plan.
        public bool Equals(ValidMapping? other) => ReferenceEquals(this, other);

        public override int GetHashCode() => System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(this);

        /// <summary>
        /// Every backend once (address, port and draining), over all ports: with one port backed by a
        /// Service, its own list, which has each address and port once (see <see cref="Backends.FromSlices"/>).
        /// Computed once; copies made with `with` share it.
        /// </summary>
        public IReadOnlyList<NodeBackend> DistinctBackends => _distinct ??= Distinct();

        private IReadOnlyList<NodeBackend> Distinct()
        {
            if (Backends.Count == 1 && Object.Spec.Backend.ServiceRef is not null)
            {
                foreach (var only in Backends.Values)
                {
                    return only.List;
                }
            }
            return [.. Backends.Values.SelectMany(b => b.List).DistinctBy(b => (b.Address, b.Port, b.Draining))];
        }
    }

    /// <summary>"namespace/name" of a mapping: how listeners, allocations and statuses name it.</summary>
    internal static string KeyOf(PortMapping pm) => string.Concat(pm.Metadata.Namespace ?? "default", "/", pm.Metadata.Name);

    internal sealed record ValidPort(string Name, int Port, L4Protocol Protocol, IntOrString? TargetPort);

    private static Dictionary<string, ResolvedPool> ResolvePools(IReadOnlyList<LoadBalancerPool> pools, List<Problem> problems)
    {
        var result = new Dictionary<string, ResolvedPool>(StringComparer.Ordinal);
        foreach (var pool in pools.OrderBy(p => p.Metadata.Name, StringComparer.Ordinal))
        {
            var self = ObjectRef.Of(pool);
            var blocks = ParseBlocks(pool.Spec.Blocks, self, "blocks", problems);
            var reserved = ParseBlocks(pool.Spec.Reserved, self, "reserved", problems);
            if (blocks is null || reserved is null)
            {
                continue;
            }
            if (blocks.Count == 0)
            {
                problems.Add(new Problem(self, "InvalidSpec", "spec.blocks is empty: a pool needs at least one block"));
                continue;
            }
            var clash = result.Values.FirstOrDefault(other => other.Blocks.Any(b => blocks.Any(b.Overlaps)));
            if (clash is not null)
            {
                problems.Add(new Problem(self, "PoolOverlap", $"its blocks overlap LoadBalancerPool {clash.Name}; an address must belong to one pool"));
                continue;
            }
            result[pool.Metadata.Name ?? ""] = new ResolvedPool(pool, blocks, reserved);
        }
        return result;
    }

    private static List<AddressBlock>? ParseBlocks(List<string> texts, ObjectRef self, string field, List<Problem> problems)
    {
        var blocks = new List<AddressBlock>();
        for (var i = 0; i < texts.Count; i++)
        {
            if (!AddressBlock.TryParse(texts[i], out var block, out var error))
            {
                problems.Add(new Problem(self, "InvalidSpec", $"spec.{field}[{i}]: {error}"));
                return null;
            }
            blocks.Add(block);
        }
        return blocks;
    }

    /// <summary>How long an agent may be silent to its peers before a standby takes its VIPs of this shard over (interval × multiplier).</summary>
    private static TimeSpan DetectionWindow(VipShard shard) => shard.Spec.Failover.Detection.Interval.Value * shard.Spec.Failover.Detection.Multiplier;

    /// <summary>
    /// The shortest time an agent's Lease must be unrenewed before the operator counts the agent
    /// dead. The agents detect a dead peer by heartbeats within the shard's detection window and
    /// take its VIPs at once; the operator's move follows, to make it lasting, and must not be
    /// made by a renewal that the API server or the agent's scheduling delayed (agents renew
    /// every 0.5 s by default: six renewals).
    /// </summary>
    public static readonly TimeSpan MinLeaseWindow = TimeSpan.FromSeconds(3);

    /// <summary>How long an agent may go without renewing its Lease before the operator counts it dead for this shard.</summary>
    private static TimeSpan LeaseWindow(VipShard shard) => DetectionWindow(shard) > MinLeaseWindow ? DetectionWindow(shard) : MinLeaseWindow;

    /// <summary>Whether a node's agent is alive for a shard: renewed within the Lease window, or liveness is not tracked.</summary>
    private static bool Alive(PlanInput input, string node, VipShard shard) =>
        input.AgentRenewals is null || (input.AgentRenewals.TryGetValue(node, out var renewed) && input.Now - renewed <= LeaseWindow(shard));

    /// <summary>The range of failover.detection.interval: heartbeats more often than 100 ms are noise, and a minute apart no detection.</summary>
    private static string? DetectionProblem(FailureDetection d) =>
        d.Interval.Value < TimeSpan.FromMilliseconds(100) || d.Interval.Value > TimeSpan.FromMinutes(1)
            ? $"spec.failover.detection.interval must be from 100ms to 1m, not {d.Interval}"
            : d.Multiplier is < 2 or > 30 ? $"spec.failover.detection.multiplier must be from 2 to 30, not {d.Multiplier}" : null;

    /// <summary>
    /// Whether an agent's renewal, after one at <paramref name="previous"/>, leaves every plan
    /// input as it was: the previous renewal was still inside every shard's detection window, so
    /// the agent was alive and stays alive. Its expiry needs no event (see <see cref="NextExpiry"/>).
    /// </summary>
    public static bool RenewalChangesNothing(DateTimeOffset previous, DateTimeOffset renewed, IEnumerable<VipShard> shards, DateTimeOffset now)
    {
        var windows = shards.Select(LeaseWindow).ToList();
        return renewed >= previous && windows.Count > 0 && now - previous <= windows.Min();
    }

    /// <summary>The earliest moment after Now at which a live agent could be judged dead (no event marks it).</summary>
    private static DateTimeOffset? NextExpiry(PlanInput input)
    {
        DateTimeOffset? next = null;
        foreach (var shard in input.Shards)
        {
            foreach (var renewed in input.AgentRenewals?.Values ?? [])
            {
                var expiry = renewed + LeaseWindow(shard);
                if (expiry > input.Now && (next is null || expiry < next))
                {
                    next = expiry;
                }
            }
        }
        return next;
    }

    private static Dictionary<string, ResolvedShard> ResolveShards(PlanInput input, Dictionary<string, ResolvedPool> pools, List<Problem> problems)
    {
        var result = new Dictionary<string, ResolvedShard>(StringComparer.Ordinal);
        foreach (var shard in input.Shards.OrderBy(s => s.Metadata.Name, StringComparer.Ordinal))
        {
            var self = ObjectRef.Of(shard);
            if (!pools.TryGetValue(shard.Spec.PoolRef, out var pool))
            {
                problems.Add(new Problem(self, "PoolNotFound", $"spec.poolRef names LoadBalancerPool {shard.Spec.PoolRef}, which does not exist or is invalid"));
                continue;
            }
            if (BgpProblem(shard.Spec.Announcement) is { } bgp)
            {
                problems.Add(new Problem(self, "InvalidSpec", bgp));
                continue;
            }
            if (DetectionProblem(shard.Spec.Failover.Detection) is { } detection)
            {
                problems.Add(new Problem(self, "InvalidSpec", detection));
                continue;
            }
            if (shard.Spec.Placement.Strategy == PlacementStrategy.Pinned && shard.Spec.Placement.Nodes.Count == 0)
            {
                problems.Add(new Problem(self, "InvalidSpec", "spec.placement.strategy Pinned needs spec.placement.nodes"));
                continue;
            }
            var bgpMode = shard.Spec.Announcement.Mode == AnnouncementMode.BGP;
            var peersByNode = new Dictionary<string, List<BgpPeer>>(StringComparer.Ordinal);
            var matched = 0;
            foreach (var n in input.Nodes.Where(n => shard.Spec.NodeSelector?.Matches(n.Metadata.Labels) ?? true))
            {
                matched++;
                // Mode BGP: a node no neighbour selects could hold VIPs it cannot announce; it does not serve the shard.
                var neighbours = bgpMode ? shard.Spec.Announcement.Peers.Where(p => p.NodeSelector?.Matches(n.Metadata.Labels) ?? true).ToList() : [];
                if (!bgpMode || neighbours.Count > 0)
                {
                    peersByNode.TryAdd(n.Metadata.Name ?? "", neighbours);
                }
            }
            var selected = peersByNode.Keys.Order(StringComparer.Ordinal).ToList();
            var ready = selected.Where(n => Alive(input, n, shard)).ToList();
            if (selected.Count == 0)
            {
                problems.Add(new Problem(self, "NoNodes", matched > 0
                    ? "no node of spec.nodeSelector matches the nodeSelector of any of spec.announcement.peers; its VIPs are allocated but served nowhere"
                    : "spec.nodeSelector selects no LB node; its VIPs are allocated but served nowhere"));
            }
            result[shard.Metadata.Name ?? ""] = new ResolvedShard(shard, pool, selected, ready) { PeersByNode = peersByNode };
        }
        // A node has one session per neighbour: shards that name the same neighbour must agree on it.
        var peers = new Dictionary<IPAddress, (string Shard, BgpPeer Peer)>();
        foreach (var shard in result.Values.Where(s => s.Shard.Spec.Announcement.Mode == AnnouncementMode.BGP).ToList())
        {
            foreach (var peer in shard.Shard.Spec.Announcement.Peers)
            {
                var address = IPAddress.Parse(peer.Address);
                if (!peers.TryGetValue(address, out var first))
                {
                    peers[address] = (shard.Name, peer);
                }
                else if (first.Peer with { Address = peer.Address, NodeSelector = peer.NodeSelector } != peer)
                {
                    problems.Add(new Problem(ObjectRef.Of(shard.Shard), "PeerConflict",
                        $"spec.announcement.peers: neighbour {peer.Address} has other settings in VipShard {first.Shard} (asn {first.Peer.Asn}, myAsn {first.Peer.MyAsn}, port {first.Peer.Port}, holdTime {first.Peer.HoldTime}); a node has one session per neighbour, so give it the same settings in both"));
                    result.Remove(shard.Name);
                    break;
                }
            }
        }
        return result;
    }

    /// <summary>Why a shard's announcement cannot be used (the API server's schema checks the rest), or null.</summary>
    internal static string? BgpProblem(Announcement announcement)
    {
        if (announcement.Mode != AnnouncementMode.BGP)
        {
            return announcement.Peers.Count > 0 ? "spec.announcement.peers are for mode BGP only" : null;
        }
        if (announcement.Peers.Count == 0)
        {
            return "spec.announcement.mode BGP needs at least one peer in spec.announcement.peers";
        }
        var seen = new HashSet<IPAddress>();
        foreach (var peer in announcement.Peers)
        {
            if (!IPAddress.TryParse(peer.Address, out var address) || peer.Address.Contains('%', StringComparison.Ordinal)
                || address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && peer.Address.Count(c => c == '.') != 3)
            {
                return $"spec.announcement.peers: {peer.Address} is not an IP address";
            }
            if (!seen.Add(address))
            {
                return $"spec.announcement.peers: {peer.Address} is listed twice";
            }
            if (peer.HoldTime.Value < TimeSpan.FromSeconds(3) || peer.HoldTime.Value > TimeSpan.FromSeconds(65535))
            {
                return $"spec.announcement.peers: holdTime of {peer.Address} must be from 3s to 65535s, not {peer.HoldTime}";
            }
            if (peer.Asn is < 1 or > uint.MaxValue || peer.MyAsn is < 1 or > uint.MaxValue || peer.Port is < 1 or > 65535)
            {
                return $"spec.announcement.peers: {peer.Address} needs asn and myAsn from 1 to 4294967295 and a port from 1 to 65535";
            }
        }
        return null;
    }

    /// <summary>Each node's reachable address (<see cref="Node.ReachableAddress"/>), when it is an IP address.</summary>
    private static Dictionary<string, string> NodeAddresses(IReadOnlyList<Node> nodes)
    {
        var addresses = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var n in nodes)
        {
            if (n.ReachableAddress() is { } text && IPAddress.TryParse(text, out var address))
            {
                addresses.TryAdd(n.Metadata.Name ?? "", address.ToString());
            }
        }
        return addresses;
    }

    /// <summary>
    /// The nodes <paramref name="node"/> exchanges flows with: the other selected nodes of its
    /// shards with flowSync, by name, that have an address (a node without one is left out: no
    /// peer could reach it).
    /// </summary>
    internal static List<NodeSyncPeer> FlowSyncPeersOf(string node, Dictionary<string, ResolvedShard> shards, IReadOnlyDictionary<string, string> addresses)
    {
        var peers = new SortedDictionary<string, NodeSyncPeer>(StringComparer.Ordinal);
        foreach (var shard in shards.Values)
        {
            if (!shard.Shard.Spec.FlowSync.Enabled || !shard.Selected.Contains(node))
            {
                continue;
            }
            foreach (var other in shard.Selected)
            {
                if (other != node && addresses.TryGetValue(other, out var address))
                {
                    peers.TryAdd(other, new NodeSyncPeer { Node = other, Address = address });
                }
            }
        }
        return [.. peers.Values];
    }

    /// <summary>
    /// The nodes whose agents <paramref name="node"/>'s agent exchanges heartbeats with: the other
    /// selected nodes of its shards that have an address, each with the shortest detection interval
    /// of the shards they share (how often a heartbeat goes to it).
    /// </summary>
    internal static List<NodeFailoverPeer> FailoverPeersOf(string node, Dictionary<string, ResolvedShard> shards, IReadOnlyDictionary<string, string> addresses)
    {
        var peers = new SortedDictionary<string, NodeFailoverPeer>(StringComparer.Ordinal);
        foreach (var shard in shards.Values)
        {
            if (!shard.Selected.Contains(node))
            {
                continue;
            }
            var interval = shard.Shard.Spec.Failover.Detection.Interval;
            foreach (var other in shard.Selected)
            {
                if (other != node && addresses.TryGetValue(other, out var address)
                    && (!peers.TryGetValue(other, out var known) || known.Interval.Value > interval.Value))
                {
                    peers[other] = new NodeFailoverPeer { Node = other, Address = address, Interval = interval };
                }
            }
        }
        return [.. peers.Values];
    }

    /// <summary>The BGP sessions of <paramref name="node"/>: one per neighbour that selects it in its BGP shards, each with the shards whose VIPs it carries.</summary>
    internal static List<NodeBgpPeer> BgpPeersOf(string node, Dictionary<string, ResolvedShard> shards)
    {
        var byAddress = new SortedDictionary<string, NodeBgpPeer>(StringComparer.Ordinal);
        foreach (var shard in shards.Values.OrderBy(s => s.Name, StringComparer.Ordinal))
        {
            if (shard.Shard.Spec.Announcement.Mode != AnnouncementMode.BGP || !shard.PeersByNode.TryGetValue(node, out var peers))
            {
                continue;
            }
            foreach (var peer in peers)
            {
                var address = IPAddress.Parse(peer.Address).ToString();
                if (!byAddress.TryGetValue(address, out var session))
                {
                    byAddress[address] = session = new NodeBgpPeer { Address = address, Port = peer.Port, Asn = peer.Asn, MyAsn = peer.MyAsn, HoldTime = peer.HoldTime };
                }
                session.Shards.Add(shard.Name);
            }
        }
        return [.. byAddress.Values];
    }

    /// <summary>Below this many mappings to validate (or listeners to render) a plan does them on its own thread.</summary>
    private const int ParallelFrom = 256;

    /// <summary>How to spread <paramref name="count"/> pieces of work over threads; null: do them on this thread.</summary>
    private static ParallelOptions? InParallel(int count, int? maxParallelism) =>
        count >= ParallelFrom && maxParallelism is not 1 ? new ParallelOptions { MaxDegreeOfParallelism = maxParallelism ?? -1 } : null;

    /// <summary>
    /// The mappings that validate, in name order, and per mapping key where its outcome sits.
    /// Those the memo cannot answer are validated in parallel (each on its own: the work is pure),
    /// and the memo is read and written on this thread only.
    /// </summary>
    private static (List<ValidMapping> Valid, Dictionary<string, MappingSlot> Slots) ValidateMappings(
        PlanInput input, Dictionary<string, ResolvedShard> shards, InputIndex index, List<Problem> problems)
    {
        var sorted = input.PortMappings.OrderBy(m => m.Metadata.Namespace, StringComparer.Ordinal).ThenBy(m => m.Metadata.Name, StringComparer.Ordinal).ToList();
        var outcomes = new ((string Reason, string Message)? Error, ValidMapping? Valid)[sorted.Count];
        var inputs = new MemoInputs?[sorted.Count];
        var todo = new List<int>();
        for (var i = 0; i < sorted.Count; i++)
        {
            inputs[i] = input.Memo is null ? null : MemoInputs.Of(sorted[i], shards, index);
            if (inputs[i] is { } known && Recall(sorted[i], input.Memo!, known) is { } hit)
            {
                outcomes[i] = hit;
            }
            else
            {
                todo.Add(i);
            }
        }
        if (InParallel(todo.Count, input.MaxParallelism) is { } parallel)
        {
            Parallel.ForEach(todo, parallel, i => outcomes[i] = Validate(sorted[i], shards, index));
        }
        else
        {
            todo.ForEach(i => outcomes[i] = Validate(sorted[i], shards, index));
        }
        foreach (var i in todo)
        {
            if (inputs[i] is { } known)
            {
                Remember(input.Memo!, sorted[i], known, outcomes[i]);
            }
        }
        var result = new List<ValidMapping>();
        var slots = new Dictionary<string, MappingSlot>(sorted.Count, StringComparer.Ordinal);
        for (var i = 0; i < sorted.Count; i++)
        {
            var (error, valid) = outcomes[i];
            var slot = new MappingSlot { Object = sorted[i], Valid = valid };
            if (error is not null)
            {
                slot.Problem = problems.Count;
                problems.Add(new Problem(ObjectRef.Of(sorted[i]), error.Value.Reason, error.Value.Message));
            }
            else
            {
                slot.Index = result.Count;
                result.Add(valid!);
            }
            slots.TryAdd(KeyOf(sorted[i]), slot);
        }
        return (result, slots);
    }

    /// <summary>One mapping validated and its backends resolved, through the memo when there is one.</summary>
    private static ((string Reason, string Message)? Error, ValidMapping? Valid) ValidateOne(
        PortMapping pm, PlanMemo? memo, Dictionary<string, ResolvedShard> shards, InputIndex index)
    {
        if (memo is null || MemoInputs.Of(pm, shards, index) is not { } inputs)
        {
            return Validate(pm, shards, index);
        }
        if (Recall(pm, memo, inputs) is { } hit)
        {
            return hit;
        }
        var outcome = Validate(pm, shards, index);
        Remember(memo, pm, inputs, outcome);
        return outcome;
    }

    /// <summary>Everything a mapping's validation and backends depend on besides the mapping (see PlanMemo.Mapping for how each is compared).</summary>
    private readonly record struct MemoInputs(string Key, ResolvedShard Shard, Dictionary<string, string>? Labels, Service? Service, List<EndpointSlice>? Slices)
    {
        /// <summary>Null for a mapping whose shard is missing: it fails validation at once.</summary>
        public static MemoInputs? Of(PortMapping pm, Dictionary<string, ResolvedShard> shards, InputIndex index)
        {
            if (!shards.TryGetValue(pm.Spec.ShardRef, out var shard))
            {
                return null;
            }
            var owner = ServiceOf(pm);
            return new MemoInputs(
                KeyOf(pm), shard, index.Namespaces.GetValueOrDefault(pm.Metadata.Namespace ?? "default"),
                owner is { } o ? index.Services.GetValueOrDefault(o) : null, owner is { } p ? index.Slices.GetValueOrDefault(p) : null);
        }
    }

    private static ((string Reason, string Message)? Error, ValidMapping? Valid)? Recall(PortMapping pm, PlanMemo memo, MemoInputs inputs) =>
        memo.Mapping(inputs.Key, pm, inputs.Shard.Shard, inputs.Shard.Pool.Pool, inputs.Labels, inputs.Service, inputs.Slices) is { } hit
            ? (hit.Error, hit.Valid is null ? null : hit.Valid with { Shard = inputs.Shard })
            : null;

    private static ((string Reason, string Message)? Error, ValidMapping? Valid) Validate(PortMapping pm, Dictionary<string, ResolvedShard> shards, InputIndex index)
    {
        var error = ValidateMapping(pm, shards, index, out var valid);
        _ = valid?.DistinctBackends; // computed once here, so every copy of the entry shares it
        return (error, valid);
    }

    private static void Remember(PlanMemo memo, PortMapping pm, MemoInputs inputs, ((string Reason, string Message)? Error, ValidMapping? Valid) outcome) =>
        memo.Remember(inputs.Key, new PlanMemo.MappingEntry
        {
            Object = pm, Shard = inputs.Shard.Shard, Pool = inputs.Shard.Pool.Pool, NamespaceLabels = inputs.Labels, Service = inputs.Service,
            Slices = inputs.Slices?.ToArray() ?? [], Error = outcome.Error, Valid = outcome.Valid,
        });

    private static (string Reason, string Message)? ValidateMapping(PortMapping pm, Dictionary<string, ResolvedShard> shards, InputIndex index, out ValidMapping? valid)
    {
        valid = null;
        var spec = pm.Spec;
        if (!shards.TryGetValue(spec.ShardRef, out var shard))
        {
            return ("ShardNotFound", $"spec.shardRef names VipShard {spec.ShardRef}, which does not exist or is invalid");
        }
        var ns = pm.Metadata.Namespace ?? "default";
        if (shard.Pool.Pool.Spec.Allocation.NamespaceSelector is { } selector && !selector.Matches(index.Namespaces.GetValueOrDefault(ns)))
        {
            return ("NamespaceNotAllowed", $"LoadBalancerPool {shard.Pool.Name} hands out addresses only to namespaces matching its spec.allocation.namespaceSelector; namespace {ns} does not match");
        }
        if (Unsupported(spec) is { } unsupported)
        {
            return ("Unsupported", unsupported);
        }
        IPAddress? requested = null;
        if (!string.Equals(spec.Vip, "Auto", StringComparison.Ordinal))
        {
            if (!IPAddress.TryParse(spec.Vip, out requested))
            {
                return ("InvalidSpec", $"spec.vip: '{spec.Vip}' is neither Auto nor an IP address");
            }
            if (!shard.Pool.Offers(requested))
            {
                return ("VipNotInPool", $"spec.vip {requested} is not an address LoadBalancerPool {shard.Pool.Name} offers (outside its blocks, or reserved)");
            }
        }
        if (spec.Ports.Count == 0)
        {
            return ("InvalidSpec", "spec.ports is empty: expose at least one port");
        }
        if (spec.Affinity.Mode == AffinityMode.ClientIP && spec.Affinity.Timeout.Value is var affinity && (affinity < TimeSpan.FromSeconds(1) || affinity > TimeSpan.FromDays(1)))
        {
            return ("InvalidSpec", $"spec.affinity.timeout {spec.Affinity.Timeout} is outside 1s-24h");
        }
        if (spec.IdleTimeout?.Value is { } idle && !IdleTimeout.Allowed(idle))
        {
            return ("InvalidSpec", $"spec.idleTimeout {spec.IdleTimeout} is outside {IdleTimeout.Range}");
        }
        if (spec.Scheduling.MaglevTableSize is { } tableSize && MaglevTableSize.Problem(tableSize) is { } sizeProblem)
        {
            return ("InvalidSpec", $"spec.scheduling.maglevTableSize {sizeProblem}");
        }
        var byService = spec.Backend.ServiceRef is not null;
        if (byService && spec.Backend.Endpoints.Count > 0)
        {
            return ("InvalidSpec", "spec.backend: set serviceRef or endpoints, not both");
        }
        var ports = new List<ValidPort>();
        for (var i = 0; i < spec.Ports.Count; i++)
        {
            var p = spec.Ports[i];
            if (p.Port is < 1 or > PortLimit)
            {
                return ("InvalidSpec", $"spec.ports[{i}].port {p.Port} is outside 1-65535");
            }
            if (ports.Any(q => q.Port == p.Port && q.Protocol == p.Protocol))
            {
                return ("InvalidSpec", $"spec.ports[{i}]: port {p.Port}/{p.Protocol} is listed twice");
            }
            if (p.TargetPort is { Number: { } n } && n is < 1 or > PortLimit)
            {
                return ("InvalidSpec", $"spec.ports[{i}].targetPort {n} is outside 1-65535");
            }
            if (p.TargetPort is { Name: { } name } && !byService)
            {
                return ("InvalidSpec", $"spec.ports[{i}].targetPort '{name}': a named port needs a serviceRef backend; static endpoints take a number");
            }
            // A port's name names its listener on the nodes (an unnamed port goes by its number), so two may not share one.
            var portName = p.Name ?? p.Port.ToString(CultureInfo.InvariantCulture);
            if (ports.Any(q => q.Name == portName))
            {
                return ("InvalidSpec", $"spec.ports[{i}]: the name '{portName}' is taken by another port (an unnamed port is named by its number); port names must be unique");
            }
            ports.Add(new ValidPort(portName, p.Port, p.Protocol, p.TargetPort));
        }
        var statics = new List<(string Address, System.Net.Sockets.AddressFamily Family, int Weight, string? Node)>();
        for (var i = 0; i < spec.Backend.Endpoints.Count; i++)
        {
            var e = spec.Backend.Endpoints[i];
            if (!Backends.TryCanonical(e.Address, out var address, out var family))
            {
                return ("InvalidSpec", $"spec.backend.endpoints[{i}].address '{e.Address}' is not an IP address");
            }
            if (e.Weight is < 0 or > 100)
            {
                return ("InvalidSpec", $"spec.backend.endpoints[{i}].weight {e.Weight} is outside 0-100");
            }
            statics.Add((address, family, e.Weight, e.NodeName));
        }
        if (ValidateHealthCheck(spec.HealthCheck) is { } hcError)
        {
            return ("InvalidSpec", hcError);
        }
        var sources = new List<IPAddress>(spec.Nat.SourceAddresses?.Count ?? 0);
        if (SourceAddressesProblem(spec, shard.Pool, sources) is { } sourceError)
        {
            return sourceError;
        }
        var backends = new Dictionary<ValidPort, PortBackends>();
        var local = spec.TrafficPolicy == TrafficPolicy.Local;
        var notReady = 0;
        foreach (var port in ports)
        {
            if (byService)
            {
                var key = (ns, spec.Backend.ServiceRef!.Name);
                backends[port] = Backends.FromSlices(index.Slices.GetValueOrDefault(key) ?? [], index.Services.GetValueOrDefault(key), port.Port, port.Protocol, port.TargetPort, local, out var down);
                notReady = Math.Max(notReady, down);
            }
            else
            {
                var target = port.TargetPort?.Number ?? port.Port;
                backends[port] = new PortBackends([.. statics.Select(s => new NodeBackend { Address = s.Address, Port = target, Weight = s.Weight })], local ? [.. statics.Select(s => s.Node)] : null);
            }
        }
        valid = new ValidMapping(pm, shard, requested, ports, backends, notReady) { Sources = sources };
        return null;
    }

    /// <summary>
    /// spec.nat.sourceAddresses, checked as far as the mapping and its pool tell (the API server's
    /// CEL rules say as much; standalone mode has none): addresses, unique, FullNAT only, at most
    /// <see cref="MaxSourceAddresses"/>, one family (the VIP's, when it is set), and none its pool
    /// could hand out as a VIP. Conflicts between mappings are for <see cref="Ipam"/>.
    /// </summary>
    private static (string Reason, string Message)? SourceAddressesProblem(PortMappingSpec spec, ResolvedPool pool, List<IPAddress> sources)
    {
        var listed = spec.Nat.SourceAddresses ?? [];
        if (listed.Count == 0)
        {
            return null;
        }
        if (spec.Nat.Mode != NatMode.FullNAT)
        {
            return ("InvalidSpec", $"spec.nat.sourceAddresses are for mode FullNAT only, and the mode is {spec.Nat.Mode}");
        }
        if (listed.Count > MaxSourceAddresses)
        {
            return ("InvalidSpec", $"spec.nat.sourceAddresses lists {listed.Count} addresses; at most {MaxSourceAddresses}");
        }
        for (var i = 0; i < listed.Count; i++)
        {
            if (StrictAddress(listed[i]) is not { } address)
            {
                return ("InvalidSpec", $"spec.nat.sourceAddresses[{i}] '{listed[i]}' is not an IP address");
            }
            if (sources.Contains(address))
            {
                return ("InvalidSpec", $"spec.nat.sourceAddresses[{i}] {address} is listed twice");
            }
            if (sources.Count > 0 && sources[0].AddressFamily != address.AddressFamily
                || !string.Equals(spec.Vip, "Auto", StringComparison.Ordinal) && IPAddress.TryParse(spec.Vip, out var vip) && vip.AddressFamily != address.AddressFamily)
            {
                return ("InvalidSpec", $"spec.nat.sourceAddresses[{i}] {address} is not of the VIP's address family");
            }
            if (pool.Offers(address))
            {
                return ("InvalidSpec", $"spec.nat.sourceAddresses[{i}] {address} is an address LoadBalancerPool {pool.Name} may hand out as a VIP: take one outside its blocks, or list it in its spec.reserved");
            }
            sources.Add(address);
        }
        return null;
    }

    /// <summary>An address as Kubernetes' isIP takes it: dotted-quad IPv4 without leading zeros, or IPv6 without a zone and not IPv4-mapped.</summary>
    private static IPAddress? StrictAddress(string text) =>
        Backends.IsCanonicalIPv4(text) ? IPAddress.Parse(text)
        : text.Contains(':') && !text.Contains('%') && IPAddress.TryParse(text, out var v6) && v6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 && !v6.IsIPv4MappedToIPv6 ? v6
        : null;

    /// <summary>The source addresses a FullNAT mapping may have beside its VIP (the data plane's XLB_SNAT_ADDRS).</summary>
    public const int MaxSourceAddresses = 4;

    /// <summary>Settings the data plane of this version does not implement: refused clearly rather than ignored.</summary>
    private static string? Unsupported(PortMappingSpec spec) =>
        spec.Nat.Mode == NatMode.DSR && spec.Ports.FirstOrDefault(p => p.TargetPort?.Number is { } n && n != p.Port) is { } translated
            ? $"spec.nat.mode DSR cannot translate ports: the backend answers the client from the VIP itself. Port {translated.Port} has targetPort {translated.TargetPort}; make them equal or use FullNAT or DNAT"
        : null;

    private static string? ValidateHealthCheck(HealthCheckSpec? hc) => hc switch
    {
        null => null,
        _ when hc.Timeout.Value <= TimeSpan.Zero || hc.Timeout.Value >= hc.Interval.Value =>
            $"spec.healthCheck.timeout {hc.Timeout} must be positive and shorter than spec.healthCheck.interval {hc.Interval}",
        _ when hc.HealthyThreshold < 1 || hc.UnhealthyThreshold < 1 => "spec.healthCheck thresholds must be at least 1",
        _ when hc.Port is < 1 or > PortLimit => $"spec.healthCheck.port {hc.Port} is outside 1-65535",
        _ when hc.Type == HealthCheckType.HTTP && !hc.Path.StartsWith('/') => $"spec.healthCheck.path '{hc.Path}' must start with /",
        _ => null,
    };

    internal sealed record PlacedVip(string Shard, VipPlacement Placement, string? PreviousActive);

    /// <summary>
    /// Placement is sticky: a VIP keeps its active node while that node is ready; when it is not,
    /// the standby takes over. Only VIPs without a ready active or standby are placed afresh:
    /// Spread ranks the ready nodes by rendezvous hash(vip, node), Pack by name, Pinned by the
    /// listed order. So restarts and returning nodes move nothing, and added nodes only get new VIPs.
    /// </summary>
    private static Dictionary<IPAddress, PlacedVip> Place(Ipam.Result vips, List<ValidMapping> mappings, IReadOnlyDictionary<string, XlbNodeConfig> previous)
    {
        var before = new Dictionary<string, (string? Active, string? Standby)>(StringComparer.Ordinal);
        foreach (var config in previous.Values.OrderBy(c => c.Metadata.Name, StringComparer.Ordinal))
        {
            foreach (var v in config.Spec.Vips)
            {
                var roles = before.GetValueOrDefault(v.Address);
                before[v.Address] = v.Role == VipRole.Active ? roles with { Active = roles.Active ?? config.Spec.NodeName } : roles with { Standby = roles.Standby ?? config.Spec.NodeName };
            }
        }
        var result = new Dictionary<IPAddress, PlacedVip>();
        foreach (var m in mappings)
        {
            if (!vips.Assigned.TryGetValue(m, out var vip) || result.ContainsKey(vip))
            {
                continue;
            }
            var shard = m.Shard;
            var ready = shard.Ready;
            var (wasActive, wasStandby) = before.GetValueOrDefault(vip.ToString());
            List<string>? rankedOnce = null;
            List<string> ranked() => rankedOnce ??= Rank(vip, shard); // hashing only for VIPs that need a fresh node
            var active = wasActive is not null && ready.Contains(wasActive) ? wasActive
                : wasStandby is not null && ready.Contains(wasStandby) ? wasStandby
                : ranked().FirstOrDefault();
            if (active is null)
            {
                continue;
            }
            var standby = wasStandby is not null && wasStandby != active && ready.Contains(wasStandby) ? wasStandby
                : ranked().FirstOrDefault(n => n != active);
            result[vip] = new PlacedVip(shard.Name, new VipPlacement { Address = vip.ToString(), ActiveNode = active, StandbyNode = standby }, wasActive);
        }
        return result;
    }

    private static List<string> Rank(IPAddress vip, ResolvedShard shard) => shard.Shard.Spec.Placement.Strategy switch
    {
        PlacementStrategy.Pack => [.. shard.Ready],
        PlacementStrategy.Pinned => [.. shard.Shard.Spec.Placement.Nodes.Where(shard.Ready.Contains)],
        _ => [.. shard.Ready.OrderByDescending(n => Score(vip, n)).ThenBy(n => n, StringComparer.Ordinal)],
    };

    private static ulong Score(IPAddress vip, string node)
    {
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(System.Text.Encoding.UTF8.GetBytes($"{vip}|{node}"), digest);
        return BitConverter.ToUInt64(digest);
    }

    /// <summary>
    /// One config per LB node (every node some shard selects), also when it serves nothing, with
    /// its chunks; and per (mapping, node) a digest of the mapping's listeners there.
    /// </summary>
    private static (List<NodeRender> Nodes, Dictionary<(string Mapping, string Node), string> Digests) Render(
        Dictionary<string, ResolvedShard> shards, List<ValidMapping> mappings, Ipam.Result vips,
        Dictionary<IPAddress, PlacedVip> placements, IReadOnlyDictionary<string, string> addresses, IReadOnlyDictionary<string, XlbNodeConfig> previous,
        long? chunkLimit, PlanMemo? memo, int? maxParallelism)
    {
        var byNode = new Dictionary<string, List<(IPAddress Vip, PlacedVip Placed)>>(StringComparer.Ordinal);
        foreach (var node in shards.Values.SelectMany(s => s.Selected))
        {
            byNode.TryAdd(node, []);
        }
        foreach (var (vip, placed) in placements)
        {
            foreach (var node in new[] { placed.Placement.ActiveNode, placed.Placement.StandbyNode })
            {
                if (node is not null && byNode.TryGetValue(node, out var list))
                {
                    list.Add((vip, placed));
                }
            }
        }
        var byVip = new Dictionary<IPAddress, List<ValidMapping>>();
        foreach (var m in mappings)
        {
            if (vips.Assigned.TryGetValue(m, out var vip))
            {
                if (!byVip.TryGetValue(vip, out var list))
                {
                    byVip[vip] = list = [];
                }
                list.Add(m);
            }
        }
        var rendered = RenderAll(byNode, byVip, memo, maxParallelism);
        // Each node's config is made of its own items: nodes are rendered side by side (the memo
        // is safe for that), each with the digests of its mappings, gathered after.
        var order = byNode.OrderBy(n => n.Key, StringComparer.Ordinal).ToList();
        var made = new (NodeRender Node, List<KeyValuePair<(string Mapping, string Node), string>> Digests)[order.Count];
        void RenderNode(int n)
        {
            var (nodeName, roles) = order[n];
            var failoverPeers = FailoverPeersOf(nodeName, shards, addresses);
            var vipItems = new List<Chunking.Item>(roles.Count);
            foreach (var (vip, placed) in roles)
            {
                var (role, activeNode, takeoverAfter) = placed.Placement.ActiveNode == nodeName
                    ? (VipRole.Active, null, null)
                    : (VipRole.Standby, placed.Placement.ActiveNode, TakeoverAfter(placed.Placement.ActiveNode, shards[placed.Shard], failoverPeers));
                vipItems.Add(memo?.Vip(placed.Placement.Address, role, placed.Shard, activeNode, takeoverAfter)
                    ?? VipItem(placed.Placement.Address, role, placed.Shard, activeNode, takeoverAfter));
                // A FullNAT mapping's source addresses are announced with its VIP and move with it:
                // the backends' replies come back to them.
                foreach (var source in SourcesOf(byVip.GetValueOrDefault(vip)))
                {
                    vipItems.Add(memo?.Vip(source, role, placed.Shard, activeNode, takeoverAfter)
                        ?? VipItem(source, role, placed.Shard, activeNode, takeoverAfter));
                }
            }
            vipItems.Sort((a, b) => string.CompareOrdinal(a.BucketKey, b.BucketKey));
            // Standby nodes get the listeners too, so a takeover is an announcement, not an apply.
            var listenerItems = new List<Chunking.Item>();
            var digests = new List<KeyValuePair<(string Mapping, string Node), string>>();
            foreach (var (vip, _) in roles)
            {
                foreach (var m in byVip.GetValueOrDefault(vip) ?? [])
                {
                    var own = new Chunking.Item[m.Ports.Count];
                    for (var i = 0; i < own.Length; i++)
                    {
                        own[i] = rendered[ListenerKey(m, m.Ports[i], nodeName)];
                    }
                    digests.Add(new((m.Key, nodeName), memo?.MappingDigest(m.Key, nodeName, own) ?? MappingDigest(own)));
                    listenerItems.AddRange(own);
                }
            }
            listenerItems.Sort(ByListenerName);
            var node = new NodeRender
            {
                Node = nodeName, VipItems = vipItems, ListenerItems = listenerItems,
                BgpPeers = BgpPeersOf(nodeName, shards), FlowSyncPeers = FlowSyncPeersOf(nodeName, shards, addresses), FailoverPeers = failoverPeers,
            };
            node.Finish(previous, chunkLimit, memo);
            made[n] = (node, digests);
        }
        if (order.Count > 1 && InParallel(rendered.Count, maxParallelism) is { } parallel)
        {
            Parallel.For(0, order.Count, parallel, RenderNode);
        }
        else
        {
            for (var n = 0; n < order.Count; n++)
            {
                RenderNode(n);
            }
        }
        var nodes = new List<NodeRender>(made.Length);
        var all = new Dictionary<(string Mapping, string Node), string>();
        foreach (var (node, digests) in made)
        {
            nodes.Add(node);
            foreach (var (key, digest) in digests)
            {
                all[key] = digest;
            }
        }
        return (nodes, all);
    }

    private static int ByListenerName(Chunking.Item a, Chunking.Item b) => string.CompareOrdinal(a.Listener!.Name, b.Listener!.Name);

    /// <summary>One node's content in order (VIPs by address, listeners by name), and the config and chunks made of it.</summary>
    internal sealed class NodeRender
    {
        public required string Node { get; init; }
        public required List<Chunking.Item> VipItems { get; init; }
        public required List<Chunking.Item> ListenerItems { get; init; }
        /// <summary>The node's BGP sessions (part of its content hash, never chunked: a few per node).</summary>
        public List<NodeBgpPeer> BgpPeers { get; init; } = [];
        /// <summary>The nodes this node exchanges flows with (part of its content hash, never chunked).</summary>
        public List<NodeSyncPeer> FlowSyncPeers { get; init; } = [];
        /// <summary>The nodes this node exchanges heartbeats with (part of its content hash, never chunked).</summary>
        public List<NodeFailoverPeer> FailoverPeers { get; init; } = [];
        public XlbNodeConfig Config { get; private set; } = null!;
        public List<XlbNodeConfigChunk> Chunks { get; private set; } = [];

        /// <summary>The config (and chunks) of the items as they are now; the revision continues from the node's previous config.</summary>
        public void Finish(IReadOnlyDictionary<string, XlbNodeConfig> previous, long? chunkLimit, PlanMemo? memo)
        {
            var node = Node;
            previous.TryGetValue(node, out var before);
            var split = chunkLimit is { } limit
                ? Chunking.Split(node, VipItems, ListenerItems, limit, before?.Spec.ChunkBuckets ?? 0, memo is null ? null : (buckets, index, items) => memo.Chunk(node, buckets, index, items))
                : null;
            var spec = new XlbNodeConfigSpec { NodeName = node, VipCount = VipItems.Count, ListenerCount = ListenerItems.Count };
            string hash;
            if (split is null)
            {
                hash = NodeConfigContent.Hash(VipItems.Concat(ListenerItems).Select(i => i.Digest.Sha256));
                spec = spec with { Vips = VipItems.ConvertAll(i => i.Vip!), Listeners = ListenerItems.ConvertAll(i => i.Listener!) };
                Chunks = [];
            }
            else
            {
                hash = split.ContentHash;
                spec = spec with { Chunks = split.Refs, ChunkBuckets = split.Buckets };
                Chunks = split.Chunks;
            }
            hash = NodeConfigContent.WithPeers(hash, BgpPeers, FlowSyncPeers, FailoverPeers);
            var revision = before is null ? 1 : before.Spec.ContentHash == hash ? before.Spec.Revision : before.Spec.Revision + 1;
            Config = new XlbNodeConfig { Metadata = new ObjectMeta { Name = node }, Spec = spec with { Revision = revision, ContentHash = hash, BgpPeers = BgpPeers, FlowSyncPeers = FlowSyncPeers, FailoverPeers = FailoverPeers } };
        }
    }

    /// <summary>
    /// How long a standby waits for a silent active node before it takes a VIP of
    /// <paramref name="shard"/> over: the shard's detection window, when the active node is one
    /// this node exchanges heartbeats with (else null: it has no address, and only the operator
    /// moves the VIP).
    /// </summary>
    private static Duration? TakeoverAfter(string? activeNode, ResolvedShard shard, List<NodeFailoverPeer> peers) =>
        activeNode is not null && peers.Exists(p => p.Node == activeNode) ? new Duration(DetectionWindow(shard.Shard)) : null;

    /// <summary>The source addresses of the mappings on one VIP, each once (mappings that share the VIP may list the same).</summary>
    private static IEnumerable<string> SourcesOf(List<ValidMapping>? onVip) =>
        onVip is null ? [] : onVip.SelectMany(m => m.Sources).Distinct().Select(a => a.ToString());

    /// <summary>A VIP of a node config, as the item chunking and hashing work on.</summary>
    internal static Chunking.Item VipItem(string address, VipRole role, string shard, string? activeNode = null, Duration? takeoverAfter = null)
    {
        var vip = new NodeVip { Address = address, Role = role, Shard = shard, ActiveNode = activeNode, TakeoverAfter = takeoverAfter };
        return new Chunking.Item(address, vip, null, NodeConfigContent.Digest(vip));
    }

    /// <summary>A short digest of one mapping's listeners on one node: what its status compares to tell whether they changed.</summary>
    internal static string MappingDigest(IReadOnlyList<Chunking.Item> items) => NodeConfigContent.Hash(items.Select(i => i.Digest.Sha256))[..16];

    /// <summary>How the memo names a listener: only trafficPolicy Local makes a listener differ between nodes.</summary>
    private static (string Mapping, string Port, string? Node) ListenerKey(ValidMapping m, ValidPort p, string node) =>
        (m.Key, $"{p.Name}|{p.Port}|{p.Protocol}", m.Object.Spec.TrafficPolicy == TrafficPolicy.Local ? node : null);

    /// <summary>A listener with its digest; the same objects as last plan when its mapping's resolution and VIP are unchanged.</summary>
    private static Chunking.Item RenderListener(ValidMapping m, ValidPort p, IPAddress vip, string node, PlanMemo? memo)
    {
        var key = ListenerKey(m, p, node);
        if (memo?.Listener(key, m.Backends, vip) is { } hit)
        {
            return hit.Item;
        }
        var item = Rendered(m, p, vip, node);
        memo?.Remember(key, new PlanMemo.ListenerEntry { Backends = m.Backends, Vip = vip, Item = item });
        return item;
    }

    private static Chunking.Item Rendered(ValidMapping m, ValidPort p, IPAddress vip, string node)
    {
        var listener = Listener(m, p, vip, node);
        return new Chunking.Item(m.Key, null, listener, NodeConfigContent.Digest(listener));
    }

    /// <summary>
    /// Every listener of every node, once each. Those the memo lacks are rendered (and their JSON
    /// hashed) in parallel, each on its own; the memo is read and written on this thread only.
    /// </summary>
    private static Dictionary<(string Mapping, string Port, string? Node), Chunking.Item> RenderAll(
        Dictionary<string, List<(IPAddress Vip, PlacedVip Placed)>> byNode, Dictionary<IPAddress, List<ValidMapping>> byVip, PlanMemo? memo, int? maxParallelism)
    {
        var items = new Dictionary<(string Mapping, string Port, string? Node), Chunking.Item>();
        var seen = new HashSet<(string Mapping, string Port, string? Node)>();
        var todo = new List<((string Mapping, string Port, string? Node) Key, ValidMapping M, ValidPort P, IPAddress Vip, string Node)>();
        foreach (var (node, roles) in byNode)
        {
            foreach (var (vip, _) in roles)
            {
                foreach (var m in byVip.GetValueOrDefault(vip) ?? [])
                {
                    foreach (var p in m.Ports)
                    {
                        var key = ListenerKey(m, p, node);
                        if (!seen.Add(key))
                        {
                            continue;
                        }
                        if (memo?.Listener(key, m.Backends, vip) is { } hit)
                        {
                            items[key] = hit.Item;
                        }
                        else
                        {
                            todo.Add((key, m, p, vip, node));
                        }
                    }
                }
            }
        }
        var made = new Chunking.Item[todo.Count];
        if (InParallel(todo.Count, maxParallelism) is { } parallel)
        {
            Parallel.For(0, todo.Count, parallel, i => made[i] = Rendered(todo[i].M, todo[i].P, todo[i].Vip, todo[i].Node));
        }
        else
        {
            for (var i = 0; i < todo.Count; i++)
            {
                made[i] = Rendered(todo[i].M, todo[i].P, todo[i].Vip, todo[i].Node);
            }
        }
        for (var i = 0; i < todo.Count; i++)
        {
            items[todo[i].Key] = made[i];
            memo?.Remember(todo[i].Key, new PlanMemo.ListenerEntry { Backends = todo[i].M.Backends, Vip = todo[i].Vip, Item = made[i] });
        }
        return items;
    }

    /// <summary>
    /// A listener's backends: those of the VIP's family (and, for trafficPolicy Local, on the node),
    /// by address (ordinal) and port. When that is the whole list, sorted (as backends from slices
    /// come), it is the mapping's own list, not a copy.
    /// </summary>
    private static List<NodeBackend> NodeBackends(PortBackends backends, System.Net.Sockets.AddressFamily family, string? onlyNode)
    {
        var v6 = family == System.Net.Sockets.AddressFamily.InterNetworkV6;
        var all = backends.List;
        List<NodeBackend>? picked = null; // made only once a backend is left out
        var sorted = true;
        NodeBackend? last = null;
        for (var i = 0; i < all.Count; i++)
        {
            var b = all[i];
            if (PortBackends.IsIPv6(b.Address) != v6 || onlyNode is not null && backends.Nodes![i] != onlyNode)
            {
                picked ??= all[..i];
                continue;
            }
            if (last is { } l && string.CompareOrdinal(l.Address, b.Address) is var c && (c > 0 || c == 0 && l.Port > b.Port))
            {
                sorted = false;
            }
            picked?.Add(b);
            last = b;
        }
        var result = picked ?? all;
        return sorted ? result : [.. result.OrderBy(b => b.Address, StringComparer.Ordinal).ThenBy(b => b.Port)];
    }

    private static Listener Listener(ValidMapping m, ValidPort p, IPAddress vip, string node)
    {
        var spec = m.Object.Spec;
        var local = spec.TrafficPolicy == TrafficPolicy.Local;
        return new Listener
        {
            Name = $"{m.Key}/{p.Name}",
            Vip = vip.ToString(),
            Port = p.Port,
            Protocol = p.Protocol,
            Algorithm = spec.Scheduling.Algorithm,
            // Only the consistent-hash algorithms have a table; the others ignore the size.
            MaglevTableSize = spec.Scheduling.Algorithm is SchedulingAlgorithm.Maglev or SchedulingAlgorithm.SourceHash ? spec.Scheduling.MaglevTableSize : null,
            NatMode = spec.Nat.Mode,
            DsrEncapsulation = spec.Nat.Mode == NatMode.DSR ? spec.Nat.DsrEncapsulation : null,
            SourceAddresses = m.Sources.Count > 0 ? [.. m.Sources.Select(a => a.ToString())] : null,
            Affinity = spec.Affinity.Mode == AffinityMode.None ? null : spec.Affinity,
            DrainTimeout = spec.Drain.Timeout,
            IdleTimeout = spec.IdleTimeout,
            ConnectionLog = spec.ConnectionLog.Enabled ? spec.ConnectionLog : null,
            FlowSync = m.Shard.Shard.Spec.FlowSync.Enabled ? true : null,
            Backends = NodeBackends(m.Backends[p], vip.AddressFamily, local ? node : null),
            HealthCheck = spec.HealthCheck,
        };
    }

    internal static long Saturate(BigInteger n) => n > long.MaxValue ? long.MaxValue : (long)n;
}
