using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging;
using Xlb.Agent.Bpf;
using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Agent;

/// <summary>
/// The connection log: the data plane's sampled flow events (<see cref="DataPlaneOptions.FlowEventSample"/>),
/// one JSON line each, to a file (appended) or to standard output. One thread polls the ring
/// buffer; lines are flushed after every batch. Events the program could not queue because the
/// ring buffer was full are counted by the data plane (<see cref="XdpDataPlane.FlowEventCounts"/>).
/// </summary>
public sealed partial class FlowLog : IDisposable
{
    private readonly BpfRingBuffer _ring;
    private readonly XdpDataPlane _dataPlane;
    private long _nextSweep;
    private readonly TextWriter _output;
    private readonly bool _ownsOutput;
    private readonly ILogger _log;
    private readonly List<XlbFlowEvent> _batch = [];
    private IReadOnlyDictionary<(IPAddress Vip, int Port, byte Proto), Listener> _names = new Dictionary<(IPAddress, int, byte), Listener>();
    private long _new, _closed, _writeFailures, _swept;

    public FlowLog(XdpDataPlane dataPlane, TextWriter output, ILogger log, bool ownsOutput = false)
    {
        _dataPlane = dataPlane;
        _output = output;
        _ownsOutput = ownsOutput;
        _log = log;
        _ring = dataPlane.OpenFlowEvents(_batch.Add);
    }

    /// <summary>A log to <paramref name="path"/> (appended; created if missing), or to standard output for "-".</summary>
    public static FlowLog Open(XdpDataPlane dataPlane, string path, ILogger log)
    {
        if (path == "-")
        {
            return new FlowLog(dataPlane, Console.Out, log);
        }
        var stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
        return new FlowLog(dataPlane, new StreamWriter(stream) { AutoFlush = false }, log, ownsOutput: true);
    }

    /// <summary>Events logged, by kind, since this log opened.</summary>
    public (long New, long Closed) Counts => (Interlocked.Read(ref _new), Interlocked.Read(ref _closed));

    /// <summary>The applied node config, whose listener names the lines carry.</summary>
    public void SetConfig(XlbNodeConfigSpec spec) => Volatile.Write(ref _names, FlowEvents.ListenerNames(spec));

    /// <summary>Waits up to <paramref name="timeout"/> for events and writes them.</summary>
    /// <returns>How many events were written.</returns>
    public int PollOnce(TimeSpan timeout)
    {
        _ring.Poll(timeout);
        return WriteBatch();
    }

    /// <summary>How often the poll thread sweeps flows that went idle without another packet (see <see cref="IdleFlows"/>).</summary>
    public TimeSpan SweepInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Ends the flows past their idle timeout that no packet came for (<see cref="XdpDataPlane.SweepIdleFlows"/>)
    /// and logs their close, reason idle, as the program would have on their next packet.
    /// </summary>
    /// <returns>How many closes were written.</returns>
    public int SweepOnce()
    {
        var (swept, closed) = _dataPlane.SweepIdleFlows();
        Interlocked.Add(ref _swept, swept);
        _batch.AddRange(closed);
        return WriteBatch();
    }

    /// <summary>Flows the sweeps took out of the flow tables (each one, logged or not).</summary>
    public long Swept => Interlocked.Read(ref _swept);

    private int WriteBatch()
    {
        if (_batch.Count == 0)
        {
            return 0;
        }
        var nowNs = XdpDataPlane.MonotonicNs();
        var now = DateTimeOffset.UtcNow;
        var names = Volatile.Read(ref _names);
        var written = _batch.Count;
        try
        {
            foreach (var e in _batch)
            {
                _output.WriteLine(FlowEvents.ToJson(FlowEvents.Describe(e, FlowEvents.WallTime(e.TimeNs, nowNs, now), names)));
                Interlocked.Increment(ref e.Type == XlbAbi.EventClosed ? ref _closed : ref _new);
            }
            _output.Flush();
        }
        catch (IOException ex)
        {
            if (Interlocked.Increment(ref _writeFailures) == 1)
            {
                LogWriteFailed(ex.Message);
            }
        }
        finally
        {
            _batch.Clear();
        }
        return written;
    }

    /// <summary>Polls on a thread of its own until <paramref name="ct"/> is cancelled, then writes what is left.</summary>
    public Task RunAsync(CancellationToken ct) => Task.Factory.StartNew(() =>
    {
        while (!ct.IsCancellationRequested)
        {
            PollOnce(TimeSpan.FromMilliseconds(250));
            if (System.Diagnostics.Stopwatch.GetTimestamp() >= _nextSweep)
            {
                SweepOnce();
                _nextSweep = System.Diagnostics.Stopwatch.GetTimestamp() + (long)(SweepInterval.TotalSeconds * System.Diagnostics.Stopwatch.Frequency);
            }
        }
        while (PollOnce(TimeSpan.Zero) > 0)
        {
        }
    }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    [LoggerMessage(Level = LogLevel.Warning, Message = "the connection log cannot be written ({Error}); its lines are dropped until it can")]
    private partial void LogWriteFailed(string error);

    public void Dispose()
    {
        _ring.Dispose();
        if (_ownsOutput)
        {
            _output.Dispose();
        }
    }
}
