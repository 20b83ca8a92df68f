using System.Net;
using System.Net.Sockets;
using Xlb.Crds;

namespace Xlb.Operator.Core;

/// <summary>
/// One backend of one mapping port, resolved from a static endpoint or an EndpointSlice endpoint.
/// Address is the canonical text of its IP: the input's own string when that is canonical already,
/// so each of a cluster's endpoint addresses is one string in memory (slice, backend, listener).
/// </summary>
public sealed record ResolvedBackend(string Address, AddressFamily Family, int Port, int Weight, bool Draining, string? NodeName);

/// <summary>EndpointSlices → backends. Pure.</summary>
public static class Backends
{
    /// <summary>Whether text is an IP address, with its canonical form (the very same string when it is canonical) and family.</summary>
    internal static bool TryCanonical(string text, out string canonical, out AddressFamily family)
    {
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

    /// <summary>The slices of each Service, by namespace and name.</summary>
    public static Dictionary<(string Namespace, string Name), List<EndpointSlice>> IndexSlices(IReadOnlyCollection<EndpointSlice> slices)
    {
        var index = new Dictionary<(string Namespace, string Name), List<EndpointSlice>>(slices.Count);
        foreach (var s in slices)
        {
            if (s.Metadata.Labels?.GetValueOrDefault(EndpointSlice.ServiceNameLabel) is not { } service)
            {
                continue;
            }
            var key = (s.Metadata.Namespace ?? "default", service);
            if (!index.TryGetValue(key, out var list))
            {
                index[key] = list = [];
            }
            list.Add(s);
        }
        return index;
    }

    /// <summary>
    /// The backends of one mapping port from a Service's slices. Ready endpoints are active;
    /// serving and terminating ones are draining (no new flows, existing flows continue); the rest
    /// are out. The target port is a number, the name of a slice port, or (absent) the Service
    /// port with the same number, else the mapping port itself.
    /// </summary>
    public static List<ResolvedBackend> FromSlices(
        IReadOnlyList<EndpointSlice> slices, Service? service, int port, L4Protocol protocol, IntOrString? targetPort, out int notReady)
    {
        notReady = 0;
        var proto = protocol.ToString();
        var portName = targetPort?.Name;
        if (targetPort is null && service?.Spec.Ports.FirstOrDefault(p => p.Port == port && p.Protocol == proto) is { } sp)
        {
            portName = sp.Name ?? "";
        }
        var byKey = new Dictionary<(string, int), ResolvedBackend>();
        foreach (var slice in slices.OrderBy(s => s.Metadata.Name, StringComparer.Ordinal))
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
                if (e.Addresses.Length == 0 || !TryCanonical(e.Addresses[0], out var address, out var family))
                {
                    continue;
                }
                var ready = e.Conditions.Ready ?? true;
                var serving = e.Conditions.Serving ?? ready;
                var terminating = e.Conditions.Terminating ?? false;
                ResolvedBackend? backend = ready ? new(address, family, target, 1, false, e.NodeName)
                    : serving && terminating ? new(address, family, target, 1, true, e.NodeName)
                    : null;
                if (backend is null)
                {
                    notReady++;
                    continue;
                }
                // One endpoint can sit in two slices while it moves; the active entry wins.
                if (!byKey.TryGetValue((address, target), out var seen) || seen.Draining && !backend.Draining)
                {
                    byKey[(address, target)] = backend;
                }
            }
        }
        return [.. byKey.Values];
    }
}
