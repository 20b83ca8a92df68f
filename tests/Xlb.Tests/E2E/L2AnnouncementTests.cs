using System.Buffers.Binary;
using System.Net;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// When the agent's node takes a VIP, the link hears it: a gratuitous ARP for an IPv4 VIP and an
/// unsolicited neighbour advertisement for an IPv6 VIP, from the LB interface's MAC, observed by
/// a raw socket in the client's namespace. A standby VIP is never announced.
/// </summary>
public sealed class L2AnnouncementTests(ITestOutputHelper output)
{
    private const string Vip4 = "10.250.0.40";
    private const string Vip6 = "fd00:250::40";

    private static readonly string Mappings = $$"""
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata: {name: web4, namespace: demo}
        spec:
          shardRef: edge
          vip: {{Vip4}}
          ports: [{name: http, port: 80, targetPort: 8080}]
          backend:
            endpoints: [{address: {{LbTopology.BackendAddress(1)}}}]
        ---
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata: {name: web6, namespace: demo}
        spec:
          shardRef: edge
          vip: {{Vip6}}
          ports: [{name: http, port: 80, targetPort: 8080}]
          backend:
            endpoints: [{address: {{LbTopology.BackendAddress6(1)}}}]
        """;

    /// <summary>The VIP a frame announces, if it is a gratuitous ARP or an unsolicited advertisement from <paramref name="mac"/>.</summary>
    private static IPAddress? Announced(byte[] f, byte[] mac)
    {
        var type = f.Length >= 14 ? BinaryPrimitives.ReadUInt16BigEndian(f.AsSpan(12)) : 0;
        if (type == 0x0806 && f.Length >= 42 && f.AsSpan(6, 6).SequenceEqual(mac) && !f.AsSpan(0, 6).ContainsAnyExcept((byte)0xff) &&
            f[21] == 1 && f.AsSpan(22, 6).SequenceEqual(mac) && f.AsSpan(28, 4).SequenceEqual(f.AsSpan(38, 4)))
        {
            return new IPAddress(f.AsSpan(28, 4));
        }
        if (type == 0x86dd && f.Length >= 86 && f[20] == 58 && f[21] == 255 && f[54] == 136 && (f[58] & 0xe0) == 0x20 &&
            f.AsSpan(38, 16).SequenceEqual(IPAddress.Parse("ff02::1").GetAddressBytes()) &&
            f[78] == 2 && f.AsSpan(80, 6).SequenceEqual(mac) && Packet.ChecksumsValid(f))
        {
            return new IPAddress(f.AsSpan(62, 16));
        }
        return null;
    }

    [Fact]
    public async Task A_node_that_takes_a_vip_announces_it_and_a_standby_stays_quiet()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("g", backends: 1);
        var topology = bed.Topology;
        var mac = DataPlaneFixtureMac(topology);
        var manifests = Examples.CopyToTemp("demo");
        File.WriteAllText(Path.Combine(manifests, "10-pool.yaml"), Examples.DualStackPool);
        File.WriteAllText(Path.Combine(manifests, "30-web.yaml"), Mappings);
        using var capture = FrameCapture.Start(topology.Client);
        try
        {
            using var stack = StandaloneStack.Start(topology, manifests, "lb-1", bed.Log);
            var config = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            Assert.All(config.Spec.Vips, v => Assert.Equal(VipRole.Active, v.Role));

            // Taking both VIPs at start: three rounds (the default), each VIP once per round.
            List<IPAddress> Heard(TimeSpan timeout, int enough) =>
                [.. capture.Collect(f => Announced(f, mac) is not null, fs => fs.Count >= enough, timeout).Select(f => Announced(f, mac)!)];
            var first = Heard(TimeSpan.FromSeconds(10), 6);
            Assert.Equal(3, first.Count(a => a.Equals(IPAddress.Parse(Vip4))));
            Assert.Equal(3, first.Count(a => a.Equals(IPAddress.Parse(Vip6))));

            // From here the node config is edited by hand: the operator would put it back.
            Netns.Stop(stack.Operator, TimeSpan.FromSeconds(5));
            async Task Roles(VipRole role, long revision)
            {
                var next = config with { Spec = config.Spec with { Revision = revision, Vips = [.. config.Spec.Vips.Select(v => v with { Role = role })] } };
                await File.WriteAllTextAsync(stack.NodeConfigPath + ".tmp", Manifests.ToYaml(next), ct);
                File.Move(stack.NodeConfigPath + ".tmp", stack.NodeConfigPath, overwrite: true);
                await stack.WaitAppliedAsync(revision, TimeSpan.FromSeconds(30), ct);
            }

            // The VIPs move to standby here: nothing is announced.
            await Roles(VipRole.Standby, config.Spec.Revision + 1);
            Assert.Empty(Heard(TimeSpan.FromSeconds(2), 1));

            // The node takes them back, as on a failover: announced again, at once.
            await Roles(VipRole.Active, config.Spec.Revision + 2);
            var again = Heard(TimeSpan.FromSeconds(5), 2);
            Assert.Equal([IPAddress.Parse(Vip4), IPAddress.Parse(Vip6)], again.Take(2).OrderBy(a => a.AddressFamily));
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }

    private static byte[] DataPlaneFixtureMac(LbTopology topology) =>
        Bpf.DataPlaneFixture.MacBytes(LbTopology.Mac(topology.Lb, LbTopology.ClientIfOnLb));
}
