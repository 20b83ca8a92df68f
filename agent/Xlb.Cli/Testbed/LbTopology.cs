using System.Globalization;
using System.Net;
using System.Text.Json;

namespace Xlb.Cli.Testbed;

/// <summary>
/// A client, one LB node and N backends, each in its own network namespace, wired with veth
/// pairs through the LB (which routes between them):
/// <code>
///   client eth0 10.200.0.2 ── xc 10.200.0.1 [LB] xbI 10.201.I.1 ── eth0 10.201.I.2 backend I
///          fd00:200::2          fd00:200::1       fd00:201:I::1       fd00:201:I::2
/// </code>
/// The client reaches the VIP pools 10.250.0.0/24 and fd00:250::/64 through the LB; backends
/// route through it by default.
/// Namespace names carry a unique prefix, and <see cref="Dispose"/> deletes exactly those.
/// </summary>
public sealed class LbTopology : IDisposable
{
    public const string VipPool = "10.250.0.0/24";
    public const string ClientAddress = "10.200.0.2";
    public const string VipPool6 = "fd00:250::/64";
    public const string ClientAddress6 = "fd00:200::2";
    public const string ClientIfOnLb = "xc";

    private readonly List<string> _created = [];

    public string Prefix { get; }
    public string Client => Prefix + "c";
    public string Lb => Prefix + "lb";
    public IReadOnlyList<string> Backends { get; }

    public static string BackendAddress(int i) => $"10.201.{i}.2";

    public static string BackendAddress6(int i) => $"fd00:201:{i}::2";

    public static string BackendIfOnLb(int i) => $"xb{i}";

    /// <summary>The LB-side interfaces the agent attaches XDP to.</summary>
    public IReadOnlyList<string> LbInterfaces => [ClientIfOnLb, .. Enumerable.Range(1, Backends.Count).Select(BackendIfOnLb)];

    private LbTopology(string prefix, int backends)
    {
        Prefix = prefix;
        Backends = [.. Enumerable.Range(1, backends).Select(i => $"{prefix}b{i}")];
    }

    /// <summary>A prefix unique to this process and call, short enough for namespace names.</summary>
    public static string NewPrefix(string tag) =>
        $"xlb{tag}{Environment.ProcessId % 100000}{Interlocked.Increment(ref s_counter)}-";

    private static int s_counter;

    public static LbTopology Create(string prefix, int backends)
    {
        return Netns.Built(new LbTopology(prefix, backends), t => t.Build());
    }

    private void Build()
    {
        foreach (var ns in (string[])[Client, Lb, .. Backends])
        {
            Netns.Add(ns);
            _created.Add(ns);
            Netns.Ip(ns, "link", "set", "lo", "up");
            // No duplicate address detection: addresses are usable at once (the names are ours).
            Netns.Exec(ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0");
        }
        Netns.Exec(Lb, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
        Netns.Exec(Lb, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0");
        Netns.Exec(Lb, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1");

        Link(ClientIfOnLb, ("10.200.0.1/24", "fd00:200::1/64"), Client, ("10.200.0.2/24", ClientAddress6 + "/64"));
        Netns.Ip(Client, "route", "add", VipPool, "via", "10.200.0.1");
        Netns.Ip(Client, "-6", "route", "add", VipPool6, "via", "fd00:200::1");
        for (var i = 1; i <= Backends.Count; i++)
        {
            Link(BackendIfOnLb(i), ($"10.201.{i}.1/24", $"fd00:201:{i}::1/64"), Backends[i - 1], ($"{BackendAddress(i)}/24", $"{BackendAddress6(i)}/64"));
            Netns.Ip(Backends[i - 1], "route", "add", "default", "via", $"10.201.{i}.1");
            Netns.Ip(Backends[i - 1], "-6", "route", "add", "default", "via", $"fd00:201:{i}::1");
        }
    }

    /// <summary>A veth pair from the LB to <paramref name="peerNs"/>, where its end is eth0; an IPv4 and an IPv6 address each side.</summary>
    private void Link(string lbIf, (string V4, string V6) lbAddrs, string peerNs, (string V4, string V6) peerAddrs)
    {
        Netns.Ip(Lb, "link", "add", lbIf, "type", "veth", "peer", "name", "eth0", "netns", peerNs);
        foreach (var (lbAddr, peerAddr) in (ReadOnlySpan<(string, string)>)[(lbAddrs.V4, peerAddrs.V4), (lbAddrs.V6, peerAddrs.V6)])
        {
            Netns.Ip(Lb, "addr", "add", lbAddr, "dev", lbIf, "nodad");
            Netns.Ip(peerNs, "addr", "add", peerAddr, "dev", "eth0", "nodad");
        }
        Netns.Ip(Lb, "link", "set", lbIf, "up");
        Netns.Ip(peerNs, "link", "set", "eth0", "up");
        // XDP redirects into a veth are dropped unless its peer has XDP or GRO: the LB sends into these.
        Netns.Exec(peerNs, "ethtool", "-K", "eth0", "gro", "on");
        // A host's veth leaves TCP/UDP checksums to "hardware" (CHECKSUM_PARTIAL) that never runs:
        // the kernel trusts skb metadata that an XDP redirect drops, and the receiver then rejects
        // the packet. A real wire carries full checksums; make the hosts compute them.
        Netns.Exec(peerNs, "ethtool", "-K", "eth0", "tx", "off");
        // Static neighbours: the very first packet is forwarded by XDP, not handed to the kernel.
        foreach (var (lbAddr, peerAddr) in (ReadOnlySpan<(string, string)>)[(lbAddrs.V4, peerAddrs.V4), (lbAddrs.V6, peerAddrs.V6)])
        {
            Netns.Ip(Lb, "neigh", "replace", peerAddr.Split('/')[0], "lladdr", Mac(peerNs, "eth0"), "dev", lbIf, "nud", "permanent");
            Netns.Ip(peerNs, "neigh", "replace", lbAddr.Split('/')[0], "lladdr", Mac(Lb, lbIf), "dev", "eth0", "nud", "permanent");
        }
    }

    public static string Mac(string ns, string ifname)
    {
        using var doc = JsonDocument.Parse(Netns.Ip(ns, "-j", "link", "show", ifname));
        return doc.RootElement[0].GetProperty("address").GetString()!;
    }

    /// <summary>The backend index (1-based) of an address of this topology, or 0.</summary>
    public static int BackendIndexOf(IPAddress a)
    {
        var b = a.GetAddressBytes();
        return b switch
        {
            [10, 201, var i, 2] => i,
            [0xfd, 0, 2, 1, 0, var i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2] => i,
            _ => 0,
        };
    }

    public static string Describe(int backends) =>
        string.Create(CultureInfo.InvariantCulture, $"client 10.200.0.2 -> LB -> {backends} backends 10.201.1-{backends}.2");

    public void Dispose() => Netns.DeleteAll(_created);
}
