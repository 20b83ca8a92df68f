using System.Security.Cryptography;
using System.Text.Json;
using Xlb.Crds.Serialization;

namespace Xlb.Crds;

/// <summary>
/// The content of a node config (its VIPs and listeners), how it is hashed, and how the agent puts
/// a chunked config back together. The operator and the agent share this one definition.
/// </summary>
public static class NodeConfigContent
{
    /// <summary>The canonical bytes of one VIP or listener: its JSON under XLB's contract.</summary>
    public static byte[] Bytes(NodeVip vip) => JsonSerializer.SerializeToUtf8Bytes(vip, XlbJson.Info<NodeVip>());

    /// <inheritdoc cref="Bytes(NodeVip)"/>
    public static byte[] Bytes(Listener listener) => JsonSerializer.SerializeToUtf8Bytes(listener, XlbJson.Info<Listener>());

    /// <summary>SHA-256 over the canonical bytes of each item, in order; lower-case hex.</summary>
    public static string Hash(IEnumerable<byte[]> items)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var item in items)
        {
            sha.AppendData(item);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>The hash of a chunked config: SHA-256 over its chunks' hashes, in order.</summary>
    public static string HashOfChunks(IEnumerable<string> chunkHashes) =>
        Hash(chunkHashes.Select(System.Text.Encoding.ASCII.GetBytes));

    /// <summary>The hash a chunk's content has (what <see cref="XlbNodeConfigChunkSpec.Hash"/> must say).</summary>
    public static string Hash(XlbNodeConfigChunkSpec chunk) =>
        Hash(chunk.Vips.Select(Bytes).Concat(chunk.Listeners.Select(Bytes)));

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
