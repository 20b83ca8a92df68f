namespace Xlb.Cli.Testbed;

/// <summary>
/// Two LB nodes on one Ethernet segment with a client and a backend, the shape of an L2
/// deployment: whoever holds a VIP answers ARP for it, and the others hear it.
/// <code>
///   client 10.220.0.2 ─┐
///   LB 1   10.220.0.11 ─┤ br0 [switch]
///   LB 2   10.220.0.12 ─┤
///   backend 10.220.0.21 ┘
/// </code>
/// The segment also carries fd00:220::/64 (the same hosts at ::2, ::11, ::12, ::21). The client
/// and the backend reach the VIP pools (10.250.0.0/24, fd00:250::/112) on the segment, so they ask
/// ARP or ND for a VIP; each LB forwards out of the interface it received on (XDP_TX). The switch ends of
/// the links run the bare XDP_PASS program, so XDP_TX into them is not dropped. Namespace names
/// carry a unique prefix, and <see cref="Dispose"/> deletes exactly those.
/// </summary>
public sealed class SegmentPairTopology : IDisposable
{
    public const string VipPool = "10.250.0.0/24";
    public const string VipPool6 = "fd00:250::/112";
    public const string ClientAddress = "10.220.0.2";
    public const string BackendAddress = "10.220.0.21";
    public const string ClientAddress6 = "fd00:220::2";
    public const string BackendAddress6 = "fd00:220::21";
    public const string LbInterface = "eth0";

    private readonly List<string> _created = [];

    public string Prefix { get; }
    public string Switch => Prefix + "s";
    public string Client => Prefix + "c";
    public string Backend => Prefix + "b";
    public IReadOnlyList<string> Lbs => [Prefix + "lb1", Prefix + "lb2"];

    /// <summary>LB node <paramref name="i"/>'s (1 or 2) address, where its peer reaches it.</summary>
    public static string LbAddress(int i) => $"10.220.0.1{i}";

    private static string LbAddress6(int i) => $"fd00:220::1{i}";

    private SegmentPairTopology(string prefix) => Prefix = prefix;

    public static SegmentPairTopology Create(string prefix) => Netns.Built(new SegmentPairTopology(prefix), t => t.Build());

    private void Build()
    {
        foreach (var ns in (string[])[Switch, Client, Backend, .. Lbs])
        {
            Netns.Add(ns);
            _created.Add(ns);
            Netns.Ip(ns, "link", "set", "lo", "up");
            // Addresses usable at once (a tentative link-local one cannot ask for a VIP).
            Netns.Exec(ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0");
        }
        foreach (var ns in Lbs)
        {
            // The program's FIB lookups need forwarding on.
            Netns.Exec(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
            Netns.Exec(ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1");
        }
        Netns.Ip(Switch, "link", "add", "br0", "type", "bridge");
        Netns.Ip(Switch, "link", "set", "br0", "up");
        Port("pc", Client, ClientAddress, ClientAddress6);
        Port("pb", Backend, BackendAddress, BackendAddress6);
        for (var i = 1; i <= 2; i++)
        {
            Port($"p{i}", Lbs[i - 1], LbAddress(i), LbAddress6(i));
            foreach (var (other, ns) in (ReadOnlySpan<(string, string)>)[(ClientAddress, Client), (BackendAddress, Backend), (ClientAddress6, Client), (BackendAddress6, Backend)])
            {
                Netns.Ip(Lbs[i - 1], "neigh", "replace", other, "lladdr", LbTopology.Mac(ns, "eth0"), "dev", LbInterface, "nud", "permanent");
            }
        }
        foreach (var ns in (string[])[Client, Backend])
        {
            Netns.Ip(ns, "route", "add", VipPool, "dev", "eth0");
            Netns.Ip(ns, "-6", "route", "add", VipPool6, "dev", "eth0");
        }
    }

    /// <summary>A veth pair from the switch's bridge to <paramref name="peerNs"/>'s eth0 with <paramref name="address"/>/24 and <paramref name="address6"/>/64.</summary>
    private void Port(string switchIf, string peerNs, string address, string address6)
    {
        Netns.Ip(Switch, "link", "add", switchIf, "type", "veth", "peer", "name", "eth0", "netns", peerNs);
        Netns.Ip(Switch, "link", "set", switchIf, "master", "br0");
        Netns.Ip(peerNs, "addr", "add", address + "/24", "dev", "eth0");
        Netns.Ip(peerNs, "addr", "add", address6 + "/64", "dev", "eth0", "nodad");
        Netns.Ip(Switch, "link", "set", switchIf, "up");
        Netns.Ip(peerNs, "link", "set", "eth0", "up");
        // XDP_TX into a veth is dropped unless its peer has XDP; the skb's "checksum left to
        // hardware" does not survive XDP: every sender computes it.
        Netns.Ip(Switch, "link", "set", "dev", switchIf, "xdp", "obj", RoutedPairTopology.PassProgram, "sec", "xdp");
        Netns.Exec(Switch, "ethtool", "-K", switchIf, "tx", "off");
        Netns.Exec(peerNs, "ethtool", "-K", "eth0", "tx", "off");
    }

    /// <summary>
    /// Standalone manifests of both LB nodes (lb-1, lb-2, with their addresses), a pool, shard
    /// "edge" pinned to lb-1 then lb-2, announced by L2, with the given detection, and PortMapping
    /// demo/web on port 80 of <paramref name="vip"/> (IPv4 or IPv6) to the backend's address of its family (FullNAT).
    /// </summary>
    public static string Manifests(string vip, string interval, int multiplier) =>
        RoutedPairTopology.PairManifests(LbAddress(1), LbAddress(2), [VipPool, VipPool6], interval, multiplier, "{mode: L2}", flowSync: false) + $$$"""
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata: {name: web, namespace: demo}
        spec:
          shardRef: edge
          vip: {{{vip}}}
          ports: [{name: http, port: 80, targetPort: {{{Testbed.BackendPort}}}}]
          backend:
            endpoints:
              - address: {{{(vip.Contains(':', StringComparison.Ordinal) ? BackendAddress6 : BackendAddress)}}}
        """;

    public void Dispose() => Netns.DeleteAll(_created);
}
