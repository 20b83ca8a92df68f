using System.Text.Json;
using System.Text.Json.Serialization;
using Xlb.Crds.Schema;

namespace Xlb.Crds;

/// <summary>
/// The fully resolved desired state of one LB node (name = node name). Written by the operator
/// only; the agent on that node applies it and writes its status.
/// </summary>
[Crd("xlbnodeconfigs", CrdScope.Cluster, ShortNames = ["xnc"])]
[PrinterColumn("Revision", "integer", ".spec.revision")]
[PrinterColumn("Applied", "integer", ".status.appliedRevision")]
[PrinterColumn("VIPs", "integer", ".spec.vipCount")]
[PrinterColumn("Listeners", "integer", ".spec.listenerCount")]
[PrinterColumn("Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status")]
[PrinterColumn("Attach", "string", ".status.attachMode", Priority = 1)]
[PrinterColumn("Age", "date", ".metadata.creationTimestamp")]
public sealed record XlbNodeConfig : IKubernetesObject
{
    public const string KindName = "XlbNodeConfig";
    public string ApiVersion { get; init; } = XlbApi.ApiVersion;
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public required XlbNodeConfigSpec Spec { get; init; }
    public XlbNodeConfigStatus? Status { get; init; }
}

/// <summary>Everything one node's agent programs: its VIPs and their listeners.</summary>
public sealed record XlbNodeConfigSpec
{
    /// <summary>The node this config is for.</summary>
    public required string NodeName { get; init; }
    /// <summary>Increases by one whenever the content changes.</summary>
    public long Revision { get; init; }
    /// <summary>SHA-256 of the content (VIPs and listeners), lower-case hex.</summary>
    public string ContentHash { get; init; } = "";
    /// <summary>Number of VIPs, for kubectl get.</summary>
    public int VipCount { get; init; }
    /// <summary>Number of listeners, for kubectl get.</summary>
    public int ListenerCount { get; init; }
    /// <summary>The VIPs this node serves (Active) or stands by for (Standby).</summary>
    public List<NodeVip> Vips { get; init; } = [];
    /// <summary>Every VIP:port this node forwards, with its backends.</summary>
    public List<Listener> Listeners { get; init; } = [];
    /// <summary>
    /// Set when the config is too large for one object: the VIPs and listeners then live in these
    /// XlbNodeConfigChunks (vips and listeners above are empty), and the agent applies the
    /// revision only when it holds every chunk listed, each with the listed hash. An atomic list:
    /// the operator alone writes it, whole, so server-side apply tracks it as one field rather
    /// than three per chunk.
    /// </summary>
    public List<ChunkRef> Chunks { get; init; } = [];
    /// <summary>With chunks: how many hash buckets the content is spread over (chunks are the non-empty ones). Kept steady so chunks do not reshuffle.</summary>
    public int ChunkBuckets { get; init; }
    /// <summary>BGP neighbours of this node (from its shards with announcement mode BGP), by address; each carries the active VIPs of the shards it lists. Part of the content hash.</summary>
    [ListMap("address")]
    public List<NodeBgpPeer> BgpPeers { get; init; } = [];
    /// <summary>The other nodes of this node's shards with flowSync, by name, with the address their agents take flows at. Part of the content hash.</summary>
    [ListMap("node")]
    public List<NodeSyncPeer> FlowSyncPeers { get; init; } = [];
    /// <summary>
    /// The other nodes of this node's shards, by name, with the address their agents are reached at
    /// and how often this node's agent tells each it is alive (the shortest detection interval of the
    /// shards they share). A standby VIP is taken over when its active node's agent has been silent
    /// for the VIP's takeoverAfter. Part of the content hash.
    /// </summary>
    [ListMap("node")]
    public List<NodeFailoverPeer> FailoverPeers { get; init; } = [];
}

/// <summary>A node whose agent this node's agent exchanges heartbeats with.</summary>
public sealed record NodeFailoverPeer
{
    /// <summary>The node's name.</summary>
    public required string Node { get; init; }
    /// <summary>The node's address (its InternalIP, else its ExternalIP).</summary>
    public required string Address { get; init; }
    /// <summary>How often this node's agent sends the peer a heartbeat.</summary>
    public required Duration Interval { get; init; }
}

/// <summary>A node this node's agent exchanges flows with.</summary>
public sealed record NodeSyncPeer
{
    /// <summary>The node's name.</summary>
    public required string Node { get; init; }
    /// <summary>The node's address (its InternalIP, else its ExternalIP).</summary>
    public required string Address { get; init; }
}

/// <summary>One BGP session of a node, and whose VIPs it carries.</summary>
public sealed record NodeBgpPeer
{
    /// <summary>The neighbour's address.</summary>
    public required string Address { get; init; }
    /// <summary>The neighbour's TCP port.</summary>
    public int Port { get; init; } = 179;
    /// <summary>The neighbour's autonomous system number.</summary>
    public required long Asn { get; init; }
    /// <summary>Our autonomous system number.</summary>
    public required long MyAsn { get; init; }
    /// <summary>The hold time we offer.</summary>
    public Duration HoldTime { get; init; } = new(TimeSpan.FromSeconds(9));
    /// <summary>The VipShards whose active VIPs on this node are advertised to this neighbour.</summary>
    [ListSet]
    public List<string> Shards { get; init; } = [];
}

/// <summary>One chunk of a node config.</summary>
public sealed record ChunkRef
{
    /// <summary>The XlbNodeConfigChunk's name: node name and content hash, so a chunk never changes once written.</summary>
    public required string Name { get; init; }
    /// <summary>SHA-256 of the chunk's content, lower-case hex.</summary>
    public required string Hash { get; init; }
}

/// <summary>
/// A part of a large XlbNodeConfig (every object must stay under the API server's size limit).
/// Content-addressed: the name carries the hash, a chunk is written once and never changed, and the
/// operator deletes it when no node config lists it any more. Written by the operator only.
/// </summary>
[Crd("xlbnodeconfigchunks", CrdScope.Cluster, ShortNames = ["xncc"])]
[PrinterColumn("Node", "string", ".spec.nodeName")]
[PrinterColumn("Listeners", "integer", ".spec.listenerCount")]
[PrinterColumn("Age", "date", ".metadata.creationTimestamp")]
public sealed record XlbNodeConfigChunk : IKubernetesObject
{
    public const string KindName = "XlbNodeConfigChunk";
    /// <summary>Label naming the node a chunk belongs to (agents select their chunks by it).</summary>
    public const string NodeLabel = "xlb.io/node";

    /// <summary>
    /// Chunks per page when listing them: a chunk holds up to the operator's chunk limit (256 KiB
    /// by default), so a page stays a few megabytes where the usual 500 objects could be 100 MB.
    /// </summary>
    public const int ListPageSize = 16;
    public string ApiVersion { get; init; } = XlbApi.ApiVersion;
    public string Kind { get; init; } = KindName;
    public required ObjectMeta Metadata { get; init; }
    public required XlbNodeConfigChunkSpec Spec { get; init; }
}

/// <summary>Some of a node's VIPs and listeners.</summary>
public sealed record XlbNodeConfigChunkSpec
{
    /// <summary>The node this chunk is for.</summary>
    public required string NodeName { get; init; }
    /// <summary>SHA-256 of the content (VIPs and listeners), lower-case hex.</summary>
    public required string Hash { get; init; }
    /// <summary>Number of listeners, for kubectl get.</summary>
    public int ListenerCount { get; init; }
    /// <summary>Some of the node's VIPs.</summary>
    public List<NodeVip> Vips { get; init; } = [];
    /// <summary>Some of the node's listeners.</summary>
    public List<Listener> Listeners { get; init; } = [];
}

[System.Text.Json.Serialization.JsonConverter(typeof(System.Text.Json.Serialization.JsonStringEnumConverter<VipRole>))]
public enum VipRole
{
    Active,
    Standby,
}

/// <summary>One VIP of a node.</summary>
public sealed record NodeVip
{
    /// <summary>The address.</summary>
    [JsonConverter(typeof(SharedStringConverter))]
    public required string Address { get; init; }
    /// <summary>Active: this node answers for it. Standby: ready to take over.</summary>
    public required VipRole Role { get; init; }
    /// <summary>The VipShard it belongs to.</summary>
    [JsonConverter(typeof(SharedStringConverter))]
    public required string Shard { get; init; }
    /// <summary>Standby only: the node the VIP is active on.</summary>
    public string? ActiveNode { get; init; }
    /// <summary>Standby only: this node's agent takes the VIP over when the active node's agent has sent no heartbeat for this long (the shard's detection interval × multiplier).</summary>
    public Duration? TakeoverAfter { get; init; }
}

/// <summary>One VIP:port served by this node, with everything the data plane needs.</summary>
public sealed record Listener
{
    /// <summary>namespace/mapping/port, for status and metrics.</summary>
    public required string Name { get; init; }
    /// <summary>The VIP.</summary>
    [JsonConverter(typeof(SharedStringConverter))]
    public required string Vip { get; init; }
    /// <summary>The port on the VIP.</summary>
    public required int Port { get; init; }
    /// <summary>TCP or UDP.</summary>
    public L4Protocol Protocol { get; init; } = L4Protocol.TCP;
    /// <summary>Backend selection for new flows.</summary>
    public SchedulingAlgorithm Algorithm { get; init; } = SchedulingAlgorithm.Maglev;
    /// <summary>Slots of the Maglev table (Maglev and SourceHash), a prime; unset: 1021.</summary>
    public int? MaglevTableSize { get; init; }
    /// <summary>Address translation.</summary>
    public NatMode NatMode { get; init; } = NatMode.FullNAT;
    /// <summary>DSR only: the encapsulation.</summary>
    public DsrEncapsulation? DsrEncapsulation { get; init; }
    /// <summary>FullNAT only: source addresses new flows are translated to besides the VIP, in the mapping's order; absent: the VIP alone.</summary>
    public List<string>? SourceAddresses { get; init; }
    /// <summary>Session affinity; absent: none.</summary>
    public AffinitySpec? Affinity { get; init; }
    /// <summary>How long a draining backend keeps its flows.</summary>
    public Duration DrainTimeout { get; init; } = new(TimeSpan.FromSeconds(30));
    /// <summary>The mapping's idle timeout of established TCP flows or UDP flows; absent: the agent's.</summary>
    public Duration? IdleTimeout { get; init; }
    /// <summary>Connection log sampling; absent: off.</summary>
    public ConnectionLogSpec? ConnectionLog { get; init; }
    /// <summary>True: this listener's established flows are sent to the node's flow-sync peers, and theirs taken in (its shard's flowSync); absent: off.</summary>
    public bool? FlowSync { get; init; }
    /// <summary>The backends, in a stable order.</summary>
    [JsonConverter(typeof(NodeBackendsConverter))]
    public List<NodeBackend> Backends { get; init; } = [];
    /// <summary>Active checks; without a port, each backend is checked on its own port. Absent: no checks.</summary>
    public HealthCheckSpec? HealthCheck { get; init; }
}

/// <summary>One backend of a listener: a value in its listener's list (a node config holds hundreds of thousands).</summary>
public readonly record struct NodeBackend
{
    public NodeBackend()
    {
    }

    /// <summary>The backend's address.</summary>
    public required string Address { get; init; }
    /// <summary>The backend's port (the mapping's targetPort, resolved).</summary>
    public required int Port { get; init; }
    /// <summary>Relative share of new flows.</summary>
    public int Weight { get; init; } = 1;
    /// <summary>A draining backend takes no new flows; its existing flows continue.</summary>
    public bool Draining { get; init; }
}

/// <summary>
/// A listener's backends, read and written by hand into the very JSON the serializer's contract
/// gives <see cref="NodeBackend"/> (address, port, weight, draining, in that order; weight 1 and
/// draining false when absent; the options' rule for unknown fields). A node config holds
/// hundreds of thousands of backends and every one is written to hash its listener: the
/// serializer boxes each value to reach its properties and keeps a frame per value.
/// </summary>
public sealed class NodeBackendsConverter : JsonConverter<List<NodeBackend>>
{
    public override List<NodeBackend> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            throw new JsonException("backends must be an array");
        }
        var list = new List<NodeBackend>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            list.Add(ReadOne(ref reader, options));
        }
        return list;
    }

    private static NodeBackend ReadOne(ref Utf8JsonReader reader, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartObject)
        {
            throw new JsonException("a backend must be an object");
        }
        string? address = null;
        int? port = null;
        var weight = 1;
        var draining = false;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            if (reader.ValueTextEquals("address"u8))
            {
                reader.Read();
                address = reader.TokenType == JsonTokenType.String ? reader.GetString() : throw new JsonException("a backend's address must be a string");
            }
            else if (reader.ValueTextEquals("port"u8))
            {
                reader.Read();
                port = Int(ref reader, "port");
            }
            else if (reader.ValueTextEquals("weight"u8))
            {
                reader.Read();
                weight = Int(ref reader, "weight");
            }
            else if (reader.ValueTextEquals("draining"u8))
            {
                reader.Read();
                draining = reader.TokenType switch
                {
                    JsonTokenType.True => true,
                    JsonTokenType.False => false,
                    _ => throw new JsonException("a backend's draining must be true or false"),
                };
            }
            else if (options.UnmappedMemberHandling == JsonUnmappedMemberHandling.Disallow)
            {
                throw new JsonException($"a backend has no field '{reader.GetString()}'");
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }
        if (address is null || port is null)
        {
            throw new JsonException("a backend needs an address and a port");
        }
        return new NodeBackend { Address = address, Port = port.Value, Weight = weight, Draining = draining };
    }

    private static int Int(ref Utf8JsonReader reader, string field) =>
        reader.TokenType == JsonTokenType.Number && reader.TryGetInt32(out var n) ? n : throw new JsonException($"a backend's {field} must be a whole number");

    public override void Write(Utf8JsonWriter writer, List<NodeBackend> value, JsonSerializerOptions options)
    {
        writer.WriteStartArray();
        foreach (var b in value)
        {
            writer.WriteStartObject();
            writer.WriteString("address"u8, b.Address);
            writer.WriteNumber("port"u8, b.Port);
            writer.WriteNumber("weight"u8, b.Weight);
            writer.WriteBoolean("draining"u8, b.Draining);
            writer.WriteEndObject();
        }
        writer.WriteEndArray();
    }
}

/// <summary>What the node's agent reports.</summary>
public sealed record XlbNodeConfigStatus
{
    /// <summary>The revision the data plane runs.</summary>
    public long AppliedRevision { get; init; }
    /// <summary>The content hash of that revision.</summary>
    public string AppliedHash { get; init; } = "";
    /// <summary>native or generic (XDP attach mode).</summary>
    public string? AttachMode { get; init; }
    /// <summary>Backends taken out of service by this node's health checks ("address:port").</summary>
    [ListSet]
    public List<string> UnhealthyBackends { get; init; } = [];
    /// <summary>Entries used in the data plane's maps, by map.</summary>
    public Dictionary<string, long>? MapUsage { get; init; }
    /// <summary>This node's BGP sessions (announcement mode BGP), by neighbour.</summary>
    [ListMap("peer")]
    public List<BgpSessionStatus> BgpSessions { get; init; } = [];
    /// <summary>The nodes this node's agent exchanges heartbeats with (failoverPeers), as it hears them.</summary>
    [ListMap("node")]
    public List<FailoverPeerStatus> FailoverPeers { get; init; } = [];
    /// <summary>Applied, Ready, Degraded.</summary>
    [ListMap("type")]
    public List<Condition> Conditions { get; init; } = [];
}

/// <summary>A failover peer as the agent hears it.</summary>
public sealed record FailoverPeerStatus
{
    /// <summary>The peer's node name.</summary>
    public required string Node { get; init; }
    /// <summary>Heard (a heartbeat within three intervals), Silent, Leaving (it drains), Unheard (never, since it became a peer: nothing is taken from it) or Unreachable (silent, but it renews its Lease: its VIPs stay with it).</summary>
    public required string State { get; init; }
    /// <summary>Standby VIPs of this node that it serves because the peer is silent or leaving.</summary>
    public int VipsTakenOver { get; init; }
}

/// <summary>One BGP session as the agent sees it.</summary>
public sealed record BgpSessionStatus
{
    /// <summary>The neighbour's address.</summary>
    public required string Peer { get; init; }
    /// <summary>Idle, Connect, OpenSent, OpenConfirm or Established.</summary>
    public required string State { get; init; }
    /// <summary>Host routes the neighbour holds from this node.</summary>
    public int AdvertisedRoutes { get; init; }
    /// <summary>Why the last session ended or failed, while it is not established.</summary>
    public string? LastError { get; init; }
}
