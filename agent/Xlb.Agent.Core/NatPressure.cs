using System.Globalization;
using System.Net;
using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>
/// FullNAT port pressure, for the node config's Degraded condition: the (source address, backend) pairs (the source the VIP or one of its service's source addresses, each with a range of its own)
/// whose ports are nearly all held, where a new connection's SYN soon finds no port and waits
/// (drop_nat_ports_busy). Pure: from the counts <see cref="NodeStatus.NatPortsHeld"/> makes.
/// </summary>
public static class NatPressure
{
    /// <summary>The share of the range held from which a pair is reported: the port search (16 tries a SYN) starts to miss past about three quarters.</summary>
    public const double Threshold = 0.9;

    /// <summary>One line per pair at or past <see cref="Threshold"/> of <paramref name="range"/>, sorted; empty when none is.</summary>
    public static List<string> Of(IReadOnlyDictionary<(Addr16 Source, byte Family, byte Proto, Addr16 Backend, ushort BackendPortBe), NatPortUse> held, int range)
    {
        var lines = new List<string>();
        if (range <= 0)
        {
            return lines;
        }
        foreach (var ((source, family, proto, backend, portBe), (h, ended, halfOpen)) in held)
        {
            if (h >= Threshold * range)
            {
                var to = new IPEndPoint(backend.ToAddress(family), Net.FromBe(portBe));
                var line = string.Create(CultureInfo.InvariantCulture,
                    $"{to}/{NodeStatus.ProtocolName(proto)} from {source.ToAddress(family)}: {h} of {range} ports held, {ended} of them by ended connections");
                lines.Add(halfOpen == 0 ? line : string.Create(CultureInfo.InvariantCulture,
                    $"{line}, {halfOpen} by handshakes not completed (a SYN flood holds ports so; each gives its port up 2 s after its last SYN)"));
            }
        }
        lines.Sort(StringComparer.Ordinal);
        return lines;
    }
}
