using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Xlb.Hosting;

/// <summary>The probe and metrics endpoints every XLB process serves: /healthz, /readyz and /metrics (Prometheus text, with the process's own series).</summary>
public static class HttpEndpoints
{
    /// <param name="readiness">Ready or not, and a line that says why (the body of /readyz).</param>
    /// <param name="metrics">The /metrics page.</param>
    public static async Task<WebApplication> StartAsync(IPEndPoint listen, Func<(bool Ready, string Reason)> readiness, Func<string> metrics, CancellationToken ct)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(listen));
        var app = builder.Build();
        app.MapGet("/healthz", () => Results.Text("ok\n"));
        app.MapGet("/readyz", () =>
        {
            var (ready, reason) = readiness();
            return Results.Text(reason + "\n", statusCode: ready ? 200 : 503);
        });
        app.MapGet("/metrics", () => Results.Text(metrics() + PromText.Process(), PromText.ContentType));
        await app.StartAsync(ct);
        return app;
    }
}
