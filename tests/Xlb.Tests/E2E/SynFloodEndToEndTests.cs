using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// A SYN flood from spoofed sources against a FullNAT service holds every NAT port toward its
/// backend (five here): each SYN takes a port, and no ACK ever completes its handshake. A real
/// client connecting while it does is refused at first and gets through on a SYN it sends again,
/// once the flood's handshakes have been quiet for 2 s (not after tcpNew, 120 s). The backend still
/// holds the flood's handshakes (SYN-RECV) on the tuples the client may get. Real kernels at both ends.
/// </summary>
public sealed class SynFloodEndToEndTests(ITestOutputHelper output)
{
    private const string Vip = OneBackendWeb.Vip;

    [Fact]
    public async Task A_client_connects_two_seconds_after_a_syn_flood_that_held_every_nat_port()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("sf", backends: 1);
        var manifests = Examples.CopyToTemp("demo");
        try
        {
            using var stack = await OneBackendWeb.StartAsync(bed, manifests, ct);
            var health = OneBackendWeb.Health;
            var vip = new IPEndPoint(IPAddress.Parse(Vip), 80);
            Assert.Equal("backend-1", await HttpProbe.GetAsync(bed.Topology.Client, vip, TimeSpan.FromSeconds(10), ct, clientClosesFirst: true));
            // That connection's port comes free 2 s after it ended; the flood then finds all five.
            await Task.Delay(2500, ct);

            // 40 SYNs from 40 spoofed sources, as raw IPv4 from the client's namespace.
            const int Flood = 40;
            var busy = Counter(stack, "drop_nat_ports_busy");
            using (var raw = Netns.Run(bed.Topology.Client, () => new Socket(AddressFamily.InterNetwork, SocketType.Raw, ProtocolType.Raw)))
            {
                for (var i = 0; i < Flood; i++)
                {
                    var syn = new Packet { Src = IPAddress.Parse($"10.77.0.{i + 1}"), Dst = vip.Address, SrcPort = (ushort)(20000 + i), DstPort = 80 }.Build();
                    raw.SendTo(syn.AsSpan(14), SocketFlags.None, vip);
                }
            }
            // Read from the agent's metrics, one request: the flood's ports come free 2 s after its
            // last SYN, and the client below must start before (an `xlb status` process or two can
            // take that long on a loaded machine).
            var metrics = (await HttpProbe.StatusAsync(bed.Topology.Lb, health, "/metrics", ct)).Body;
            var floodDropped = (ulong)Metric(metrics, "xlb_packets_total{reason=\"drop_nat_ports_busy\"}") - busy;
            output.WriteLine($"flood: {Flood} SYNs, {floodDropped} refused for want of a NAT port");
            Assert.Equal((ulong)(Flood - 5), floodDropped);
            Assert.Equal((5, 0, 5), (Metric(metrics, "xlb_backend_nat_ports_held{backend=\"10.201.1.2:8080\"}"),
                Metric(metrics, "xlb_backend_nat_ports_ended{backend=\"10.201.1.2:8080\"}"), Metric(metrics, "xlb_backend_nat_ports_half_open{backend=\"10.201.1.2:8080\"}")));
            // The backend holds every one of those handshakes, on each of the five ports.
            var synRecv = Netns.Exec(bed.Topology.Backends[0], "ss", "-Htan", "state", "syn-recv").Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(5, synRecv.Count(l => l.Contains(Vip + ":4500", StringComparison.Ordinal)));

            // A real client now: its first SYN finds no port; one it sends again does.
            var clock = Stopwatch.StartNew();
            Assert.Equal("backend-1", await HttpProbe.GetAsync(bed.Topology.Client, vip, TimeSpan.FromSeconds(20), ct));
            output.WriteLine($"the client connected {clock.ElapsedMilliseconds} ms after the flood");
            Assert.True(Counter(stack, "drop_nat_ports_busy") - busy > floodDropped, "the client's first SYN found a port while the flood held them all");
            // And the ones after it, at once.
            for (var i = 0; i < 3; i++)
            {
                Assert.Equal("backend-1", await HttpProbe.GetAsync(bed.Topology.Client, vip, TimeSpan.FromSeconds(5), ct, clientClosesFirst: true));
            }
            Assert.Equal(5, bed.Backend(1)!.Served);
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }

    private static ulong Counter(StandaloneStack stack, string name) => OneBackendWeb.Counter(stack, name);

    /// <summary>The value of one series (name with its labels) in a Prometheus text exposition; 0 when it is absent.</summary>
    private static long Metric(string exposition, string series) =>
        exposition.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal)) is { } line
            ? long.Parse(line[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture)
            : 0;
}
