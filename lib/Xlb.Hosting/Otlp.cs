using System.Diagnostics.Metrics;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace Xlb.Hosting;

/// <summary>The OTLP transports: gRPC (port 4317 by convention) or HTTP with protobuf bodies (4318).</summary>
public enum OtlpProtocol
{
    Grpc,
    HttpProtobuf,
}

/// <summary>Where and how metrics are pushed over OTLP.</summary>
public sealed record OtlpOptions
{
    /// <summary>
    /// The collector. For http/protobuf an endpoint without a path gets the metrics path
    /// <c>/v1/metrics</c>, as OTEL_EXPORTER_OTLP_ENDPOINT does; an endpoint with a path is used as it is.
    /// </summary>
    public required Uri Endpoint { get; init; }

    public OtlpProtocol Protocol { get; init; } = OtlpProtocol.Grpc;

    /// <summary>Headers sent with every export (for example an authorization token).</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// A file of headers (the format of <see cref="OtlpHeaders.Parse"/>), read again whenever it
    /// changes, so a mounted Secret can hold them and rotate them. Its headers win over <see cref="Headers"/>.
    /// </summary>
    public string? HeadersFile { get; init; }

    public TimeSpan ExportInterval { get; init; } = TimeSpan.FromSeconds(60);

    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The endpoint the exporter posts to.</summary>
    public Uri ExportEndpoint =>
        Protocol == OtlpProtocol.HttpProtobuf && Endpoint.AbsolutePath is "" or "/" ? new Uri(Endpoint, "/v1/metrics") : Endpoint;
}

/// <summary>
/// OTLP headers as OTEL_EXPORTER_OTLP_HEADERS writes them: <c>key=value</c> pairs separated by
/// commas, values percent-encoded. A headers file may also put one pair per line; blank lines and
/// lines starting with <c>#</c> are skipped.
/// </summary>
public static class OtlpHeaders
{
    /// <exception cref="FormatException">A pair without a key or without '=', named with <paramref name="origin"/>.</exception>
    public static Dictionary<string, string> Parse(string text, string origin)
    {
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        var lines = text.Split('\n');
        for (var n = 0; n < lines.Length; n++)
        {
            var line = lines[n].Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }
            foreach (var pair in line.Split(','))
            {
                if (pair.Trim().Length == 0)
                {
                    continue;
                }
                var eq = pair.IndexOf('=', StringComparison.Ordinal);
                var key = eq < 0 ? "" : pair[..eq].Trim();
                if (key.Length == 0 || key.Any(c => c <= ' ' || c >= 127 || c == ':'))
                {
                    throw new FormatException($"{origin}, line {n + 1}: expected KEY=VALUE (comma-separated, values percent-encoded), got \"{pair.Trim()}\"");
                }
                headers[key] = Uri.UnescapeDataString(pair[(eq + 1)..].Trim());
            }
        }
        return headers;
    }
}

/// <summary>Pushes the instruments of named meters to an OTLP collector.</summary>
public static class OtlpExport
{
    /// <summary>
    /// A meter provider that exports <paramref name="meters"/> every
    /// <see cref="OtlpOptions.ExportInterval"/> (cumulative temporality) and once more when disposed.
    /// </summary>
    /// <exception cref="FormatException">The headers file exists but cannot be parsed.</exception>
    public static MeterProvider Start(OtlpOptions options, string serviceName, string instance, params string[] meters)
    {
        var headers = new HeaderSource(options.Headers, options.HeadersFile);
        headers.Current(strict: true); // a malformed file fails the start
        var builder = Sdk.CreateMeterProviderBuilder()
            .SetResourceBuilder(ResourceBuilder.CreateEmpty().AddService(serviceName, serviceInstanceId: instance, autoGenerateServiceInstanceId: false))
            .AddMeter(meters)
            .AddOtlpExporter((exporter, reader) =>
            {
                exporter.Endpoint = options.ExportEndpoint;
                exporter.Protocol = options.Protocol == OtlpProtocol.Grpc ? OtlpExportProtocol.Grpc : OtlpExportProtocol.HttpProtobuf;
                exporter.TimeoutMilliseconds = (int)options.Timeout.TotalMilliseconds;
                exporter.HttpClientFactory = () => new HttpClient(new HeaderHandler(headers)) { Timeout = options.Timeout };
                reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = (int)options.ExportInterval.TotalMilliseconds;
                reader.PeriodicExportingMetricReaderOptions.ExportTimeoutMilliseconds = (int)options.Timeout.TotalMilliseconds;
                reader.TemporalityPreference = MetricReaderTemporalityPreference.Cumulative;
            });
        return builder.Build();
    }

    /// <summary>Bucket bounds for a histogram instrument, as its advice.</summary>
    public static InstrumentAdvice<double> Buckets(IReadOnlyList<double> bounds) => new() { HistogramBucketBoundaries = bounds };

    /// <summary>
    /// The fixed headers and the file's, the file read again when its time stamp or length
    /// changes. After the start, a file that is missing or cannot be parsed (a Secret being
    /// rewritten) keeps the headers last read, and is tried again at the next export.
    /// </summary>
    private sealed class HeaderSource(IReadOnlyDictionary<string, string> fixedHeaders, string? file)
    {
        private readonly Lock _gate = new();
        private (DateTime Written, long Length) _seen;
        private readonly IReadOnlyDictionary<string, string> _fixed = fixedHeaders;
        private IReadOnlyDictionary<string, string> _current = fixedHeaders;

        public IReadOnlyDictionary<string, string> Current(bool strict = false)
        {
            if (file is null)
            {
                return _fixed;
            }
            lock (_gate)
            {
                var info = new FileInfo(file);
                if ((info.Exists || strict) && (info.LastWriteTimeUtc, info.Length) != _seen)
                {
                    try
                    {
                        var text = File.ReadAllText(file);
                        if (text.Trim().Length == 0 && !strict)
                        {
                            // Truncated and not yet written again (a file rewritten in place, not swapped
                            // in as a Secret mount does): keep the last headers until it has content.
                            return _current;
                        }
                        var merged = new Dictionary<string, string>(_fixed, StringComparer.OrdinalIgnoreCase);
                        foreach (var (key, value) in OtlpHeaders.Parse(text, file))
                        {
                            merged[key] = value;
                        }
                        _current = merged;
                        _seen = (info.LastWriteTimeUtc, info.Length);
                    }
                    catch (Exception e) when (!strict && e is FormatException or IOException or UnauthorizedAccessException)
                    {
                    }
                }
                return _current;
            }
        }
    }

    private sealed class HeaderHandler(HeaderSource headers) : DelegatingHandler(new SocketsHttpHandler())
    {
        // The exporter sends synchronously over HTTP and asynchronously over gRPC: both ways get the headers.
        protected override HttpResponseMessage Send(HttpRequestMessage request, CancellationToken cancellationToken) =>
            base.Send(WithHeaders(request), cancellationToken);

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) =>
            base.SendAsync(WithHeaders(request), cancellationToken);

        private HttpRequestMessage WithHeaders(HttpRequestMessage request)
        {
            foreach (var (key, value) in headers.Current())
            {
                request.Headers.Remove(key);
                request.Headers.TryAddWithoutValidation(key, value);
            }
            return request;
        }
    }
}
