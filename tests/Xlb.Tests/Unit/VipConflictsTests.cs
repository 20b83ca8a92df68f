using System.Net;
using Xlb.Agent.Core;

namespace Xlb.Tests.Unit;

public class VipConflictsTests
{
    private const ulong S = 1_000_000_000;

    [Fact]
    public void A_vip_held_here_that_another_host_announced_since_this_node_did_and_lately_is_a_conflict()
    {
        var (a, b, c, d, e) = (IPAddress.Parse("10.250.0.1"), IPAddress.Parse("10.250.0.2"), IPAddress.Parse("fd00:250::3"), IPAddress.Parse("10.250.0.4"), IPAddress.Parse("10.250.0.5"));
        byte[] mac = [0x02, 0x5b, 0x00, 0x0a, 0xbc, 0x01], own = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        var now = 1000 * S;
        var claims = new[]
        {
            new VipClaim(c, mac, 3, now - 2 * S),   // held, announced after us: a conflict
            new VipClaim(a, mac, 7, now - 5 * S),   // held, never announced by us: a conflict
            new VipClaim(b, mac, 3, now - 90 * S),  // held, but long ago: history
            new VipClaim(d, mac, 3, now - 10 * S),  // held, but we announced it since (a standby gave it back)
            new VipClaim(e, mac, 3, now - 1 * S),   // not held here
            new VipClaim(b, own, 3, now - 1 * S),   // held, but this node's own, heard on another of its interfaces
        };
        var held = new HashSet<IPAddress> { a, b, c, d };
        var announced = new Dictionary<IPAddress, ulong> { [c] = now - 30 * S, [d] = now - 4 * S };
        Assert.Equal(
        [
            "10.250.0.1 by 02:5b:00:0a:bc:01 on ifindex 7",
            "fd00:250::3 by 02:5b:00:0a:bc:01 on xc",
        ], VipConflicts.Of(claims, held, announced, [own], i => i == 3 ? "xc" : $"ifindex {i}", now));
        Assert.Empty(VipConflicts.Of(claims, new HashSet<IPAddress>(), announced, [own], i => "x", now));
    }
}
