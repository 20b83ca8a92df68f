using System.Net;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Xlb.DataPlane;
using Xlb.Hosting;
using static Xlb.Hosting.PromText;

namespace Xlb.Agent;

/// <summary>
/// /healthz (the process serves), /readyz (a revision is applied and the node is not draining:
/// what a load balancer in front of XLB, or ExternalDNS through a Service, should follow) and
/// /metrics in the Prometheus text format (version 0.0.4), written here.
/// </summary>
public static class AgentEndpoints
{
    public static Task<WebApplication> StartAsync(IPEndPoint listen, AgentState state, CancellationToken ct) =>
        HttpEndpoints.StartAsync(listen, () => state.Readiness, () => Metrics(state), ct);

    public static string Metrics(AgentState state)
    {
        var (revision, applies, failures, lastMs, draining) = state.Snapshot();
        var sb = new StringBuilder();
        Gauge(sb, "xlb_agent_applied_revision", "Revision of the node config in the data plane.", revision);
        Counter(sb, "xlb_agent_applies_total", "Applies that wrote to the maps.", applies);
        Counter(sb, "xlb_agent_apply_failures_total", "Node configs that could not be applied.", failures);
        Gauge(sb, "xlb_agent_last_apply_seconds", "Duration of the last apply that wrote to the maps.", lastMs / 1000);
        state.ApplyDurations.Write(sb, "xlb_agent_apply_duration_seconds", "Duration of the applies that wrote to the maps: build, diff, batch writes and the flip.");
        Gauge(sb, "xlb_agent_draining", "1 while new connections are refused (shutdown window).", draining ? 1 : 0);
        var (unhealthy, failedOpen) = state.HealthSnapshot();
        PromText.Labelled(sb, "xlb_backend_unhealthy", "gauge", "1 for each backend this node's health checks took out of service.", "backend", unhealthy.Select(b => (b, 1.0)));
        Gauge(sb, "xlb_listeners_failed_open", "Listeners whose backends are all unhealthy and so all kept.", failedOpen.Count);
        var bgp = state.Bgp.OrderBy(b => b.Peer.Address, StringComparer.Ordinal).ToList();
        PromText.Labelled(sb, "xlb_bgp_session_established", "gauge", "1 while the BGP session with the neighbour is established.", "peer",
            bgp.Select(b => (b.Peer.Address, b.State == "Established" ? 1.0 : 0.0)));
        PromText.Labelled(sb, "xlb_bgp_advertised_routes", "gauge", "Host routes for VIPs the BGP neighbour holds from this node.", "peer",
            bgp.Select(b => (b.Peer.Address, (double)b.Advertised.Count)));
        if (state.DataPlane is { } dp)
        {
            PromText.Labelled(sb, "xlb_packets_total", "counter", "Packets seen by the XDP program, by verdict reason.", "reason", dp.Stats().Select(s => (s.Key.SnakeName(), (double)s.Value)));
            Traffic(sb, "xlb_service", "service", ServiceHelp,
                dp.ServiceStats().Select(s => (ServiceLabel(s.Key), s.Value)));
            Traffic(sb, "xlb_backend", "backend", BackendHelp,
                dp.BackendStats().Select(b => (BackendLabel(b.Key), b.Value)));
            var census = dp.Census();
            var (flowsBySvc, flowsByBackend) = (census.ByService, census.ByBackend);
            PromText.Labelled(sb, "xlb_service_active_flows", "gauge", "Flows in the flow table not past their idle timeout, per service.", "service",
                flowsBySvc.Select(f => (ServiceLabel(f.Key), (double)f.Value)).OrderBy(f => f.Item1, StringComparer.Ordinal));
            PromText.Labelled(sb, "xlb_backend_active_flows", "gauge", "Flows in the flow table not past their idle timeout, per backend.", "backend",
                flowsByBackend.Select(f => (BackendLabel(f.Key), (double)f.Value)).OrderBy(f => f.Item1, StringComparer.Ordinal));
            Gauge(sb, "xlb_nat_port_range", NatPortRangeHelp, census.NatPortRange);
            PromText.Labelled(sb, "xlb_backend_nat_ports_held", "gauge", NatPortsHeldHelp, "backend",
                census.NatPortsByBackend.Select(p => (BackendLabel(p.Key), (double)p.Value.Held)).OrderBy(p => p.Item1, StringComparer.Ordinal));
            PromText.Labelled(sb, "xlb_backend_nat_ports_ended", "gauge", NatPortsEndedHelp, "backend",
                census.NatPortsByBackend.Select(p => (BackendLabel(p.Key), (double)p.Value.Ended)).OrderBy(p => p.Item1, StringComparer.Ordinal));
            PromText.Labelled(sb, "xlb_backend_nat_ports_half_open", "gauge", NatPortsHalfOpenHelp, "backend",
                census.NatPortsByBackend.Select(p => (BackendLabel(p.Key), (double)p.Value.HalfOpen)).OrderBy(p => p.Item1, StringComparer.Ordinal));
            PromText.Labelled(sb, "xlb_backend_open_flows", "gauge", OpenFlowsHelp, "backend",
                dp.OpenFlowCounts().Select(f => (BackendLabel(f.Key), (double)f.Value)).OrderBy(f => f.Item1, StringComparer.Ordinal));
            var (_, lost) = dp.FlowEventCounts();
            Counter(sb, "xlb_flow_events_lost_total", "Sampled flow events the program dropped because the ring buffer was full.", (long)lost);
        }
        if (state.FlowSync is { } sync)
        {
            var (sent, received, written, skipped, refused) = sync.Counts;
            Counter(sb, "xlb_flow_sync_sent_total", "Flows sent to flow-sync peers (once per peer).", sent);
            Counter(sb, "xlb_flow_sync_received_total", "Flows received from flow-sync peers.", received);
            Counter(sb, "xlb_flow_sync_written_total", "Received flows written into this node's flow table.", written);
            Counter(sb, "xlb_flow_sync_skipped_total", "Received flows left out: no such synchronised service or backend here.", skipped);
            Counter(sb, "xlb_flow_sync_refused_total", "Datagrams refused: not from a flow-sync peer, or not flow sync.", refused);
        }
        if (state.Heartbeats is { } heartbeats)
        {
            var (sent, received, refused) = heartbeats.Counts;
            Counter(sb, "xlb_heartbeats_sent_total", "Heartbeats sent to failover peers (once per peer).", sent);
            Counter(sb, "xlb_heartbeats_received_total", "Heartbeats taken from failover peers.", received);
            Counter(sb, "xlb_heartbeats_refused_total", "Heartbeats refused: not from a failover peer's address, or not authenticated as this node's key says.", refused);
            Gauge(sb, "xlb_vips_taken_over", VipsTakenOverHelp, state.TakenOver);
        }
        Gauge(sb, "xlb_vips_announced_elsewhere", VipsAnnouncedElsewhereHelp, state.AnnouncedElsewhere);
        if (state.FlowLog is { } flowLog)
        {
            var (opened, closed) = flowLog.Counts;
            PromText.Labelled(sb, "xlb_flow_log_events_total", "counter", "Lines written to the connection log, by event.", "event", [("new", (double)opened), ("closed", (double)closed)]);
            Counter(sb, "xlb_flows_swept_total", "Flows past their idle timeout that no packet came for, taken out of the flow tables by the agent's sweep.", flowLog.Swept);
        }
        return sb.ToString();
    }

    public const string VipsTakenOverHelp = "Standby VIPs this node serves because their active node's agent fell silent (or left).";
    public const string VipsAnnouncedElsewhereHelp = "VIPs this node holds that another host announced (ARP/ND) after this node last did, within a minute: both answer for them.";
    public const string NatPortRangeHelp = "FullNAT source ports toward each backend from each VIP (--nat-ports).";
    public const string NatPortsHeldHelp = "FullNAT: source ports held toward the backend, from the source address (the VIP or one of its mapping's) that holds most there; past xlb_nat_port_range new connections wait (drop_nat_ports_busy).";
    public const string NatPortsHalfOpenHelp = "FullNAT: of xlb_backend_nat_ports_held, those of TCP handshakes not completed (a SYN flood holds ports so), free again 2 s after their last SYN.";
    public const string NatPortsEndedHelp = "FullNAT: of xlb_backend_nat_ports_held, those of connections that ended, free again 2 s after (65 s if the backend closed first).";

    public const string OpenFlowsHelp = "LeastConn: open flows the data plane counts per backend, over every LeastConn service (what it compares for each new flow).";

    /// <summary>The five traffic counters of services or backends, one series per label value, sorted.</summary>
    private static void Traffic(StringBuilder sb, string prefix, string label, string help, IEnumerable<(string Name, XlbSvcStats Stats)> items)
    {
        var sorted = items.OrderBy(i => i.Name, StringComparer.Ordinal).ToList();
        foreach (var counter in TrafficCounters)
        {
            PromText.Labelled(sb, $"{prefix}_{counter.Name}_total", "counter", help + counter.Help, label, sorted.Select(i => (i.Name, (double)counter.Value(i.Stats))));
        }
    }

    /// <summary>One traffic counter of a service or backend: its name (without the Prometheus _total), its unit for OpenTelemetry, its help.</summary>
    internal sealed record TrafficCounter(string Name, string Unit, string Help, Func<XlbSvcStats, ulong> Value);

    /// <summary>The counters of each service and each backend, for /metrics and for OTLP alike.</summary>
    internal static readonly TrafficCounter[] TrafficCounters =
    [
        new("packets", "{packet}", "packets from clients.", s => s.Packets),
        new("bytes", "By", "bytes from clients (frames).", s => s.Bytes),
        new("reply_packets", "{packet}", "backend replies translated by this node (FullNAT, DNAT).", s => s.ReplyPackets),
        new("reply_bytes", "By", "bytes of those replies.", s => s.ReplyBytes),
        new("new_flows", "{flow}", "flows bound to a backend.", s => s.NewFlows),
    ];

    internal const string ServiceHelp = "Per service (VIP:port/protocol) of the applied revision: ";
    internal const string BackendHelp = "Per backend (address:targetPort) of the applied revision, over all its services: ";

    internal static string BackendLabel(XlbBackend b)
    {
        var address = b.Addr.ToAddress(b.Family);
        var host = b.Family == XlbAbi.FamilyV6 ? $"[{address}]" : address.ToString();
        return $"{host}:{Net.FromBe(b.PortBe)}";
    }

    internal static string ServiceLabel(XlbSvcKey k)
    {
        var vip = k.Vip.ToAddress(k.Family);
        var host = k.Family == XlbAbi.FamilyV6 ? $"[{vip}]" : vip.ToString();
        return $"{host}:{Net.FromBe(k.PortBe)}/{Core.NodeStatus.ProtocolName(k.Proto)}";
    }
}
