using System.Globalization;
using System.Net;
using System.Text.Json;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>One line of the connection log: a sampled flow began or closed.</summary>
public sealed record FlowLogEntry
{
    public required DateTimeOffset Time { get; init; }
    /// <summary><c>new</c> or <c>closed</c>.</summary>
    public required string Event { get; init; }
    public required string Protocol { get; init; }
    public required string Client { get; init; }
    public required string Vip { get; init; }
    public required string Backend { get; init; }
    /// <summary>The source port toward the backend (FullNAT); null in the other modes.</summary>
    public int? NatPort { get; init; }
    /// <summary>FullNAT from one of the listener's source addresses: that address (the VIP's port range is implied otherwise); null when it took the VIP.</summary>
    public string? NatAddress { get; init; }
    public required string Mode { get; init; }
    /// <summary>The listener's name, when the applied node config has one for the VIP:port.</summary>
    public string? Service { get; init; }
    /// <summary>For <c>closed</c> by a FIN or RST: <c>client</c> or <c>backend</c>, whichever sent it.</summary>
    public string? ClosedBy { get; init; }
    /// <summary>For <c>closed</c>: FIN, RST, or <c>idle</c> (found past its idle timeout by a later packet of its tuple).</summary>
    public string? Reason { get; init; }
}

/// <summary>Pure: the program's flow events → connection-log lines.</summary>
public static class FlowEvents
{
    /// <summary>Listeners by VIP, port and protocol, to name an event's service and its source address.</summary>
    public static Dictionary<(IPAddress Vip, int Port, byte Proto), Listener> ListenerNames(XlbNodeConfigSpec spec)
    {
        var names = new Dictionary<(IPAddress, int, byte), Listener>();
        foreach (var l in spec.Listeners)
        {
            if (IPAddress.TryParse(l.Vip, out var vip))
            {
                names.TryAdd((vip, l.Port, MapImage.ProtoOf(l.Protocol)), l);
            }
        }
        return names;
    }

    /// <summary>
    /// The wall-clock time of an event stamped <paramref name="eventNs"/> on the program's
    /// monotonic clock, given both clocks read together (<paramref name="nowNs"/>, <paramref name="now"/>).
    /// </summary>
    public static DateTimeOffset WallTime(ulong eventNs, ulong nowNs, DateTimeOffset now) =>
        now - TimeSpan.FromTicks((long)((nowNs > eventNs ? nowNs - eventNs : 0) / 100));

    public static FlowLogEntry Describe(XlbFlowEvent e, DateTimeOffset time, IReadOnlyDictionary<(IPAddress Vip, int Port, byte Proto), Listener> names)
    {
        var listener = names.GetValueOrDefault((e.Flow.Daddr.ToAddress(e.Flow.Family), Net.FromBe(e.Flow.DportBe), e.Flow.Proto));
        var k = e.Flow;
        var vip = k.Daddr.ToAddress(k.Family);
        var vipPort = Net.FromBe(k.DportBe);
        var closed = e.Type == XlbAbi.EventClosed;
        var idle = closed && (e.TcpFlags & 0x05) == 0; // neither FIN nor RST
        return new FlowLogEntry
        {
            Time = time,
            Event = closed ? "closed" : e.Type == XlbAbi.EventNew ? "new" : $"event-{e.Type}",
            Protocol = NodeStatus.ProtocolName(k.Proto),
            Client = new IPEndPoint(k.Saddr.ToAddress(k.Family), Net.FromBe(k.SportBe)).ToString(),
            Vip = new IPEndPoint(vip, vipPort).ToString(),
            Backend = new IPEndPoint(e.Backend.ToAddress(k.Family), Net.FromBe(e.BackendPortBe)).ToString(),
            NatPort = e.Mode == XlbAbi.ModeFullNat ? Net.FromBe(e.NatPortBe) : null,
            // The listener's list is the one the flow's number counts in (the mapping's order).
            NatAddress = e.Mode == XlbAbi.ModeFullNat && e.Snat > 0 ? listener?.SourceAddresses?.ElementAtOrDefault(e.Snat - 1) ?? $"source {e.Snat}" : null,
            Mode = NodeStatus.ModeName(e.Mode),
            Service = listener?.Name,
            ClosedBy = closed && !idle ? (e.ByBackend != 0 ? "backend" : "client") : null,
            Reason = !closed ? null : idle ? "idle" : (e.TcpFlags & 0x04) != 0 ? "RST" : "FIN",
        };
    }

    /// <summary>The entry as one line of JSON (no newline), fields in a fixed order, absent ones left out.</summary>
    public static string ToJson(FlowLogEntry entry)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("time", entry.Time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture));
            w.WriteString("event", entry.Event);
            w.WriteString("protocol", entry.Protocol);
            w.WriteString("client", entry.Client);
            w.WriteString("vip", entry.Vip);
            w.WriteString("backend", entry.Backend);
            if (entry.NatPort is { } nat)
            {
                w.WriteNumber("natPort", nat);
            }
            if (entry.NatAddress is { } natAddress)
            {
                w.WriteString("natAddress", natAddress);
            }
            w.WriteString("mode", entry.Mode);
            if (entry.Service is { } service)
            {
                w.WriteString("service", service);
            }
            if (entry.ClosedBy is { } by)
            {
                w.WriteString("closedBy", by);
            }
            if (entry.Reason is { } reason)
            {
                w.WriteString("reason", reason);
            }
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
    }
}
