using System.Net;
using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.DataPlane;

namespace Xlb.Tests.Unit;

public class FlowEventsTests
{
    private static XlbFlowEvent Event(byte type, byte mode, byte byBackend = 0, byte flags = 0, byte snat = 0) => new()
    {
        TimeNs = 5_000_000_000,
        Flow = new XlbFlowKey
        {
            Saddr = Addr16.From(IPAddress.Parse("2001:db8::7")), Daddr = Addr16.From(IPAddress.Parse("2001:db8::10")),
            SportBe = Net.Be(51000), DportBe = Net.Be(443), Proto = XlbAbi.ProtoTcp, Family = XlbAbi.FamilyV6,
        },
        Backend = Addr16.From(IPAddress.Parse("2001:db8:1::2")),
        BackendPortBe = Net.Be(8443),
        NatPortBe = Net.Be(40001),
        Type = type,
        Mode = mode,
        ByBackend = byBackend,
        TcpFlags = flags,
        Snat = snat,
    };

    private static readonly XlbNodeConfigSpec Spec = new()
    {
        NodeName = "n",
        Listeners = [new Listener { Name = "shop/web/https", Vip = "2001:db8::10", Port = 443, SourceAddresses = ["2001:db8::51", "2001:db8::52"] }],
    };

    [Fact]
    public void A_new_fullnat_flow_is_one_json_line_with_its_nat_port_and_listener_name()
    {
        var time = new DateTimeOffset(2026, 11, 22, 10, 0, 0, TimeSpan.Zero);
        var entry = FlowEvents.Describe(Event(XlbAbi.EventNew, XlbAbi.ModeFullNat), time, FlowEvents.ListenerNames(Spec));
        Assert.Equal(
            """{"time":"2026-11-22T10:00:00.000Z","event":"new","protocol":"TCP","client":"[2001:db8::7]:51000","vip":"[2001:db8::10]:443","backend":"[2001:db8:1::2]:8443","natPort":40001,"mode":"FullNAT","service":"shop/web/https"}""",
            FlowEvents.ToJson(entry));
        // From the listener's second source address: named after the port.
        var sourced = FlowEvents.Describe(Event(XlbAbi.EventNew, XlbAbi.ModeFullNat, snat: 2), time, FlowEvents.ListenerNames(Spec));
        Assert.Contains(""","natPort":40001,"natAddress":"2001:db8::52","mode":""", FlowEvents.ToJson(sourced), StringComparison.Ordinal);
    }

    [Fact]
    public void A_closed_flow_says_which_side_closed_it_and_how_and_other_modes_have_no_nat_port()
    {
        var entry = FlowEvents.Describe(Event(XlbAbi.EventClosed, XlbAbi.ModeDnat, byBackend: 1, flags: 0x14), DateTimeOffset.UnixEpoch, new Dictionary<(IPAddress, int, byte), Listener>());
        Assert.Equal(("closed", "backend", "RST", null, null, "DNAT"), (entry.Event, entry.ClosedBy, entry.Reason, entry.NatPort, entry.Service, entry.Mode));
        var fin = FlowEvents.Describe(Event(XlbAbi.EventClosed, XlbAbi.ModeDsrL2, flags: 0x11), DateTimeOffset.UnixEpoch, new Dictionary<(IPAddress, int, byte), Listener>());
        Assert.Equal(("client", "FIN"), (fin.ClosedBy, fin.Reason));
        Assert.DoesNotContain("natPort", FlowEvents.ToJson(fin), StringComparison.Ordinal);
        // No FIN or RST: the flow ended idle; no side closed it.
        var idle = FlowEvents.Describe(Event(XlbAbi.EventClosed, XlbAbi.ModeFullNat), DateTimeOffset.UnixEpoch, new Dictionary<(IPAddress, int, byte), Listener>());
        Assert.Equal(((string?)null, "idle"), (idle.ClosedBy, idle.Reason));
        Assert.DoesNotContain("closedBy", FlowEvents.ToJson(idle), StringComparison.Ordinal);
    }

    [Fact]
    public void An_events_wall_time_is_now_less_its_age_on_the_monotonic_clock()
    {
        var now = new DateTimeOffset(2026, 11, 22, 10, 0, 0, TimeSpan.Zero);
        Assert.Equal(now.AddMilliseconds(-1500), FlowEvents.WallTime(5_000_000_000, 6_500_000_000, now));
        Assert.Equal(now, FlowEvents.WallTime(7_000_000_000, 6_500_000_000, now)); // never in the future
    }
}
