using Xlb.Agent;
using Xlb.Hosting;
using Xlb.Tests.Support;

namespace Xlb.Tests.Unit;

/// <summary>The agent's OTLP push, into a collector of the test's own (real HTTP on 127.0.0.1).</summary>
public sealed class OtlpExportTests
{
    [Theory]
    [InlineData(OtlpProtocol.Grpc, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", "application/grpc")]
    [InlineData(OtlpProtocol.HttpProtobuf, "/v1/metrics", "application/x-protobuf")]
    public async Task Metrics_reach_the_collector_with_the_configured_headers_and_a_rotated_headers_file_is_read_again(OtlpProtocol protocol, string path, string contentType)
    {
        var ct = TestContext.Current.CancellationToken;
        await using var collector = await OtlpReceiver.StartAsync(grpc: protocol == OtlpProtocol.Grpc);
        var headersFile = Path.Combine(Directory.CreateTempSubdirectory("xlb-otlp-").FullName, "headers");
        await File.WriteAllTextAsync(headersFile, "# from a Secret\nauthorization=Bearer%20one\n", ct);
        try
        {
            var state = new AgentState();
            state.Applied(7, 3, wrote: true);
            using var telemetry = AgentTelemetry.Create(state);
            state.Health(["10.1.0.3:8080"], []);
            state.TakenOver = 3;
            state.AnnouncedElsewhere = 2;
            var options = new OtlpOptions
            {
                Endpoint = new Uri($"http://{collector.Endpoint}"),
                Protocol = protocol,
                Headers = OtlpHeaders.Parse("x-tenant=blue", "test"),
                HeadersFile = headersFile,
                ExportInterval = TimeSpan.FromMilliseconds(200),
            };
            using (var provider = OtlpExport.Start(options, "xlb-agent", "lb-1", AgentTelemetry.MeterName))
            {
                state.Applied(7, 40, wrote: true);
                var first = await collector.WaitForAsync(r => r.Points.Any(p => p.Metric == "xlb.agent.apply.duration"), TimeSpan.FromSeconds(20), ct);
                Assert.Equal(path, first.Path);
                Assert.StartsWith(contentType, first.ContentType, StringComparison.Ordinal);
                Assert.True(first.Headers.ContainsKey("x-tenant"), string.Join(", ", first.Headers.Select(h => $"{h.Key}={h.Value}")));
                Assert.Equal("blue", first.Headers["x-tenant"]);
                Assert.Equal("Bearer one", first.Headers["authorization"]);
                Assert.Equal("xlb-agent", first.Resource["service.name"]);
                Assert.Equal("lb-1", first.Resource["service.instance.id"]);

                Assert.Equal(7, Point(first, "xlb.agent.applied_revision").Value);
                Assert.Equal("sum", Point(first, "xlb.agent.applies").Kind);
                Assert.Equal(2, Point(first, "xlb.agent.applies").Value);
                Assert.Equal("10.1.0.3:8080", Point(first, "xlb.backend.unhealthy").Attributes["backend"]);
                Assert.Equal(3, Point(first, "xlb.vips_taken_over").Value);
                Assert.Equal(2, Point(first, "xlb.vips_announced_elsewhere").Value);
                // Only the apply recorded while exporting (as in the agent, which starts the export first): 40 ms, in the (0.025, 0.05] bucket.
                var histogram = Point(first, "xlb.agent.apply.duration");
                Assert.Equal(1, histogram.Value);
                Assert.Equal(state.ApplyDurations.Bounds.Count + 1, histogram.Buckets.Count);
                var bucket = state.ApplyDurations.Bounds.ToList().IndexOf(0.05);
                Assert.Equal(1ul, histogram.Buckets[bucket]);
                Assert.Equal(1ul, histogram.Buckets.Aggregate(0ul, (a, b) => a + b));

                // The Secret rotates: the next exports carry the new token.
                await File.WriteAllTextAsync(headersFile, "authorization=Bearer%20two,x-tenant=green\n", ct);
                var rotated = await collector.WaitForAsync(r => r.Headers.GetValueOrDefault("authorization") == "Bearer two", TimeSpan.FromSeconds(20), ct);
                Assert.Equal("green", rotated.Headers["x-tenant"]);

                // A file broken mid-rotation keeps the last headers it had.
                await File.WriteAllTextAsync(headersFile, "no-equals-sign\n", ct);
                var count = collector.Requests.Count;
                var after = await collector.WaitForAsync(r => collector.Requests.ToList().IndexOf(r) > count + 1, TimeSpan.FromSeconds(20), ct);
                Assert.Equal("Bearer two", after.Headers["authorization"]);

                // So does an empty one (a file rewritten in place is empty for a moment).
                await File.WriteAllTextAsync(headersFile, "", ct);
                count = collector.Requests.Count;
                after = await collector.WaitForAsync(r => collector.Requests.ToList().IndexOf(r) > count + 1, TimeSpan.FromSeconds(20), ct);
                Assert.Equal("Bearer two", after.Headers["authorization"]);

                state.Applied(8, 2, wrote: true);
            }
            // Disposing the provider exports once more: the last revision is not lost on the way out.
            Assert.Equal(8, Point(collector.Requests[^1], "xlb.agent.applied_revision").Value);
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(headersFile)!, recursive: true);
        }
    }

    [Fact]
    public void Headers_parse_as_the_environment_variable_writes_them_and_bad_pairs_are_named()
    {
        var headers = OtlpHeaders.Parse("api-key=abc%3D%3D, x-org = one two\n\n# comment\nAuthorization=Basic%20eA==", "file");
        Assert.Equal("abc==", headers["api-key"]);
        Assert.Equal("one two", headers["x-org"]);
        Assert.Equal("Basic eA==", headers["authorization"]);
        Assert.Empty(OtlpHeaders.Parse("", "none"));

        var e = Assert.Throws<FormatException>(() => OtlpHeaders.Parse("a=1\nb=2,oops", "/etc/xlb/otlp-headers"));
        Assert.Equal("/etc/xlb/otlp-headers, line 2: expected KEY=VALUE (comma-separated, values percent-encoded), got \"oops\"", e.Message);
        Assert.Throws<FormatException>(() => OtlpHeaders.Parse("=value", "x"));
        Assert.Throws<FormatException>(() => OtlpHeaders.Parse("bad key=value", "x"));
    }

    [Fact]
    public void An_http_endpoint_without_a_path_gets_the_metrics_path_and_one_with_a_path_keeps_it()
    {
        Assert.Equal("http://c:4318/v1/metrics", new OtlpOptions { Endpoint = new Uri("http://c:4318"), Protocol = OtlpProtocol.HttpProtobuf }.ExportEndpoint.ToString());
        Assert.Equal("http://c:4318/custom/path", new OtlpOptions { Endpoint = new Uri("http://c:4318/custom/path"), Protocol = OtlpProtocol.HttpProtobuf }.ExportEndpoint.ToString());
        Assert.Equal("http://c:4317/", new OtlpOptions { Endpoint = new Uri("http://c:4317") }.ExportEndpoint.ToString());
    }

    private static OtlpPoint Point(OtlpExportRequest request, string metric) =>
        request.Points.SingleOrDefault(p => p.Metric == metric) ?? throw new Xunit.Sdk.XunitException($"{metric} not in the export: {string.Join(", ", request.Points.Select(p => p.Metric))}");
}
