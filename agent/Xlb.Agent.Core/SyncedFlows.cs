using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>
/// One admitted flow as a node tells its peers of it: the client's flow key, where it goes
/// (backend, port, and the NAT source port of FullNAT), its state and mode, and how long ago its
/// last packet was (so the peer's copy idles out when the original would). Nothing in it is
/// local to the sending node: the receiver finds its own service id and backend index.
/// </summary>
public readonly record struct SyncedFlow(XlbFlowKey Key, Addr16 Backend, ushort BackendPortBe, ushort NatPortBe, byte State, byte Mode, uint IdleMs)
{
    /// <summary>How the connection ended, as far as it has (<see cref="SyncedFlows.CloseFlags"/>): the receiver frees its NAT port by the same rules.</summary>
    public byte Closed { get; init; }

    /// <summary>The sender holds it as a copy from a peer (not on the wire: the receiver marks what it writes as copies anyway).</summary>
    public bool Copy { get; init; }

    /// <summary>
    /// The FullNAT source it took (<see cref="XlbFlow.Snat"/>): 0 the VIP, i the listener's source
    /// address i - 1, which is the same address on every node (the mapping's order). A byte that
    /// was always zero before, so older agents send and read flows from the VIP as they did.
    /// </summary>
    public byte Snat { get; init; }
}

/// <summary>
/// Flow synchronisation between the LB nodes of a shard (<c>flowSync.enabled</c>). The agent of a
/// node walks its admitted-flow table now and then and sends the flows of synchronised services
/// that saw a packet since its last walk to the shard's other nodes, over UDP; their agents write
/// them into their own flow tables (and reverse translations), so that when a VIP moves to one of
/// them, its established connections keep their backend and their NAT port. Pure: the datagram
/// format, what to send, and what to write.
/// </summary>
public static class SyncedFlows
{
    /// <summary>The UDP port agents send flows to and listen on by default.</summary>
    public const int DefaultPort = 9476;

    /// <summary>"XLBF"; the header's count is the number of records (<see cref="PeerDatagrams"/>).</summary>
    private const uint Magic = 0x584c4246;
    private const byte Version = 1;
    public const int HeaderBytes = PeerDatagrams.HeaderBytes;
    public const int RecordBytes = 68;
    /// <summary>An authenticated datagram's trailer (<see cref="PeerDatagrams"/>).</summary>
    public const int AuthBytes = PeerDatagrams.Bytes;
    /// <summary>Records per datagram: a datagram stays within 1,400 bytes (no fragmentation on usual links).</summary>
    public const int RecordsPerDatagram = (1400 - HeaderBytes - AuthBytes) / RecordBytes;
    /// <summary>The flow flags that say how a connection ended; a copy carries them.</summary>
    public const byte CloseFlags = XlbAbi.FlowFinClient | XlbAbi.FlowFinBackend | XlbAbi.FlowTimeWait | XlbAbi.FlowReset;

    /// <summary>
    /// The datagrams that carry <paramref name="flows"/>. With a <paramref name="key"/> each is
    /// authenticated: it ends with <paramref name="unixMs"/> (the sending time) and a tag the
    /// receiver checks with the same key (<see cref="Decode"/>).
    /// </summary>
    public static List<byte[]> Encode(IReadOnlyList<SyncedFlow> flows, byte[]? key = null, long unixMs = 0)
    {
        var datagrams = new List<byte[]>();
        var trailer = key is null ? 0 : AuthBytes;
        for (var start = 0; start < flows.Count; start += RecordsPerDatagram)
        {
            var n = Math.Min(RecordsPerDatagram, flows.Count - start);
            var d = new byte[HeaderBytes + n * RecordBytes + trailer];
            PeerDatagrams.WriteHeader(d, Magic, Version, 0, key is not null, (ushort)n);
            for (var i = 0; i < n; i++)
            {
                var f = flows[start + i];
                var r = d.AsSpan(HeaderBytes + i * RecordBytes, RecordBytes);
                var flowKey = f.Key;
                MemoryMarshal.AsBytes(MemoryMarshal.CreateSpan(ref flowKey, 1)).CopyTo(r);
                var backend = f.Backend;
                MemoryMarshal.Write(r[40..], in backend);
                // Ports stay in network order, as the maps hold them.
                MemoryMarshal.Write(r[56..], f.BackendPortBe);
                MemoryMarshal.Write(r[58..], f.NatPortBe);
                r[60] = f.State;
                r[61] = f.Mode;
                r[62] = (byte)(f.Closed & CloseFlags);
                r[63] = f.Snat;
                BinaryPrimitives.WriteUInt32BigEndian(r[64..], f.IdleMs);
            }
            if (key is not null)
            {
                PeerDatagrams.Seal(d, HeaderBytes + n * RecordBytes, key, unixMs);
            }
            datagrams.Add(d);
        }
        return datagrams;
    }

    /// <summary>
    /// The flows of one datagram; a datagram that is not one throws <see cref="FormatException"/>.
    /// With a <paramref name="key"/> only an authenticated datagram is taken, whose tag the key
    /// makes and whose sending time is within <see cref="PeerDatagrams.MaxClockSkew"/> of <paramref name="nowUnixMs"/>;
    /// without one, only an unauthenticated datagram (a peer with a key and one without do not
    /// understand each other, and say so).
    /// </summary>
    public static List<SyncedFlow> Decode(ReadOnlySpan<byte> d, byte[]? key = null, long nowUnixMs = 0) =>
        Decode(d, key is null ? [] : [key], nowUnixMs);

    /// <summary>
    /// <see cref="Decode(ReadOnlySpan{byte}, byte[], long)"/> with any of <paramref name="keys"/>
    /// (the current key and the one before it, while a new key reaches every node); none: unauthenticated.
    /// </summary>
    public static List<SyncedFlow> Decode(ReadOnlySpan<byte> d, IReadOnlyList<byte[]> keys, long nowUnixMs)
    {
        var (_, n) = PeerDatagrams.ReadHeader(d, Magic, Version, keys.Count > 0, "flow-sync datagram");
        var authenticated = keys.Count > 0;
        var end = HeaderBytes + n * RecordBytes;
        if (d.Length != end + (authenticated ? AuthBytes : 0))
        {
            throw new FormatException($"a datagram of {d.Length} bytes cannot hold {n} flows");
        }
        if (authenticated)
        {
            PeerDatagrams.Check(d, end, keys, nowUnixMs, "flow-sync key");
        }
        var flows = new List<SyncedFlow>(n);
        for (var i = 0; i < n; i++)
        {
            var r = d.Slice(HeaderBytes + i * RecordBytes, RecordBytes);
            var flowKey = MemoryMarshal.Read<XlbFlowKey>(r);
            if (flowKey.Family is not (XlbAbi.FamilyV4 or XlbAbi.FamilyV6) || flowKey.Proto is not (XlbAbi.ProtoTcp or XlbAbi.ProtoUdp) || flowKey.Pad0 != 0 || flowKey.Pad1 != 0)
            {
                throw new FormatException($"flow {i} has family {flowKey.Family}, protocol {flowKey.Proto}");
            }
            flows.Add(new SyncedFlow(flowKey, MemoryMarshal.Read<Addr16>(r[40..]), MemoryMarshal.Read<ushort>(r[56..]), MemoryMarshal.Read<ushort>(r[58..]),
                r[60], r[61], BinaryPrimitives.ReadUInt32BigEndian(r[64..])) { Closed = (byte)(r[62] & CloseFlags), Snat = r[63] });
        }
        return flows;
    }

    /// <summary>
    /// What a walk of the admitted-flow table sends: the flows of <paramref name="services"/> (by
    /// id) whose last packet came at or after <paramref name="sinceNs"/> (0: all of them), and that
    /// are this node's own (not copies a peer sent). A flow that began closing is sent too: the
    /// peer's copy then expires on the closing timeout, as the original does, instead of the
    /// established one.
    /// </summary>
    public static List<SyncedFlow> Select(IEnumerable<KeyValuePair<XlbFlowKey, XlbFlow>> flows, IReadOnlySet<uint> services, ulong sinceNs, ulong nowNs, bool copies = false)
    {
        var list = new List<SyncedFlow>();
        foreach (var (key, f) in flows)
        {
            // A copy from a peer is not sent on (nor back: the peers would echo each other's
            // flows), except to a peer that returns (FlowSyncer.ResendAll).
            var copy = (f.Flags & XlbAbi.FlowSynced) != 0;
            if (services.Contains(f.SvcId) && f.LastSeenNs >= sinceNs && (copies || !copy))
            {
                var idleMs = nowNs > f.LastSeenNs ? (uint)Math.Min((nowNs - f.LastSeenNs) / 1_000_000, uint.MaxValue) : 0;
                list.Add(new SyncedFlow(key, f.Backend, f.BackendPortBe, f.NatPortBe, f.State, f.Mode, idleMs) { Closed = (byte)(f.Flags & CloseFlags), Snat = f.Snat, Copy = copy });
            }
        }
        return list;
    }

    /// <summary>
    /// How often a walk sends every flow, not only those seen since the walk before, by default
    /// (the agent's --flow-sync-full-resend): datagrams can be lost (UDP), which no later walk
    /// would make up for an idle flow. A peer heard again after a silence (it restarted) gets
    /// every flow at once.
    /// </summary>
    public static readonly TimeSpan FullResendEvery = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Where the walk after the one that began at <paramref name="walkStartNs"/> starts to send:
    /// one interval earlier. A flow's last-seen time is the program's coarse clock, which lags the
    /// agent's by up to a tick, and a flow admitted while a walk runs may be behind the walk's
    /// cursor; without the overlap such a flow is never sent while it stays idle (seen at 30 s: a
    /// held connection reached the peer only with its close).
    /// </summary>
    public static ulong NextSince(ulong walkStartNs, TimeSpan interval)
    {
        var overlap = (ulong)interval.Ticks * 100;
        return walkStartNs > overlap ? walkStartNs - overlap : 0;
    }

    /// <summary>
    /// The flow-table and reverse-translation entries this node writes for flows a peer sent:
    /// each becomes a flow of this node's service on the same VIP, port and protocol, to this
    /// node's index of the same backend, marked as a copy. A flow is left out (counted in Skipped)
    /// when this node has no such service, the service does not synchronise, its mode differs, it
    /// has no such backend (a peer whose config is not this node's cannot place flows here), it
    /// has a flow of its own under that key, or the flow took a source address the service does
    /// not have here.
    /// </summary>
    /// <param name="snat">The source addresses of this node's services that have more than the VIP, by service id.</param>
    /// <param name="services">This node's services in the active generation, by generation-free key.</param>
    /// <param name="backends">This node's backend slots in the active generation, slot 1 first.</param>
    /// <param name="synchronised">Ids of the services that synchronise.</param>
    /// <param name="isOwn">Whether this node has a flow of its own (not a copy) under a key: a copy never replaces it.</param>
    public static (List<KeyValuePair<XlbFlowKey, XlbFlow>> Flows, List<KeyValuePair<XlbFlowKey, XlbRnat>> Reverse, int Skipped) Import(
        IReadOnlyList<SyncedFlow> flows, IReadOnlyDictionary<XlbSvcKey, XlbSvc> services, IReadOnlyList<XlbBackend> backends,
        IReadOnlySet<uint> synchronised, byte activeGen, uint backendSlots, ulong nowNs, Func<XlbFlowKey, bool>? isOwn = null,
        IReadOnlyDictionary<uint, XlbSnat>? snat = null)
    {
        var index = new Dictionary<(Addr16, ushort, byte), int>();
        for (var i = 0; i < backends.Count; i++)
        {
            if (backends[i].Family != 0)
            {
                index.TryAdd((backends[i].Addr, backends[i].PortBe, backends[i].Family), i + 1);
            }
        }
        var written = new List<KeyValuePair<XlbFlowKey, XlbFlow>>(flows.Count);
        var reverse = new List<KeyValuePair<XlbFlowKey, XlbRnat>>(flows.Count);
        var skipped = 0;
        foreach (var s in flows)
        {
            var k = s.Key;
            var svcKey = new XlbSvcKey { Vip = k.Daddr, PortBe = k.DportBe, Proto = k.Proto, Family = k.Family };
            if (!services.TryGetValue(svcKey, out var svc) || !synchronised.Contains(svc.Id) || svc.Mode != s.Mode
                || !index.TryGetValue((s.Backend, s.BackendPortBe, k.Family), out var backend) || isOwn?.Invoke(k) == true
                || s.Snat != 0 && (s.Mode != XlbAbi.ModeFullNat || snat?.GetValueOrDefault(svc.Id).At(s.Snat - 1) is null))
            {
                skipped++;
                continue;
            }
            var flow = new XlbFlow
            {
                Backend = s.Backend,
                BackendPortBe = s.BackendPortBe,
                NatPortBe = s.NatPortBe,
                Snat = s.Snat,
                SvcId = svc.Id,
                LastSeenNs = nowNs - Math.Min(nowNs, (ulong)s.IdleMs * 1_000_000),
                NhSlot = activeGen * backendSlots + (uint)backend,
                State = s.State,
                Mode = s.Mode,
                // A copy; and not one of its backend's open flows here (LeastConn counts what this
                // node admitted): uncounted, its FIN takes nothing off either. How it ended, if it
                // has: this node frees its NAT port by the same rules.
                Flags = (byte)(XlbAbi.FlowSynced | (s.Closed & CloseFlags)),
            };
            written.Add(new(k, flow));
            if (s.Mode is XlbAbi.ModeFullNat or XlbAbi.ModeDnat)
            {
                // As the program keys it (rnat_key_of): FullNAT backend -> source:NAT port, DNAT backend -> client.
                var rk = s.Mode == XlbAbi.ModeDnat
                    ? new XlbFlowKey { Saddr = s.Backend, Daddr = k.Saddr, SportBe = s.BackendPortBe, DportBe = k.SportBe, Proto = k.Proto, Family = k.Family }
                    : new XlbFlowKey { Saddr = s.Backend, Daddr = NodeStatus.SourceOf(k, flow, snat), SportBe = s.BackendPortBe, DportBe = s.NatPortBe, Proto = k.Proto, Family = k.Family };
                reverse.Add(new(rk, new XlbRnat { Vip = k.Daddr, Client = k.Saddr, VipPortBe = k.DportBe, ClientPortBe = k.SportBe, SvcId = svc.Id, Backend = (uint)backend }));
            }
        }
        return (written, reverse, skipped);
    }
}
