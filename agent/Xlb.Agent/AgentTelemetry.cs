using System.Diagnostics.Metrics;
using Xlb.DataPlane;
using Xlb.Hosting;

namespace Xlb.Agent;

/// <summary>
/// The agent's metrics as OpenTelemetry instruments, for OTLP export: the same figures as
/// /metrics, under OpenTelemetry names (a collector's Prometheus exporter turns
/// <c>xlb.service.packets</c> back into <c>xlb_service_packets_total</c>). Observable instruments
/// are read at each export; the maps are read once per export however many instruments ask.
/// </summary>
public sealed class AgentTelemetry : IDisposable
{
    public const string MeterName = "Xlb.Agent";

    private readonly Meter _meter = new(MeterName);
    private readonly AgentState _state;
    private readonly Lock _gate = new();
    private DataPlaneReading? _reading;

    private AgentTelemetry(AgentState state)
    {
        _state = state;
        state.ApplyHistogram = _meter.CreateHistogram("xlb.agent.apply.duration", "s",
            "Duration of the applies that wrote to the maps: build, diff, batch writes and the flip.",
            advice: OtlpExport.Buckets(state.ApplyDurations.Bounds));

        _meter.CreateObservableGauge("xlb.agent.applied_revision", () => _state.Snapshot().Revision, null, "Revision of the node config in the data plane.");
        _meter.CreateObservableCounter("xlb.agent.applies", () => _state.Snapshot().Applies, null, "Applies that wrote to the maps.");
        _meter.CreateObservableCounter("xlb.agent.apply_failures", () => _state.Snapshot().Failures, null, "Node configs that could not be applied.");
        _meter.CreateObservableGauge("xlb.agent.draining", () => _state.Snapshot().Draining ? 1 : 0, null, "1 while new connections are refused (shutdown window).");
        _meter.CreateObservableGauge("xlb.backend.unhealthy", () => _state.HealthSnapshot().Unhealthy.Select(b => Tagged(1, "backend", b)), null,
            "1 for each backend this node's health checks took out of service.");
        _meter.CreateObservableGauge("xlb.listeners.failed_open", () => _state.HealthSnapshot().FailedOpen.Count, null,
            "Listeners whose backends are all unhealthy and so all kept.");

        _meter.CreateObservableCounter("xlb.packets", () => Read(r => r.Reasons.Select(s => Tagged((long)s.Value, "reason", s.Key.SnakeName()))), "{packet}",
            "Packets seen by the XDP program, by verdict reason.");
        Traffic("service", r => r.Services);
        Traffic("backend", r => r.Backends);
        _meter.CreateObservableUpDownCounter("xlb.service.active_flows", () => Read(r => r.FlowsByService.Select(f => Tagged(f.Value, "service", f.Key))), "{flow}",
            "Flows in the flow table not past their idle timeout, per service.");
        _meter.CreateObservableUpDownCounter("xlb.backend.active_flows", () => Read(r => r.FlowsByBackend.Select(f => Tagged(f.Value, "backend", f.Key))), "{flow}",
            "Flows in the flow table not past their idle timeout, per backend.");
        // Failover: VIPs taken over, and the heartbeats (once this node has failover peers).
        _meter.CreateObservableGauge("xlb.vips_taken_over", () => _state.TakenOver, "{vip}", AgentEndpoints.VipsTakenOverHelp);
        _meter.CreateObservableGauge("xlb.vips_announced_elsewhere", () => _state.AnnouncedElsewhere, "{vip}", AgentEndpoints.VipsAnnouncedElsewhereHelp);
        _meter.CreateObservableCounter("xlb.flow_sync", () => _state.FlowSync is { } f
            ? [Tagged(f.Counts.Sent, "outcome", "sent"), Tagged(f.Counts.Received, "outcome", "received"), Tagged(f.Counts.Written, "outcome", "written"),
                Tagged(f.Counts.Skipped, "outcome", "skipped"), Tagged(f.Counts.Refused, "outcome", "refused")]
            : Array.Empty<Measurement<long>>(), "{flow}", "Flow sync: flows sent to peers (once per peer), received, written into the flow table, left out (no such service or backend here), and datagrams refused.");
        _meter.CreateObservableCounter("xlb.heartbeats", () => _state.Heartbeats is { } h
            ? [Tagged(h.Counts.Sent, "direction", "sent"), Tagged(h.Counts.Received, "direction", "received"), Tagged(h.Counts.Refused, "direction", "refused")]
            : Array.Empty<Measurement<long>>(), "{heartbeat}", "Heartbeats sent to failover peers (once per peer), taken from them, and refused.");
        _meter.CreateObservableGauge("xlb.nat_port_range", () => Read(r => new[] { new Measurement<long>(r.NatPortRange) }), "{port}", AgentEndpoints.NatPortRangeHelp);
        _meter.CreateObservableGauge("xlb.backend.nat_ports_held", () => Read(r => r.NatPorts.Select(p => Tagged(p.Held, "backend", p.Backend))), "{port}",
            AgentEndpoints.NatPortsHeldHelp);
        _meter.CreateObservableGauge("xlb.backend.nat_ports_ended", () => Read(r => r.NatPorts.Select(p => Tagged(p.Ended, "backend", p.Backend))), "{port}",
            AgentEndpoints.NatPortsEndedHelp);
        _meter.CreateObservableGauge("xlb.backend.nat_ports_half_open", () => Read(r => r.NatPorts.Select(p => Tagged(p.HalfOpen, "backend", p.Backend))), "{port}",
            AgentEndpoints.NatPortsHalfOpenHelp);
        _meter.CreateObservableUpDownCounter("xlb.backend.open_flows", () => Read(r => r.OpenByBackend.Select(f => Tagged(f.Value, "backend", f.Key))), "{flow}",
            AgentEndpoints.OpenFlowsHelp);
        _meter.CreateObservableCounter("xlb.flow_events.lost", () => Read(r => new[] { new Measurement<long>((long)r.EventsLost) }), "{event}",
            "Sampled flow events the program dropped because the ring buffer was full.");
    }

    /// <summary>Creates the instruments over <paramref name="state"/>; export them with <see cref="OtlpExport.Start"/> and <see cref="MeterName"/>.</summary>
    public static AgentTelemetry Create(AgentState state) => new(state);

    private void Traffic(string kind, Func<DataPlaneReading, IReadOnlyList<(string Name, XlbSvcStats Stats)>> items)
    {
        var help = kind == "service" ? AgentEndpoints.ServiceHelp : AgentEndpoints.BackendHelp;
        foreach (var counter in AgentEndpoints.TrafficCounters)
        {
            _meter.CreateObservableCounter($"xlb.{kind}.{counter.Name}", () => Read(r => items(r).Select(i => Tagged((long)counter.Value(i.Stats), kind, i.Name))), counter.Unit, help + counter.Help);
        }
    }

    private static Measurement<long> Tagged(long value, string key, string tag) => new(value, new KeyValuePair<string, object?>(key, tag));

    /// <summary>
    /// Measurements from one reading of the maps. An export reads every observable instrument
    /// within a few milliseconds: a reading younger than a second is shared by all of them.
    /// </summary>
    private IEnumerable<Measurement<long>> Read(Func<DataPlaneReading, IEnumerable<Measurement<long>>> select)
    {
        if (_state.DataPlane is not { } dp)
        {
            return [];
        }
        DataPlaneReading reading;
        lock (_gate)
        {
            if (_reading is not { } r || Environment.TickCount64 - r.TakenMs > 1000)
            {
                _reading = DataPlaneReading.Take(dp);
            }
            reading = _reading;
        }
        return select(reading).ToList();
    }

    public void Dispose()
    {
        _state.ApplyHistogram = null;
        _meter.Dispose();
    }

    private sealed record DataPlaneReading(
        long TakenMs,
        IReadOnlyList<KeyValuePair<XlbStat, ulong>> Reasons,
        IReadOnlyList<(string Name, XlbSvcStats Stats)> Services,
        IReadOnlyList<(string Name, XlbSvcStats Stats)> Backends,
        IReadOnlyList<KeyValuePair<string, long>> FlowsByService,
        IReadOnlyList<KeyValuePair<string, long>> FlowsByBackend,
        IReadOnlyList<KeyValuePair<string, long>> OpenByBackend,
        IReadOnlyList<(string Backend, long Held, long Ended, long HalfOpen)> NatPorts,
        long NatPortRange,
        ulong EventsLost)
    {
        public static DataPlaneReading Take(XdpDataPlane dp)
        {
            var census = dp.Census();
            var (bySvc, byBackend) = (census.ByService, census.ByBackend);
            return new DataPlaneReading(
                Environment.TickCount64,
                [.. dp.Stats()],
                [.. dp.ServiceStats().Select(s => (AgentEndpoints.ServiceLabel(s.Key), s.Value))],
                [.. dp.BackendStats().Select(b => (AgentEndpoints.BackendLabel(b.Key), b.Value))],
                [.. bySvc.Select(f => KeyValuePair.Create(AgentEndpoints.ServiceLabel(f.Key), (long)f.Value))],
                [.. byBackend.Select(f => KeyValuePair.Create(AgentEndpoints.BackendLabel(f.Key), (long)f.Value))],
                [.. dp.OpenFlowCounts().Select(f => KeyValuePair.Create(AgentEndpoints.BackendLabel(f.Key), f.Value))],
                [.. census.NatPortsByBackend.Select(p => (AgentEndpoints.BackendLabel(p.Key), (long)p.Value.Held, (long)p.Value.Ended, (long)p.Value.HalfOpen))],
                census.NatPortRange,
                dp.FlowEventCounts().Lost);
        }
    }
}
