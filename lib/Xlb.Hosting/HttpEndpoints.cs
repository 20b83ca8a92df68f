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
        const string text = "text/plain; charset=utf-8";
        var path = ctx.Request.Path.Value;
        var known = path is "/healthz" or "/readyz" or "/metrics";
        var method = ctx.Request.Method;
        int code;
        string type = text, body;
        if (!known)
        {
            (code, body) = (404, "not found\n");
        }
        else if (!HttpMethods.IsGet(method) && !HttpMethods.IsHead(method))
        {
            // Refused before any page is made: /metrics walks the data plane's tables.
            (code, body) = (405, "method not allowed\n");
            ctx.Response.Headers.Allow = "GET, HEAD";
        }
        else if (path == "/metrics")
        {
            (code, type, body) = (200, PromText.ContentType, metrics() + PromText.Process());
        }
        else if (path == "/readyz")
        {
            var (ready, reason) = readiness();
            (code, body) = (ready ? 200 : 503, reason + "\n");
        }
        else
        {
            (code, body) = (200, "ok\n");
        }
        ctx.Response.StatusCode = code;
        ctx.Response.ContentType = type;
        return HttpMethods.IsHead(method) ? Task.CompletedTask : ctx.Response.WriteAsync(body, ctx.RequestAborted);
    }
}
