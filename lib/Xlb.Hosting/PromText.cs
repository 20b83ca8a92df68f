using System.Globalization;
using System.Text;

namespace Xlb.Hosting;

/// <summary>The Prometheus text exposition format (version 0.0.4), written by hand: the exporter packages are not ours to use.</summary>
public static class PromText
{
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    public static void Gauge(StringBuilder sb, string name, string help, double value) =>
        sb.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");

    public static void Counter(StringBuilder sb, string name, string help, long value) =>
        sb.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n");

    /// <summary>A metric with one label: HELP and TYPE once, a sample per label value.</summary>
    public static void Labelled(StringBuilder sb, string name, string type, string help, string label, IEnumerable<(string Value, double Sample)> samples)
    {
        sb.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} {type}\n");
        foreach (var (value, sample) in samples)
        {
            sb.Append(CultureInfo.InvariantCulture, $"{name}{{{label}=\"{Escape(value)}\"}} {sample}\n");
        }
    }

    /// <summary>Label values escape backslash, double quote and newline.</summary>
    public static string Escape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}

/// <summary>A cumulative histogram of seconds with fixed bucket bounds; safe to observe from any thread.</summary>
public sealed class Histogram(params double[] bounds)
{
    private readonly double[] _bounds = [.. bounds.Order()];
    private readonly long[] _counts = new long[bounds.Length + 1];
    private readonly Lock _gate = new();
    private double _sum;
    private long _count;

    /// <summary>Bounds from 1 ms to 30 s, for reconcile and apply durations.</summary>
    public static Histogram Durations() => new(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30);

    /// <summary>The upper bounds of the finite buckets, ascending.</summary>
    public IReadOnlyList<double> Bounds => _bounds;

    public void Observe(double seconds)
    {
        var i = Array.BinarySearch(_bounds, seconds);
        i = i < 0 ? ~i : i;
        lock (_gate)
        {
            _counts[i]++;
            _sum += seconds;
            _count++;
        }
    }

    public void Write(StringBuilder sb, string name, string help)
    {
        long[] counts;
        double sum;
        long count;
        lock (_gate)
        {
            counts = [.. _counts];
            sum = _sum;
            count = _count;
        }
        sb.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} histogram\n");
        long cumulative = 0;
        for (var i = 0; i < _bounds.Length; i++)
        {
            cumulative += counts[i];
            sb.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{le=\"{_bounds[i]}\"}} {cumulative}\n");
        }
        sb.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}\n");
    }
}
