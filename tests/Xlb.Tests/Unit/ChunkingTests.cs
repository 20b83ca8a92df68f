using Xlb.Crds;
using Xlb.Operator.Core;

namespace Xlb.Tests.Unit;

/// <summary>Large node configs split into content-addressed chunks, and back.</summary>
public class ChunkingTests
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>Pool, shard, two nodes and <paramref name="count"/> static mappings with <paramref name="backends"/> backends each.</summary>
    private static PlanInput Input(int count, int backends, long? limit, Func<int, int>? backendsOf = null) => new()
    {
        Pools = [new LoadBalancerPool { Metadata = new ObjectMeta { Name = "p" }, Spec = new LoadBalancerPoolSpec { Blocks = ["10.250.0.0/16"] } }],
        Shards = [new VipShard { Metadata = new ObjectMeta { Name = "s" }, Spec = new VipShardSpec { PoolRef = "p" } }],
        Nodes = [new Node { Metadata = new ObjectMeta { Name = "n1" } }, new Node { Metadata = new ObjectMeta { Name = "n2" } }],
        PortMappings = [.. Enumerable.Range(0, count).Select(i => new PortMapping
        {
            Metadata = new ObjectMeta { Name = $"m{i:D4}", Namespace = "ns", Generation = 1 },
            Spec = new PortMappingSpec
            {
                ShardRef = "s",
                Ports = [new ServicePort { Name = "http", Port = 80, TargetPort = 8080 }, new ServicePort { Name = "dns", Port = 53, Protocol = L4Protocol.UDP }],
                Backend = new BackendSpec { Endpoints = [.. Enumerable.Range(1, backendsOf?.Invoke(i) ?? backends).Select(b => new StaticEndpoint { Address = $"10.{i / 250}.{i % 250}.{b}" })] },
            },
        })],
        Now = T0,
        ChunkLimit = limit,
    };

    private static Dictionary<string, XlbNodeConfigChunkSpec> ChunksOf(PlanResult plan) => plan.Chunks.ToDictionary(c => c.Metadata.Name!, c => c.Spec);

    [Fact]
    public void A_large_config_splits_into_chunks_under_the_limit_that_assemble_to_the_unsplit_config()
    {
        const long limit = 16 * 1024;
        var whole = Planner.Plan(Input(120, 20, limit: null));
        var split = Planner.Plan(Input(120, 20, limit));
        var chunks = ChunksOf(split);
        Assert.All(whole.NodeConfigs, c => Assert.Empty(c.Spec.Chunks));
        foreach (var (head, full) in split.NodeConfigs.Zip(whole.NodeConfigs))
        {
            Assert.Empty(head.Spec.Listeners);
            Assert.Empty(head.Spec.Vips);
            Assert.True(head.Spec.Chunks.Count >= 4, $"{head.Spec.Chunks.Count} chunks");
            Assert.Equal(full.Spec.ListenerCount, head.Spec.ListenerCount);
            Assert.Equal(240, head.Spec.ListenerCount);
            var assembled = NodeConfigContent.Assemble(head.Spec, chunks.GetValueOrDefault, out var incomplete);
            Assert.Null(incomplete);
            Assert.Equal(Canonical(full.Spec), Canonical(assembled!));
            Assert.Equal(head.Spec.ContentHash, NodeConfigContent.HashOfChunks(head.Spec.Chunks.Select(c => c.Hash)));
        }
        foreach (var chunk in split.Chunks)
        {
            var bytes = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(chunk.Spec, Xlb.Crds.Serialization.XlbJson.Info<XlbNodeConfigChunkSpec>()).Length;
            Assert.True(bytes <= limit + 1024, $"chunk {chunk.Metadata.Name}: {bytes} bytes");
            Assert.Equal(chunk.Spec.Hash, NodeConfigContent.Hash(chunk.Spec));
            Assert.StartsWith($"{chunk.Spec.NodeName}-{chunk.Spec.Hash[..16]}", chunk.Metadata.Name);
            Assert.Equal(chunk.Spec.NodeName, chunk.Metadata.Labels![XlbNodeConfigChunk.NodeLabel]);
        }
    }

    [Fact]
    public void A_small_config_stays_inline()
    {
        var plan = Planner.Plan(Input(3, 2, 512 * 1024));
        Assert.Empty(plan.Chunks);
        Assert.All(plan.NodeConfigs, c => Assert.Equal(6, c.Spec.Listeners.Count));
    }

    [Fact]
    public void One_changed_mapping_rewrites_one_chunk_per_node_and_the_revision_moves_once()
    {
        const long limit = 16 * 1024;
        var first = Planner.Plan(Input(120, 20, limit));
        var previous = first.NodeConfigs.ToDictionary(c => c.Spec.NodeName);
        var again = Planner.Plan(Input(120, 20, limit) with { Previous = previous });
        Assert.Equal(first.Chunks.Select(c => c.Metadata.Name), again.Chunks.Select(c => c.Metadata.Name));
        Assert.Equal(first.NodeConfigs.Select(c => c.Spec.Revision), again.NodeConfigs.Select(c => c.Spec.Revision));

        // Mapping 17 loses a backend.
        var changed = Planner.Plan(Input(120, 20, limit, i => i == 17 ? 19 : 20) with { Previous = previous });
        foreach (var (before, after) in first.NodeConfigs.Zip(changed.NodeConfigs))
        {
            Assert.Equal(before.Spec.Revision + 1, after.Spec.Revision);
            Assert.Equal(before.Spec.Chunks.Count, after.Spec.Chunks.Count);
            var replaced = before.Spec.Chunks.Select(c => c.Name).Except(after.Spec.Chunks.Select(c => c.Name)).ToList();
            Assert.Single(replaced);
        }
    }

    [Fact]
    public void The_chunk_count_is_sticky_while_the_content_breathes_and_grows_when_it_must()
    {
        const long limit = 16 * 1024;
        var big = Planner.Plan(Input(120, 20, limit));
        var buckets = big.NodeConfigs[0].Spec.ChunkBuckets;
        var previous = big.NodeConfigs.ToDictionary(c => c.Spec.NodeName);
        // A third smaller: the count stays (no reshuffle of every chunk).
        var smaller = Planner.Plan(Input(80, 20, limit) with { Previous = previous });
        Assert.Equal(buckets, smaller.NodeConfigs[0].Spec.ChunkBuckets);
        // Four times larger: more chunks, each still under the limit.
        var larger = Planner.Plan(Input(480, 20, limit) with { Previous = previous });
        Assert.True(larger.NodeConfigs[0].Spec.ChunkBuckets > buckets);
    }

    [Fact]
    public void Assembly_waits_for_a_missing_chunk_and_refuses_one_that_does_not_hash_to_its_listing()
    {
        var plan = Planner.Plan(Input(120, 20, 16 * 1024));
        var head = plan.NodeConfigs[0].Spec;
        var chunks = ChunksOf(plan);
        var missing = head.Chunks[1].Name;
        Assert.Null(NodeConfigContent.Assemble(head, n => n == missing ? null : chunks[n], out var why));
        Assert.Contains(missing, why);
        var tampered = chunks[missing] with { Listeners = [.. chunks[missing].Listeners.Skip(1)] };
        Assert.Null(NodeConfigContent.Assemble(head, n => n == missing ? tampered : chunks[n], out why));
        Assert.Contains("does not hash", why);
    }

    private static string Canonical(XlbNodeConfigSpec spec) =>
        System.Text.Json.JsonSerializer.Serialize(spec with { Revision = 0, ContentHash = "", Chunks = [] }, Xlb.Crds.Serialization.XlbJson.Info<XlbNodeConfigSpec>());

    [Fact]
    public void An_item_digest_is_the_hash_and_length_of_its_serialized_bytes_on_every_thread_and_after_a_huge_item()
    {
        static Listener Make(int i, int backends) => new()
        {
            Name = $"ns/m{i}/p\u00e9-\u2603-<{i}>&'\"",
            Vip = $"10.0.{i % 250}.{i % 7}",
            Port = 1 + i % 65535,
            Protocol = i % 2 == 0 ? L4Protocol.TCP : L4Protocol.UDP,
            NatMode = (NatMode)(i % 3),
            DsrEncapsulation = i % 5 == 0 ? DsrEncapsulation.IPIP : null,
            Affinity = i % 4 == 0 ? new AffinitySpec { Mode = AffinityMode.ClientIP } : null,
            HealthCheck = i % 3 == 0 ? new HealthCheckSpec() : null,
            Backends = [.. Enumerable.Range(0, backends).Select(b => new NodeBackend { Address = $"10.{i % 200}.{b / 250}.{b % 250}", Port = 8000 + b, Weight = 1 + b % 3, Draining = b % 9 == 0 })],
        };
        static void Check(Listener l)
        {
            var bytes = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(l, Xlb.Crds.Serialization.XlbJson.Info<Listener>());
            var digest = NodeConfigContent.Digest(l);
            Assert.Equal(System.Security.Cryptography.SHA256.HashData(bytes), digest.Sha256);
            Assert.Equal(bytes.Length, digest.Size);
        }
        // A huge item first (its buffer is not kept), then small and large ones, on several threads at once.
        Check(Make(0, 40_000));
        Parallel.For(0, 400, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => Check(Make(i, i % 50 == 0 ? 2_000 : i % 20)));
        var vip = new NodeVip { Address = "2001:db8::1", Role = VipRole.Standby, Shard = "s\u00fc" };
        Assert.Equal(System.Security.Cryptography.SHA256.HashData(System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(vip, Xlb.Crds.Serialization.XlbJson.Info<NodeVip>())), NodeConfigContent.Digest(vip).Sha256);
    }
}
