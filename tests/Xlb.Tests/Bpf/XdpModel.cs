using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using Xlb.Cli.Testbed;
using Xlb.DataPlane;

namespace Xlb.Tests.Bpf;

/// <summary>
/// A small, pure model of what the XDP program must do with one packet, for FullNAT services:
/// the verdict, the reason counters, and the packet it must leave. It keeps its own view of the
/// flow and reverse-NAT tables, learning each new flow's backend and NAT port from the
/// program's output (which backend Maglev picks is not modelled; that it is one of the
/// service's, and stays the same for the flow, is). The kernel's FIB is modelled only for the
/// test's own client: a reply to any other address may be redirected or passed (rewritten),
/// and the checker accepts either.
/// </summary>
public sealed class XdpModel(IReadOnlyList<XdpModel.Service> services, FilterImage filter, ushort natMin, ushort natMax, Func<byte[], byte[]?> clientMac)
{
    public sealed record Service(byte[] Vip, ushort Port, byte Proto, IReadOnlyList<byte[]> Backends, ushort TargetPort, Func<byte[], (byte[] Dst, byte[] Src)> BackendMacs);

    public enum Outcome { Unchanged, ToBackend, ToClient, Answer }

    /// <summary>The MAC of the interface the test run's packets come in on: ARP and neighbour solicitations for the VIPs are answered with it.</summary>
    public byte[]? InterfaceMac { get; init; }

    /// <summary>The VLANs (TPID, id) the ingress interface has devices for, with their MACs: the answers on them carry these.</summary>
    public IReadOnlyDictionary<(ushort Tpid, ushort Vid), byte[]> VlanMacs { get; init; } = new Dictionary<(ushort, ushort), byte[]>();

    public sealed class Flow
    {
        public required Service Service { get; init; }
        public required byte[] Client { get; init; }
        public required ushort ClientPort { get; init; }
        public byte State { get; set; }
        /// <summary>How the connection ended (XLB_FLOW_F_FIN_CLIENT, _FIN_BACKEND, _TIME_WAIT, _RESET).</summary>
        public byte Flags { get; set; }
        /// <summary>When a packet of the client last went by it (Stopwatch ticks): the program's last_seen_ns.</summary>
        public long LastSeen { get; set; }
        public byte[]? Backend { get; set; }
        public ushort NatPort { get; set; }
    }

    public sealed record Expectation(int Verdict, IReadOnlyList<XlbStat> Reasons, Outcome Outcome)
    {
        public Flow? Flow { get; init; }
        /// <summary>A new flow the packet created but did not show (it passed): learn it from the flow table.</summary>
        public Flow? Unobserved { get; init; }
        /// <summary>A redirect or a pass of the rewritten packet: the FIB answer is not modelled.</summary>
        public bool FibOpen { get; init; }
        public int L3 { get; init; } = 14;
        public int L4 { get; init; }
        public bool V6 { get; init; }
        public byte Proto { get; init; }
        /// <summary>For <see cref="Outcome.Answer"/>: the exact frame the program must send back.</summary>
        public byte[]? Answer { get; init; }
        /// <summary>The VLAN tag the packet came with (4 bytes after the MACs); the rest of the expectation is about the frame without it.</summary>
        public byte[]? Tag { get; init; }
    }

    private readonly Dictionary<string, Flow> _flows = [];
    private readonly Dictionary<string, Flow> _rnat = [];

    public int FlowCount => _flows.Count;

    /// <summary>New flows that took the NAT port of a connection that had ended (see <see cref="Learn"/>).</summary>
    public int Takeovers { get; private set; }

    public const int Drop = 1, Pass = 2, Redirect = 4;

    public void Reset()
    {
        _flows.Clear();
        _rnat.Clear();
    }

    private static string Key(ReadOnlySpan<byte> src, ReadOnlySpan<byte> dst, ushort sport, ushort dport, byte proto) =>
        $"{Convert.ToHexString(src)}>{Convert.ToHexString(dst)}:{sport}>{dport}/{proto}";

    private static Expectation Unchanged(int verdict, params XlbStat[] reasons) => new(verdict, reasons, Outcome.Unchanged);

    /// <summary>
    /// One VLAN tag is read past: a frame with one is predicted as the frame without it (answered
    /// with its VLAN's MAC, if the interface has a device for it); a second tag is the kernel's.
    /// </summary>
    public Expectation Predict(byte[] p)
    {
        var ether = BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(12));
        if (ether is XlbAbi.Vlan8021Q or XlbAbi.Vlan8021Ad)
        {
            if (p.Length < 18)
            {
                return Unchanged(Pass, XlbStat.PassTruncated);
            }
            if (BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(16)) is XlbAbi.Vlan8021Q or XlbAbi.Vlan8021Ad)
            {
                return Unchanged(Pass, XlbStat.PassVlanStacked);
            }
            var vid = (ushort)(BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(14)) & 0x0fff);
            return PredictFrame([.. p.AsSpan(0, 12), .. p.AsSpan(16)], VlanMacs.GetValueOrDefault((ether, vid))) with { Tag = p[12..16] };
        }
        return PredictFrame(p, InterfaceMac);
    }

    private Expectation PredictFrame(byte[] p, byte[]? ownMac)
    {
        var ether = BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(12));
        return ether switch
        {
            0x0800 => Predict4(p),
            0x86dd => Predict6(p, ownMac),
            0x0806 => PredictArp(p, ownMac),
            _ => Unchanged(Pass, XlbStat.PassNonIp),
        };
    }

    private bool ActiveVip(ReadOnlySpan<byte> address)
    {
        foreach (var s in services)
        {
            if (s.Vip.AsSpan().SequenceEqual(address))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>An Ethernet/IPv4 request for a VIP, not from the VIP itself, is answered in place (RFC 826).</summary>
    private Expectation PredictArp(byte[] p, byte[]? ownMac)
    {
        byte[] request = [0, 1, 0x08, 0x00, 6, 4, 0, 1];
        if (p.Length < 42 || !p.AsSpan(14, 8).SequenceEqual(request) || ownMac is null ||
            !ActiveVip(p.AsSpan(38, 4)) || p.AsSpan(28, 4).SequenceEqual(p.AsSpan(38, 4)))
        {
            return Unchanged(Pass, XlbStat.PassNonIp);
        }
        var a = (byte[])p.Clone();
        p.AsSpan(6, 6).CopyTo(a);
        ownMac.CopyTo(a, 6);
        a[21] = 2;
        ownMac.CopyTo(a, 22);
        p.AsSpan(38, 4).CopyTo(a.AsSpan(28));
        p.AsSpan(22, 6).CopyTo(a.AsSpan(32));
        p.AsSpan(28, 4).CopyTo(a.AsSpan(38));
        return new(Redirect, [XlbStat.TxArpReply], Outcome.Answer) { Answer = a };
    }

    /// <summary>
    /// A neighbour solicitation for a VIP in the one form every host sends (hop limit 255, a
    /// source address, one source link-layer option) gets a solicited advertisement; null: not answered.
    /// </summary>
    private Expectation? PredictSolicitation(byte[] p, byte[]? ownMac)
    {
        if (p.Length < 14 + 40 + 32 || p[20] != 58 || p[21] != 255 || BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(18)) != 32 ||
            p[54] != 135 || p[55] != 0 || p[78] != 1 || p[79] != 1 || !p.AsSpan(22, 16).ContainsAnyExcept((byte)0) ||
            ownMac is null || !ActiveVip(p.AsSpan(62, 16)))
        {
            return null;
        }
        var a = (byte[])p.Clone();
        p.AsSpan(6, 6).CopyTo(a);
        ownMac.CopyTo(a, 6);
        p.AsSpan(62, 16).CopyTo(a.AsSpan(22));
        p.AsSpan(22, 16).CopyTo(a.AsSpan(38));
        a[54] = 136;
        a.AsSpan(58, 4).Clear();
        a[58] = 0x60;
        a[78] = 2;
        ownMac.CopyTo(a, 80);
        Packet.SetIcmp6Checksum(a);
        return new(Redirect, [XlbStat.TxNdAdvert], Outcome.Answer) { Answer = a };
    }

    private Expectation Predict4(byte[] p)
    {
        if (p.Length < 34)
        {
            return Unchanged(Pass, XlbStat.PassTruncated);
        }
        var src = p.AsSpan(26, 4);
        var dst = p.AsSpan(30, 4);
        var toVip = filter.MayBeVip(new IPAddress(dst));
        if (!toVip && !filter.MayBeReplySource(new IPAddress(src)))
        {
            return Unchanged(Pass, XlbStat.PassNotVip);
        }
        var ihl = (p[14] & 0xf) * 4;
        var totLen = BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(16));
        if (ihl < 20 || 14 + ihl > p.Length || totLen < ihl || 14 + totLen > p.Length)
        {
            return Unchanged(Pass, XlbStat.PassTruncated);
        }
        var proto = p[23];
        if (proto is not (6 or 17))
        {
            return Unchanged(Pass, XlbStat.PassNotTcpUdp);
        }
        if ((BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(20)) & 0x3fff) != 0)
        {
            return Unchanged(Pass, XlbStat.PassFragment);
        }
        var l4 = 14 + ihl;
        if (l4 + (proto == 6 ? 20 : 8) > Math.Min(p.Length, 14 + totLen))
        {
            return Unchanged(Drop, XlbStat.DropTruncatedL4);
        }
        return Serve(p, src.ToArray(), dst.ToArray(), l4, proto, toVip, p[22], v6: false);
    }

    private Expectation Predict6(byte[] p, byte[]? ownMac)
    {
        if (p.Length < 54)
        {
            return Unchanged(Pass, XlbStat.PassTruncated);
        }
        if (PredictSolicitation(p, ownMac) is { } answered)
        {
            return answered;
        }
        var src = p.AsSpan(22, 16);
        var dst = p.AsSpan(38, 16);
        var toVip = filter.MayBeVip(new IPAddress(dst));
        if (!toVip && !filter.MayBeReplySource(new IPAddress(src)))
        {
            return Unchanged(Pass, XlbStat.PassNotVip);
        }
        var l3End = 14 + 40 + BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(18));
        if (l3End > p.Length)
        {
            return Unchanged(Pass, XlbStat.PassTruncated);
        }
        var next = p[20];
        var off = 40;
        for (var i = 0; i <= XlbAbi.Ipv6ExtMax; i++)
        {
            var l4Proto = next is 6 or 17;
            if (!l4Proto)
            {
                if (next == 44)
                {
                    return Unchanged(Pass, XlbStat.PassFragment);
                }
                if (next is not (0 or 43 or 60))
                {
                    return Unchanged(Pass, XlbStat.PassNotTcpUdp);
                }
                if (i == XlbAbi.Ipv6ExtMax)
                {
                    return Unchanged(Pass, XlbStat.PassIpv6Ext);
                }
            }
            if (14 + off + 8 > p.Length)
            {
                return l4Proto ? Unchanged(Drop, XlbStat.DropTruncatedL4) : Unchanged(Pass, XlbStat.PassTruncated);
            }
            if (l4Proto)
            {
                break;
            }
            if (next == 43 && p[14 + off + 3] != 0)
            {
                return Unchanged(Pass, XlbStat.PassIpv6Ext);
            }
            next = p[14 + off];
            off += (p[14 + off + 1] + 1) * 8;
        }
        if (off > 0x7ff)
        {
            return Unchanged(Pass, XlbStat.PassIpv6Ext);
        }
        var l4 = 14 + off;
        if (l4 + (next == 6 ? 20 : 8) > Math.Min(p.Length, l3End))
        {
            return Unchanged(Drop, XlbStat.DropTruncatedL4);
        }
        if (next == 17 && BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(l4 + 6)) == 0)
        {
            return Unchanged(Drop, XlbStat.DropUdp6NoChecksum);
        }
        return Serve(p, src.ToArray(), dst.ToArray(), l4, next, toVip, p[21], v6: true);
    }

    private Expectation Serve(byte[] p, byte[] src, byte[] dst, int l4, byte proto, bool toVip, byte ttl, bool v6)
    {
        var sport = BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(l4));
        var dport = BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(l4 + 2));
        var flags = proto == 6 ? p[l4 + 13] : (byte)0;
        var key = Key(src, dst, sport, dport, proto);
        var shape = new Expectation(0, [], Outcome.Unchanged) { L4 = l4, V6 = v6, Proto = proto };

        if (!toVip)
        {
            return _rnat.TryGetValue(key, out var r0) ? ToClient(shape, r0, flags, ttl) : Unchanged(Pass, XlbStat.PassNotVip);
        }
        if (dport >= natMin && dport <= natMax && _rnat.TryGetValue(key, out var r))
        {
            return ToClient(shape, r, flags, ttl);
        }

        var reasons = new List<XlbStat>();
        var syn = proto == 6 && (flags & (Packet.Syn | Packet.Ack)) == Packet.Syn;
        if (_flows.TryGetValue(key, out var flow))
        {
            if (!(syn && flow.State == XlbAbi.FlowClosing))
            {
                if ((flags & (Packet.Fin | Packet.Rst)) != 0)
                {
                    flow.State = XlbAbi.FlowClosing;
                    MarkClose(flow, flags, fromBackend: false);
                }
                else if (!syn && flow.State == XlbAbi.FlowNew && proto == 6)
                {
                    flow.State = XlbAbi.FlowEstablished;
                }
                flow.LastSeen = Stopwatch.GetTimestamp();
                reasons.Add(XlbStat.FwdEstablished);
                return ToBackend(shape, reasons, flow, ttl);
            }
            reasons.Add(XlbStat.FwdExpiredFlow);
            _flows.Remove(key);
            if (flow.Backend is { } b)
            {
                _rnat.Remove(Key(b, dst, flow.Service.TargetPort, flow.NatPort, proto));
            }
        }

        var service = services.FirstOrDefault(s => s.Proto == proto && s.Port == dport && s.Vip.AsSpan().SequenceEqual(dst));
        if (service is null)
        {
            reasons.Add(XlbStat.PassNotVip);
            return new Expectation(Pass, reasons, Outcome.Unchanged);
        }
        flow = new Flow
        {
            Service = service, Client = src, ClientPort = sport,
            State = proto == 6 && !syn ? XlbAbi.FlowEstablished : XlbAbi.FlowNew,
        };
        flow.LastSeen = Stopwatch.GetTimestamp();
        _flows[key] = flow;
        reasons.Add(XlbStat.FwdNewFlow);
        return ToBackend(shape, reasons, flow, ttl);
    }

    private static Expectation ToBackend(Expectation shape, List<XlbStat> reasons, Flow flow, byte ttl)
    {
        if (ttl <= 1)
        {
            reasons.Add(XlbStat.PassTtlExpired);
            return shape with { Verdict = Pass, Reasons = reasons, Outcome = Outcome.Unchanged, Unobserved = flow.Backend is null ? flow : null };
        }
        reasons.Add(XlbStat.Redirect);
        return shape with { Verdict = Redirect, Reasons = reasons, Outcome = Outcome.ToBackend, Flow = flow };
    }

    private Expectation ToClient(Expectation shape, Flow flow, byte flags, byte ttl)
    {
        List<XlbStat> reasons = [XlbStat.FwdReply];
        if ((flags & (Packet.Fin | Packet.Rst)) != 0)
        {
            flow.State = XlbAbi.FlowClosing;
            MarkClose(flow, flags, fromBackend: true);
        }
        if (ttl <= 1)
        {
            reasons.Add(XlbStat.PassTtlExpired);
            return shape with { Verdict = Pass, Reasons = reasons, Outcome = Outcome.Unchanged };
        }
        var known = clientMac(flow.Client) is not null;
        if (known)
        {
            reasons.Add(XlbStat.Redirect);
        }
        return shape with { Verdict = Redirect, Reasons = reasons, Outcome = Outcome.ToClient, Flow = flow, FibOpen = !known };
    }

    /// <summary>Compares the program's answer with the expectation; null when they agree. Learns new flows.</summary>
    public string? Check(Expectation e, byte[] input, int verdict, byte[] output)
    {
        if (e.Tag is { } tag && e.Outcome != Outcome.Unchanged)
        {
            // Every next hop here is untagged: a forwarded packet loses its tag; an answer, or a
            // rewritten packet left to the kernel, keeps it.
            var tagged = output.Length >= 16 && output.AsSpan(12, 4).SequenceEqual(tag);
            var keeps = e.Outcome == Outcome.Answer || verdict != Redirect;
            if (tagged != keeps)
            {
                return $"the VLAN tag was {(tagged ? "kept" : "not kept")} (verdict {verdict}, {e.Outcome})";
            }
            input = [.. input.AsSpan(0, 12), .. input.AsSpan(16)];
            output = keeps ? [.. output.AsSpan(0, 12), .. output.AsSpan(16)] : output;
        }
        if (e.Outcome == Outcome.Unchanged)
        {
            if (verdict != e.Verdict)
            {
                return $"verdict {verdict}, expected {e.Verdict} ({string.Join(",", e.Reasons)})";
            }
            return output.AsSpan().SequenceEqual(input) ? null : "the packet changed";
        }
        if (e.Outcome == Outcome.Answer)
        {
            return verdict != e.Verdict ? $"verdict {verdict}, expected an answer ({e.Reasons[0]})"
                : output.AsSpan().SequenceEqual(e.Answer) ? null
                : $"answer {Convert.ToHexString(output)}, expected {Convert.ToHexString(e.Answer!)}";
        }
        var flow = e.Flow!;
        if (!(verdict == e.Verdict || (e.FibOpen && verdict == Pass)))
        {
            return $"verdict {verdict}, expected {e.Verdict} ({e.Outcome})";
        }
        if (output.Length != input.Length)
        {
            return $"length {output.Length}, expected {input.Length}";
        }
        var (srcAt, dstAt, alen, ttlAt) = e.V6 ? (22, 38, 16, 21) : (26, 30, 4, 22);
        var expected = (byte[])input.Clone();
        byte[] newSrc, newDst;
        ushort newSport, newDport;
        if (e.Outcome == Outcome.ToBackend)
        {
            if (flow.Backend is null && Learn(flow, output.AsSpan(dstAt, alen).ToArray(), BinaryPrimitives.ReadUInt16BigEndian(output.AsSpan(e.L4))) is { } bad)
            {
                return bad;
            }
            var backend = flow.Backend!;
            (newSrc, newDst, newSport, newDport) = (flow.Service.Vip, backend, flow.NatPort, flow.Service.TargetPort);
            var (dmac, smac) = flow.Service.BackendMacs(backend);
            dmac.CopyTo(expected, 0);
            smac.CopyTo(expected, 6);
        }
        else
        {
            (newSrc, newDst, newSport, newDport) = (flow.Service.Vip, flow.Client, flow.Service.Port, flow.ClientPort);
            if (verdict == Redirect && clientMac(flow.Client) is { } macs)
            {
                macs.AsSpan(0, 6).CopyTo(expected);
                macs.AsSpan(6, 6).CopyTo(expected.AsSpan(6));
            }
        }
        newSrc.CopyTo(expected, srcAt);
        newDst.CopyTo(expected, dstAt);
        BinaryPrimitives.WriteUInt16BigEndian(expected.AsSpan(e.L4), newSport);
        BinaryPrimitives.WriteUInt16BigEndian(expected.AsSpan(e.L4 + 2), newDport);
        if (verdict == Redirect)
        {
            expected[ttlAt]--;
            if (e.FibOpen)
            {
                // The FIB chose the MACs for an address the model does not route.
                output.AsSpan(0, 12).CopyTo(expected);
            }
        }
        var sumAt = e.L4 + (e.Proto == 6 ? 16 : 6);
        var ignore = e.V6 ? [sumAt, sumAt + 1] : new[] { 24, 25, sumAt, sumAt + 1 };
        for (var i = 0; i < expected.Length; i++)
        {
            if (expected[i] != output[i] && !ignore.Contains(i))
            {
                return $"byte {i} is {output[i]:x2}, expected {expected[i]:x2}";
            }
        }
        if (!e.V6 && HeaderValid(input) != HeaderValid(output))
        {
            return "the IPv4 header checksum changed validity";
        }
        var inSum = BinaryPrimitives.ReadUInt16BigEndian(input.AsSpan(sumAt));
        if (!e.V6 && e.Proto == 17 && inSum == 0)
        {
            return BinaryPrimitives.ReadUInt16BigEndian(output.AsSpan(sumAt)) == 0 ? null : "an absent UDP checksum appeared";
        }
        return L4Valid(input, e) == L4Valid(output, e) ? null : "the L4 checksum changed validity";
    }

    /// <summary>The backend and NAT port the program gave a new flow: one of the service's, within the range.</summary>
    public string? Learn(Flow flow, byte[] backend, ushort nat)
    {
        if (!flow.Service.Backends.Any(b => b.AsSpan().SequenceEqual(backend)))
        {
            return $"flow bound to {new IPAddress(backend)}, not a backend of the service";
        }
        if (nat < natMin || nat > natMax)
        {
            return $"NAT port {nat} outside {natMin}-{natMax}";
        }
        var rkey = Key(backend, flow.Service.Vip, flow.Service.TargetPort, nat, flow.Service.Proto);
        if (_rnat.TryGetValue(rkey, out var held) && held != flow)
        {
            // The port of a connection that ended at both ends, or of a TCP handshake that never
            // completed, may be taken once it has been quiet long enough (the program then drops
            // that flow): 2 s, or 65 s if the backend closed first (nat_port_free in xlb.c).
            // Half a second of slack for the two clocks.
            var halfOpen = held.Service.Proto == 6 && held.State == XlbAbi.FlowNew;
            var closed = halfOpen || (held.Flags & XlbAbi.FlowReset) != 0 ||
                (held.Flags & (XlbAbi.FlowFinClient | XlbAbi.FlowFinBackend)) == (XlbAbi.FlowFinClient | XlbAbi.FlowFinBackend);
            var timeWait = !halfOpen && (held.Flags & (XlbAbi.FlowTimeWait | XlbAbi.FlowReset)) == XlbAbi.FlowTimeWait;
            var quiet = Stopwatch.GetElapsedTime(held.LastSeen);
            if (!closed || quiet < TimeSpan.FromSeconds(timeWait ? 64.5 : 1.5))
            {
                return $"NAT port {nat} toward {new IPAddress(backend)} given to a new flow while a connection (flags {held.Flags:x2}, quiet {quiet.TotalSeconds:F1} s) holds it";
            }
            _flows.Remove(Key(held.Client, held.Service.Vip, held.ClientPort, held.Service.Port, held.Service.Proto));
            Takeovers++;
        }
        flow.Backend = backend;
        flow.NatPort = nat;
        _rnat[rkey] = flow;
        return null;
    }

    /// <summary>A FIN or RST of the client or of the backend: how the connection ends (mark_close in xlb.c).</summary>
    private static void MarkClose(Flow flow, byte tcpFlags, bool fromBackend) =>
        flow.Flags |= (tcpFlags & Packet.Rst) != 0 ? XlbAbi.FlowReset
            : !fromBackend ? XlbAbi.FlowFinClient
            : (flow.Flags & XlbAbi.FlowFinClient) != 0 ? XlbAbi.FlowFinBackend
            : (byte)(XlbAbi.FlowFinBackend | XlbAbi.FlowTimeWait);

    private static bool HeaderValid(byte[] p) => Packet.Checksum(p.AsSpan(14, (p[14] & 0xf) * 4)) == 0;

    /// <summary>Does the TCP/UDP checksum verify over the pseudo-header and the segment (to the datagram's end)?</summary>
    private static bool L4Valid(byte[] p, Expectation e)
    {
        var l3End = e.V6 ? 14 + 40 + BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(18)) : 14 + BinaryPrimitives.ReadUInt16BigEndian(p.AsSpan(16));
        var len = l3End - e.L4;
        var alen = e.V6 ? 32 : 8;
        var pseudo = new byte[alen + (e.V6 ? 8 : 4) + len];
        p.AsSpan(e.V6 ? 22 : 26, alen).CopyTo(pseudo);
        if (e.V6)
        {
            BinaryPrimitives.WriteUInt32BigEndian(pseudo.AsSpan(32), (uint)len);
            pseudo[39] = e.Proto;
        }
        else
        {
            pseudo[9] = e.Proto;
            BinaryPrimitives.WriteUInt16BigEndian(pseudo.AsSpan(10), (ushort)len);
        }
        p.AsSpan(e.L4, len).CopyTo(pseudo.AsSpan(alen + (e.V6 ? 8 : 4)));
        return Packet.Checksum(pseudo) == 0;
    }

    /// <summary>Reply packets for flows the model knows (their backend and NAT port learnt): backend to VIP:natport.</summary>
    public IEnumerable<(byte[] Backend, ushort TargetPort, byte[] Vip, ushort NatPort, byte Proto)> KnownReplies() =>
        _flows.Values.Where(f => f.Backend is not null)
            .Select(f => (f.Backend!, f.Service.TargetPort, f.Service.Vip, f.NatPort, f.Service.Proto));
}
