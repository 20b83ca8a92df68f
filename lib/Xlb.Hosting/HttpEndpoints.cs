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
        // Three fixed pages: one terminal handler, without routing or the minimal-API delegate
        // compiler (which brings expression trees and their compiled code into every process).
        app.Run(ctx => Serve(ctx, readiness, metrics));
        await app.StartAsync(ct);
        return app;
    }

    private static Task Serve(HttpContext ctx, Func<(bool Ready, string Reason)> readiness, Func<string> metrics)
    {
        var (code, type, body) = ctx.Request.Path.Value switch
        {
            "/healthz" => (200, "text/plain; charset=utf-8", "ok\n"),
            "/readyz" => readiness() is var (ready, reason) ? (ready ? 200 : 503, "text/plain; charset=utf-8", reason + "\n") : default,
            "/metrics" => (200, PromText.ContentType, metrics() + PromText.Process()),
            _ => (404, "text/plain; charset=utf-8", "not found\n"),
        };
        if (code != 404 && !HttpMethods.IsGet(ctx.Request.Method) && !HttpMethods.IsHead(ctx.Request.Method))
        {
            (code, body) = (405, "method not allowed\n");
            ctx.Response.Headers.Allow = "GET, HEAD";
        }
        ctx.Response.StatusCode = code;
        ctx.Response.ContentType = type;
        return HttpMethods.IsHead(ctx.Request.Method) ? Task.CompletedTask : ctx.Response.WriteAsync(body, ctx.RequestAborted);
    }
}
