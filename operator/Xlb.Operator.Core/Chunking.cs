using Xlb.Crds;

namespace Xlb.Operator.Core;

/// <summary>
/// Splits a node's content into XlbNodeConfigChunks when it is too large for one object.
/// Items go to buckets by a stable hash of their mapping (listeners) or address (VIPs), so one
/// changed mapping rewrites one chunk. The bucket count is a power of two that only grows when a
/// chunk would pass the limit and only shrinks when the content has fallen well below it, so
/// chunks do not reshuffle as the config breathes.
/// </summary>
public static class Chunking
{
    /// <summary>A VIP or a listener with its digest (see <see cref="NodeConfigContent"/>).</summary>
    public sealed record Item(string BucketKey, NodeVip? Vip, Listener? Listener, NodeConfigContent.ItemDigest Digest);

    public sealed record Result(string ContentHash, int Buckets, List<ChunkRef> Refs, List<XlbNodeConfigChunk> Chunks);

    /// <summary>
    /// Null when the content fits inline (under <paramref name="limit"/> bytes); else the chunks,
    /// each under the limit unless one item alone exceeds it. <paramref name="previousBuckets"/> is
    /// the bucket count of the node's last revision (0 when it was inline).
    /// </summary>
    /// <param name="chunk">Makes one bucket's chunk (bucket count, bucket index, items); a caller may remember them. By default <see cref="Chunk"/>.</param>
    public static Result? Split(string node, IReadOnlyList<Item> vips, IReadOnlyList<Item> listeners, long limit, int previousBuckets, Func<int, int, IReadOnlyList<Item>, XlbNodeConfigChunk>? chunk = null)
    {
        chunk ??= (_, _, items) => Chunk(node, items);
        long total = 0;
        foreach (var item in vips.Concat(listeners))
        {
            total += item.Digest.Size;
        }
        if (total <= limit)
        {
            return null;
        }
        // Aim for half the limit per chunk, so a chunk grows a while before the count must double.
        var needed = (int)Math.Min(1 << 16, System.Numerics.BitOperations.RoundUpToPowerOf2((ulong)Math.Ceiling(total / (limit / 2.0))));
        var buckets = previousBuckets >= needed && previousBuckets <= needed * 4 ? previousBuckets : needed;
        while (true)
        {
            var sized = Assign(vips, listeners, buckets);
            if (buckets >= 1 << 16 || sized.All(b => b.Bytes <= limit || b.Items.Count == 1))
            {
                var refs = new List<ChunkRef>();
                var chunks = new List<XlbNodeConfigChunk>();
                for (var index = 0; index < sized.Count; index++)
                {
                    var bucket = sized[index];
                    if (bucket.Items.Count == 0)
                    {
                        continue;
                    }
                    var made = chunk(buckets, index, bucket.Items);
                    refs.Add(new ChunkRef { Name = made.Metadata.Name!, Hash = made.Spec.Hash });
                    chunks.Add(made);
                }
                return new Result(NodeConfigContent.HashOfChunks(refs.Select(r => r.Hash)), buckets, refs, chunks);
            }
            buckets *= 2;
        }
    }

    /// <summary>The chunk of one bucket's items: named by node and content hash.</summary>
    public static XlbNodeConfigChunk Chunk(string node, IReadOnlyList<Item> items)
    {
        var hash = NodeConfigContent.Hash(items.Select(i => i.Digest.Sha256));
        var listeners = items.Where(i => i.Listener is not null).Select(i => i.Listener!).ToList();
        List<NodeVip> vips = [.. items.Where(i => i.Vip is not null).Select(i => i.Vip!)];
        return new XlbNodeConfigChunk
        {
            Metadata = new ObjectMeta { Name = ChunkName(node, hash), Labels = new() { [XlbNodeConfigChunk.NodeLabel] = XlbApi.NodeLabelValue(node) } },
            Spec = new XlbNodeConfigChunkSpec
            {
                NodeName = node,
                Hash = hash,
                ListenerCount = listeners.Count,
                Vips = vips,
                Listeners = listeners,
            },
        };
    }

    /// <summary>A chunk's name: the node and the content hash (DNS-subdomain safe; node names are already).</summary>
    public static string ChunkName(string node, string hash) => $"{(node.Length > 200 ? node[..200].TrimEnd('.', '-') : node)}-{hash[..16]}";

    private sealed record Bucket(List<Item> Items)
    {
        public long Bytes { get; set; }
    }

    /// <summary>Items in bucket order; within a bucket VIPs first, each group in the order given (sorted by the caller).</summary>
    private static List<Bucket> Assign(IReadOnlyList<Item> vips, IReadOnlyList<Item> listeners, int buckets)
    {
        var result = Enumerable.Range(0, buckets).Select(_ => new Bucket([])).ToList();
        foreach (var item in vips.Concat(listeners))
        {
            var b = result[(int)(Fnv(item.BucketKey) & (uint)(buckets - 1))];
            b.Items.Add(item);
            b.Bytes += item.Digest.Size;
        }
        return result;
    }

    /// <summary>FNV-1a over UTF-16 code units: stable across processes and versions (string.GetHashCode is not).</summary>
    internal static uint Fnv(string s)
    {
        var h = 2166136261u;
        foreach (var c in s)
        {
            h = (h ^ c) * 16777619u;
        }
        return h;
    }
}
