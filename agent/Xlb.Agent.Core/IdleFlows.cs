using System.Runtime.InteropServices;
using Xlb.DataPlane;

namespace Xlb.Agent.Core;

/// <summary>
/// Flows that went idle and never saw another packet. The program judges a flow expired when its
/// next packet comes, and then logs its close; a flow that gets no packet stays in its table until
/// the LRU evicts it, and its end was never logged. The agent sweeps such flows (pure decisions
/// here; the sweep is XdpDataPlane.SweepIdleFlows).
/// A flow is swept only past its timeout and a grace beyond it: a packet that races the sweep
/// would find the flow expired too, so the program treats that packet exactly as if the sweep had
/// gone first (a new flow). Reverse translations are left to the program, which takes one whose
/// flow is gone as free.
/// </summary>
public static class IdleFlows
{
    /// <summary>How far past its timeout a flow must be before the sweep takes it.</summary>
    public static readonly TimeSpan Grace = TimeSpan.FromSeconds(2);

    /// <summary>Is the flow past its timeout (its service's own, in <paramref name="options"/>, or the node's) and the grace at <paramref name="nowNs"/>?</summary>
    public static bool Sweepable(XlbCfg cfg, XlbFlowKey key, XlbFlow flow, ulong nowNs, IReadOnlyDictionary<uint, XlbSvcOpts>? options = null)
    {
        var grace = (ulong)Grace.Ticks * 100;
        return nowNs > grace && NodeStatus.Expired(cfg, key, flow, nowNs - grace, options);
    }

    /// <summary>
    /// The close event the program would have sent had a packet found the flow expired: none for a
    /// flow a FIN or RST already closed (its close was logged then), and only for the flows the
    /// program samples (<c>flow_hash % sample == 0</c>, as in xlb.c, where the sample is the flow's
    /// service's own, <paramref name="serviceSample"/>, or else the node's).
    /// </summary>
    public static XlbFlowEvent? CloseEvent(XlbCfg cfg, XlbFlowKey key, XlbFlow flow, ulong nowNs, uint serviceSample = 0)
    {
        var sample = serviceSample != 0 ? serviceSample : cfg.EventSample;
        if (sample == 0 || flow.State == XlbAbi.FlowClosing || FlowHash(key) % sample != 0)
        {
            return null;
        }
        return new XlbFlowEvent
        {
            TimeNs = nowNs,
            Flow = key,
            Backend = flow.Backend,
            BackendPortBe = flow.BackendPortBe,
            NatPortBe = flow.NatPortBe,
            Snat = flow.Snat,
            SvcId = flow.SvcId,
            Type = XlbAbi.EventClosed,
            Mode = flow.Mode,
        };
    }

    /// <summary>xlb.c's flow_hash: the client address words and ports as they lie in memory, and the protocol.</summary>
    public static uint FlowHash(XlbFlowKey key)
    {
        var saddr = MemoryMarshal.Cast<byte, uint>((ReadOnlySpan<byte>)key.Saddr);
        var h = 0x5bd1e995u;
        for (var i = 0; i < 4; i++)
        {
            h = Mix(h, saddr[i]);
        }
        h = Mix(h, ((uint)key.SportBe << 16) | key.DportBe);
        return Mix(h, key.Proto);
    }

    private static uint Mix(uint h, uint v)
    {
        h ^= v;
        h *= 0x9e3779b1u;
        return h ^ (h >> 16);
    }
}
