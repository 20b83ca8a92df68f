using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using Xlb.Crds;
using Xlb.Crds.Serialization;

namespace Xlb.Operator.Core;

/// <summary>Names one object of the input, for problems and status.</summary>
public sealed record ObjectRef(string Kind, string? Namespace, string Name)
{
    public override string ToString() => Namespace is null ? $"{Kind} {Name}" : $"{Kind} {Namespace}/{Name}";

    public static ObjectRef Of(IKubernetesObject o) => new(o.Kind, o.Metadata.Namespace, o.Metadata.Name ?? "");
}

/// <summary>Why one object could not be (fully) programmed. Reason is CamelCase, for a condition.</summary>
public sealed record Problem(ObjectRef Object, string Reason, string Message)
{
    public override string ToString() => $"{Object}: {Reason}: {Message}";
}

public sealed record PlanInput
{
    public IReadOnlyList<LoadBalancerPool> Pools { get; init; } = [];
    public IReadOnlyList<VipShard> Shards { get; init; } = [];
    public IReadOnlyList<PortMapping> PortMappings { get; init; } = [];
    public IReadOnlyList<Node> Nodes { get; init; } = [];
    /// <summary>The node configs rendered last time, by node: revisions continue from them and VIPs stay put.</summary>
    public IReadOnlyDictionary<string, XlbNodeConfig> Previous { get; init; } = new Dictionary<string, XlbNodeConfig>();
}

public sealed record PlanResult(
    IReadOnlyList<XlbNodeConfig> NodeConfigs,
    IReadOnlyList<Problem> Problems,
    IReadOnlyDictionary<ObjectRef, IPAddress> Vips,
    IReadOnlyDictionary<string, IReadOnlyList<VipPlacement>> Placements);

/// <summary>
/// The operator's pure core: custom resources in, one fully resolved config per LB node out.
/// No I/O, no clock: the same input always gives the same output. One invalid object never
/// blocks the others; it is reported as a <see cref="Problem"/> and left out.
/// </summary>
public static class Planner
{
    private const int NameSpacePortLimit = 65535;

    public static PlanResult Plan(PlanInput input)
    {
        var problems = new List<Problem>();
        var pools = ResolvePools(input.Pools, problems);
        var shards = ResolveShards(input.Shards, pools, input.Nodes, problems);
        var mappings = ValidateMappings(input.PortMappings, shards, problems);
        var vips = AllocateVips(mappings, shards, PreviousVips(input.Previous), problems);
        var placements = Place(vips, mappings, shards);
        var configs = Render(input.Nodes, mappings, vips, placements, input.Previous);
        var byShard = placements
            .GroupBy(p => p.Value.Shard)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<VipPlacement>)[.. g.Select(p => p.Value.Placement).OrderBy(p => p.Address, StringComparer.Ordinal)]);
        return new PlanResult(configs, problems, vips.ToDictionary(v => ObjectRef.Of(v.Key.Object), v => v.Value), byShard);
    }

    private sealed record ResolvedPool(LoadBalancerPool Pool, List<AddressBlock> Blocks, List<AddressBlock> Reserved)
    {
        public bool Offers(IPAddress a) => Blocks.Any(b => b.Contains(a)) && !Reserved.Any(r => r.Contains(a));
    }

    private sealed record ResolvedShard(VipShard Shard, ResolvedPool Pool, List<string> Nodes);

    private sealed record ValidMapping(PortMapping Object, ResolvedShard Shard, IPAddress? RequestedVip, List<ValidPort> Ports, List<(IPAddress Address, int Weight)> Endpoints)
    {
        public string Key => $"{Object.Metadata.Namespace ?? "default"}/{Object.Metadata.Name}";
    }

    private sealed record ValidPort(string Name, int Port, L4Protocol Protocol, int TargetPort);

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
                problems.Add(new Problem(self, "PoolOverlap", $"its blocks overlap LoadBalancerPool {clash.Pool.Metadata.Name}; an address must belong to one pool"));
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

    private static Dictionary<string, ResolvedShard> ResolveShards(
        IReadOnlyList<VipShard> shards, Dictionary<string, ResolvedPool> pools, IReadOnlyList<Node> nodes, List<Problem> problems)
    {
        var result = new Dictionary<string, ResolvedShard>(StringComparer.Ordinal);
        foreach (var shard in shards.OrderBy(s => s.Metadata.Name, StringComparer.Ordinal))
        {
            if (!pools.TryGetValue(shard.Spec.PoolRef, out var pool))
            {
                problems.Add(new Problem(ObjectRef.Of(shard), "PoolNotFound", $"spec.poolRef names LoadBalancerPool {shard.Spec.PoolRef}, which does not exist or is invalid"));
                continue;
            }
            var selected = nodes
                .Where(n => shard.Spec.NodeSelector?.Matches(n.Metadata.Labels) ?? true)
                .Select(n => n.Metadata.Name ?? "")
                .OrderBy(n => n, StringComparer.Ordinal)
                .ToList();
            if (selected.Count == 0)
            {
                problems.Add(new Problem(ObjectRef.Of(shard), "NoNodes", "spec.nodeSelector selects no LB node; its VIPs are allocated but served nowhere"));
            }
            result[shard.Metadata.Name ?? ""] = new ResolvedShard(shard, pool, selected);
        }
        return result;
    }

    private static List<ValidMapping> ValidateMappings(IReadOnlyList<PortMapping> mappings, Dictionary<string, ResolvedShard> shards, List<Problem> problems)
    {
        var result = new List<ValidMapping>();
        foreach (var pm in mappings.OrderBy(m => m.Metadata.Namespace, StringComparer.Ordinal).ThenBy(m => m.Metadata.Name, StringComparer.Ordinal))
        {
            var self = ObjectRef.Of(pm);
            var error = ValidateMapping(pm, shards, out var valid);
            if (error is not null)
            {
                problems.Add(new Problem(self, error.Value.Reason, error.Value.Message));
                continue;
            }
            result.Add(valid!);
        }
        return result;
    }

    private static (string Reason, string Message)? ValidateMapping(PortMapping pm, Dictionary<string, ResolvedShard> shards, out ValidMapping? valid)
    {
        valid = null;
        var spec = pm.Spec;
        if (!shards.TryGetValue(spec.ShardRef, out var shard))
        {
            return ("ShardNotFound", $"spec.shardRef names VipShard {spec.ShardRef}, which does not exist or is invalid");
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
                return ("VipNotInPool", $"spec.vip {requested} is not an address LoadBalancerPool {shard.Pool.Pool.Metadata.Name} offers (outside its blocks, or reserved)");
            }
        }
        if (spec.Ports.Count == 0)
        {
            return ("InvalidSpec", "spec.ports is empty: expose at least one port");
        }
        var ports = new List<ValidPort>();
        for (var i = 0; i < spec.Ports.Count; i++)
        {
            var p = spec.Ports[i];
            if (p.Port is < 1 or > NameSpacePortLimit)
            {
                return ("InvalidSpec", $"spec.ports[{i}].port {p.Port} is outside 1-65535");
            }
            if (ports.Any(q => q.Port == p.Port && q.Protocol == p.Protocol))
            {
                return ("InvalidSpec", $"spec.ports[{i}]: port {p.Port}/{p.Protocol} is listed twice");
            }
            int target;
            if (p.TargetPort is null)
            {
                target = p.Port;
            }
            else if (p.TargetPort.Value.Number is { } n)
            {
                target = n;
            }
            else
            {
                return ("InvalidSpec", $"spec.ports[{i}].targetPort '{p.TargetPort}': a named port needs a serviceRef backend; static endpoints take a number");
            }
            if (target is < 1 or > NameSpacePortLimit)
            {
                return ("InvalidSpec", $"spec.ports[{i}].targetPort {target} is outside 1-65535");
            }
            ports.Add(new ValidPort(p.Name ?? p.Port.ToString(CultureInfo.InvariantCulture), p.Port, p.Protocol, target));
        }
        var endpoints = new List<(IPAddress, int)>();
        for (var i = 0; i < spec.Backend.Endpoints.Count; i++)
        {
            var e = spec.Backend.Endpoints[i];
            if (!IPAddress.TryParse(e.Address, out var address))
            {
                return ("InvalidSpec", $"spec.backend.endpoints[{i}].address '{e.Address}' is not an IP address");
            }
            if (e.Weight is < 0 or > 100)
            {
                return ("InvalidSpec", $"spec.backend.endpoints[{i}].weight {e.Weight} is outside 0-100");
            }
            endpoints.Add((address, e.Weight));
        }
        if (spec.HealthCheck is { } hc)
        {
            if (hc.Timeout.Value <= TimeSpan.Zero || hc.Timeout.Value >= hc.Interval.Value)
            {
                return ("InvalidSpec", $"spec.healthCheck.timeout {hc.Timeout} must be positive and shorter than spec.healthCheck.interval {hc.Interval}");
            }
            if (hc.HealthyThreshold < 1 || hc.UnhealthyThreshold < 1)
            {
                return ("InvalidSpec", "spec.healthCheck thresholds must be at least 1");
            }
            if (hc.Port is < 1 or > NameSpacePortLimit)
            {
                return ("InvalidSpec", $"spec.healthCheck.port {hc.Port} is outside 1-65535");
            }
            if (hc.Type == HealthCheckType.HTTP && !hc.Path.StartsWith('/'))
            {
                return ("InvalidSpec", $"spec.healthCheck.path '{hc.Path}' must start with /");
            }
        }
        valid = new ValidMapping(pm, shard, requested, ports, endpoints);
        return null;
    }

    private static Dictionary<string, IPAddress> PreviousVips(IReadOnlyDictionary<string, XlbNodeConfig> previous)
    {
        var result = new Dictionary<string, IPAddress>(StringComparer.Ordinal);
        foreach (var listener in previous.Values.SelectMany(c => c.Spec.Listeners))
        {
            var cut = listener.Name.LastIndexOf('/');
            if (cut > 0 && IPAddress.TryParse(listener.Vip, out var vip))
            {
                result.TryAdd(listener.Name[..cut], vip);
            }
        }
        return result;
    }

    /// <summary>
    /// IPAM in three passes, so that nothing already handed out can be taken by a newcomer:
    /// explicit requests, then earlier automatic allocations, then new automatic ones.
    /// </summary>
    private static Dictionary<ValidMapping, IPAddress> AllocateVips(
        List<ValidMapping> mappings, Dictionary<string, ResolvedShard> shards, Dictionary<string, IPAddress> previous, List<Problem> problems)
    {
        var result = new Dictionary<ValidMapping, IPAddress>();
        var taken = new Dictionary<IPAddress, List<ValidMapping>>();
        var failed = new HashSet<ValidMapping>();

        bool TryTake(ValidMapping m, IPAddress a, bool shared)
        {
            if (taken.TryGetValue(a, out var holders))
            {
                var clash = holders.FirstOrDefault(h => !shared || h.RequestedVip is null || h.Ports.Any(p => m.Ports.Any(q => p.Port == q.Port && p.Protocol == q.Protocol)));
                if (clash is not null)
                {
                    if (shared)
                    {
                        problems.Add(new Problem(ObjectRef.Of(m.Object), "VipConflict", $"spec.vip {a} is already used by PortMapping {clash.Key} on a clashing port, or by an automatic allocation"));
                        failed.Add(m);
                    }
                    return false;
                }
                holders.Add(m);
            }
            else
            {
                taken[a] = [m];
            }
            result[m] = a;
            return true;
        }

        foreach (var m in mappings.Where(m => m.RequestedVip is not null))
        {
            TryTake(m, m.RequestedVip!, shared: true);
        }
        foreach (var m in mappings.Where(m => m.RequestedVip is null))
        {
            if (previous.TryGetValue(m.Key, out var before) && m.Shard.Pool.Offers(before) && !taken.ContainsKey(before))
            {
                TryTake(m, before, shared: false);
            }
        }
        foreach (var m in mappings.Where(m => m.RequestedVip is null && !result.ContainsKey(m) && !failed.Contains(m)))
        {
            var pool = m.Shard.Pool;
            if (pool.Pool.Spec.Disabled || !pool.Pool.Spec.AutoAssign)
            {
                problems.Add(new Problem(ObjectRef.Of(m.Object), "PoolNotAssignable",
                    $"LoadBalancerPool {pool.Pool.Metadata.Name} is {(pool.Pool.Spec.Disabled ? "disabled" : "not autoAssign")}: set spec.vip to an address of it"));
                continue;
            }
            var free = pool.Blocks.SelectMany(b => b.Addresses()).FirstOrDefault(a => pool.Offers(a) && !taken.ContainsKey(a));
            if (free is null)
            {
                problems.Add(new Problem(ObjectRef.Of(m.Object), "PoolExhausted", $"LoadBalancerPool {pool.Pool.Metadata.Name} has no free address left"));
                continue;
            }
            TryTake(m, free, shared: false);
        }
        return result;
    }

    private sealed record PlacedVip(string Shard, VipPlacement Placement);

    /// <summary>
    /// Rendezvous hashing: each VIP ranks the shard's nodes by hash(vip, node); the first is active,
    /// the second standby. Stable across restarts and minimal movement when nodes come and go.
    /// </summary>
    private static Dictionary<IPAddress, PlacedVip> Place(Dictionary<ValidMapping, IPAddress> vips, List<ValidMapping> mappings, Dictionary<string, ResolvedShard> shards)
    {
        var result = new Dictionary<IPAddress, PlacedVip>();
        foreach (var m in mappings)
        {
            if (!vips.TryGetValue(m, out var vip) || result.ContainsKey(vip) || m.Shard.Nodes.Count == 0)
            {
                continue;
            }
            var ranked = m.Shard.Nodes.OrderByDescending(n => Score(vip, n)).ThenBy(n => n, StringComparer.Ordinal).ToList();
            result[vip] = new PlacedVip(m.Shard.Shard.Metadata.Name ?? "", new VipPlacement
            {
                Address = vip.ToString(),
                ActiveNode = ranked[0],
                StandbyNode = ranked.Count > 1 ? ranked[1] : null,
            });
        }
        return result;
    }

    private static ulong Score(IPAddress vip, string node)
    {
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(System.Text.Encoding.UTF8.GetBytes($"{vip}|{node}"), digest);
        return BitConverter.ToUInt64(digest);
    }

    private static List<XlbNodeConfig> Render(
        IReadOnlyList<Node> nodes, List<ValidMapping> mappings, Dictionary<ValidMapping, IPAddress> vips,
        Dictionary<IPAddress, PlacedVip> placements, IReadOnlyDictionary<string, XlbNodeConfig> previous)
    {
        var configs = new List<XlbNodeConfig>();
        foreach (var nodeName in nodes.Select(n => n.Metadata.Name ?? "").Distinct().OrderBy(n => n, StringComparer.Ordinal))
        {
            var roles = placements
                .Where(p => p.Value.Placement.ActiveNode == nodeName || p.Value.Placement.StandbyNode == nodeName)
                .ToDictionary(p => p.Key, p => p.Value);
            var nodeVips = roles
                .Select(r => new NodeVip
                {
                    Address = r.Key.ToString(),
                    Role = r.Value.Placement.ActiveNode == nodeName ? VipRole.Active : VipRole.Standby,
                    Shard = r.Value.Shard,
                })
                .OrderBy(v => v.Address, StringComparer.Ordinal)
                .ToList();
            // Standby nodes get the listeners too, so a takeover is an announcement, not an apply.
            var listeners = mappings
                .Where(m => vips.TryGetValue(m, out var vip) && roles.ContainsKey(vip))
                .SelectMany(m => m.Ports.Select(p => new Listener
                {
                    Name = $"{m.Key}/{p.Name}",
                    Vip = vips[m].ToString(),
                    Port = p.Port,
                    Protocol = p.Protocol,
                    Algorithm = m.Object.Spec.Scheduling.Algorithm,
                    Backends = [.. m.Endpoints
                        .Where(e => e.Address.AddressFamily == vips[m].AddressFamily)
                        .Select(e => new NodeBackend { Address = e.Address.ToString(), Port = p.TargetPort, Weight = e.Weight })
                        .OrderBy(b => b.Address, StringComparer.Ordinal).ThenBy(b => b.Port)],
                    HealthCheck = m.Object.Spec.HealthCheck is { } hc ? hc with { Port = hc.Port ?? p.TargetPort } : null,
                }))
                .OrderBy(l => l.Name, StringComparer.Ordinal)
                .ToList();
            var spec = new XlbNodeConfigSpec { NodeName = nodeName, Vips = nodeVips, Listeners = listeners };
            var hash = ContentHash(spec);
            previous.TryGetValue(nodeName, out var before);
            var revision = before is null ? 1 : before.Spec.ContentHash == hash ? before.Spec.Revision : before.Spec.Revision + 1;
            configs.Add(new XlbNodeConfig
            {
                Metadata = new ObjectMeta { Name = nodeName },
                Spec = spec with { Revision = revision, ContentHash = hash },
            });
        }
        return configs;
    }

    /// <summary>SHA-256 of the content only (revision and hash fields are zeroed), lower-case hex.</summary>
    public static string ContentHash(XlbNodeConfigSpec spec)
    {
        var bytes = JsonSerializer.SerializeToUtf8Bytes(spec with { Revision = 0, ContentHash = "" }, XlbJson.Info<XlbNodeConfigSpec>());
        return Convert.ToHexStringLower(SHA256.HashData(bytes));
    }
}
