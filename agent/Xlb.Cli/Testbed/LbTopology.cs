using System.Globalization;
using System.Net;
using System.Text.Json;

namespace Xlb.Cli.Testbed;

/// <summary>
/// A client, one LB node and N backends, each in its own network namespace, wired with veth
/// pairs through the LB (which routes between them):
/// <code>
///   client eth0 10.200.0.2 ── xc 10.200.0.1 [LB] xbI 10.201.I.1 ── eth0 10.201.I.2 backend I
/// </code>
/// The client reaches the VIP pool 10.250.0.0/24 through the LB; backends route through it by default.
/// Namespace names carry a unique prefix, and <see cref="Dispose"/> deletes exactly those.
/// </summary>
public sealed class LbTopology : IDisposable
{
    public const string VipPool = "10.250.0.0/24";
    public const string ClientAddress = "10.200.0.2";
    public const string ClientIfOnLb = "xc";

    private readonly List<string> _created = [];

    public string Prefix { get; }
    public string Client => Prefix + "c";
    public string Lb => Prefix + "lb";
    public IReadOnlyList<string> Backends { get; }

    public static string BackendAddress(int i) => $"10.201.{i}.2";

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
        var t = new LbTopology(prefix, backends);
        try
        {
            t.Build();
            return t;
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    private void Build()
    {
        foreach (var ns in (string[])[Client, Lb, .. Backends])
        {
            Netns.Add(ns);
            _created.Add(ns);
            Netns.Ip(ns, "link", "set", "lo", "up");
        }
        Netns.Exec(Lb, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1");
        Netns.Exec(Lb, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0");

        Link(ClientIfOnLb, "10.200.0.1/24", Client, "10.200.0.2/24");
        Netns.Ip(Client, "route", "add", VipPool, "via", "10.200.0.1");
        for (var i = 1; i <= Backends.Count; i++)
        {
            Link(BackendIfOnLb(i), $"10.201.{i}.1/24", Backends[i - 1], $"{BackendAddress(i)}/24");
            Netns.Ip(Backends[i - 1], "route", "add", "default", "via", $"10.201.{i}.1");
        }
    }

    /// <summary>A veth pair from the LB to <paramref name="peerNs"/>, where its end is eth0.</summary>
    private void Link(string lbIf, string lbAddr, string peerNs, string peerAddr)
    {
        Netns.Ip(Lb, "link", "add", lbIf, "type", "veth", "peer", "name", "eth0", "netns", peerNs);
        Netns.Ip(Lb, "addr", "add", lbAddr, "dev", lbIf);
        Netns.Ip(peerNs, "addr", "add", peerAddr, "dev", "eth0");
        Netns.Ip(Lb, "link", "set", lbIf, "up");
        Netns.Ip(peerNs, "link", "set", "eth0", "up");
        // XDP redirects into a veth are dropped unless its peer has XDP or GRO: the LB sends into these.
        Netns.Exec(peerNs, "ethtool", "-K", "eth0", "gro", "on");
        // A host's veth leaves TCP/UDP checksums to "hardware" (CHECKSUM_PARTIAL) that never runs:
        // the kernel trusts skb metadata that an XDP redirect drops, and the receiver then rejects
        // the packet. A real wire carries full checksums; make the hosts compute them.
        Netns.Exec(peerNs, "ethtool", "-K", "eth0", "tx", "off");
        // Static neighbours: the very first packet is forwarded by XDP, not handed to the kernel.
        Netns.Ip(Lb, "neigh", "replace", peerAddr.Split('/')[0], "lladdr", Mac(peerNs, "eth0"), "dev", lbIf, "nud", "permanent");
        Netns.Ip(peerNs, "neigh", "replace", lbAddr.Split('/')[0], "lladdr", Mac(Lb, lbIf), "dev", "eth0", "nud", "permanent");
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
        return b is [10, 201, var i, 2] ? i : 0;
    }

    public static string Describe(int backends) =>
        string.Create(CultureInfo.InvariantCulture, $"client 10.200.0.2 -> LB -> {backends} backends 10.201.1-{backends}.2");

    public void Dispose()
    {
        foreach (var ns in Enumerable.Reverse(_created))
        {
            try
            {
                Netns.Delete(ns);
            }
            catch (InvalidOperationException)
            {
                // Best effort: keep deleting the others.
            }
        }
        _created.Clear();
    }
}
