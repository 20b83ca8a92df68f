namespace Xlb.Agent;

/// <summary>What the agent's endpoints report: written by the agent loop, read by HTTP handlers.</summary>
public sealed class AgentState
{
    private readonly Lock _lock = new();
    private long _appliedRevision;
    private bool _draining;
    private string _notReadyReason = "NoNodeConfig";
    private double _lastApplyMs;
    private long _applies;
    private long _applyFailures;

    public XdpDataPlane? DataPlane { get; set; }

    /// <summary>Durations of the applies that wrote to the maps (a no-op resync is not one).</summary>
    public Xlb.Hosting.Histogram ApplyDurations { get; } = Xlb.Hosting.Histogram.Durations();

    /// <summary>The OpenTelemetry twin of <see cref="ApplyDurations"/>, while metrics are exported over OTLP.</summary>
    public System.Diagnostics.Metrics.Histogram<double>? ApplyHistogram { get; set; }

    /// <summary>The connection log, when one is written.</summary>
    public FlowLog? FlowLog { get; set; }

    /// <summary>Flow sync, once started.</summary>
    public FlowSyncer? FlowSync { get; set; }

    /// <summary>Heartbeats with the failover peers, once started.</summary>
    public Heartbeater? Heartbeats { get; set; }

    /// <summary>Standby VIPs taken over from silent peers, as of the last apply.</summary>
    public int TakenOver { get; set; }

    /// <summary>VIPs this node holds that another host announced after this node last did (VipAnnouncedElsewhere).</summary>
    public int AnnouncedElsewhere { get; set; }

    /// <summary>The BGP sessions (replaced whole by the agent loop).</summary>
    public IReadOnlyList<BgpSpeaker> Bgp { get; set; } = [];

    public (bool Ready, string Reason) Readiness
    {
        get
        {
            lock (_lock)
            {
                return _draining ? (false, "Draining") : _appliedRevision > 0 ? (true, "Forwarding") : (false, _notReadyReason);
            }
        }
    }

    public bool Draining
    {
        get { lock (_lock) { return _draining; } }
        set { lock (_lock) { _draining = value; } }
    }

    public void Applied(long revision, double ms, bool wrote)
    {
        lock (_lock)
        {
            _appliedRevision = revision;
        }
        if (wrote)
        {
            Wrote(ms);
        }
    }

    /// <summary>An apply wrote the maps in <paramref name="ms"/>: counted and timed (also the first write into a new data plane, before its program is attached and the revision counts as applied).</summary>
    public void Wrote(double ms)
    {
        lock (_lock)
        {
            _applies++;
            _lastApplyMs = ms;
        }
        ApplyDurations.Observe(ms / 1000);
        ApplyHistogram?.Record(ms / 1000);
    }

    private IReadOnlyList<string> _unhealthy = [];
    private IReadOnlyList<string> _failedOpen = [];

    public void Health(IReadOnlyList<string> unhealthy, IReadOnlyList<string> failedOpen)
    {
        lock (_lock)
        {
            _unhealthy = unhealthy;
            _failedOpen = failedOpen;
        }
    }

    public (IReadOnlyList<string> Unhealthy, IReadOnlyList<string> FailedOpen) HealthSnapshot()
    {
        lock (_lock)
        {
            return (_unhealthy, _failedOpen);
        }
    }

    public void Failed(string reason)
    {
        lock (_lock)
        {
            _applyFailures++;
            _notReadyReason = reason;
        }
    }

    public void Waiting(string reason)
    {
        lock (_lock)
        {
            _notReadyReason = reason;
        }
    }

    public (long Revision, long Applies, long Failures, double LastApplyMs, bool Draining) Snapshot()
    {
        lock (_lock)
        {
            return (_appliedRevision, _applies, _applyFailures, _lastApplyMs, _draining);
        }
    }
}
