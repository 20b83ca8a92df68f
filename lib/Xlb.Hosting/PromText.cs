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

    /// <summary>
    /// The process's own series, as Prometheus client libraries name them (process_*), and the
    /// .NET collector's (dotnet_gc_*): what tells a memory limit's headroom from the heap's.
    /// </summary>
    public static string Process()
    {
        var sb = new StringBuilder();
        using var self = System.Diagnostics.Process.GetCurrentProcess();
        Gauge(sb, "process_resident_memory_bytes", "Resident memory size in bytes.", self.WorkingSet64);
        sb.Append(CultureInfo.InvariantCulture, $"# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {self.TotalProcessorTime.TotalSeconds}\n");
        Gauge(sb, "process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.", new DateTimeOffset(self.StartTime.ToUniversalTime()).ToUnixTimeMilliseconds() / 1000.0);
        var gc = GC.GetGCMemoryInfo();
        Gauge(sb, "dotnet_gc_heap_size_bytes", "Managed heap size at the last collection: live objects and fragmentation.", gc.HeapSizeBytes);
        Gauge(sb, "dotnet_gc_fragmented_bytes", "Free space inside the managed heap at the last collection.", gc.FragmentedBytes);
        Gauge(sb, "dotnet_gc_committed_bytes", "Memory the collector has committed.", gc.TotalCommittedBytes);
        Counter(sb, "dotnet_gc_allocated_bytes_total", "Bytes allocated on the managed heap.", GC.GetTotalAllocatedBytes());
        Labelled(sb, "dotnet_gc_collections_total", "counter", "Collections, by generation.", "generation",
            [.. Enumerable.Range(0, GC.MaxGeneration + 1).Select(g => (g.ToString(CultureInfo.InvariantCulture), (double)GC.CollectionCount(g)))]);
        sb.Append(CultureInfo.InvariantCulture, $"# HELP dotnet_gc_pause_seconds_total Time the collector paused the process.\n# TYPE dotnet_gc_pause_seconds_total counter\ndotnet_gc_pause_seconds_total {GC.GetTotalPauseDuration().TotalSeconds}\n");
        return sb.ToString();
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
