using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.Kube;
using Xlb.Operator;
using Xlb.Tests.ControlPlane;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// The whole cluster path on one machine: the API server double, the operator against it, and the
/// agent in cluster mode inside the LB namespace (reaching the double through a loopback relay),
/// with real XDP and real traffic. The operator's chunk limit is set so low that every config is
/// chunked, so the agent must assemble each revision from its chunks.
/// </summary>
public sealed class ClusterAgentTests(ITestOutputHelper output)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>
    /// A node name as long as a cloud may give (over the 63 characters a label value holds): its
    /// chunks' label and its Lease's label carry a shortened form, the Lease and the config its name.
    /// </summary>
    public const string LongNode = "lb-1.rack-07.row-c.hall-2.eu-north-3b.compute.internal.example.cluster.local";

    private static string Web(params int[] backends) => $$"""
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata: {name: web, namespace: demo}
        spec:
          shardRef: edge
          ports: [{name: http, port: 80, targetPort: 8080}]
          backend:
            endpoints: [{{string.Join(", ", backends.Select(i => $"{{address: {LbTopology.BackendAddress(i)}}}"))}}]
        """;

    [Theory]
    [InlineData("lb-1")]
    [InlineData(LongNode)]
    public async Task The_agent_in_cluster_mode_applies_chunked_revisions_reports_status_and_holds_its_lease(string node)
    {
        Privileged.Require();
        await using var h = await OperatorHarness.StartAsync();
        await using var bed = Testbed.Create("k", backends: 3);
        await using var relay = NetnsRelay.Start(bed.Topology.Lb, new IPEndPoint(IPAddress.Loopback, h.Server.Url.Port));
        var kubeconfig = await ClusterAgent.WriteKubeconfigAsync(relay.Endpoint, Ct);
        Process? agent = null;
        var log = bed.Log;
        try
        {
            await h.ApplyAsync(OperatorHarness.DemoCluster("500ms", [node]));
            await h.ApplyAsync(Web(1, 2, 3));
            var (_, run, stop) = h.StartOperator(new ClusterOperatorOptions { AgentLeaseNamespace = OperatorHarness.LeaseNs, ChunkLimit = 200 });
            agent = ClusterAgent.Start(node, bed.Topology.Lb, bed.Topology.Prefix.TrimEnd('-'), bed.Topology.LbInterfaces, kubeconfig, log,
                "--lease-renew", "0.2", "--shutdown-timeout", "1");

            var web = await ProgrammedAsync(h, agent, node, after: 0);
            var vip = new IPEndPoint(IPAddress.Parse(web.Status!.Vips.Single()), 80);
            var chunks = await h.Client.ListAsync<XlbNodeConfigChunk>(KubeResource.XlbNodeConfigChunks, null, ct: Ct);
            var config = (await h.GetAsync<XlbNodeConfig>(KubeResource.XlbNodeConfigs, null, node))!;
            Assert.Equal(2, config.Spec.Chunks.Count); // the VIP and the listener, each over the limit alone
            Assert.Equal(config.Spec.Chunks.Select(c => c.Name).Order(), chunks.Items.Select(c => c.Metadata.Name!).Order());
            Assert.Empty(config.Spec.Listeners);
            Assert.Equal("True", config.Status!.Conditions.Single(c => c.Type == "Ready").Status);
            Assert.Contains("native", config.Status.AttachMode, StringComparison.OrdinalIgnoreCase);
            var lease = await h.Client.GetAsync<JsonObject>(KubeResource.Leases, OperatorHarness.LeaseNs, $"xlb-agent-{node}", Ct);
            Assert.Equal(node, lease!["spec"]!["holderIdentity"]!.GetValue<string>());
            var label = lease["metadata"]!["labels"]![XlbApi.AgentNodeLabel]!.GetValue<string>();
            Assert.Equal(XlbApi.NodeLabelValue(node), label);
            Assert.True(node.Length <= 63 ? label == node : label.Length <= 63 && node.StartsWith(label[..label.LastIndexOf('-')], StringComparison.Ordinal), label);
            Assert.All(chunks.Items, c => Assert.Equal(label, c.Metadata.Labels![XlbNodeConfigChunk.NodeLabel]));
            var all = await HttpProbe.RunAsync(bed.Topology.Client, vip, 60, 4, Ct);
            Assert.Equal(0, all.Failed);
            Assert.Equal(["backend-1", "backend-2", "backend-3"], all.ByBackend.Keys.Order(StringComparer.Ordinal));

            // kubectl apply with backend-2 gone: a new chunked revision, the stale chunk deleted, traffic follows.
            await h.ApplyAsync(Web(1, 3));
            await ProgrammedAsync(h, agent, node, after: config.Spec.Revision);
            var after = await HttpProbe.RunAsync(bed.Topology.Client, vip, 60, 4, Ct);
            Assert.Equal(0, after.Failed);
            Assert.Equal(["backend-1", "backend-3"], after.ByBackend.Keys.Order(StringComparer.Ordinal));
            config = (await h.GetAsync<XlbNodeConfig>(KubeResource.XlbNodeConfigs, null, node))!;
            await Eventually.TrueAsync(() => h.Client.ListAsync<XlbNodeConfigChunk>(KubeResource.XlbNodeConfigChunks, null, ct: Ct).Result.Items
                .Select(c => c.Metadata.Name!).Order().SequenceEqual(config.Spec.Chunks.Select(c => c.Name).Order()), "only the listed chunks remain");

            // SIGTERM starts the agent's drain: it gives up its Lease, and the shard sees the node go at once.
            Netns.Terminate(agent);
            await Eventually.TrueAsync(() => h.Client.GetAsync<JsonObject>(KubeResource.Leases, OperatorHarness.LeaseNs, $"xlb-agent-{node}", Ct).Result is null, "the agent's Lease is deleted on drain");
            await Eventually.TrueAsync(() => h.GetAsync<VipShard>(KubeResource.VipShards, null, "edge").Result?.Status?.Conditions
                .Any(c => c.Type == "Degraded" && c.Status == "True") == true, $"VipShard edge Degraded once {node} drains");
            Assert.True(agent.WaitForExit(TimeSpan.FromSeconds(10)), "the agent exits after its shutdown window");
            await stop.CancelAsync();
            await run;
        }
        finally
        {
            if (agent is not null)
            {
                Netns.Stop(agent, TimeSpan.FromSeconds(10));
            }
            File.Delete(kubeconfig);
            var pins = Path.Combine(StandaloneStack.TestBpffs, "xlb", bed.Topology.Prefix.TrimEnd('-'));
            if (Directory.Exists(pins))
            {
                Directory.Delete(pins, recursive: true);
            }
            output.WriteLine(log.ToString());
            output.WriteLine(h.Log.ToString());
        }
    }

    /// <summary>Waits until the agent of <paramref name="node"/> reports a node-config revision after <paramref name="after"/> applied and PortMapping demo/web is Programmed.</summary>
    private static async Task<PortMapping> ProgrammedAsync(OperatorHarness h, Process agent, string node, long after)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(60))
        {
            Assert.False(agent.HasExited, $"the agent exited with {(agent.HasExited ? agent.ExitCode : 0)}");
            var web = await h.GetAsync<PortMapping>(KubeResource.PortMappings, "demo", "web");
            var config = await h.GetAsync<XlbNodeConfig>(KubeResource.XlbNodeConfigs, null, node);
            if (config?.Status?.AppliedRevision > after && config.Spec.Revision == config.Status.AppliedRevision
                && web?.Status?.Conditions.Any(c => c.Type == "Programmed" && c.Status == "True") == true)
            {
                return web;
            }
            await Task.Delay(100, Ct);
        }
        throw new TimeoutException($"PortMapping demo/web not Programmed after revision {after} within 60 s");
    }
}
