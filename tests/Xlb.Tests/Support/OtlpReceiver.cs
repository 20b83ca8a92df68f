using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Xlb.Tests.Support;

/// <summary>One number an export carried: a gauge or sum point, or a histogram's count.</summary>
public sealed record OtlpPoint(string Metric, string Kind, IReadOnlyDictionary<string, string> Attributes, double Value, IReadOnlyList<ulong> Buckets);

/// <summary>One export request as the collector saw it.</summary>
public sealed record OtlpExportRequest(string Path, string ContentType, IReadOnlyDictionary<string, string> Headers, IReadOnlyDictionary<string, string> Resource, IReadOnlyList<OtlpPoint> Points);

/// <summary>
/// A minimal OTLP metrics collector on 127.0.0.1: gRPC (HTTP/2 without TLS, the
/// MetricsService/Export method) or HTTP/1.1 with protobuf bodies (POST /v1/metrics). Each
/// request is decoded by a protobuf reader of its own (opentelemetry-proto's metrics messages)
/// and kept for the test to inspect.
/// </summary>
public sealed class OtlpReceiver : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentQueue<OtlpExportRequest> _requests = new();
    private readonly SemaphoreSlim _arrived = new(0);

    private OtlpReceiver(WebApplication app) => _app = app;

    public IPEndPoint Endpoint { get; private set; } = null!;

    public IReadOnlyList<OtlpExportRequest> Requests => [.. _requests];

    public static async Task<OtlpReceiver> StartAsync(bool grpc)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = grpc ? HttpProtocols.Http2 : HttpProtocols.Http1));
        var app = builder.Build();
        var receiver = new OtlpReceiver(app);
        app.Run(receiver.HandleAsync);
        await app.StartAsync();
        var address = new Uri(app.Urls.Single());
        receiver.Endpoint = new IPEndPoint(IPAddress.Loopback, address.Port);
        return receiver;
    }

    /// <summary>Waits for the first request that <paramref name="match"/> accepts.</summary>
    public async Task<OtlpExportRequest> WaitForAsync(Func<OtlpExportRequest, bool> match, TimeSpan timeout, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            if (_requests.FirstOrDefault(match) is { } found)
            {
                return found;
            }
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
            {
                Assert.Fail($"no matching OTLP export within {timeout.TotalSeconds:F0} s; {_requests.Count} received, the last: " +
                    string.Join("; ", _requests.TakeLast(3).Select(r => $"{r.Path} [{string.Join(", ", r.Points.Select(p => p.Metric).Distinct())}]")));
            }
            await _arrived.WaitAsync(left, ct);
        }
    }

    private async Task HandleAsync(HttpContext context)
    {
        using var body = new MemoryStream();
        await context.Request.Body.CopyToAsync(body);
        var bytes = body.ToArray();
        var grpc = context.Request.ContentType?.StartsWith("application/grpc", StringComparison.Ordinal) == true;
        if (grpc)
        {
            // Length-prefixed message: a compression flag, four bytes of length, the message.
            Assert.Equal(0, bytes[0]);
            bytes = bytes[5..(5 + (int)BinaryPrimitives.ReadUInt32BigEndian(bytes.AsSpan(1)))];
        }
        var (resource, points) = Decode(bytes);
        _requests.Enqueue(new OtlpExportRequest(context.Request.Path, context.Request.ContentType ?? "",
            context.Request.Headers.ToDictionary(h => h.Key, h => h.Value.ToString(), StringComparer.OrdinalIgnoreCase), resource, points));
        _arrived.Release();

        context.Response.StatusCode = 200;
        if (grpc)
        {
            context.Response.ContentType = "application/grpc";
            // An empty ExportMetricsServiceResponse, then status OK in the trailers.
            await context.Response.Body.WriteAsync(new byte[5]);
            context.Response.AppendTrailer("grpc-status", "0");
        }
        else
        {
            context.Response.ContentType = "application/x-protobuf";
        }
    }

    // ExportMetricsServiceRequest { repeated ResourceMetrics resource_metrics = 1; }
    private static (Dictionary<string, string>, List<OtlpPoint>) Decode(byte[] request)
    {
        var resource = new Dictionary<string, string>();
        var points = new List<OtlpPoint>();
        foreach (var rm in Fields(request).Where(f => f.Number == 1))
        {
            // ResourceMetrics { Resource resource = 1; repeated ScopeMetrics scope_metrics = 2; }
            foreach (var f in Fields(rm.Bytes))
            {
                if (f.Number == 1)
                {
                    foreach (var (k, v) in Attributes(f.Bytes, 1))
                    {
                        resource[k] = v;
                    }
                }
                else if (f.Number == 2)
                {
                    // ScopeMetrics { scope = 1; repeated Metric metrics = 2; }
                    foreach (var metric in Fields(f.Bytes).Where(m => m.Number == 2))
                    {
                        DecodeMetric(metric.Bytes, points);
                    }
                }
            }
        }
        return (resource, points);
    }

    // Metric { name = 1; gauge = 5; sum = 7; histogram = 9; } — each with data_points = 1.
    private static void DecodeMetric(byte[] metric, List<OtlpPoint> points)
    {
        var name = "";
        foreach (var f in Fields(metric))
        {
            if (f.Number == 1)
            {
                name = Encoding.UTF8.GetString(f.Bytes);
            }
            else if (f.Number is 5 or 7 or 9)
            {
                var kind = f.Number switch { 5 => "gauge", 7 => "sum", _ => "histogram" };
                foreach (var point in Fields(f.Bytes).Where(p => p.Number == 1))
                {
                    points.Add(kind == "histogram" ? HistogramPoint(name, point.Bytes) : NumberPoint(name, kind, point.Bytes));
                }
            }
        }
    }

    // NumberDataPoint { attributes = 7; as_double = 4 (double); as_int = 6 (sfixed64); }
    private static OtlpPoint NumberPoint(string name, string kind, byte[] point)
    {
        double value = 0;
        foreach (var f in Fields(point))
        {
            value = f.Number switch
            {
                4 => BitConverter.Int64BitsToDouble((long)f.Fixed),
                6 => (long)f.Fixed,
                _ => value,
            };
        }
        return new OtlpPoint(name, kind, Attributes(point, 7), value, []);
    }

    // HistogramDataPoint { attributes = 9; count = 4 (fixed64); bucket_counts = 6 (packed fixed64); }
    private static OtlpPoint HistogramPoint(string name, byte[] point)
    {
        double count = 0;
        var buckets = new List<ulong>();
        foreach (var f in Fields(point))
        {
            if (f.Number == 4)
            {
                count = f.Fixed;
            }
            else if (f.Number == 6)
            {
                for (var i = 0; i + 8 <= f.Bytes.Length; i += 8)
                {
                    buckets.Add(BinaryPrimitives.ReadUInt64LittleEndian(f.Bytes.AsSpan(i)));
                }
            }
        }
        return new OtlpPoint(name, "histogram", Attributes(point, 9), count, buckets);
    }

    // KeyValue { key = 1; AnyValue value = 2; }, AnyValue { string_value = 1; int_value = 3; }
    private static Dictionary<string, string> Attributes(byte[] message, int field)
    {
        var result = new Dictionary<string, string>();
        foreach (var kv in Fields(message).Where(f => f.Number == field))
        {
            string key = "", value = "";
            foreach (var f in Fields(kv.Bytes))
            {
                if (f.Number == 1)
                {
                    key = Encoding.UTF8.GetString(f.Bytes);
                }
                else if (f.Number == 2)
                {
                    foreach (var any in Fields(f.Bytes))
                    {
                        value = any.Number == 1 ? Encoding.UTF8.GetString(any.Bytes) : any.Varint.ToString(System.Globalization.CultureInfo.InvariantCulture);
                    }
                }
            }
            result[key] = value;
        }
        return result;
    }

    private readonly record struct Field(int Number, ulong Varint, ulong Fixed, byte[] Bytes);

    /// <summary>The fields of one protobuf message, in order (wire types 0, 1, 2 and 5).</summary>
    private static List<Field> Fields(byte[] message)
    {
        var fields = new List<Field>();
        var i = 0;
        while (i < message.Length)
        {
            var tag = Varint(message, ref i);
            var number = (int)(tag >> 3);
            switch (tag & 7)
            {
                case 0:
                    fields.Add(new Field(number, Varint(message, ref i), 0, []));
                    break;
                case 1:
                    fields.Add(new Field(number, 0, BinaryPrimitives.ReadUInt64LittleEndian(message.AsSpan(i)), []));
                    i += 8;
                    break;
                case 2:
                    var length = (int)Varint(message, ref i);
                    fields.Add(new Field(number, 0, 0, message[i..(i + length)]));
                    i += length;
                    break;
                case 5:
                    fields.Add(new Field(number, 0, BinaryPrimitives.ReadUInt32LittleEndian(message.AsSpan(i)), []));
                    i += 4;
                    break;
                default:
                    throw new InvalidDataException($"protobuf wire type {tag & 7} at byte {i}");
            }
        }
        return fields;
    }

    private static ulong Varint(byte[] b, ref int i)
    {
        ulong value = 0;
        for (var shift = 0; ; shift += 7)
        {
            var x = b[i++];
            value |= (ulong)(x & 0x7f) << shift;
            if (x < 0x80)
            {
                return value;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        _arrived.Dispose();
    }
}
