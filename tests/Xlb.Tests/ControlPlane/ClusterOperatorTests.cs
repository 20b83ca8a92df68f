using System.Diagnostics;
using System.Text.Json.Nodes;
using Xlb.Crds;
using Xlb.Kube;
using Xlb.Tests.Support;

namespace Xlb.Tests.ControlPlane;

/// <summary>The operator in cluster mode against the API server double: real HTTP, informers, server-side apply, status.</summary>
public sealed class ClusterOperatorTests : IAsyncLifetime
{
    private OperatorHarness _h = null!;
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static readonly string Cluster = OperatorHarness.DemoCluster("200ms", ["lb-1", "lb-2"], "worker-1");

    private static string Mapping(string name, string backend = "endpoints: [{address: 10.201.1.2}, {address: 10.201.2.2}]", int port = 80, string vip = "Auto") => $$"""
        apiVersion: xlb.io/v1alpha1
        kind: PortMapping
        metadata: {name: {{name}}, namespace: demo}
        spec:
          shardRef: edge
          vip: {{vip}}
          ports: [{name: http, port: {{port}}, targetPort: 8080}]
          backend: { {{backend}} }
        """;

    /// <summary>The one EndpointSlice of Service demo/api, with these endpoints (flow-style YAML each).</summary>
    private static string ApiSlice(params string[] endpoints) => $$$"""
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: api-x1, namespace: demo, labels: {kubernetes.io/service-name: api}}
        addressType: IPv4
        ports: [{name: http, port: 8080, protocol: TCP}]
        endpoints: [{{{string.Join(", ", endpoints)}}}]
        """;

    private static string Up(string address) => $"{{addresses: [{address}], conditions: {{ready: true}}}}";

    private static string Terminating(string address) => $"{{addresses: [{address}], conditions: {{ready: false, serving: true, terminating: true}}}}";

    public async ValueTask InitializeAsync()
    {
        _h = await OperatorHarness.StartAsync();
        await _h.ApplyAsync(Cluster);
    }

    public async ValueTask DisposeAsync() => await _h.DisposeAsync();

    private async Task<PortMapping> MappingAsync(string name) => (await _h.GetAsync<PortMapping>(KubeResource.PortMappings, "demo", name))!;

    private static string? Condition(IReadOnlyList<Condition>? conditions, string type) => conditions?.FirstOrDefault(c => c.Type == type)?.Status;

    /// <summary>Both LB nodes have a config, and each satisfies <paramref name="check"/> (never true of an empty list).</summary>
    private bool BothConfigs(Func<XlbNodeConfig, bool> check)
    {
        var configs = ConfigsAsync().Result;
        return configs.Count == 2 && configs.All(check);
    }

    private async Task<List<XlbNodeConfig>> ConfigsAsync() =>
        [.. (await _h.Client.ListAsync<XlbNodeConfig>(KubeResource.XlbNodeConfigs, null, ct: Ct)).Items.OrderBy(c => c.Metadata.Name, StringComparer.Ordinal)];

    [Fact]
    public async Task The_examples_become_ready_with_node_configs_and_the_operator_writes_only_status_on_user_objects()
    {
        await _h.ApplyAsync(File.ReadAllText(Path.Combine(Examples.Dir("demo"), "30-web.yaml")));
        _h.StartAgents("lb-1", "lb-2");
        var (op, run, stop) = _h.StartOperator();

        await Eventually.TrueAsync(() => Condition(MappingAsync("web").Result.Status?.Conditions, "Ready") == "True", "PortMapping demo/web Ready", 20);
        var web = await MappingAsync("web");
        Assert.Equal(["10.250.0.10"], web.Status!.Vips);
        Assert.Equal(web.Metadata.Generation, web.Status.ObservedGeneration);
        Assert.Equal("3/3", web.Status.Backends!.Summary);
        Assert.All(web.Status.Nodes, n => Assert.True(n.Applied));
        var pool = await _h.GetAsync<LoadBalancerPool>(KubeResource.LoadBalancerPools, null, "demo");
        Assert.Equal("True", Condition(pool!.Status!.Conditions, "Ready"));
        Assert.Equal(1, pool.Status.Allocated);
        var shard = await _h.GetAsync<VipShard>(KubeResource.VipShards, null, "edge");
        Assert.Equal("True", Condition(shard!.Status!.Conditions, "Ready"));
        Assert.Equal(["lb-1", "lb-2"], shard.Status.ReadyNodes);

        // One config per LB node (not for worker-1); the active and the standby both carry the listener.
        var configs = await ConfigsAsync();
        Assert.Equal(["lb-1", "lb-2"], configs.Select(c => c.Metadata.Name));
        Assert.All(configs, c => Assert.Equal("demo/web/http", Assert.Single(c.Spec.Listeners).Name));
        Assert.Equal([VipRole.Active, VipRole.Standby], configs.Select(c => c.Spec.Vips.Single().Role).Order());

        // The operator's field manager owns only status on the user's objects.
        var raw = await _h.Client.GetAsync<JsonObject>(KubeResource.PortMappings, "demo", "web", Ct);
        var mine = raw!["metadata"]!["managedFields"]!.AsArray().Where(f => f!["manager"]!.GetValue<string>() == "xlb-operator").ToList();
        Assert.NotEmpty(mine);
        Assert.All(mine, f => Assert.Equal("status", f!["subresource"]?.GetValue<string>()));
        await stop.CancelAsync();
        await run;
    }

    /// <summary>
    /// examples/recipes as `kubectl apply -k` sends them, with the Services' EndpointSlices as a
    /// cluster's endpoint controller writes them: every PortMapping becomes Ready, and each recipe
    /// reaches the node configs as its file says.
    /// </summary>
    [Fact]
    public async Task The_recipes_become_ready_and_reach_the_node_configs_as_their_files_say()
    {
        foreach (var obj in Examples.Kustomized(Examples.Dir("recipes")))
        {
            await _h.ApplyAsync(obj.ToJsonString());
        }
        await _h.ApplyAsync("""
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: shop-1, namespace: demo, labels: {kubernetes.io/service-name: shop}}
            addressType: IPv4
            ports: [{name: http, port: 8080, protocol: TCP}, {name: https, port: 8443, protocol: TCP}]
            endpoints:
            - {addresses: [10.201.1.2], conditions: {ready: true}}
            - {addresses: [10.201.2.2], conditions: {ready: true}}
            """);
        await _h.ApplyAsync(ApiSlice(Up("10.201.1.7"), Up("10.201.2.7"), Terminating("10.201.3.7")));
        _h.StartAgents("lb-1", "lb-2");
        var (_, run, stop) = _h.StartOperator();

        string[] names = ["api", "dns-tcp", "dns-udp", "ingest", "shop", "web"];
        await Eventually.TrueAsync(() => names.All(n => Condition(MappingAsync(n).Result?.Status?.Conditions, "Ready") == "True"), "every recipe's PortMapping Ready", 20);
        Assert.Equal(names, (await _h.Client.ListAsync<PortMapping>(KubeResource.PortMappings, "demo", ct: Ct)).Items.Select(m => m.Metadata.Name).Order(StringComparer.Ordinal));
        Assert.Equal(["10.250.0.53"], (await MappingAsync("dns-udp")).Status!.Vips);
        Assert.Equal(["10.250.0.53"], (await MappingAsync("dns-tcp")).Status!.Vips);
        Assert.Equal("2/3", (await MappingAsync("api")).Status!.Backends!.Summary);
        await Eventually.TrueAsync(() => _h.GetAsync<Service>(KubeResource.Services, "demo", "shop").Result?.Status?.LoadBalancer?.Ingress.Count == 1, "shop has its ingress IP", 20);
        Assert.Equal("10.250.0.20", (await _h.GetAsync<Service>(KubeResource.Services, "demo", "shop"))!.Status!.LoadBalancer!.Ingress.Single().Ip);

        foreach (var config in await ConfigsAsync())
        {
            var listeners = config.Spec.Listeners.ToDictionary(l => l.Name);
            Assert.Equal(["demo/api/http", "demo/dns-tcp/dns-tcp", "demo/dns-udp/dns", "demo/ingest/http", "demo/shop/http", "demo/shop/https", "demo/web/http"], listeners.Keys.Order(StringComparer.Ordinal));
            var api = listeners["demo/api/http"];
            Assert.Equal((NatMode.DSR, DsrEncapsulation.IPIP, 4093, HealthCheckType.HTTP, "/healthz"), (api.NatMode, api.DsrEncapsulation, api.MaglevTableSize, api.HealthCheck!.Type, api.HealthCheck.Path));
            Assert.Equal([("10.201.1.7", false), ("10.201.2.7", false), ("10.201.3.7", true)], api.Backends.Select(b => (b.Address, b.Draining)).Order());
            Assert.Equal(TimeSpan.FromSeconds(60), api.DrainTimeout.Value);
            var dns = listeners["demo/dns-udp/dns"];
            Assert.Equal((L4Protocol.UDP, 53, SchedulingAlgorithm.SourceHash, TimeSpan.FromSeconds(5)), (dns.Protocol, dns.Port, dns.Algorithm, dns.IdleTimeout!.Value.Value));
            var ingest = listeners["demo/ingest/http"];
            Assert.Equal((SchedulingAlgorithm.LeastConn, NatMode.FullNAT), (ingest.Algorithm, ingest.NatMode));
            Assert.Equal(["10.250.0.5", "10.250.0.6", "10.250.0.7", "10.250.0.8"], ingest.SourceAddresses!);
            Assert.Equal([2, 1, 1], ingest.Backends.Select(b => b.Weight));
            Assert.True(ingest.ConnectionLog!.Enabled);
            var shop = listeners["demo/shop/https"];
            Assert.Equal(("10.250.0.20", 443, 8443, AffinityMode.ClientIP, TimeSpan.FromMinutes(15)), (shop.Vip, shop.Port, shop.Backends[0].Port, shop.Affinity!.Mode, shop.IdleTimeout!.Value.Value));
        }
        await stop.CancelAsync();
        await run;
    }

    /// <summary>
    /// BGP neighbours chosen per node by its labels, through the API: the CRD keeps a peer's
    /// nodeSelector, and each node's config lists the neighbours that select it.
    /// </summary>
    [Fact]
    public async Task Each_node_config_lists_the_bgp_neighbours_whose_node_selector_selects_that_node()
    {
        await _h.ApplyAsync("""
            apiVersion: v1
            kind: Node
            metadata: {name: lb-1, labels: {xlb.io/lb-node: "true", rack: a}}
            ---
            apiVersion: v1
            kind: Node
            metadata: {name: lb-2, labels: {xlb.io/lb-node: "true", rack: b}}
            ---
            apiVersion: xlb.io/v1alpha1
            kind: VipShard
            metadata: {name: edge}
            spec:
              poolRef: demo
              nodeSelector: {matchLabels: {xlb.io/lb-node: "true"}}
              announcement:
                mode: BGP
                peers:
                  - {address: 10.0.1.1, asn: 65000, myAsn: 65000, nodeSelector: {matchLabels: {rack: a}}}
                  - {address: 10.0.2.1, asn: 65000, myAsn: 65000, nodeSelector: {matchLabels: {rack: b}}}
                  - {address: 10.0.0.9, asn: 65000, myAsn: 65000}
            """);
        await _h.ApplyAsync(Mapping("web"));
        _h.StartAgents("lb-1", "lb-2");
        var (_, run, stop) = _h.StartOperator();

        await Eventually.TrueAsync(() => Condition(MappingAsync("web").Result.Status?.Conditions, "Ready") == "True", "PortMapping demo/web Ready", 20);
        var peers = (await ConfigsAsync()).ToDictionary(c => c.Metadata.Name!, c => c.Spec.BgpPeers.Select(p => p.Address).ToList());
        Assert.Equal(["10.0.0.9", "10.0.1.1"], peers["lb-1"]);
        Assert.Equal(["10.0.0.9", "10.0.2.1"], peers["lb-2"]);
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task The_operator_serves_readiness_and_metrics_that_count_its_reconciles_writes_and_objects()
    {
        await _h.ApplyAsync(File.ReadAllText(Path.Combine(Examples.Dir("demo"), "30-web.yaml")));
        _h.StartAgents("lb-1", "lb-2");
        var (op, run, stop) = _h.StartOperator();
        await using var endpoints = await Xlb.Operator.OperatorEndpoints.StartAsync(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0), op, Ct);
        using var http = new HttpClient { BaseAddress = new Uri(endpoints.Urls.Single()) };
        await Eventually.TrueAsync(() => Condition(MappingAsync("web").Result.Status?.Conditions, "Ready") == "True", "PortMapping demo/web Ready", 20);

        var ready = await http.GetAsync("/readyz", Ct);
        Assert.Equal(System.Net.HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal("leading\n", await ready.Content.ReadAsStringAsync(Ct));
        var text = await http.GetStringAsync("/metrics", Ct);
        double Sample(string series) => double.Parse(text.Split('\n').Single(l => l.StartsWith(series + " ", StringComparison.Ordinal))[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(Sample("xlb_operator_reconciles_total") >= 1);
        // Every reconcile ends timed or failed; one may be under way while the page is written.
        Assert.InRange(Sample("xlb_operator_reconciles_total") - Sample("xlb_operator_reconcile_duration_seconds_count") - Sample("xlb_operator_reconcile_errors_total"), 0, 1);
        Assert.Equal(Sample("xlb_operator_reconcile_duration_seconds_count"), Sample("xlb_operator_reconcile_duration_seconds_bucket{le=\"+Inf\"}"));
        Assert.True(Sample("xlb_operator_writes_total") >= 3); // two node configs and a status at least
        Assert.True(Sample("xlb_operator_write_echoes_total") >= 1); // they came back through the informers without a plan each
        Assert.Equal(1, Sample("xlb_operator_leader"));
        Assert.Equal(1, Sample("xlb_operator_objects{kind=\"PortMapping\"}"));
        Assert.Equal(2, Sample("xlb_operator_objects{kind=\"XlbNodeConfig\"}"));
        Assert.Equal(0, Sample("xlb_operator_problems"));
        // The process's own series: memory, CPU and the collector's heap (as of its last collection).
        GC.Collect();
        text = await http.GetStringAsync("/metrics", Ct);
        Assert.True(Sample("process_resident_memory_bytes") > 10 << 20);
        Assert.True(Sample("process_cpu_seconds_total") > 0);
        Assert.InRange(Sample("dotnet_gc_heap_size_bytes"), 1, Sample("dotnet_gc_committed_bytes"));
        Assert.True(Sample("dotnet_gc_collections_total{generation=\"0\"}") >= Sample("dotnet_gc_collections_total{generation=\"2\"}"));
        Assert.InRange(Sample("process_start_time_seconds"), DateTimeOffset.UtcNow.ToUnixTimeSeconds() - 3600, DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 1);
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task An_endpoint_leaving_its_slice_updates_the_node_config_and_the_backend_counts()
    {
        await _h.ApplyAsync(Mapping("api", backend: "serviceRef: {name: api}"));
        await _h.ApplyAsync(ApiSlice(Up("10.201.1.2"), Up("10.201.2.2"), Up("10.201.3.2")));
        _h.StartAgents("lb-1", "lb-2");
        var (_, run, stop) = _h.StartOperator();
        await Eventually.TrueAsync(() => BothConfigs(c => c.Spec.Listeners.SingleOrDefault()?.Backends.Count == 3), "three backends rendered", 20);
        var before = (await ConfigsAsync()).ToDictionary(c => c.Metadata.Name!, c => c.Spec.Revision);

        // The pod behind 10.201.2.2 starts terminating, then goes.
        var clock = Stopwatch.StartNew();
        await _h.ApplyAsync(ApiSlice(Up("10.201.1.2"), Terminating("10.201.2.2"), Up("10.201.3.2")));
        await Eventually.TrueAsync(() => BothConfigs(c => c.Spec.Listeners.Single().Backends.Any(b => b.Draining)), "terminating endpoint rendered draining", 20);
        Assert.All(await ConfigsAsync(), c => Assert.Equal(before[c.Metadata.Name!] + 1, c.Spec.Revision));
        await Eventually.TrueAsync(() => MappingAsync("api").Result.Status?.Backends?.Terminating == 1, "status counts one terminating backend", 20);

        await _h.ApplyAsync(ApiSlice(Up("10.201.1.2"), Up("10.201.3.2")));
        await Eventually.TrueAsync(() => BothConfigs(c => c.Spec.Listeners.Single().Backends.Select(b => b.Address).SequenceEqual(["10.201.1.2", "10.201.3.2"])), "endpoint removed from every node config", 20);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20));
        await Eventually.TrueAsync(() => MappingAsync("api").Result.Status?.Backends?.Summary == "2/2", "status counts two backends", 20);
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task When_the_active_nodes_lease_expires_its_vip_moves_to_the_standby_and_the_shard_says_so()
    {
        await _h.ApplyAsync(Mapping("web"));
        _h.StartAgents("lb-1", "lb-2");
        var (_, run, stop) = _h.StartOperator();
        await Eventually.TrueAsync(() => Condition(MappingAsync("web").Result.Status?.Conditions, "Ready") == "True", "web Ready", 20);
        var shard = (await _h.GetAsync<VipShard>(KubeResource.VipShards, null, "edge"))!;
        var placed = Assert.Single(shard.Status!.Vips);
        var (active, standby) = (placed.ActiveNode, placed.StandbyNode!);

        _h.StopAgent(active);
        await Eventually.TrueAsync(() => _h.GetAsync<VipShard>(KubeResource.VipShards, null, "edge").Result!.Status!.Vips.Single().ActiveNode == standby, "VIP taken over by the standby", 20);
        shard = (await _h.GetAsync<VipShard>(KubeResource.VipShards, null, "edge"))!;
        Assert.Equal(1, shard.Status!.Transitions);
        Assert.Equal([standby], shard.Status.ReadyNodes);
        var degraded = shard.Status.Conditions.Single(c => c.Type == "Degraded");
        Assert.Equal(("True", "NodesNotReady"), (degraded.Status, degraded.Reason));
        Assert.Contains(active, degraded.Message, StringComparison.Ordinal);
        var configs = (await ConfigsAsync()).ToDictionary(c => c.Metadata.Name!);
        Assert.Equal(VipRole.Active, configs[standby].Spec.Vips.Single().Role);
        Assert.Empty(configs[active].Spec.Vips);
        await Eventually.TrueAsync(() => MappingAsync("web").Result.Status?.ActiveNodes.SequenceEqual([standby]) == true, "PortMapping status names the new active node", 20);

        var events = await _h.Client.ListAsync<JsonObject>(KubeResource.Events, "default", ct: Ct);
        var all = await _h.Client.ListAsync<JsonObject>(KubeResource.Events, null, ct: Ct);
        Assert.True(events.Items.Count > 0, string.Join("\n", all.Items.Select(e => e.ToJsonString())));
        var failover = Assert.Single(events.Items, e => e["reason"]?.GetValue<string>() == "Failover");
        Assert.Contains($"{active} → {standby}", failover["note"]!.GetValue<string>(), StringComparison.Ordinal);
        await stop.CancelAsync();
        await run;
    }

    /// <summary>
    /// With a failover behind it (so sticky placement differs from a fresh one), inline and chunked:
    /// a restarted operator reads VIPs and placements back from status and node configs (chunks
    /// included) and has nothing to write.
    /// </summary>
    [Theory]
    [InlineData(512 * 1024)]
    [InlineData(200)]
    public async Task A_restarted_operator_changes_no_allocation_writes_nothing_and_renders_no_new_revision(long chunkLimit)
    {
        var (options, configs, mappings) = await ConvergedWithEveryVipOnLb2Async(chunkLimit);
        Assert.Equal(chunkLimit < 1024, configs.All(c => c.Spec.Chunks.Count > 0));
        var chunkReads = ChunkReads();

        var (second, run2, stop2) = _h.StartOperator(options);
        await Eventually.TrueAsync(() => second.Plans >= 3, "the new operator planned a few times", 20);
        Assert.Equal(0, second.Writes);
        Assert.Empty(chunkReads); // every chunk's content came from its summary, listed as metadata
        Assert.Equal(configs.Select(c => (c.Metadata.Name, c.Metadata.ResourceVersion, c.Spec.Revision)), (await ConfigsAsync()).Select(c => (c.Metadata.Name, c.Metadata.ResourceVersion, c.Spec.Revision)));
        var after = (await _h.Client.ListAsync<PortMapping>(KubeResource.PortMappings, "demo", ct: Ct)).Items;
        Assert.Equal(mappings.Select(m => (m.Metadata.Name, m.Metadata.ResourceVersion, m.Status!.Vips[0])), after.Select(m => (m.Metadata.Name, m.Metadata.ResourceVersion, m.Status!.Vips[0])));
        await stop2.CancelAsync();
        await run2;
    }

    /// <summary>The names of the chunks read one by one (GET) from now on.</summary>
    private System.Collections.Concurrent.ConcurrentQueue<string> ChunkReads()
    {
        var reads = new System.Collections.Concurrent.ConcurrentQueue<string>();
        _h.Server.Faults.BeforeRequest = path =>
        {
            var at = path.IndexOf("/xlbnodeconfigchunks/", StringComparison.Ordinal);
            if (at >= 0 && !path.Contains('?', StringComparison.Ordinal))
            {
                reads.Enqueue(path[(at + "/xlbnodeconfigchunks/".Length)..]);
            }
        };
        return reads;
    }

    /// <summary>Five mappings Ready, lb-1 died and came back (so every VIP is active on lb-2, where a fresh placement would not put them all); the operator stopped.</summary>
    private async Task<(Xlb.Operator.ClusterOperatorOptions Options, List<XlbNodeConfig> Configs, List<PortMapping> Mappings)> ConvergedWithEveryVipOnLb2Async(long chunkLimit)
    {
        foreach (var i in Enumerable.Range(0, 5))
        {
            await _h.ApplyAsync(Mapping($"m{i}"));
        }
        _h.StartAgents("lb-1", "lb-2");
        var options = new Xlb.Operator.ClusterOperatorOptions { AgentLeaseNamespace = OperatorHarness.LeaseNs, ChunkLimit = chunkLimit };
        var (first, run, stop) = _h.StartOperator(options);
        await Eventually.TrueAsync(() => Enumerable.Range(0, 5).All(i => Condition(MappingAsync($"m{i}").Result.Status?.Conditions, "Ready") == "True"), "all five Ready", 20);
        _h.StopAgent("lb-1");
        await Eventually.TrueAsync(() => BothConfigs(c => c.Spec.NodeName == "lb-1" ? c.Spec.VipCount == 0 : c.Spec.VipCount == 5), "every VIP on lb-2", 20);
        _h.StartAgents("lb-1");
        await Eventually.TrueAsync(() => BothConfigs(c => c.Spec.VipCount == 5) && Enumerable.Range(0, 5).All(i => Condition(MappingAsync($"m{i}").Result.Status?.Conditions, "Ready") == "True"), "lb-1 back as standby, all Ready", 20);
        await stop.CancelAsync();
        await run;
        var mappings = (await _h.Client.ListAsync<PortMapping>(KubeResource.PortMappings, "demo", ct: Ct)).Items;
        Assert.All(mappings, m => Assert.Equal(["lb-2"], m.Status!.ActiveNodes));
        return (options, await ConfigsAsync(), mappings);
    }

    /// <summary>
    /// Chunks an older operator wrote carry no summary: a restarted operator reads those whole
    /// (placements stay), writes no config or status, and gives each its summary.
    /// </summary>
    [Fact]
    public async Task A_restarted_operator_reads_chunks_without_a_summary_whole_and_gives_them_one()
    {
        var (options, configs, mappings) = await ConvergedWithEveryVipOnLb2Async(200);
        var chunks = (await _h.Client.ListAsync<XlbNodeConfigChunk>(KubeResource.XlbNodeConfigChunks, null, ct: Ct)).Items;
        Assert.NotEmpty(chunks);
        Assert.All(chunks, c => Assert.NotNull(Xlb.Operator.Core.ChunkSummaries.Read(c.Metadata.Annotations![Xlb.Operator.Core.ChunkSummaries.Annotation])));
        foreach (var chunk in chunks)
        {
            await _h.Client.MergePatchAsync<JsonObject>(KubeResource.XlbNodeConfigChunks, null, chunk.Metadata.Name!,
                new JsonObject { ["metadata"] = new JsonObject { ["annotations"] = new JsonObject { [Xlb.Operator.Core.ChunkSummaries.Annotation] = null } } }, ct: Ct);
        }

        var chunkReads = ChunkReads();
        var (second, run2, stop2) = _h.StartOperator(options);
        await Eventually.TrueAsync(() => second.Plans >= 3, "the new operator planned a few times", 20);
        Assert.Equal(chunks.Count, second.Writes); // one summary per chunk, nothing else
        Assert.Equal(chunks.Select(c => c.Metadata.Name!).Order(StringComparer.Ordinal), chunkReads.Order(StringComparer.Ordinal)); // each read whole once
        Assert.Equal(configs.Select(c => (c.Metadata.Name, c.Metadata.ResourceVersion, c.Spec.Revision)), (await ConfigsAsync()).Select(c => (c.Metadata.Name, c.Metadata.ResourceVersion, c.Spec.Revision)));
        var after = (await _h.Client.ListAsync<PortMapping>(KubeResource.PortMappings, "demo", ct: Ct)).Items;
        Assert.Equal(mappings.Select(m => (m.Metadata.Name, m.Metadata.ResourceVersion)), after.Select(m => (m.Metadata.Name, m.Metadata.ResourceVersion)));
        var summarized = (await _h.Client.ListAsync<XlbNodeConfigChunk>(KubeResource.XlbNodeConfigChunks, null, ct: Ct)).Items;
        Assert.Equal(chunks.Select(c => c.Metadata.Annotations![Xlb.Operator.Core.ChunkSummaries.Annotation]).Order(StringComparer.Ordinal),
            summarized.Select(c => c.Metadata.Annotations?.GetValueOrDefault(Xlb.Operator.Core.ChunkSummaries.Annotation)).Order(StringComparer.Ordinal));
        await stop2.CancelAsync();
        await run2;
    }

    [Fact]
    public async Task The_heap_is_compacted_once_the_status_writes_of_many_mappings_come_back_and_not_on_small_changes()
    {
        foreach (var i in Enumerable.Range(0, 12))
        {
            await _h.ApplyAsync(Mapping($"m{i}"));
        }
        _h.StartAgents("lb-1", "lb-2");
        var options = new Xlb.Operator.ClusterOperatorOptions { AgentLeaseNamespace = OperatorHarness.LeaseNs, CompactAfterTakeOvers = 10 };
        var (op, run, stop) = _h.StartOperator(options);
        await Eventually.TrueAsync(() => Enumerable.Range(0, 12).All(i => Condition(MappingAsync($"m{i}").Result.Status?.Conditions, "Ready") == "True"), "all twelve Ready", 20);
        await Eventually.TrueAsync(() => op.Compactions >= 1, "a compaction after the statuses came back", 10);
        await SettledAsync(op);
        // The echoes of the last status writes are taken over by the next plan, whatever starts it
        // (no timer re-plans within the agents' Lease window): here a namespace that changes nothing.
        var before = op.Plans;
        await _h.ApplyAsync("apiVersion: v1\nkind: Namespace\nmetadata: {name: unrelated}\n");
        await Eventually.TrueAsync(() => op.Plans > before, "a plan for the namespace", 10);
        await SettledAsync(op);
        var compactions = op.Compactions;
        var plans = op.Plans;
        // One mapping's spec changes: a plan, and its status write comes back; no compaction.
        await _h.ApplyAsync(Mapping("m3", port: 443));
        await Eventually.TrueAsync(() => op.Plans > plans && BothConfigs(c => c.Spec.Listeners.Any(l => l.Port == 443)), "the change planned", 20);
        await SettledAsync(op);
        Assert.Equal(compactions, op.Compactions);
        Assert.Contains($"xlb_operator_compactions_total {compactions}", op.Metrics(), StringComparison.Ordinal);
        await stop.CancelAsync();
        await run;
    }

    /// <summary>Until the operator has written nothing for a second (its status writes and their echoes are over).</summary>
    private static async Task SettledAsync(Xlb.Operator.ClusterOperator op)
    {
        var writes = op.Writes;
        for (var quiet = 0; quiet < 20; quiet++)
        {
            await Task.Delay(50, Ct);
            if (op.Writes != writes)
            {
                (writes, quiet) = (op.Writes, 0);
            }
        }
    }

    [Fact]
    public async Task One_broken_mapping_among_a_hundred_is_stalled_with_its_reason_and_the_99_others_are_programmed()
    {
        foreach (var i in Enumerable.Range(0, 100))
        {
            // m42 asks for an address outside the pool (CEL cannot know the pool; the operator does).
            await _h.ApplyAsync(Mapping($"m{i:D3}", vip: i == 42 ? "192.0.2.1" : "Auto"));
        }
        _h.StartAgents("lb-1", "lb-2");
        var (_, run, stop) = _h.StartOperator();
        await Eventually.TrueAsync(() => BothConfigs(c => c.Spec.Listeners.Count == 99), "99 listeners on each node", 30);
        await Eventually.TrueAsync(() => Condition(MappingAsync("m042").Result.Status?.Conditions, "Stalled") == "True", "m042 Stalled", 20);
        var broken = await MappingAsync("m042");
        var stalled = broken.Status!.Conditions.Single(c => c.Type == "Stalled");
        Assert.Equal("VipNotInPool", stalled.Reason);
        Assert.Contains("192.0.2.1", stalled.Message, StringComparison.Ordinal);
        Assert.Equal("False", Condition(broken.Status.Conditions, "Ready"));
        await Eventually.TrueAsync(() => _h.Client.ListAsync<PortMapping>(KubeResource.PortMappings, "demo", ct: Ct).Result.Items.Count(m => Condition(m.Status?.Conditions, "Ready") == "True") == 99, "99 Ready", 30);
        var events = await _h.Client.ListAsync<JsonObject>(KubeResource.Events, "demo", ct: Ct);
        Assert.Contains(events.Items, e => e["reason"]?.GetValue<string>() == "VipNotInPool" && e["regarding"]!["name"]!.GetValue<string>() == "m042");
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task A_service_of_type_load_balancer_gets_an_owned_port_mapping_and_its_ingress_ip()
    {
        await _h.ApplyAsync(OperatorHarness.ShopService);
        await _h.ApplyAsync("""
            apiVersion: v1
            kind: Service
            metadata: {name: other-lb, namespace: demo}
            spec:
              type: LoadBalancer
              loadBalancerClass: example.com/other
              ports: [{name: http, port: 80, protocol: TCP}]
            """);
        _h.StartAgents("lb-1", "lb-2");
        var (_, run, stop) = _h.StartOperator();
        await Eventually.TrueAsync(() => _h.GetAsync<Service>(KubeResource.Services, "demo", "shop").Result?.Status?.LoadBalancer?.Ingress.Count == 1, "shop has an ingress IP", 20);
        var shop = (await _h.GetAsync<Service>(KubeResource.Services, "demo", "shop"))!;
        var ingress = shop.Status!.LoadBalancer!.Ingress.Single();
        Assert.Equal(("10.250.0.10", "VIP"), (ingress.Ip, ingress.IpMode));
        var owned = await MappingAsync("shop");
        Assert.Equal("shop", owned.Metadata.Labels!["xlb.io/service"]);
        Assert.Equal(("Service", "shop", true), (owned.Metadata.OwnerReferences!.Single().Kind, owned.Metadata.OwnerReferences!.Single().Name, owned.Metadata.OwnerReferences!.Single().Controller == true));
        Assert.Equal("shop", owned.Spec.Backend.ServiceRef!.Name);
        await Eventually.TrueAsync(() => ConfigsAsync().Result.Any(c => c.Spec.Listeners.Any(l => l.Name == "demo/shop/http" && l.Backends.Single().Port == 8080)), "listener rendered from the slice", 20);
        Assert.Null((await _h.GetAsync<Service>(KubeResource.Services, "demo", "other-lb"))!.Status?.LoadBalancer?.Ingress.FirstOrDefault());
        Assert.Null(await _h.GetAsync<PortMapping>(KubeResource.PortMappings, "demo", "other-lb"));

        // The Service stops being a LoadBalancer: its mapping goes, and its listener with it.
        await _h.ApplyAsync("""
            apiVersion: v1
            kind: Service
            metadata: {name: shop, namespace: demo}
            spec:
              type: ClusterIP
              ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
            """);
        await Eventually.TrueAsync(() => _h.GetAsync<PortMapping>(KubeResource.PortMappings, "demo", "shop").Result is null, "owned mapping deleted", 20);
        await Eventually.TrueAsync(() => BothConfigs(c => c.Spec.Listeners.Count == 0), "listener gone", 20);
        await stop.CancelAsync();
        await run;
    }
}
