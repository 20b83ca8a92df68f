using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xlb.Agent.Core;
using Xlb.Crds;
using Xlb.Crds.Serialization;

namespace Xlb.Cli;

/// <summary>`xlb status`: the node's data plane as its pinned maps hold it, as a table, JSON or YAML.</summary>
public static class StatusCommand
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        WriteIndented = true,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };

    public static int Run(string pinRoot, FileInfo? nodeConfig, FileInfo? agentStatus, FlowFilter? flows, string output, TextWriter stdout, TextWriter stderr)
    {
        XlbNodeConfigSpec? spec = null;
        IReadOnlyCollection<string>? unhealthy = null;
        List<BgpSessionStatus>? sessions = null;
        List<FailoverPeerStatus>? peers = null;
        try
        {
            if (nodeConfig is not null)
            {
                spec = Manifests.Read(File.ReadAllText(nodeConfig.FullName), nodeConfig.FullName).NodeConfigs.Single().Spec;
                var statusPath = agentStatus?.FullName ?? Path.ChangeExtension(nodeConfig.FullName, ".status.yaml");
                if (File.Exists(statusPath))
                {
                    var status = Yaml.ReadDocuments(File.ReadAllText(statusPath))[0];
                    unhealthy = status["unhealthyBackends"]?.AsArray().Select(n => n!.GetValue<string>()).ToList();
                    sessions = status["bgpSessions"]?.AsArray().Select(n => new BgpSessionStatus
                    {
                        Peer = n!["peer"]!.GetValue<string>(),
                        State = n["state"]!.GetValue<string>(),
                        AdvertisedRoutes = n["advertisedRoutes"]?.Deserialize<int>() ?? 0,
                        LastError = n["lastError"]?.GetValue<string>(),
                    }).ToList();
                    peers = status["failoverPeers"]?.AsArray().Select(n => new FailoverPeerStatus
                    {
                        Node = n!["node"]!.GetValue<string>(),
                        State = n["state"]!.GetValue<string>(),
                        VipsTakenOver = n["vipsTakenOver"]?.Deserialize<int>() ?? 0,
                    }).ToList();
                }
            }
            var report = NodeStatus.Build(Xlb.Agent.DataPlaneSnapshot.Read(pinRoot), spec, unhealthy, flows) with { BgpSessions = sessions, FailoverPeers = peers };
            var node = JsonSerializer.SerializeToNode(report, Json)!;
            switch (output)
            {
                case "json":
                    stdout.WriteLine(node.ToJsonString(Json));
                    break;
                case "yaml":
                    stdout.Write(Yaml.Write(node));
                    break;
                default:
                    stdout.Write(Table(report));
                    break;
            }
            return 0;
        }
        catch (Exception e) when (e is IOException or Xlb.Agent.Bpf.BpfException or FormatException or InvalidOperationException or UnauthorizedAccessException or JsonException)
        {
            stderr.WriteLine($"xlb status: {e.Message}");
            return 1;
        }
    }

    private static string Limit(uint perSecond) => perSecond == 0 ? "unlimited" : perSecond.ToString("N0", CultureInfo.InvariantCulture);

    public static string Table(NodeStatusReport r)
    {
        var sb = new StringBuilder();
        var head = new List<string>();
        if (r.Node is not null)
        {
            head.Add($"node {r.Node}");
        }
        if (r.Revision is { } rev)
        {
            head.Add($"revision {rev}");
        }
        head.Add($"generation {r.Generation}");
        if (r.ShuttingDown)
        {
            head.Add("SHUTTING DOWN: new TCP connections get RST");
        }
        sb.AppendLine(string.Join("  ", head));
        sb.AppendLine($"limits per CPU per second: new DSR flows tracked {Limit(r.Limits.NewFlowCap)}, ICMP too-big answers {Limit(r.Limits.IcmpRate)}; flow cache {(r.FlowCache ? "on" : "off")}");

        sb.AppendLine().AppendLine("VIPS");
        if (r.Vips.Any(v => v.AnnouncedBy is not null))
        {
            // Another host announces it too: the standby that took it over, or an address conflict.
            Columns(sb, "  ", ["ADDRESS", "ROLE", "ALSO ANNOUNCED BY"], r.Vips.Select(v => new[]
            {
                v.Address, v.LeftToIt ? v.Role + ", left to it (the agent is silent)" : v.Role, v.AnnouncedBy ?? "-",
            }));
        }
        else
        {
            Columns(sb, "  ", ["ADDRESS", "ROLE"], r.Vips.Select(v => new[] { v.Address, v.Role }));
        }

        sb.AppendLine().AppendLine("SERVICES");
        foreach (var s in r.Services)
        {
            Columns(sb, "  ", ["SERVICE", "LISTENS", "MODE", "ALGORITHM", "PACKETS", "BYTES", "REPLIES", "NEW FLOWS", "ACTIVE FLOWS"],
                [[s.Name ?? "-", $"{Host(s.Vip)}:{s.Port}/{s.Protocol}", s.Mode, s.Algorithm, N(s.Packets), N(s.Bytes), N(s.ReplyPackets), N(s.NewFlows), N((ulong)s.ActiveFlows)]]);
            // LeastConn compares open flows: those are its column, where the others show their ring share.
            var leastConn = s.Algorithm == "LeastConn";
            // FullNAT: the source ports held toward each backend, of the range, and how many of them are of ended connections.
            var fullNat = s.Mode == "FullNAT";
            Columns(sb, "      ", ["BACKEND", "STATE", "WEIGHT", "RING SLOTS", leastConn ? "OPEN*" : "SHARE", "ACTIVE FLOWS", "PACKETS*", "NEW FLOWS*", .. fullNat ? (string[])["NAT PORTS (ENDED)"] : []],
                s.Backends.Select(b => (string[])
                [
                    $"{Host(b.Address)}:{b.Port}", b.State, b.Weight?.ToString(CultureInfo.InvariantCulture) ?? "-", N((ulong)b.RingSlots),
                    leastConn ? (b.OpenFlows is { } open ? open.ToString(CultureInfo.InvariantCulture) : "-") : b.Share.ToString("0.0", CultureInfo.InvariantCulture) + "%",
                    N((ulong)b.ActiveFlows), b.Packets is { } p ? N(p) : "-", b.NewFlows is { } f ? N(f) : "-",
                    .. fullNat ? (string[])[$"{b.NatPorts ?? 0}/{r.NatPortRange} ({b.NatPortsEnded ?? 0})"] : [],
                ]));
        }

        if (r.Services.Count > 0)
        {
            sb.AppendLine("  * a backend's packets, new flows and (LeastConn) open flows, over every service it serves on this node");
        }

        if (r.BgpSessions is { Count: > 0 } bgp)
        {
            sb.AppendLine().AppendLine("BGP SESSIONS");
            Columns(sb, "  ", ["PEER", "STATE", "ROUTES", "LAST ERROR"],
                bgp.Select(b => new[] { b.Peer, b.State, N((ulong)b.AdvertisedRoutes), b.LastError ?? "-" }));
        }

        if (r.FailoverPeers is { Count: > 0 } failover)
        {
            sb.AppendLine().AppendLine("FAILOVER PEERS");
            Columns(sb, "  ", ["NODE", "STATE", "VIPS TAKEN OVER"], failover.Select(p => new[] { p.Node, p.State, N((ulong)p.VipsTakenOver) }));
        }

        sb.AppendLine().AppendLine("COUNTERS");
        Columns(sb, "  ", ["REASON", "PACKETS"], r.Counters.Select(c => new[] { c.Key, N(c.Value) }));

        if (r.Flows is { } flows)
        {
            sb.AppendLine().AppendLine(r.FlowsOmitted > 0 ? $"FLOWS ({flows.Count} most recent shown, {r.FlowsOmitted} more)" : $"FLOWS ({flows.Count})");
            Columns(sb, "  ", ["PROTO", "CLIENT", "VIP", "BACKEND", "NAT PORT", "MODE", "STATE", "IDLE", "SERVICE"],
                flows.Select(f => new[] { f.Protocol, f.Client, f.Vip, f.Backend, f.NatPort?.ToString(CultureInfo.InvariantCulture) ?? "-", f.Mode, f.Copy == true ? f.State + " (copy)" : f.State, f.IdleSeconds.ToString("0.0", CultureInfo.InvariantCulture) + "s", f.Service ?? "-" }));
        }
        return sb.ToString();
    }

    private static string Host(string address) => address.Contains(':', StringComparison.Ordinal) ? $"[{address}]" : address;

    private static string N(ulong n) => n.ToString(CultureInfo.InvariantCulture);

    private static void Columns(StringBuilder sb, string indent, string[] header, IEnumerable<string[]> rows)
    {
        var all = new List<string[]> { header };
        all.AddRange(rows);
        var widths = header.Select((_, i) => all.Max(r => r[i].Length)).ToArray();
        foreach (var row in all)
        {
            sb.Append(indent).AppendLine(string.Join("  ", row.Select((c, i) => i == row.Length - 1 ? c : c.PadRight(widths[i]))).TrimEnd());
        }
    }
}
