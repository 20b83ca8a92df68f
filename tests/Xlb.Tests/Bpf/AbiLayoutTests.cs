using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Xlb.DataPlane;

namespace Xlb.Tests.Bpf;

/// <summary>
/// Proves every C# ABI struct has the layout of its twin in xdp/include/xlb_abi.h: C asserts are
/// generated from the C# types (sizeof, offsetof of every field, enum values, constants) and
/// compiled by clang against the header.
/// </summary>
public partial class AbiLayoutTests
{
    private static readonly (Type Type, string C)[] Structs =
    [
        (typeof(XlbVipKey), "xlb_vip_key"),
        (typeof(XlbSvcKey), "xlb_svc_key"),
        (typeof(XlbSvc), "xlb_svc"),
        (typeof(XlbSvcOpts), "xlb_svc_opts"),
        (typeof(XlbSnat), "xlb_snat"),
        (typeof(XlbBackend), "xlb_backend"),
        (typeof(XlbFlowKey), "xlb_flow_key"),
        (typeof(XlbFlow), "xlb_flow"),
        (typeof(XlbRnat), "xlb_rnat"),
        (typeof(XlbCfg), "xlb_cfg"),
        (typeof(XlbNexthop), "xlb_nexthop"),
        (typeof(XlbFilter), "xlb_filter"),
        (typeof(XlbSvcStats), "xlb_svc_stats"),
        (typeof(XlbIfmac), "xlb_ifmac"),
        (typeof(XlbClaim), "xlb_claim"),
        (typeof(XlbVlan), "xlb_vlan"),
        (typeof(XlbVlanDev), "xlb_vlan_dev"),
        (typeof(XlbFlowEvent), "xlb_flow_event"),
    ];

    /// <summary>C# field name → C member designator: PortBe → port, Pad1 → pad[1], A2 → addr[2], SvcId → svc_id.</summary>
    public static string CMember(string field)
    {
        if (PadIndex().Match(field) is { Success: true } m)
        {
            return $"pad[{m.Groups[1].Value}]";
        }
        if (field is ['A', >= '0' and <= '9'])
        {
            return $"addr[{field[1]}]";
        }
        var name = field.EndsWith("Be", StringComparison.Ordinal) ? field[..^2] : field;
        return Snake().Replace(name, "$1_$2").ToLowerInvariant();
    }

    public static string GenerateAsserts()
    {
        var c = new StringBuilder("#include <stddef.h>\n#include \"xlb_abi.h\"\n");
        foreach (var (type, cname) in Structs)
        {
            c.AppendLine($"_Static_assert(sizeof(struct {cname}) == {Marshal.SizeOf(type)}, \"sizeof {cname}\");");
            foreach (var f in type.GetFields(BindingFlags.Public | BindingFlags.Instance))
            {
                var member = CMember(f.Name);
                c.AppendLine($"_Static_assert(offsetof(struct {cname}, {member}) == {Marshal.OffsetOf(type, f.Name)}, \"{cname}.{member}\");");
            }
        }
        foreach (var stat in Enum.GetValues<XlbStat>())
        {
            var cname = stat == XlbStat.Count ? "XLB_STAT__COUNT" : "XLB_STAT_" + Snake().Replace(stat.ToString(), "$1_$2").ToUpperInvariant();
            c.AppendLine($"_Static_assert({cname} == {(int)stat}, \"{cname}\");");
        }
        foreach (var (name, value) in new (string, int)[]
        {
            ("XLB_ABI_VERSION", XlbAbi.Version), ("XLB_MAX_SERVICES", XlbAbi.MaxServices), ("XLB_MAX_BACKENDS", XlbAbi.MaxBackends),
            ("XLB_RING_CAPACITY", XlbAbi.RingCapacity), ("XLB_MAX_FLOWS", XlbAbi.MaxFlows), ("XLB_MAX_NEW_FLOWS", XlbAbi.MaxNewFlows), ("XLB_GENERATIONS", XlbAbi.Generations),
            ("XLB_FAMILY_V4", XlbAbi.FamilyV4), ("XLB_FAMILY_V6", XlbAbi.FamilyV6), ("XLB_BE_F_DRAINING", XlbAbi.BackendDraining),
            ("XLB_CFG_F_SHUTDOWN", (int)XlbAbi.CfgShutdown), ("XLB_CFG_F_NO_FLOW_CACHE", (int)XlbAbi.CfgNoFlowCache), ("XLB_MODE_FULLNAT", XlbAbi.ModeFullNat),
            ("XLB_MODE_DNAT", XlbAbi.ModeDnat), ("XLB_MODE_DSR_L2", XlbAbi.ModeDsrL2), ("XLB_MODE_DSR_IPIP", XlbAbi.ModeDsrIpip),
            ("XLB_ALGO_MAGLEV", XlbAbi.AlgoMaglev), ("XLB_ALGO_SOURCE_HASH", XlbAbi.AlgoSourceHash),
            ("XLB_ALGO_ROUND_ROBIN", XlbAbi.AlgoRoundRobin), ("XLB_ALGO_LEAST_CONN", XlbAbi.AlgoLeastConn), ("XLB_LC_SCAN", XlbAbi.LcScan), ("XLB_FLOW_F_COUNTED", XlbAbi.FlowCounted), ("XLB_FLOW_F_SYNCED", XlbAbi.FlowSynced), ("XLB_FLOW_F_FIN_CLIENT", XlbAbi.FlowFinClient), ("XLB_FLOW_F_FIN_BACKEND", XlbAbi.FlowFinBackend), ("XLB_FLOW_F_TIME_WAIT", XlbAbi.FlowTimeWait), ("XLB_FLOW_F_RESET", XlbAbi.FlowReset), ("XLB_SVC_F_COUNT_FLOWS", XlbAbi.SvcCountFlows), ("XLB_SVC_F_AFFINITY", XlbAbi.SvcAffinity), ("XLB_SVC_F_SNAT", XlbAbi.SvcSnat), ("XLB_SNAT_ADDRS", XlbAbi.SnatAddrs), ("XLB_MAX_AFFINITY", XlbAbi.MaxAffinity), ("XLB_FLOW_NEW", XlbAbi.FlowNew),
            ("XLB_FLOW_ESTABLISHED", XlbAbi.FlowEstablished), ("XLB_FLOW_CLOSING", XlbAbi.FlowClosing),
            ("XLB_FILTER_BITS", XlbAbi.FilterBits), ("XLB_FILTER_WORDS", XlbAbi.FilterWords),
            ("XLB_IPV6_EXT_MAX", XlbAbi.Ipv6ExtMax), ("XLB_VIP_F_ACTIVE", (int)XlbAbi.VipActive), ("XLB_MAX_IFACES", XlbAbi.MaxIfaces), ("XLB_MAX_CLAIMS", XlbAbi.MaxClaims), ("XLB_AGENT_STAMP_MS", XlbAbi.AgentStampMs), ("XLB_MAX_VLANS", XlbAbi.MaxVlans),
            ("XLB_EVENT_NEW", XlbAbi.EventNew), ("XLB_EVENT_CLOSED", XlbAbi.EventClosed), ("XLB_EVENTS_SENT", (int)XlbAbi.EventsSent),
            ("XLB_EVENTS_LOST", (int)XlbAbi.EventsLost), ("XLB_EVENTS_RING_BYTES", XlbAbi.EventsRingBytes),
        })
        {
            c.AppendLine($"_Static_assert({name} == {value}, \"{name}\");");
        }
        return c.ToString();
    }

    [Fact]
    public void Every_csharp_struct_matches_its_c_twin()
    {
        var clang = new[] { "/usr/bin/clang", "/usr/bin/clang-14" }.FirstOrDefault(File.Exists);
        if (clang is null)
        {
            Support.Toolchain.Missing("clang is not installed");
            return;
        }
        var dir = Directory.CreateTempSubdirectory("xlb-abi-").FullName;
        try
        {
            var file = Path.Combine(dir, "asserts.c");
            File.WriteAllText(file, GenerateAsserts());
            var psi = new ProcessStartInfo(clang, ["-fsyntax-only", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-I", HeaderDir(), file])
            {
                RedirectStandardError = true,
            };
            using var p = Process.Start(psi)!;
            var errors = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, $"ABI drift between lib/Xlb.DataPlane/Abi.cs and xdp/include/xlb_abi.h:\n{errors}");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void The_generated_asserts_cover_every_field()
    {
        var asserts = GenerateAsserts();
        var fields = Structs.Sum(s => s.Type.GetFields(BindingFlags.Public | BindingFlags.Instance).Length);
        Assert.Equal(fields, Regex.Count(asserts, "offsetof"));
        Assert.Contains("offsetof(struct xlb_svc_key, pad[2]) == 23", asserts, StringComparison.Ordinal);
        Assert.Contains("offsetof(struct xlb_flow, last_seen_ns) == 24", asserts, StringComparison.Ordinal);
    }

    private static string HeaderDir() => Cli.RepoPaths.Find("xdp/include");

    [GeneratedRegex("^Pad([0-9]+)$")]
    private static partial Regex PadIndex();

    [GeneratedRegex("([a-z0-9])([A-Z])")]
    private static partial Regex Snake();
}
