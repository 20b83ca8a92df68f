using System.Net;
using System.Net.Sockets;
using Xlb.Crds;

namespace Xlb.Operator.Core;

/// <summary>
/// The backends of one mapping port, resolved from static endpoints or EndpointSlices, as node
/// configs list them. Each address is the canonical text of its IP: the input's own string when
/// that is canonical already, so each of a cluster's endpoint addresses is one string in memory
/// (slice, backend, listener). A listener takes this very list when it can (all of the VIP's
/// family, no trafficPolicy Local), so nothing may change it once resolved.
/// </summary>
/// <param name="List">The backends.</param>
/// <param name="Nodes">Each backend's node, in the order of <paramref name="List"/>; only kept for trafficPolicy Local, which needs it.</param>
public sealed record PortBackends(List<NodeBackend> List, List<string?>? Nodes)
{
    /// <summary>Whether a canonical address is IPv6 (IPv4 text has no colon).</summary>
    public static bool IsIPv6(string canonical) => canonical.Contains(':', StringComparison.Ordinal);
}

/// <summary>EndpointSlices → backends. Pure.</summary>
public static class Backends
{
    /// <summary>Whether text is an IP address, with its canonical form (the very same string when it is canonical already) and family.</summary>
    internal static bool TryCanonical(string text, out string canonical, out AddressFamily family)
    {
        if (IsCanonicalIPv4(text))
        {
            (canonical, family) = (text, AddressFamily.InterNetwork);
            return true;
        }
        if (!IPAddress.TryParse(text, out var ip))
        {
            (canonical, family) = ("", AddressFamily.Unknown);
            return false;
        }
        family = ip.AddressFamily;
        Span<char> formatted = stackalloc char[64];
        canonical = ip.TryFormat(formatted, out var written) && formatted[..written].SequenceEqual(text) ? text : ip.ToString();
        return true;
    }

    /// <summary>
    /// Four decimal octets of 0–255 without leading zeros, dot-separated: the form IPAddress writes,
    /// and the form a cluster's endpoint addresses come in. Checked without parsing into an object.
    /// </summary>
    internal static bool IsCanonicalIPv4(ReadOnlySpan<char> text)
    {
        var octets = 0;
        var i = 0;
        while (i < text.Length)
        {
            var start = i;
            var value = 0;
            while (i < text.Length && char.IsAsciiDigit(text[i]) && i - start < 3)
            {
                value = value * 10 + (text[i] - '0');
                i++;
            }
            var digits = i - start;
            if (digits == 0 || value > 255 || digits > 1 && text[start] == '0')
            {
                return false;
            }
            octets++;
            if (i == text.Length)
            {
                break;
            }
            if (text[i] != '.' || octets == 4)
            {
                return false;
            }
            i++;
        }
        return octets == 4; // a trailing dot ends the loop short of four
    }

    /// <summary>The slices of each Service, by namespace and name.</summary>
    public static Dictionary<(string Namespace, string Name), List<EndpointSlice>> IndexSlices(IReadOnlyCollection<EndpointSlice> slices)
    {
        var index = new Dictionary<(string Namespace, string Name), List<EndpointSlice>>(slices.Count);
        foreach (var s in slices)
        {
            if (Planner.InputIndex.OwnerOf(s) is not { } key)
            {
                continue;
            }
            if (!index.TryGetValue(key, out var list))
            {
                index[key] = list = [];
            }
            list.Add(s);
        }
        return index;
    }

    /// <summary>
    /// The backends of one mapping port from a Service's slices, sorted by address (ordinal) and port. Ready endpoints are active;
    /// serving and terminating ones are draining (no new flows, existing flows continue); the rest
    /// are out. The target port is a number, the name of a slice port, or (absent) the Service
    /// port with the same number, else the mapping port itself.
    /// </summary>
    public static PortBackends FromSlices(
        IReadOnlyList<EndpointSlice> slices, Service? service, int port, L4Protocol protocol, IntOrString? targetPort, bool withNodes, out int notReady)
    {
        notReady = 0;
        var proto = protocol.ToString();
        var portName = targetPort?.Name;
        if (targetPort is null && service?.Spec.Ports.FirstOrDefault(p => p.Port == port && p.Protocol == proto) is { } sp)
        {
            portName = sp.Name ?? "";
        }
        var capacity = slices.Sum(s => s.Endpoints.Count);
        // Without nodes (no trafficPolicy Local) the backends alone are sorted and become the list.
        var lean = withNodes ? null : new List<NodeBackend>(capacity);
        var found = withNodes ? new List<(NodeBackend Backend, string? Node, int Seen)>(capacity) : null;
        foreach (var slice in slices.Count == 1 ? slices : (IEnumerable<EndpointSlice>)slices.OrderBy(s => s.Metadata.Name, StringComparer.Ordinal))
        {
            if (slice.AddressType is not ("IPv4" or "IPv6"))
            {
                continue;
            }
            int target;
            if (targetPort?.Number is { } n)
            {
                target = n;
            }
            else if (portName is not null)
            {
                var match = slice.Ports.FirstOrDefault(p => (p.Name ?? "") == portName && p.Protocol == proto);
                if (match?.Port is not { } resolved)
                {
                    continue;
                }
                target = resolved;
            }
            else
            {
                target = port;
            }
            foreach (var e in slice.Endpoints)
            {
                if (e.FirstAddress is not { } first || !TryCanonical(first, out var address, out _))
                {
                    continue;
                }
                var ready = e.Conditions.Ready ?? true;
                var serving = e.Conditions.Serving ?? ready;
                var terminating = e.Conditions.Terminating ?? false;
                if (ready || serving && terminating)
                {
                    var backend = new NodeBackend { Address = address, Port = target, Draining = !ready };
                    lean?.Add(backend);
                    found?.Add((backend, e.NodeName, found.Count));
                }
                else
                {
                    notReady++;
                }
            }
        }
        // Sorted by address and port (as listeners list them), one backend per pair: one endpoint
        // can sit in two slices while it moves, and then the first active entry wins, else the first.
        if (lean is not null)
        {
            return new PortBackends(SortedOnce(lean), null);
        }
        found!.Sort(static (a, b) =>
        {
            var c = string.CompareOrdinal(a.Backend.Address, b.Backend.Address);
            return c != 0 ? c : a.Backend.Port != b.Backend.Port ? a.Backend.Port.CompareTo(b.Backend.Port) : a.Seen.CompareTo(b.Seen);
        });
        var result = new List<NodeBackend>(found.Count);
        var nodes = withNodes ? new List<string?>(found.Count) : null;
        for (var i = 0; i < found.Count;)
        {
            var pick = found[i];
            var j = i + 1;
            for (; j < found.Count && found[j].Backend.Address == pick.Backend.Address && found[j].Backend.Port == pick.Backend.Port; j++)
            {
                if (pick.Backend.Draining && !found[j].Backend.Draining)
                {
                    pick = found[j];
                }
            }
            result.Add(pick.Backend);
            nodes?.Add(pick.Node);
            i = j;
        }
        return new PortBackends(result, nodes);
    }

    /// <summary>
    /// Backends sorted by address and port, one per pair, in place; of a pair's entries an active
    /// one is kept, else a draining one. Entries of one pair and one state are the same value, so
    /// which of them is kept (the first seen, by the rule above) makes no difference.
    /// </summary>
    private static List<NodeBackend> SortedOnce(List<NodeBackend> backends)
    {
        backends.Sort(static (a, b) =>
        {
            var c = string.CompareOrdinal(a.Address, b.Address);
            return c != 0 ? c : a.Port != b.Port ? a.Port.CompareTo(b.Port) : a.Draining.CompareTo(b.Draining);
        });
        var kept = 0;
        for (var i = 0; i < backends.Count; i++)
        {
            if (kept > 0 && backends[kept - 1].Address == backends[i].Address && backends[kept - 1].Port == backends[i].Port)
            {
                continue;
            }
            backends[kept++] = backends[i];
        }
        backends.RemoveRange(kept, backends.Count - kept);
        return backends;
    }
}
