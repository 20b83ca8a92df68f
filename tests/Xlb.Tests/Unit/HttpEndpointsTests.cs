using System.Net;
using Xlb.Hosting;

namespace Xlb.Tests.Unit;

/// <summary>The probe and metrics pages every XLB process serves, over real HTTP on loopback.</summary>
public class HttpEndpointsTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task The_three_pages_answer_GET_and_HEAD_and_anything_else_is_404_or_405()
    {
        var ready = false;
        await using var app = await HttpEndpoints.StartAsync(new IPEndPoint(IPAddress.Loopback, 0), () => (ready, ready ? "leading" : "caches not synced"), () => "xlb_test_total 7\n", Ct);
        using var http = new HttpClient { BaseAddress = new Uri(app.Urls.Single()) };

        var health = await http.GetAsync("/healthz", Ct);
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        Assert.Equal("ok\n", await health.Content.ReadAsStringAsync(Ct));

        var notReady = await http.GetAsync("/readyz", Ct);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, notReady.StatusCode);
        Assert.Equal("caches not synced\n", await notReady.Content.ReadAsStringAsync(Ct));
        ready = true;
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/readyz", Ct)).StatusCode);

        var metrics = await http.GetAsync("/metrics", Ct);
        Assert.Equal(PromText.ContentType, metrics.Content.Headers.ContentType!.ToString());
        var page = await metrics.Content.ReadAsStringAsync(Ct);
        Assert.StartsWith("xlb_test_total 7\n", page, StringComparison.Ordinal);
        Assert.Contains("\nprocess_resident_memory_bytes ", page, StringComparison.Ordinal);

        using var head = await http.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/healthz"), Ct);
        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        Assert.Empty(await head.Content.ReadAsByteArrayAsync(Ct));

        var post = await http.PostAsync("/metrics", new StringContent(""), Ct);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, post.StatusCode);
        Assert.Equal(["GET", "HEAD"], post.Content.Headers.Allow.Order(StringComparer.Ordinal));
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("/metrics/x", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("/", Ct)).StatusCode);
    }
}
