using System.Text.Json.Nodes;
using Xlb.ApiServerDouble;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Kube;
using Xlb.Operator;

namespace Xlb.Tests.ControlPlane;

/// <summary>
/// The API server double, a client, operators to start and stop, and stand-ins for the agents:
/// a Lease renewer per node, and a status writer that reports each node config applied.
/// </summary>
public sealed class OperatorHarness : IAsyncDisposable
{
    public const string LeaseNs = "xlb-system";
    /// <summary>The label LB nodes carry in the demo cluster and the install's DaemonSet selects.</summary>
    public const string LbNodeLabel = "xlb.io/lb-node";
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _background = [];
    private readonly Dictionary<string, bool> _renewing = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    public required ApiServer Server { get; init; }
    public required KubeClient Client { get; init; }
    /// <summary>What the operators started here logged.</summary>
    public Support.TestLogger Log { get; } = new();
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static async Task<OperatorHarness> StartAsync()
    {
        var server = await ApiServer.StartAsync();
        server.BookmarkInterval = TimeSpan.FromMilliseconds(500);
        return new OperatorHarness { Server = server, Client = new KubeClient(new KubeConnection { Server = server.Url }) };
    }

    /// <summary>Applies manifests as kubectl apply --server-side does (field manager kubectl).</summary>
    public async Task ApplyAsync(string yaml)
    {
        foreach (var doc in Yaml.ReadDocuments(yaml))
        {
            var obj = doc.AsObject();
            await Client.ApplyAsync<JsonObject>(Resource(obj), obj, "kubectl", ct: Ct);
        }
    }

    /// <summary>
    /// The demo's API objects as a cluster holds them: LB nodes (label xlb.io/lb-node), other nodes,
    /// namespaces demo and xlb-system, pool demo (10.250.0.0/24 less .1-.9) and shard edge over the
    /// LB nodes with the given failure detection.
    /// </summary>
    public static string DemoCluster(string detectionInterval, string[] lbNodes, params string[] otherNodes) =>
        string.Join("---\n", [
            .. lbNodes.Select(n => $"apiVersion: v1\nkind: Node\nmetadata: {{name: {n}, labels: {{xlb.io/lb-node: \"true\"}}}}\n"),
            .. otherNodes.Select(n => $"apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}\n"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n",
            $"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {LeaseNs}}}\n",
            "apiVersion: xlb.io/v1alpha1\nkind: LoadBalancerPool\nmetadata: {name: demo}\nspec: {blocks: [10.250.0.0/24], reserved: [10.250.0.1-10.250.0.9]}\n",
            $"apiVersion: xlb.io/v1alpha1\nkind: VipShard\nmetadata: {{name: edge}}\nspec:\n  poolRef: demo\n  nodeSelector: {{matchLabels: {{xlb.io/lb-node: \"true\"}}}}\n  failover: {{detection: {{interval: {detectionInterval}, multiplier: 3}}}}\n",
        ]);

    /// <summary>Service demo/shop of type LoadBalancer with XLB's class, and its one EndpointSlice (one ready endpoint, port 8080).</summary>
    public const string ShopService = """
        apiVersion: v1
        kind: Service
        metadata: {name: shop, namespace: demo}
        spec:
          type: LoadBalancer
          loadBalancerClass: xlb.io/xlb
          ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: shop-1, namespace: demo, labels: {kubernetes.io/service-name: shop}}
        addressType: IPv4
        ports: [{name: http, port: 8080, protocol: TCP}]
        endpoints:
        - {addresses: [10.201.1.2], conditions: {ready: true}}
        """;

    public static KubeResource Resource(JsonObject obj) => (obj["apiVersion"]!.GetValue<string>(), obj["kind"]!.GetValue<string>()) switch
    {
        (_, "Node") => KubeResource.Nodes,
        (_, "Namespace") => KubeResource.Namespaces,
        (_, "Service") => KubeResource.Services,
        (_, "EndpointSlice") => KubeResource.EndpointSlices,
        (_, "LoadBalancerPool") => KubeResource.LoadBalancerPools,
        (_, "VipShard") => KubeResource.VipShards,
        (_, "PortMapping") => KubeResource.PortMappings,
        var other => throw new ArgumentException($"no resource for {other}"),
    };

    public (ClusterOperator Operator, Task Run, CancellationTokenSource Stop) StartOperator(ClusterOperatorOptions? options = null)
    {
        var op = new ClusterOperator(Client, options ?? new ClusterOperatorOptions { AgentLeaseNamespace = LeaseNs }, Log, TimeProvider.System);
        var stop = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token, Ct);
        return (op, Task.Run(() => op.RunAsync(stop.Token), Ct), stop);
    }

    /// <summary>Each node's agent Lease, renewed every 100 ms until <see cref="StopAgent"/>.</summary>
    public void StartAgents(params string[] nodes)
    {
        foreach (var node in nodes)
        {
            lock (_gate)
            {
                _renewing[node] = true;
            }
        }
        _background.Add(Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                foreach (var node in nodes)
                {
                    bool on;
                    lock (_gate)
                    {
                        on = _renewing[node];
                    }
                    if (on)
                    {
                        await RenewAsync(node);
                    }
                }
                await Task.Delay(100, _stop.Token).ContinueWith(_ => { }, TaskScheduler.Default);
            }
        }));
        _background.Add(Task.Run(ReportAppliedAsync));
    }

    public void StopAgent(string node)
    {
        lock (_gate)
        {
            _renewing[node] = false;
        }
    }

    private async Task RenewAsync(string node)
    {
        var lease = Kube.Leases.Of(LeaseNs, XlbApi.AgentLeaseName(node), node, new() { [ClusterOperator.AgentNodeLabel] = XlbApi.NodeLabelValue(node) });
        lease["spec"]!["leaseDurationSeconds"] = 1;
        lease["spec"]!["renewTime"] = MicroTime.Format(DateTimeOffset.UtcNow);
        try
        {
            await Client.ApplyAsync<JsonObject>(KubeResource.Leases, lease, "xlb-agent", force: true, ct: _stop.Token);
        }
        catch (OperationCanceledException)
        {
            // Harness shutting down.
        }
    }

    /// <summary>What agents do after an apply: report the revision in the node config's status.</summary>
    private async Task ReportAppliedAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                foreach (var config in (await Client.ListAsync<XlbNodeConfig>(KubeResource.XlbNodeConfigs, null, ct: _stop.Token)).Items)
                {
                    bool alive;
                    lock (_gate)
                    {
                        alive = _renewing.GetValueOrDefault(config.Spec.NodeName);
                    }
                    if (alive && (config.Status?.AppliedRevision != config.Spec.Revision || config.Status.AppliedHash != config.Spec.ContentHash))
                    {
                        await Client.ApplyAsync<JsonObject>(KubeResource.XlbNodeConfigs, new JsonObject
                        {
                            ["apiVersion"] = XlbApi.ApiVersion,
                            ["kind"] = XlbNodeConfig.KindName,
                            ["metadata"] = new JsonObject { ["name"] = config.Metadata.Name },
                            ["status"] = new JsonObject { ["appliedRevision"] = config.Spec.Revision, ["appliedHash"] = config.Spec.ContentHash },
                        }, "xlb-agent", force: true, subresource: "status", ct: _stop.Token);
                    }
                }
                await Task.Delay(100, _stop.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    public async Task<T?> GetAsync<T>(KubeResource r, string? ns, string name) where T : class => await Client.GetAsync<T>(r, ns, name, Ct);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_background);
        Client.Dispose();
        await Server.DisposeAsync();
        _stop.Dispose();
    }
}
