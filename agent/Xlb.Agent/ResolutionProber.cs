using System.Net;
using Microsoft.Extensions.Logging;
using Xlb.Agent.Bpf;

namespace Xlb.Agent;

/// <summary>
/// The shell of <see cref="Core.ResolutionWitness"/>: while standby VIPs of a never-heard active
/// node are in the config, it sends an ARP probe for each out of every announce interface, four
/// times per takeover time (at most every second, at least every 50 ms), reads the answers the
/// program noted, and calls <c>changed</c> when a VIP has gone unanswered for its takeover time
/// or is answered again after that (the agent then applies its config again: <see cref="Core.Takeover"/>).
/// A probe that could not be sent counts for nothing: the VIPs are unanswered afresh from the
/// next one that goes out.
/// </summary>
internal sealed partial class ResolutionProber(XdpDataPlane dp, ILogger log, TimeProvider time, Action changed)
{
    private readonly Core.ResolutionWitness _witness = new();
    private readonly Lock _lock = new();
    private List<(IPAddress Vip, TimeSpan After)> _probed = [];
    private IReadOnlyList<AnnounceInterface> _interfaces = [];
    private string _past = "";
    private readonly SemaphoreSlim _wake = new(0, 1);

    /// <summary>The VIPs to probe from now on (<see cref="Core.ResolutionWitness.Probed"/>), out of <paramref name="interfaces"/>; none without an interface.</summary>
    public void Configure(List<(IPAddress Vip, TimeSpan After)> probed, IReadOnlyList<AnnounceInterface> interfaces)
    {
        if (interfaces.Count == 0)
        {
            probed = [];
        }
        lock (_lock)
        {
            var started = probed.Count > 0 && _probed.Count == 0;
            _probed = probed;
            _interfaces = interfaces;
            _witness.Probe(probed.Select(p => p.Vip), Now);
            if (started && _wake.CurrentCount == 0)
            {
                _wake.Release();
            }
        }
    }

    /// <summary>How long nobody has answered for <paramref name="address"/>; null when it is not probed.</summary>
    public TimeSpan? UnansweredFor(string address)
    {
        lock (_lock)
        {
            return _witness.UnansweredFor(address, Now);
        }
    }

    private static ulong Now => XdpDataPlane.MonotonicNs();

    public async Task RunAsync(CancellationToken ct)
    {
        try
        {
            while (!ct.IsCancellationRequested)
            {
                List<(IPAddress Vip, TimeSpan After)> probed;
                IReadOnlyList<AnnounceInterface> interfaces;
                lock (_lock)
                {
                    (probed, interfaces) = (_probed, _interfaces);
                }
                if (probed.Count == 0)
                {
                    await _wake.WaitAsync(TimeSpan.FromSeconds(1), ct);
                    continue;
                }
                var period = TimeSpan.FromTicks(Math.Clamp(probed.Min(p => p.After).Ticks / 4, TimeSpan.FromMilliseconds(50).Ticks, TimeSpan.FromSeconds(1).Ticks));
                if (!Send(probed, interfaces))
                {
                    lock (_lock)
                    {
                        _witness.Probe([], Now);
                        _witness.Probe(_probed.Select(p => p.Vip), Now);
                    }
                }
                await Task.Delay(period, time, ct);
                Observe();
            }
        }
        catch (OperationCanceledException)
        {
            // The agent is stopping.
        }
    }

    /// <summary>One probe per VIP out of each interface; false when one of them could not be sent.</summary>
    private bool Send(List<(IPAddress Vip, TimeSpan After)> probed, IReadOnlyList<AnnounceInterface> interfaces)
    {
        var sent = true;
        foreach (var iface in interfaces)
        {
            try
            {
                using var socket = new PacketSocket(iface.IfIndex);
                foreach (var (vip, _) in probed)
                {
                    socket.Send(Core.Announcements.ArpProbe(iface.Mac, vip));
                }
            }
            catch (BpfException e)
            {
                LogProbeFailed(iface.Name, e.Message);
                sent = false;
            }
        }
        return sent;
    }

    /// <summary>Takes in the answers noted since, and calls <c>changed</c> when the VIPs unanswered past their takeover time are others than before.</summary>
    private void Observe()
    {
        IReadOnlyList<Core.VipClaim> claims;
        try
        {
            claims = dp.Claims();
        }
        catch (BpfException e)
        {
            LogClaimsReadFailed(e.Message);
            return;
        }
        string past;
        lock (_lock)
        {
            _witness.Observe(claims, _interfaces.Select(i => i.Mac));
            var now = Now;
            past = string.Join(",", _probed.Where(p => _witness.UnansweredFor(p.Vip.ToString(), now) >= p.After).Select(p => p.Vip));
        }
        if (past != _past)
        {
            if (past.Length > 0)
            {
                LogUnanswered(past);
            }
            _past = past;
            changed();
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "nobody answers ARP for {Vips}, whose active node was never heard")]
    private partial void LogUnanswered(string vips);

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not send ARP probes on {Interface}: {Error}")]
    private partial void LogProbeFailed(string @interface, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not read the answers to ARP probes (xlb_vip_claims): {Error}")]
    private partial void LogClaimsReadFailed(string error);
}
