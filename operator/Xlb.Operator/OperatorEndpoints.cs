using System.Net;
using Microsoft.AspNetCore.Builder;
using Xlb.Hosting;

namespace Xlb.Operator;

/// <summary>
/// /healthz (the process serves), /readyz (every informer has listed: a standby replica is ready
/// too, it only does not write) and /metrics of the operator in cluster mode.
/// </summary>
public static class OperatorEndpoints
{
    public static Task<WebApplication> StartAsync(IPEndPoint listen, ClusterOperator op, CancellationToken ct) =>
        HttpEndpoints.StartAsync(listen, () => (op.Synced, !op.Synced ? "caches not synced" : op.Leading ? "leading" : "standby"), op.Metrics, ct);
}
