using Xlb.Agent.Core;
using Xlb.DataPlane;

namespace Xlb.Tests.Unit;

/// <summary>Which idle flows the agent sweeps: past their timeout and the grace, by protocol and TCP state.</summary>
public class IdleFlowTests
{
    private const ulong S = 1_000_000_000UL;

    [Fact]
    public void A_flow_is_swept_only_past_its_own_timeout_and_the_grace()
    {
        var cfg = new XlbCfg { TcpNewTimeoutS = 5, TcpEstablishedTimeoutS = 300, TcpClosingTimeoutS = 10, UdpTimeoutS = 30 };
        var tcp = new XlbFlowKey { Proto = XlbAbi.ProtoTcp };
        var udp = new XlbFlowKey { Proto = XlbAbi.ProtoUdp };
        var grace = (ulong)IdleFlows.Grace.TotalSeconds;
        var at = 1_000 * S;
        foreach (var (key, state, timeout) in new[] { (tcp, XlbAbi.FlowEstablished, 300UL), (tcp, XlbAbi.FlowClosing, 10UL), (tcp, (byte)0, 5UL), (udp, XlbAbi.FlowEstablished, 30UL) })
        {
            var flow = new XlbFlow { LastSeenNs = at, State = state };
            Assert.False(IdleFlows.Sweepable(cfg, key, flow, at + (timeout * S) + S), $"{key.Proto}/{state} just past its timeout: the program may still see it live");
            Assert.False(IdleFlows.Sweepable(cfg, key, flow, at + ((timeout + grace) * S)), $"{key.Proto}/{state} at the grace's end");
            Assert.True(IdleFlows.Sweepable(cfg, key, flow, at + ((timeout + grace) * S) + 1), $"{key.Proto}/{state} past the grace");
        }
        // No timeout: never swept (the LRU alone evicts).
        Assert.False(IdleFlows.Sweepable(cfg with { TcpEstablishedTimeoutS = 0 }, tcp, new XlbFlow { LastSeenNs = 1, State = XlbAbi.FlowEstablished }, 1_000_000 * S));
        // Early in boot time nothing is past a grace.
        Assert.False(IdleFlows.Sweepable(cfg, tcp, new XlbFlow(), S));
    }
}
