using System.Buffers;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Xlb.Crds.Serialization;

namespace Xlb.Crds;

/// <summary>
/// The content of a node config (its VIPs and listeners), how it is hashed, and how the agent puts
/// a chunked config back together. The operator and the agent share this one definition.
/// </summary>
public static class NodeConfigContent
{
    /// <summary>One VIP or listener: the SHA-256 of its canonical bytes (its JSON under XLB's contract) and their length.</summary>
    public readonly record struct ItemDigest(byte[] Sha256, int Size);

    public static ItemDigest Digest(NodeVip vip) => Digest(vip, XlbJson.Info<NodeVip>());

    public static ItemDigest Digest(Listener listener) => Digest(listener, XlbJson.Info<Listener>());

    /// <summary>A writer and its buffer per thread: the bytes are only hashed and measured, never kept.</summary>
    [ThreadStatic]
    private static (ArrayBufferWriter<byte> Buffer, Utf8JsonWriter Writer)? _scratch;

    /// <summary>The digest of the bytes JsonSerializer.SerializeToUtf8Bytes would give.</summary>
    private static ItemDigest Digest<T>(T item, JsonTypeInfo<T> info)
    {
        var sha256 = new byte[SHA256.HashSizeInBytes];
        var size = JsonSha256(item, info, sha256);
        return new ItemDigest(sha256, size);
    }

    /// <summary>
    /// The SHA-256 of the bytes JsonSerializer.SerializeToUtf8Bytes would give, into
    /// <paramref name="sha256"/>, and their length: written into a buffer this thread reuses, never kept.
    /// </summary>
    public static int JsonSha256<T>(T item, JsonTypeInfo<T> info, Span<byte> sha256)
    {
        var (buffer, writer) = _scratch ??= Scratch(info.Options);
        buffer.ResetWrittenCount();
        writer.Reset(buffer);
        JsonSerializer.Serialize(writer, item, info);
        writer.Flush();
        SHA256.HashData(buffer.WrittenSpan, sha256);
        var size = buffer.WrittenCount;
        if (buffer.Capacity > 1 << 20)
        {
            _scratch = null; // one huge item does not pin its buffer to the thread
        }
        return size;
    }

    private static (ArrayBufferWriter<byte>, Utf8JsonWriter) Scratch(JsonSerializerOptions options)
    {
        var buffer = new ArrayBufferWriter<byte>(16 * 1024);
        // The serializer writes valid JSON: the writer need not check each token again.
        return (buffer, new Utf8JsonWriter(buffer, XlbJson.WriterOptions(options) with { SkipValidation = true }));
    }

    /// <summary>The hash of some content: SHA-256 over its items' digests, in order; lower-case hex.</summary>
    public static string Hash(IEnumerable<byte[]> digests)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var digest in digests)
        {
            sha.AppendData(digest);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>
    /// The hash of a node's content with its BGP sessions and flow-sync peers: <paramref name="hash"/>
    /// (its VIPs and listeners, or its chunks) as it is when it has neither, else SHA-256 over it and
    /// each session's and peer's digest.
    /// </summary>
    public static string WithPeers(string hash, IReadOnlyList<NodeBgpPeer> peers, IReadOnlyList<NodeSyncPeer> syncPeers, IReadOnlyList<NodeFailoverPeer> failoverPeers)
    {
        if (peers.Count == 0 && syncPeers.Count == 0 && failoverPeers.Count == 0)
        {
            return hash;
        }
        var bgp = XlbJson.Info<NodeBgpPeer>();
        var sync = XlbJson.Info<NodeSyncPeer>();
        var failover = XlbJson.Info<NodeFailoverPeer>();
        return Hash([System.Text.Encoding.ASCII.GetBytes(hash), .. peers.Select(p => Digest(p, bgp).Sha256), .. syncPeers.Select(p => Digest(p, sync).Sha256),
            .. failoverPeers.Select(p => Digest(p, failover).Sha256)]);
    }

    /// <summary>The hash of a chunked config: SHA-256 over its chunks' hashes, in order.</summary>
    public static string HashOfChunks(IEnumerable<string> chunkHashes) =>
        Hash(chunkHashes.Select(System.Text.Encoding.ASCII.GetBytes));

    /// <summary>The hash a chunk's content has (what <see cref="XlbNodeConfigChunkSpec.Hash"/> must say).</summary>
    public static string Hash(XlbNodeConfigChunkSpec chunk) =>
        Hash(chunk.Vips.Select(v => Digest(v).Sha256).Concat(chunk.Listeners.Select(l => Digest(l).Sha256)));

    /// <summary>
    /// The whole config from a head and its chunks. Null, with the reason, while a chunk is
    /// missing or does not hash to what the head lists: the agent then keeps what it runs.
    /// </summary>
    public static XlbNodeConfigSpec? Assemble(XlbNodeConfigSpec head, Func<string, XlbNodeConfigChunkSpec?> chunk, out string? incomplete)
    {
        incomplete = null;
        if (head.Chunks.Count == 0)
        {
            return head;
        }
        var vips = new List<NodeVip>();
        var listeners = new List<Listener>();
        foreach (var part in head.Chunks)
        {
            if (chunk(part.Name) is not { } spec)
            {
                incomplete = $"chunk {part.Name} of revision {head.Revision} is not there yet";
                return null;
            }
            if (spec.Hash != part.Hash || Hash(spec) != part.Hash)
            {
                incomplete = $"chunk {part.Name} does not hash to {part.Hash[..12]}… as revision {head.Revision} lists";
                return null;
            }
            vips.AddRange(spec.Vips);
            listeners.AddRange(spec.Listeners);
        }
        vips.Sort((a, b) => string.CompareOrdinal(a.Address, b.Address));
        listeners.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return head with { Vips = vips, Listeners = listeners, Chunks = [], ChunkBuckets = 0 };
    }
}
