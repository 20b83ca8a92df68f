using System.Net;
using Microsoft.Extensions.Logging;
using Xlb.Agent.Bpf;

namespace Xlb.Agent;

/// <summary>
/// The shell of <see cref="Core.ResolutionWitness"/>: while standby VIPs of a never-heard active
/// node are in the config, it asks for each (ARP, or a neighbour solicitation) out of every announce interface, four
/// times per takeover time (at most every second, at least every 50 ms), reads the answers the
/// program noted, and calls <c>changed</c> when a VIP has gone unanswered for its takeover time
/// or is answered again after that (the agent then applies its config again: <see cref="Core.Takeover"/>).
/// A VIP that could not be asked for everywhere counts as unanswered afresh from the next probe
/// that goes out everywhere.
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
                if (Send(probed, interfaces) is { Count: > 0 } unasked)
                {
                    lock (_lock)
                    {
                        _witness.Restart(unasked, Now);
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

    /// <summary>
    /// One probe per VIP out of each interface: an ARP probe, or for IPv6 a neighbour solicitation
    /// from the interface's link-local address. The VIPs whose probe did not go out everywhere (an
    /// interface without a usable link-local address, a send that failed).
    /// </summary>
    private HashSet<IPAddress> Send(List<(IPAddress Vip, TimeSpan After)> probed, IReadOnlyList<AnnounceInterface> interfaces)
    {
        var unasked = new HashSet<IPAddress>();
        var v6 = probed.Where(p => p.Vip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6).Select(p => p.Vip).ToList();
        var ifInet6 = v6.Count > 0 && File.Exists("/proc/net/if_inet6") ? File.ReadAllText("/proc/net/if_inet6") : "";
        foreach (var iface in interfaces)
        {
            var source = v6.Count > 0 ? Core.ResolutionWitness.LinkLocal(ifInet6, iface.IfIndex) : null;
            if (v6.Count > 0 && source is null)
            {
                unasked.UnionWith(v6);
                LogNoLinkLocal(iface.Name);
            }
            try
            {
                using var socket = new PacketSocket(iface.IfIndex);
                foreach (var (vip, _) in probed)
                {
                    if (vip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork)
                    {
                        socket.Send(Core.Announcements.ArpProbe(iface.Mac, vip));
                    }
                    else if (source is not null)
                    {
                        socket.Send(Core.Announcements.NeighbourProbe(iface.Mac, source, vip));
                    }
                }
            }
            catch (BpfException e)
            {
                LogProbeFailed(iface.Name, e.Message);
                unasked.UnionWith(probed.Select(p => p.Vip));
            }
        }
        return unasked;
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

    [LoggerMessage(Level = LogLevel.Warning, Message = "nobody answers ARP/ND for {Vips}, whose active node was never heard")]
    private partial void LogUnanswered(string vips);

    [LoggerMessage(Level = LogLevel.Debug, Message = "no usable IPv6 link-local address on {Interface}: its IPv6 VIPs' active node is asked for nothing there")]
    private partial void LogNoLinkLocal(string @interface);

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not send ARP probes on {Interface}: {Error}")]
    private partial void LogProbeFailed(string @interface, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not read the answers to ARP probes (xlb_vip_claims): {Error}")]
    private partial void LogClaimsReadFailed(string error);
}
