using System.Net;
using System.Text;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>
/// A listener as the data plane needs it, apart from numbering: its backends in the ABI's form
/// (in the listener's order) and its ring, as positions in that list; then, for LeastConn, the
/// weights of the ring's backends, in the same order (<see cref="Tail"/>), which the ring's span
/// holds after them.
/// </summary>
public sealed record CompiledListener(XlbBackend[] Backends, int[] Table, byte Mode, byte Algo)
{
    /// <summary>Values the span holds after the ring, as they are (LeastConn: the weights).</summary>
    public uint[] Tail { get; init; } = [];

    /// <summary>Ring slots the listener's service spans: its ring and its tail.</summary>
    public int SpanLength => Table.Length + Tail.Length;
}

/// <summary>
/// Listeners compiled by recent builds, by content: a listener whose backends, weights, states,
/// algorithm and mode are unchanged reuses its Maglev table instead of building it again (the
/// bulk of a build's work). Entries no build used since the last <see cref="Sweep"/> are dropped.
/// Not thread-safe: one per data plane, used by its applies.
/// </summary>
public sealed class ListenerMemo
{
    private Dictionary<string, CompiledListener> _kept = new(StringComparer.Ordinal);
    private Dictionary<string, CompiledListener> _used = new(StringComparer.Ordinal);
    private readonly StringBuilder _key = new();

    /// <summary>Listeners compiled since the memo was made (for tests and figures).</summary>
    public long Compiled { get; private set; }

    public CompiledListener Compile(Listener listener)
    {
        var key = KeyOf(listener);
        if (!_used.TryGetValue(key, out var compiled))
        {
            if (!_kept.TryGetValue(key, out compiled))
            {
                compiled = CompileFresh(listener);
                Compiled++;
            }
            _used[key] = compiled;
        }
        return compiled;
    }

    /// <summary>Forgets what no <see cref="Compile"/> asked for since the last sweep.</summary>
    public void Sweep()
    {
        _kept = _used;
        _used = new(StringComparer.Ordinal);
    }

    /// <summary>Everything the compiled form depends on, and nothing else (not the name, VIP or port).</summary>
    private string KeyOf(Listener l)
    {
        _key.Clear();
        _key.Append((int)l.Algorithm).Append('/').Append(l.MaglevTableSize ?? 0).Append('|').Append((int)l.NatMode).Append('|').Append(l.DsrEncapsulation?.ToString() ?? "-");
        foreach (var b in l.Backends)
        {
            _key.Append('|').Append(b.Address).Append(' ').Append(b.Port).Append(' ').Append(b.Weight).Append(b.Draining ? " d" : "");
        }
        return _key.ToString();
    }

    private static CompiledListener CompileFresh(Listener listener)
    {
        var abi = listener.Backends.Select(ToBackend).ToArray();
        var weights = listener.Backends.Select(b => b.Draining ? 0 : b.Weight).ToArray();
        var algo = AlgoOf(listener.Algorithm);
        if (algo == XlbAbi.AlgoLeastConn)
        {
            // Each backend that may take new flows, once, then their weights: the program compares
            // open flows per unit of weight.
            int[] eligible = [.. Enumerable.Range(0, weights.Length).Where(i => weights[i] > 0)];
            return new CompiledListener(abi, eligible, ModeOf(listener), algo) { Tail = [.. eligible.Select(i => (uint)weights[i])] };
        }
        var table = algo == XlbAbi.AlgoRoundRobin
            ? RoundRobin.Cycle([.. weights.Select(w => listener.Algorithm == SchedulingAlgorithm.RoundRobin && w > 0 ? 1 : w)])
            : Maglev.Build([.. abi.Select((be, i) => new MaglevBackend(BackendIdentity(be), weights[i]))], TableSize(listener));
        return new CompiledListener(abi, table, ModeOf(listener), algo);
    }

    /// <summary>The listener's Maglev table size; a node config written by hand with a bad one is refused, not built.</summary>
    private static int TableSize(Listener listener) => listener.MaglevTableSize switch
    {
        null => Maglev.DefaultSize,
        { } n when Crds.MaglevTableSize.Problem(n) is { } problem => throw new FormatException($"listener {listener.Name}: maglevTableSize {problem}"),
        { } n => n,
    };

    private static byte ModeOf(Listener listener) => listener.NatMode switch
    {
        NatMode.DNAT => XlbAbi.ModeDnat,
        NatMode.DSR => listener.DsrEncapsulation == DsrEncapsulation.L2 ? XlbAbi.ModeDsrL2 : XlbAbi.ModeDsrIpip,
        _ => XlbAbi.ModeFullNat,
    };

    /// <summary>The data plane's algorithm (round robin, weighted or not, is one: weights are slot shares).</summary>
    private static byte AlgoOf(SchedulingAlgorithm algorithm) => algorithm switch
    {
        SchedulingAlgorithm.SourceHash => XlbAbi.AlgoSourceHash,
        SchedulingAlgorithm.RoundRobin or SchedulingAlgorithm.WeightedRoundRobin => XlbAbi.AlgoRoundRobin,
        SchedulingAlgorithm.LeastConn => XlbAbi.AlgoLeastConn,
        _ => XlbAbi.AlgoMaglev,
    };

    private static XlbBackend ToBackend(NodeBackend b)
    {
        var address = IPAddress.Parse(b.Address);
        return new XlbBackend { Addr = Addr16.From(address), PortBe = Net.Be(b.Port), Family = Net.Family(address) };
    }

    /// <summary>The Maglev identity of a backend: the same on every node, whatever its index here.</summary>
    private static string BackendIdentity(XlbBackend b) => $"{b.Addr.ToAddress(b.Family)}:{Net.FromBe(b.PortBe)}";
}

/// <summary>
/// Where each service's ring lies in a generation's ring array. A service keeps the span it had
/// while its ring keeps its size; the others take the first gap that fits, looking from where
/// the previous one was placed, or the end. Should the array overflow that way (gaps too small),
/// every ring is laid out afresh, end to end, in name order.
/// </summary>
public static class RingSpans
{
    public sealed record Layout(IReadOnlyDictionary<XlbSvcKey, int> Offsets, int End);

    /// <param name="services">Each service (generation-free key) and its ring size, in name order.</param>
    /// <param name="previous">The services of the revision before, with their spans.</param>
    /// <exception cref="ConfigTooLargeException">The rings do not fit even end to end.</exception>
    public static Layout Assign(IReadOnlyList<(XlbSvcKey Key, int Size)> services, IReadOnlyDictionary<XlbSvcKey, XlbSvc>? previous, int capacity)
    {
        var offsets = new Dictionary<XlbSvcKey, int>();
        var held = new List<(int Off, int End)>();
        var fresh = new List<(XlbSvcKey Key, int Size)>();
        foreach (var (key, size) in services)
        {
            if (size == 0)
            {
                offsets[key] = 0;
            }
            else if (previous is not null && previous.TryGetValue(key, out var was) && was.RingSize == size && was.RingOff + (long)size <= capacity)
            {
                offsets[key] = (int)was.RingOff;
                held.Add(((int)was.RingOff, (int)was.RingOff + size));
            }
            else
            {
                fresh.Add((key, size));
            }
        }
        held.Sort();
        // The gaps between kept spans, then everything past the last one.
        var gaps = new List<(int Off, int End)>();
        var at = 0;
        var overlap = false;
        foreach (var (off, end) in held)
        {
            // Spans that overlap can only come from maps changed by hand: lay out afresh.
            overlap |= off < at;
            if (off > at)
            {
                gaps.Add((at, off));
            }
            at = Math.Max(at, end);
        }
        gaps.Add((at, int.MaxValue));
        var g = 0;
        foreach (var (key, size) in fresh)
        {
            while (gaps[g].End - gaps[g].Off < size)
            {
                g++;
            }
            offsets[key] = gaps[g].Off;
            gaps[g] = (gaps[g].Off + size, gaps[g].End);
        }
        var total = services.Sum(s => (long)s.Size);
        var endAll = offsets.Count == 0 ? 0 : services.Max(s => s.Size == 0 ? 0 : offsets[s.Key] + s.Size);
        if (total > capacity)
        {
            throw new ConfigTooLargeException($"Maglev rings need {total} slots; the data plane holds {capacity} (agent option --ring-slots)");
        }
        if (endAll <= capacity && !overlap)
        {
            return new Layout(offsets, endAll);
        }
        // Fragmented: lay every ring out afresh (each moves once; the diff rewrites them).
        var next = 0;
        foreach (var (key, size) in services)
        {
            offsets[key] = size == 0 ? 0 : next;
            next += size;
        }
        return new Layout(offsets, next);
    }
}
