namespace Xlb.Cli.Testbed;

/// <summary>
/// Two one-armed LB nodes behind a router, the usual shape of a routed (BGP or ECMP) deployment:
/// <code>
///   client eth0 10.200.0.2 ── rc 10.200.0.1 [router] r1 10.210.1.1 ── xr 10.210.1.2 LB 1
///                                                    r2 10.210.2.1 ── xr 10.210.2.2 LB 2
///                                                    rbI 10.201.I.1 ── eth0 10.201.I.2 backend I (1, 2)
/// </code>
/// Every namespace routes through the router. The router sends the VIP pool (10.250.0.0/24) to
/// one LB node; <see cref="RouteVipsTo"/> moves it, as a router does when the VIPs' announcement
/// moves. Each LB forwards out of the interface it received on (XDP_TX): to the backend and back
/// to the client through the router. Namespace names carry a unique prefix, and
/// <see cref="Dispose"/> deletes exactly those.
/// </summary>
public sealed class RoutedPairTopology : IDisposable
{
    public const string VipPool = "10.250.0.0/24";
    public const string ClientAddress = "10.200.0.2";
    public const string LbInterface = "xr";

    private readonly List<string> _created = [];

    public string Prefix { get; }
    public string Client => Prefix + "c";
    public string Router => Prefix + "r";
    public IReadOnlyList<string> Backends => [Prefix + "b1", Prefix + "b2"];

    public static string BackendAddress(int i) => $"10.201.{i}.2";
    public IReadOnlyList<string> Lbs => [Prefix + "lb1", Prefix + "lb2"];

    /// <summary>LB node <paramref name="i"/>'s (1 or 2) address: where the router sends it the VIPs, and where its peer reaches it.</summary>
    public static string LbAddress(int i) => $"10.210.{i}.2";

    private RoutedPairTopology(string prefix) => Prefix = prefix;

    /// <summary>The bare XDP_PASS program built beside the binaries (Testbed/pass.c).</summary>
    public static string PassProgram => Path.Combine(AppContext.BaseDirectory, "xdp", "pass.o");

    public static RoutedPairTopology Create(string prefix)
    {
        return Netns.Built(new RoutedPairTopology(prefix), t => t.Build());
    }

    private void Build()
    {
        foreach (var ns in (string[])[Client, Router, .. Backends, .. Lbs])
        {
            Netns.Add(ns);
            _created.Add(ns);
            Netns.Ip(ns, "link", "set", "lo", "up");
        }
        foreach (var ns in (string[])[Router, .. Lbs])
        {
            Netns.Exec(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
            Netns.Exec(ns, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0");
            Netns.Exec(ns, "sysctl", "-q", "-w", "net.ipv4.conf.default.rp_filter=0");
        }
        Link("rc", "10.200.0.1/24", Client, "eth0", ClientAddress + "/24");
        for (var i = 1; i <= 2; i++)
        {
            Link($"rb{i}", $"10.201.{i}.1/24", Backends[i - 1], "eth0", BackendAddress(i) + "/24");
            Netns.Ip(Backends[i - 1], "route", "add", "default", "via", $"10.201.{i}.1");
        }
        for (var i = 1; i <= 2; i++)
        {
            Link($"r{i}", $"10.210.{i}.1/24", Lbs[i - 1], LbInterface, LbAddress(i) + "/24");
            // The LB sends back out of this link with XDP_TX, which wakes the router end's NAPI
            // only if that end runs an XDP program (docs/architecture.md, "Test topology"): with
            // GRO alone, frames sit in its ring until other traffic wakes it (measured here: 29 of
            // 30 connections failed), and the sender counts no error.
            Netns.Ip(Router, "link", "set", "dev", $"r{i}", "xdp", "obj", PassProgram, "sec", "xdp");
            Netns.Ip(Lbs[i - 1], "route", "add", "default", "via", $"10.210.{i}.1");
        }
        Netns.Ip(Client, "route", "add", "default", "via", "10.200.0.1");
        RouteVipsTo(1);
    }

    /// <summary>The router's BGP address (on its loopback), which both LB nodes reach through it.</summary>
    public const string RouterId = "10.255.0.1";

    /// <summary>
    /// Makes the router learn the VIPs by BGP only: the static route to the pool goes, and BIRD on
    /// the router (at <see cref="RouterId"/>) peers with both LB nodes in AS 65000.
    /// </summary>
    public BirdPeer StartBgpRouter(TextWriter log)
    {
        Netns.Ip(Router, "route", "del", VipPool);
        Netns.Ip(Router, "addr", "add", RouterId + "/32", "dev", "lo");
        return BirdPeer.Start(Router, RouterId,
            [new("lb1", RouterId, LbAddress(1), 65000, 65000), new("lb2", RouterId, LbAddress(2), 65000, 65000)],
            log, "protocol direct { ipv4; }");
    }

    /// <summary>A VipShard's announcement to the router's BIRD (<see cref="StartBgpRouter"/>), as a YAML flow mapping.</summary>
    public const string BgpAnnouncement = "{mode: BGP, peers: [{address: " + RouterId + ", asn: 65000, myAsn: 65000}]}";

    /// <summary>
    /// PortMapping demo/<paramref name="name"/> on port 80 of <paramref name="vip"/> in
    /// <paramref name="shard"/>, LeastConn over both backends (so two held connections are on
    /// both, and a node that chooses afresh chooses otherwise).
    /// </summary>
    public static string Mapping(string shard, string vip, string? name = null) => $$$"""
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata: {name: {{{name ?? "web-" + shard}}}, namespace: demo}
        spec:
          shardRef: {{{shard}}}
          vip: {{{vip}}}
          ports: [{name: http, port: 80, targetPort: {{{Testbed.BackendPort}}}}]
          scheduling: {algorithm: LeastConn}
          backend:
            endpoints:
              - address: {{{BackendAddress(1)}}}
              - address: {{{BackendAddress(2)}}}
        """;

    /// <summary>
    /// Standalone manifests of both LB nodes (lb-1, lb-2, with their addresses), a pool, shard
    /// "edge" pinned to lb-1 then lb-2 with flow sync and the given detection and announcement,
    /// and <see cref="Mapping"/> "web" on <paramref name="vip"/>.
    /// </summary>
    public static string FailoverManifests(string vip, string interval, int multiplier, string announcement) =>
        PairManifests(LbAddress(1), LbAddress(2), [VipPool], interval, multiplier, announcement, flowSync: true) + Mapping("edge", vip, "web");

    /// <summary>
    /// Standalone manifests of two LB nodes lb-1 and lb-2 at the given addresses, LoadBalancerPool
    /// "pool" of <paramref name="blocks"/>, and VipShard "edge" pinned to lb-1 then lb-2 with the
    /// given detection and announcement (a YAML flow mapping); each document ends with its separator.
    /// </summary>
    public static string PairManifests(string lb1, string lb2, IEnumerable<string> blocks, string interval, int multiplier, string announcement, bool flowSync) => $$$"""
        apiVersion: v1
        kind: Node
        metadata: {name: lb-1}
        status:
          addresses: [{type: InternalIP, address: {{{lb1}}}}]
        ---
        apiVersion: v1
        kind: Node
        metadata: {name: lb-2}
        status:
          addresses: [{type: InternalIP, address: {{{lb2}}}}]
        ---
        apiVersion: xlb.io/v1alpha1
        kind: LoadBalancerPool
        metadata: {name: pool}
        spec: {blocks: [{{{string.Join(", ", blocks.Select(b => $"\"{b}\""))}}}]}
        ---
        apiVersion: xlb.io/v1alpha1
        kind: VipShard
        metadata: {name: edge}
        spec:
          poolRef: pool
          placement: {strategy: Pinned, nodes: [lb-1, lb-2]}
          failover: {detection: {interval: {{{interval}}}, multiplier: {{{multiplier}}}}}
          announcement: {{{announcement}}}
          flowSync: {enabled: {{{(flowSync ? "true" : "false")}}}}
        ---

        """;

    /// <summary>The router sends the VIP pool to LB node <paramref name="i"/> from now on.</summary>
    public void RouteVipsTo(int i) => Netns.Ip(Router, "route", "replace", VipPool, "via", LbAddress(i));

    /// <summary>A veth pair from the router to <paramref name="peerNs"/>; static neighbours both ways, full checksums, GRO where XDP sends.</summary>
    private void Link(string routerIf, string routerAddr, string peerNs, string peerIf, string peerAddr)
    {
        Netns.Ip(Router, "link", "add", routerIf, "type", "veth", "peer", "name", peerIf, "netns", peerNs);
        Netns.Ip(Router, "addr", "add", routerAddr, "dev", routerIf);
        Netns.Ip(peerNs, "addr", "add", peerAddr, "dev", peerIf);
        Netns.Ip(Router, "link", "set", routerIf, "up");
        Netns.Ip(peerNs, "link", "set", peerIf, "up");
        foreach (var (ns, dev) in (ReadOnlySpan<(string, string)>)[(Router, routerIf), (peerNs, peerIf)])
        {
            // XDP_TX into a veth is dropped unless its peer has XDP or GRO; and the skb's
            // "checksum left to hardware" does not survive XDP: every sender computes it.
            Netns.Exec(ns, "ethtool", "-K", dev, "gro", "on");
            Netns.Exec(ns, "ethtool", "-K", dev, "tx", "off");
        }
        Netns.Ip(Router, "neigh", "replace", peerAddr.Split('/')[0], "lladdr", LbTopology.Mac(peerNs, peerIf), "dev", routerIf, "nud", "permanent");
        Netns.Ip(peerNs, "neigh", "replace", routerAddr.Split('/')[0], "lladdr", LbTopology.Mac(Router, routerIf), "dev", peerIf, "nud", "permanent");
    }

    public void Dispose() => Netns.DeleteAll(_created);
}
