using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Xlb.Hosting;

namespace Xlb.Operator;

/// <summary>
/// /healthz (the process serves), /readyz (every informer has listed: a standby replica is ready
/// too, it only does not write) and /metrics (Prometheus text) of the operator in cluster mode.
/// </summary>
public static class OperatorEndpoints
{
    public static async Task<WebApplication> StartAsync(IPEndPoint listen, ClusterOperator op, CancellationToken ct)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(listen));
        var app = builder.Build();
        app.MapGet("/healthz", () => Results.Text("ok\n"));
        app.MapGet("/readyz", () => op.Synced ? Results.Text(op.Leading ? "leading\n" : "standby\n") : Results.Text("caches not synced\n", statusCode: 503));
        app.MapGet("/metrics", () => Results.Text(op.Metrics(), PromText.ContentType));
        await app.StartAsync(ct);
        return app;
    }
}
