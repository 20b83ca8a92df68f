using System.Globalization;
using System.Text.RegularExpressions;
using Xlb.Cli.Testbed;

namespace Xlb.Bench.Traffic;

/// <summary>What one wrk run measured.</summary>
public sealed record WrkResult(double RequestsPerSecond, double P50Ms, double P99Ms, long Requests, long Errors, string Raw)
{
    /// <summary>SYNs the client sent again during the run: its connections that waited a second or more to open (wrk's latency leaves connecting out).</summary>
    public long SynRetransmits { get; init; }

    /// <summary>The machine's idle CPU share during the run, percent.</summary>
    public double IdlePercent { get; init; }
}

/// <summary>wrk (HTTP load) run inside the client's namespace, and its summary parsed.</summary>
public static partial class Wrk
{
    /// <summary>
    /// Runs wrk against <paramref name="url"/> for <paramref name="seconds"/>. With
    /// <paramref name="newConnections"/> every request asks the server to close (a new TCP
    /// connection per request); otherwise connections are kept alive.
    /// </summary>
    public static WrkResult Run(string ns, string url, int seconds, int connections, bool newConnections)
    {
        List<string> args = ["-t2", $"-c{connections}", $"-d{seconds}s", "--timeout", "2s", "--latency"];
        if (newConnections)
        {
            args.AddRange(["-H", "Connection: close"]);
        }
        args.Add(url);
        return Parse(Netns.Exec(ns, "wrk", [.. args]));
    }

    public static WrkResult Parse(string output)
    {
        var rps = Number(RequestsPerSecond().Match(output), "Requests/sec");
        var p50 = Latency(output, "50%");
        var p99 = Latency(output, "99%");
        var requests = (long)Number(RequestsDone().Match(output), "requests in");
        long errors = 0;
        if (SocketErrors().Match(output) is { Success: true } s)
        {
            for (var g = 1; g <= 4; g++)
            {
                errors += long.Parse(s.Groups[g].Value, CultureInfo.InvariantCulture);
            }
        }
        if (Non2xx().Match(output) is { Success: true } n)
        {
            errors += long.Parse(n.Groups[1].Value, CultureInfo.InvariantCulture);
        }
        return new WrkResult(rps, p50, p99, requests, errors, output);
    }

    private static double Number(Match m, string what) =>
        m.Success ? double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : throw new FormatException($"wrk printed no \"{what}\"");

    /// <summary>A latency percentile of wrk's distribution, in milliseconds.</summary>
    private static double Latency(string output, string percentile)
    {
        var m = Regex.Match(output, $@"^\s*{Regex.Escape(percentile)}\s+([0-9.]+)(us|ms|s)\s*$", RegexOptions.Multiline);
        if (!m.Success)
        {
            throw new FormatException($"wrk printed no {percentile} latency");
        }
        var v = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        return m.Groups[2].Value switch
        {
            "us" => v / 1000,
            "s" => v * 1000,
            _ => v,
        };
    }

    [GeneratedRegex(@"^Requests/sec:\s+([0-9.]+)", RegexOptions.Multiline)]
    private static partial Regex RequestsPerSecond();

    [GeneratedRegex(@"^\s*([0-9]+) requests in", RegexOptions.Multiline)]
    private static partial Regex RequestsDone();

    [GeneratedRegex(@"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)")]
    private static partial Regex SocketErrors();

    [GeneratedRegex(@"Non-2xx or 3xx responses: ([0-9]+)")]
    private static partial Regex Non2xx();
}
