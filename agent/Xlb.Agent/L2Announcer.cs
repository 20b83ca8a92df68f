using System.Net;
using Microsoft.Extensions.Logging;
using Xlb.Agent.Bpf;

namespace Xlb.Agent;

/// <summary>An interface the agent attached XDP to, with the MAC it announces VIPs under.</summary>
public sealed record AnnounceInterface(string Name, int IfIndex, byte[] Mac);

/// <summary>
/// Sends the L2 announcements (<see cref="Core.Announcements"/>) for VIPs this node has just
/// taken, out of every attached interface: <c>count</c> rounds, <c>interval</c> apart, in the
/// background so an apply never waits for them. A failed send is logged, never fatal: the VIP is
/// served either way; neighbours then learn the move when their entries age out.
/// </summary>
public sealed partial class L2Announcer(ILogger log, TimeProvider time, IReadOnlyList<AnnounceInterface> interfaces, int count, TimeSpan interval)
{
    private Task _pending = Task.CompletedTask;

    /// <summary>Where announcements go: the attached interfaces and the VLAN devices on them (the agent refreshes the list).</summary>
    public IReadOnlyList<AnnounceInterface> Interfaces { get; set; } = interfaces;

    private readonly System.Collections.Concurrent.ConcurrentDictionary<IPAddress, ulong> _lastAnnounced = new();

    /// <summary>When each VIP was last announced (its first round; CLOCK_MONOTONIC ns).</summary>
    public IReadOnlyDictionary<IPAddress, ulong> LastAnnounced => _lastAnnounced;

    /// <summary>Every announcement started so far, finished (or cancelled).</summary>
    public Task Completion => _pending;

    public void Announce(IReadOnlyList<IPAddress> vips, CancellationToken ct)
    {
        if (vips.Count == 0 || count <= 0 || Interfaces.Count == 0)
        {
            return;
        }
        var now = XdpDataPlane.MonotonicNs();
        foreach (var vip in vips)
        {
            _lastAnnounced[vip] = now;
        }
        var run = RunAsync(vips, ct);
        _pending = Task.WhenAll(_pending, run);
    }

    private async Task RunAsync(IReadOnlyList<IPAddress> vips, CancellationToken ct)
    {
        await Task.Yield();
        var interfaces = Interfaces;
        var frames = interfaces.Select(i => (Interface: i, Frames: vips.Select(v => Core.Announcements.Frame(i.Mac, v)).ToList())).ToList();
        LogAnnouncing(string.Join(", ", vips), interfaces.Count, count);
        try
        {
            for (var round = 0; round < count; round++)
            {
                if (round > 0)
                {
                    await Task.Delay(interval, time, ct);
                }
                foreach (var (iface, list) in frames)
                {
                    try
                    {
                        using var socket = new PacketSocket(iface.IfIndex);
                        foreach (var frame in list)
                        {
                            socket.Send(frame);
                        }
                    }
                    catch (BpfException e)
                    {
                        LogAnnounceFailed(iface.Name, e.Message);
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The agent is stopping; the VIPs were announced at least once.
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "announcing {Vips} on {Interfaces} interface(s), {Count} time(s)")]
    private partial void LogAnnouncing(string vips, int interfaces, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not announce VIPs on {Interface}: {Error}")]
    private partial void LogAnnounceFailed(string @interface, string error);
}
