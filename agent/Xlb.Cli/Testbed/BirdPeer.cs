using System.Diagnostics;
using System.Text.Json;

namespace Xlb.Cli.Testbed;

/// <summary>
/// A BIRD 2 daemon inside a namespace, as the router an LB node peers with: passive BGP sessions
/// to the given neighbours that import every route they offer and export none, and a kernel
/// protocol that installs what BGP learned into the namespace's routing table (so the namespace's
/// own traffic follows it). It helps graceful restart (BIRD's default, "aware"). Stopped and its
/// files removed on <see cref="Dispose"/>.
/// </summary>
public sealed class BirdPeer : IDisposable
{
    private readonly Process _bird;
    private readonly string _dir;

    public string Namespace { get; }
    public string Socket => Path.Combine(_dir, "bird.ctl");

    private BirdPeer(string ns, string dir, Process bird)
    {
        Namespace = ns;
        _dir = dir;
        _bird = bird;
    }

    /// <summary>One neighbour: our address on the link, its address, and both AS numbers.</summary>
    public sealed record Neighbour(string Name, string LocalAddress, string Address, long LocalAsn, long Asn, bool IPv6 = false);

    /// <param name="extraConfig">More BIRD configuration (e.g. <c>protocol direct { ipv4; }</c>, which internal BGP needs to resolve next hops on the connected links).</param>
    public static BirdPeer Start(string ns, string routerId, IReadOnlyList<Neighbour> neighbours, TextWriter log, string extraConfig = "")
    {
        var dir = Directory.CreateTempSubdirectory("xlb-bird-").FullName;
        var config = $$"""
            log stderr all;
            router id {{routerId}};
            protocol device { }
            protocol kernel k4 { ipv4 { import none; export all; }; }
            protocol kernel k6 { ipv6 { import none; export all; }; }
            {{extraConfig}}

            """;
        foreach (var n in neighbours)
        {
            config += $$"""
                protocol bgp {{n.Name}} {
                  local {{n.LocalAddress}} as {{n.LocalAsn}};
                  neighbor {{n.Address}} as {{n.Asn}};
                  passive on;
                  {{(n.IPv6 ? "ipv6" : "ipv4")}} { import all; export none; };
                }

                """;
        }
        var path = Path.Combine(dir, "bird.conf");
        File.WriteAllText(path, config);
        var bird = Netns.Start("ip", ["netns", "exec", ns, "bird", "-f", "-c", path, "-s", Path.Combine(dir, "bird.ctl"), "-P", Path.Combine(dir, "bird.pid")], log, "bird");
        return new BirdPeer(ns, dir, bird);
    }

    /// <summary>The destinations (address/length) that BIRD installed in the namespace's main table, both families.</summary>
    public IReadOnlyList<string> KernelRoutes()
    {
        var routes = new List<string>();
        foreach (var family in new[] { "-4", "-6" })
        {
            using var doc = JsonDocument.Parse(Netns.Ip(Namespace, family, "-j", "route", "show", "proto", "bird"));
            foreach (var r in doc.RootElement.EnumerateArray())
            {
                var dst = r.GetProperty("dst").GetString()!;
                routes.Add(dst.Contains('/', StringComparison.Ordinal) ? dst : dst + (family == "-4" ? "/32" : "/128"));
            }
        }
        return routes;
    }

    /// <summary>`birdc show protocols all NAME`, for a test's log.</summary>
    public string Show(string protocol) => Netns.Exec(Namespace, "birdc", "-s", Socket, "show", "protocols", "all", protocol);

    /// <summary>Waits until <paramref name="condition"/> holds of the kernel routes, polling every 100 ms.</summary>
    public async Task<bool> WaitRoutesAsync(Func<IReadOnlyList<string>, bool> condition, TimeSpan timeout, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (_bird.HasExited)
            {
                throw new InvalidOperationException($"bird exited with code {_bird.ExitCode}; see its log");
            }
            if (condition(KernelRoutes()))
            {
                return true;
            }
            await Task.Delay(100, ct);
        }
        return false;
    }

    public void Dispose()
    {
        Netns.Stop(_bird, TimeSpan.FromSeconds(5));
        _bird.Dispose();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
            // A leftover temp folder is harmless.
        }
    }
}
