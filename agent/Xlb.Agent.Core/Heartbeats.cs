using System.Buffers.Binary;
using System.Text;
using Xlb.Crds;

namespace Xlb.Agent.Core;

/// <summary>
/// One agent's heartbeat: the node it runs on; whether it is leaving (a drain began: take its VIPs
/// now); and whether it serves VIPs of the node it is sent to, having taken them over (when that
/// ends, the receiver announces its VIPs again: the link's neighbours still send to the sender).
/// </summary>
public readonly record struct Heartbeat(string Node, bool Leaving, bool HoldingYours = false);

/// <summary>
/// Agent-to-agent failure detection (a VipShard's <c>failover.detection</c>). Every agent sends the
/// other nodes of its shards a heartbeat every detection interval, over UDP on the flow-sync port;
/// a standby takes a VIP over on its own when the VIP's active node has been silent for the
/// shard's interval × multiplier, and gives it back when it hears that node again. The operator,
/// which moves VIPs when an agent's Lease is that old, is then not on the failover's path: its
/// re-plan of the whole cluster, its writes and their watches cost time that grows with the
/// cluster. Pure: the datagram format, who is silent, and what that makes of a node config.
/// </summary>
public static class Heartbeats
{
    /// <summary>"XLBH"; the header's count is the node name's length (<see cref="PeerDatagrams"/>).</summary>
    private const uint Magic = 0x584c4248;
    private const byte Version = 1;
    private const int HeaderBytes = PeerDatagrams.HeaderBytes;
    /// <summary>Header flag: the node is leaving.</summary>
    private const byte LeavingFlag = 2;
    /// <summary>Header flag: the node serves VIPs of the receiver's (<see cref="Heartbeat.HoldingYours"/>).</summary>
    private const byte HoldingFlag = 4;
    /// <summary>The longest node name (a Kubernetes object name).</summary>
    public const int MaxNodeBytes = 253;

    /// <summary>Whether a datagram is a heartbeat (and not flow sync), by its first four bytes.</summary>
    public static bool Is(ReadOnlySpan<byte> d) => d.Length >= 4 && BinaryPrimitives.ReadUInt32BigEndian(d) == Magic;

    /// <summary>The datagram of a heartbeat; with a <paramref name="key"/> it is authenticated (<see cref="PeerDatagrams"/>).</summary>
    public static byte[] Encode(Heartbeat h, byte[]? key = null, long unixMs = 0)
    {
        var name = Encoding.UTF8.GetBytes(h.Node);
        if (name.Length is 0 or > MaxNodeBytes)
        {
            throw new ArgumentException($"a node name of {name.Length} bytes", nameof(h));
        }
        var d = new byte[HeaderBytes + name.Length + (key is null ? 0 : PeerDatagrams.Bytes)];
        PeerDatagrams.WriteHeader(d, Magic, Version, (byte)((h.Leaving ? LeavingFlag : 0) | (h.HoldingYours ? HoldingFlag : 0)), key is not null, (ushort)name.Length);
        name.CopyTo(d, HeaderBytes);
        if (key is not null)
        {
            PeerDatagrams.Seal(d, HeaderBytes + name.Length, key, unixMs);
        }
        return d;
    }

    /// <summary>
    /// The heartbeat of a datagram; <see cref="FormatException"/> when it is not one, or not
    /// authenticated as <paramref name="keys"/> say (none: only unauthenticated ones are taken).
    /// </summary>
    public static Heartbeat Decode(ReadOnlySpan<byte> d, IReadOnlyList<byte[]> keys, long nowUnixMs)
    {
        var (flags, n) = PeerDatagrams.ReadHeader(d, Magic, Version, keys.Count > 0, "heartbeat");
        var authenticated = keys.Count > 0;
        var end = HeaderBytes + n;
        if (n is 0 or > MaxNodeBytes || d.Length != end + (authenticated ? PeerDatagrams.Bytes : 0))
        {
            throw new FormatException($"a heartbeat of {d.Length} bytes with a node name of {n}");
        }
        if (authenticated)
        {
            PeerDatagrams.Check(d, end, keys, nowUnixMs, "flow-sync key");
        }
        return new Heartbeat(Encoding.UTF8.GetString(d[HeaderBytes..end]), (flags & LeavingFlag) != 0, (flags & HoldingFlag) != 0);
    }
}

/// <summary>
/// When each peer's agent was last heard (on a monotonic clock in milliseconds). A peer never
/// heard is not silent but unknown: nothing is taken over from it. So a blocked port or a key
/// that differs between the nodes leaves failover to the operator (and is reported,
/// <see cref="NeverHeard"/>) instead of making every standby take every VIP. A standby whose agent
/// starts while the active node is already dead takes over only where nobody answers for the VIP
/// (<see cref="ResolutionWitness"/>: L2).
/// A leaving peer is silent at once.
/// </summary>
public sealed class PeerLiveness
{
    private readonly Dictionary<string, (long Since, long? Heard)> _peers = new(StringComparer.Ordinal);
    private readonly HashSet<string> _leaving = new(StringComparer.Ordinal);

    /// <summary>The peers from now on: new ones are unheard since now, gone ones are forgotten.</summary>
    public void Configure(IEnumerable<string> peers, long nowMs)
    {
        var keep = peers.ToHashSet(StringComparer.Ordinal);
        foreach (var gone in _peers.Keys.Where(p => !keep.Contains(p)).ToList())
        {
            _peers.Remove(gone);
            _leaving.Remove(gone);
        }
        foreach (var peer in keep)
        {
            _peers.TryAdd(peer, (nowMs, null));
        }
    }

    /// <summary>A heartbeat from <paramref name="peer"/>; false when it is not a peer.</summary>
    public bool Heard(string peer, bool leaving, long nowMs)
    {
        if (!_peers.TryGetValue(peer, out var p))
        {
            return false;
        }
        _peers[peer] = p with { Heard = nowMs };
        if (leaving)
        {
            _leaving.Add(peer);
        }
        else
        {
            _leaving.Remove(peer);
        }
        return true;
    }

    /// <summary>
    /// How long <paramref name="peer"/> has been silent since its last heartbeat;
    /// <see cref="TimeSpan.MaxValue"/> when it said it is leaving; null when it is not a peer or
    /// has never been heard.
    /// </summary>
    public TimeSpan? SilentFor(string peer, long nowMs) =>
        _leaving.Contains(peer) ? TimeSpan.MaxValue
        : _peers.TryGetValue(peer, out var p) && p.Heard is { } at ? TimeSpan.FromMilliseconds(Math.Max(0, nowMs - at))
        : null;

    /// <summary>
    /// How a peer is heard: Heard (within <paramref name="silentAfter"/>), Silent, Leaving, or
    /// Unheard (never); null when it is not a peer.
    /// </summary>
    public string? State(string peer, long nowMs, TimeSpan silentAfter) =>
        !_peers.TryGetValue(peer, out var p) ? null
        : _leaving.Contains(peer) ? "Leaving"
        : p.Heard is not { } at ? "Unheard"
        : nowMs - at <= silentAfter.TotalMilliseconds ? "Heard" : "Silent";

    /// <summary>The peers not heard once in the <paramref name="after"/> since they became peers, by name.</summary>
    public List<string> NeverHeard(long nowMs, TimeSpan after) =>
        [.. _peers.Where(p => p.Value.Heard is null && nowMs - p.Value.Since >= after.TotalMilliseconds).Select(p => p.Key).Order(StringComparer.Ordinal)];
}
