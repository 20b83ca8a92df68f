using System.Net;
using Xlb.Crds;

namespace Xlb.Agent.Core;

/// <summary>
/// L2 DSR sends a client's packet, unchanged, to the backend's MAC, which the XDP program gets
/// from the kernel's neighbour table. The kernel resolves a neighbour only when it sends to it
/// itself, which for these packets it never does, so the agent makes it: these are the
/// addresses to resolve.
/// </summary>
public static class DsrNeighbours
{
    public static IReadOnlyList<IPAddress> Addresses(XlbNodeConfigSpec spec) =>
        [.. spec.Listeners
            .Where(l => l.NatMode == NatMode.DSR && l.DsrEncapsulation == DsrEncapsulation.L2)
            .SelectMany(l => l.Backends)
            .Select(b => IPAddress.Parse(b.Address))
            .Distinct()
            .OrderBy(a => a.AddressFamily)
            .ThenBy(a => a.ToString(), StringComparer.Ordinal)];
}
