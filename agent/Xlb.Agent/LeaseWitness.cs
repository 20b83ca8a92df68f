using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.Kube;

namespace Xlb.Agent;

/// <summary>
/// Cluster mode: reads the Leases of the peers that are silent past a takeover time, every
/// <see cref="Poll"/>, so that a peer which still renews its Lease (alive, only the path between
/// the LB nodes is broken) keeps its VIPs (<see cref="LeaseEvidence"/>, <see cref="Takeover"/>).
/// A standby takes a silent peer's VIPs at once and gives them back when it sees the Lease move,
/// so a dead node costs no more time and a partition between the LB nodes makes two nodes answer
/// for a VIP for about a second, not for as long as it lasts. A Lease that cannot be read leaves
/// the takeover as it is. It calls <c>changed</c> when a peer starts or stops counting as renewing.
/// </summary>
public sealed partial class LeaseWitness(KubeClient client, string leaseNamespace, ILogger log, TimeProvider time, Action changed)
{
    /// <summary>How often a watched Lease is read (agents renew every 0.5 s by default).</summary>
    public static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(250);

    private readonly Lock _gate = new();
    private readonly LeaseEvidence _evidence = new();
    private string _renewing = "";
    private string? _lastError;

    private long NowMs => time.GetTimestamp() * 1000 / time.TimestampFrequency;

    /// <summary>The peers to watch from now on: those past a takeover time.</summary>
    public void Watch(IEnumerable<string> peers)
    {
        lock (_gate)
        {
            _evidence.Watch(peers);
        }
    }

    /// <summary>Whether a silent peer is seen renewing its Lease.</summary>
    public bool Renewing(string peer)
    {
        lock (_gate)
        {
            return _evidence.Renewing(peer, NowMs);
        }
    }

    public async Task RunAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            List<string> watched;
            lock (_gate)
            {
                watched = [.. _evidence.Watched];
            }
            foreach (var peer in watched)
            {
                try
                {
                    var lease = await client.GetAsync<JsonObject>(KubeResource.Leases, leaseNamespace, XlbApi.AgentLeaseName(peer), ct);
                    lock (_gate)
                    {
                        _evidence.Observe(peer, lease?["spec"]?["renewTime"]?.GetValue<string>(), NowMs);
                    }
                    _lastError = null;
                }
                catch (Exception e) when (e is KubeApiException or HttpRequestException or InvalidOperationException)
                {
                    if (_lastError != e.Message)
                    {
                        LogReadFailed(peer, e.Message);
                    }
                    _lastError = e.Message;
                }
            }
            string renewing;
            lock (_gate)
            {
                var now = NowMs;
                renewing = string.Join(",", watched.Where(p => _evidence.Renewing(p, now)));
            }
            if (renewing != _renewing)
            {
                _renewing = renewing;
                changed();
            }
            try
            {
                await Task.Delay(Poll, time, ct);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "failover: cannot read the Lease of silent peer {Peer} (its VIPs stay taken over): {Error}")]
    private partial void LogReadFailed(string peer, string error);
}
