using System.Net;
using Xlb.Agent.Core;
using Xlb.DataPlane;

namespace Xlb.Tests.Unit;

public class NatPressureTests
{
    private static (Addr16, byte, byte, Addr16, ushort) At(string vip, string backend, int port) =>
        (Addr16.From(IPAddress.Parse(vip)), IPAddress.Parse(vip).AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? XlbAbi.FamilyV4 : XlbAbi.FamilyV6,
            XlbAbi.ProtoTcp, Addr16.From(IPAddress.Parse(backend)), Net.Be(port));

    [Fact]
    public void Pairs_with_nine_tenths_of_the_range_held_are_reported_by_backend_and_vip_sorted()
    {
        var held = new Dictionary<(Addr16 Vip, byte Family, byte Proto, Addr16 Backend, ushort BackendPortBe), NatPortUse>
        {
            [At("10.250.0.20", "10.201.2.2", 8080)] = new(900, 880, 0),
            [At("10.250.0.20", "10.201.1.2", 8080)] = new(1000, 10, 985),
            [At("10.250.0.21", "10.201.1.2", 8080)] = new(899, 899, 0), // just under
            [At("fd00:250::1", "fd00:201:1::2", 443)] = new(950, 0, 0),
        };
        Assert.Equal(
        [
            "10.201.1.2:8080/TCP from 10.250.0.20: 1000 of 1000 ports held, 10 of them by ended connections, 985 by handshakes not completed (a SYN flood holds ports so; each gives its port up 2 s after its last SYN)",
            "10.201.2.2:8080/TCP from 10.250.0.20: 900 of 1000 ports held, 880 of them by ended connections",
            "[fd00:201:1::2]:443/TCP from fd00:250::1: 950 of 1000 ports held, 0 of them by ended connections",
        ], NatPressure.Of(held, 1000));
        Assert.Empty(NatPressure.Of(held, 2000));
        Assert.Empty(NatPressure.Of(held, 0));
    }
}
