using System.Collections.Concurrent;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Xlb.Agent;
using Xlb.ApiServerDouble;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Kube;
using Xlb.Operator;
using Xlb.Tests.Support;

namespace Xlb.Tests.ControlPlane;

/// <summary>
/// The cluster install (kustomize/cluster): its manifests as kustomize renders them, and the
/// operator and the agents running with exactly the permissions its RBAC grants, against an API
/// server double that enforces them.
/// </summary>
public sealed class ClusterInstallTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;
    private static string Install => Path.Combine(AppContext.BaseDirectory, "kustomize", "cluster");
    private const string Ns = "xlb-system";
    private static readonly string[] ClusterScoped = ["Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"];

    /// <summary>The objects of a kustomization: its resources (files, or folders with their own kustomization), with its namespace set on namespaced objects.</summary>
    private static List<JsonObject> Render(string dir)
    {
        var kustomization = Yaml.ReadDocuments(File.ReadAllText(Path.Combine(dir, "kustomization.yaml"))).Single().AsObject();
        var ns = kustomization["namespace"]?.GetValue<string>();
        var result = new List<JsonObject>();
        foreach (var entry in kustomization["resources"]!.AsArray().Select(r => r!.GetValue<string>()))
        {
            var path = Path.GetFullPath(Path.Combine(dir, entry));
            result.AddRange(Directory.Exists(path) ? Render(path) : Yaml.ReadDocuments(File.ReadAllText(path)).Select(d => d.AsObject()));
        }
        foreach (var o in result.Where(o => ns is not null && !ClusterScoped.Contains(o["kind"]!.GetValue<string>())))
        {
            o["metadata"]!["namespace"] = ns;
        }
        return result;
    }

    [Fact]
    public void The_install_holds_the_crds_the_rbac_and_both_workloads_in_one_namespace()
    {
        var objects = Render(Install);
        string[] Names(string kind) => [.. objects.Where(o => o["kind"]!.GetValue<string>() == kind).Select(o => o["metadata"]!["name"]!.GetValue<string>()).Order(StringComparer.Ordinal)];
        Assert.Equal(5, Names("CustomResourceDefinition").Length);
        Assert.Equal(["xlb-agent", "xlb-operator"], Names("ServiceAccount"));
        Assert.Equal(["xlb-operator"], Names("Deployment"));
        Assert.Equal(["xlb-agent"], Names("DaemonSet"));
        Assert.All(objects.Where(o => !ClusterScoped.Contains(o["kind"]!.GetValue<string>())), o => Assert.Equal(Ns, o["metadata"]!["namespace"]!.GetValue<string>()));

        // The agents run where shards select LB nodes, on the host network, and drain before they are killed.
        var agent = objects.Single(o => o["kind"]!.GetValue<string>() == "DaemonSet")["spec"]!["template"]!["spec"]!;
        Assert.Equal("true", agent["nodeSelector"]![OperatorHarness.LbNodeLabel]!.GetValue<string>());
        Assert.True(agent["hostNetwork"]!.GetValue<bool>());
        var args = agent["containers"]![0]!["args"]!.AsArray().Select(a => a!.GetValue<string>()).ToList();
        Assert.Contains($"--lease-namespace={Ns}", args);
        var drain = double.Parse(args.Single(a => a.StartsWith("--shutdown-timeout=", StringComparison.Ordinal)).Split('=')[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(agent["terminationGracePeriodSeconds"]!.GetValue<long>() > drain);
        var op = objects.Single(o => o["kind"]!.GetValue<string>() == "Deployment")["spec"]!["template"]!["spec"]!;
        Assert.Contains($"--lease-namespace={Ns}", op["containers"]![0]!["args"]!.AsArray().Select(a => a!.GetValue<string>()));
    }

    [Fact]
    public async Task The_operator_and_the_agents_do_their_work_with_the_permissions_the_install_grants_and_no_more()
    {
        var rbac = new Rbac(Render(Install));
        var denied = new ConcurrentQueue<AccessRequest>();
        using var certs = new TestCertificates();
        var security = new ApiSecurity(certs.Server)
        {
            Tokens = new HashSet<string> { "admin", "operator", "agent" },
            Users = new Dictionary<string, string>
            {
                ["admin"] = "kubernetes-admin",
                ["operator"] = $"system:serviceaccount:{Ns}:xlb-operator",
                ["agent"] = $"system:serviceaccount:{Ns}:xlb-agent",
            },
        };
        await using var server = await ApiServer.StartAsync(security: security);
        server.BookmarkInterval = TimeSpan.FromMilliseconds(500);
        server.Authorizer = r =>
        {
            var allowed = r.User == "kubernetes-admin" || rbac.Allows(r);
            if (!allowed)
            {
                denied.Enqueue(r);
            }
            return allowed;
        };
        KubeClient Client(string token) => new(new KubeConnection { Server = server.Url, CertificateAuthority = [X509CertificateLoader.LoadCertificate(certs.Ca.RawData)], Token = new StaticToken(token) });
        using var admin = Client("admin");
        using var asOperator = Client("operator");
        using var asAgent = Client("agent");

        foreach (var doc in Yaml.ReadDocuments(OperatorHarness.DemoCluster("1s", ["lb-1", "lb-2"]) + "---\n" + OperatorHarness.ShopService))
        {
            var obj = doc.AsObject();
            await admin.ApplyAsync<JsonObject>(OperatorHarness.Resource(obj), obj, "kubectl", ct: Ct);
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        // The operator as the Deployment runs it: leader election in xlb-system, agents' Leases there.
        var op = new ClusterOperator(asOperator, new ClusterOperatorOptions
        {
            AgentLeaseNamespace = Ns,
            LeaderElection = new LeaderElectionOptions { Namespace = Ns, LeaseName = "xlb-operator", RetryPeriod = TimeSpan.FromMilliseconds(200) },
        }, NullLogger.Instance, TimeProvider.System);
        var run = Task.Run(() => op.RunAsync(stop.Token), Ct);
        // Each agent as the DaemonSet runs it: its own node config and chunks, its Lease, its status.
        var agents = new[] { "lb-1", "lb-2" }.Select(node => new KubeNodeConfigSource(asAgent, new ClusterAgentOptions { NodeName = node, LeaseNamespace = Ns }, () => { }, NullLogger.Instance, TimeProvider.System)).ToList();
        var reporting = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                foreach (var agent in agents)
                {
                    if (agent.Read().Config is { } config)
                    {
                        try
                        {
                            await agent.ReportAsync(new XlbNodeConfigStatus { AppliedRevision = config.Spec.Revision, AppliedHash = config.Spec.ContentHash }, stop.Token);
                        }
                        catch (OperationCanceledException) when (stop.IsCancellationRequested)
                        {
                            return; // the test is over
                        }
                    }
                }
                await Task.Delay(100, stop.Token).ContinueWith(_ => { }, TaskScheduler.Default);
            }
        }, Ct);

        // A denial fails the test at once, with what was denied.
        await Eventually.TrueAsync(() => !denied.IsEmpty || admin.GetAsync<Service>(KubeResource.Services, "demo", "shop", Ct).Result?.Status?.LoadBalancer?.Ingress.Count == 1, "the Service has its ingress IP", 30);
        await Eventually.TrueAsync(() => !denied.IsEmpty || admin.GetAsync<PortMapping>(KubeResource.PortMappings, "demo", "shop", Ct).Result?.Status?.Conditions.FirstOrDefault(c => c.Type == "Ready")?.Status == "True",
            "the owned PortMapping is Ready: rendered, applied by both agents, backends ready", 30);
        Assert.True(denied.IsEmpty, "denied: " + string.Join("; ", denied));
        // An agent that drains gives up its Lease.
        await agents[1].DrainAsync(true, Ct);
        Assert.Null(await admin.GetAsync<JsonObject>(KubeResource.Leases, Ns, "xlb-agent-lb-2", Ct));

        Assert.True(denied.IsEmpty, "denied: " + string.Join("; ", denied));
        // And no more: an agent cannot touch a user's PortMapping, the operator cannot edit a Service's spec.
        var refused = await Assert.ThrowsAsync<KubeApiException>(() => asAgent.MergePatchAsync<JsonObject>(KubeResource.PortMappings, "demo", "shop", JsonNode.Parse("""{"spec":{"vip":"10.250.0.99"}}""")!, ct: Ct));
        Assert.Equal(System.Net.HttpStatusCode.Forbidden, refused.Code);
        Assert.Contains("cannot patch resource \"portmappings\" in API group \"xlb.io\"", refused.Message, StringComparison.Ordinal);
        var opRefused = await Assert.ThrowsAsync<KubeApiException>(() => asOperator.MergePatchAsync<JsonObject>(KubeResource.Services, "demo", "shop", JsonNode.Parse("""{"spec":{"type":"ClusterIP"}}""")!, ct: Ct));
        Assert.Equal(System.Net.HttpStatusCode.Forbidden, opRefused.Code);

        await stop.CancelAsync();
        await reporting;
        foreach (var agent in agents)
        {
            await agent.DisposeAsync();
        }
        await run;
    }
}
