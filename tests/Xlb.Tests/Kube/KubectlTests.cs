using System.Diagnostics;
using System.Text.Json.Nodes;
using Xlb.ApiServerDouble;
using Xlb.Kube;
using Xlb.Tests.Support;

namespace Xlb.Tests.Kube;

/// <summary>
/// kubectl, an independent client, against the double: server-side apply of XLB's example
/// manifests (kustomize included), get, get -o yaml and delete. What kubectl accepts keeps the
/// double's discovery, apply and watch honest from the outside.
/// </summary>
public sealed class KubectlTests : IAsyncLifetime
{
    private ApiServer _server = null!;
    private string _config = "";
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync()
    {
        _server = await ApiServer.StartAsync();
        _config = Path.Combine(Path.GetTempPath(), $"xlb-kubectl-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_config);
    }

    public async ValueTask DisposeAsync()
    {
        await _server.DisposeAsync();
        Directory.Delete(_config, recursive: true);
    }

    private async Task<string> KubectlAsync(params string[] args)
    {
        using var process = new Process
        {
            StartInfo = new ProcessStartInfo("kubectl")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = Examples.Dir("demo"),
            },
        };
        // An empty KUBECONFIG and a private cache: kubectl must not read or write the user's files.
        process.StartInfo.Environment["KUBECONFIG"] = Path.Combine(_config, "none");
        process.StartInfo.Environment["KUBECACHEDIR"] = Path.Combine(_config, "cache");
        process.StartInfo.ArgumentList.Add("--server");
        process.StartInfo.ArgumentList.Add(_server.Url.ToString());
        process.StartInfo.ArgumentList.Add("--request-timeout=20s");
        foreach (var a in args)
        {
            process.StartInfo.ArgumentList.Add(a);
        }
        process.Start();
        var stdout = process.StandardOutput.ReadToEndAsync(Ct);
        var stderr = process.StandardError.ReadToEndAsync(Ct);
        await process.WaitForExitAsync(Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);
        Assert.True(process.ExitCode == 0, $"kubectl {string.Join(' ', args)} exited {process.ExitCode}: {await stderr}");
        return await stdout;
    }

    private static bool HaveKubectl() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => File.Exists(Path.Combine(d, "kubectl")));

    [Fact]
    public async Task Kubectl_applies_gets_and_deletes_the_examples()
    {
        if (!HaveKubectl())
        {
            Toolchain.Missing("kubectl is not installed");
        }
        await File.WriteAllTextAsync(Path.Combine(_config, "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n", Ct);
        Assert.Contains("namespace/demo serverside-applied", await KubectlAsync("apply", "--server-side", "-f", Path.Combine(_config, "ns.yaml")), StringComparison.Ordinal);
        var applied = await KubectlAsync("apply", "--server-side", "-k", ".");
        Assert.Contains("loadbalancerpool.xlb.io/demo serverside-applied", applied, StringComparison.Ordinal);
        Assert.Contains("vipshard.xlb.io/edge serverside-applied", applied, StringComparison.Ordinal);
        Assert.Contains("portmapping.xlb.io/web serverside-applied", applied, StringComparison.Ordinal);
        await KubectlAsync("apply", "--server-side", "-f", "00-node.yaml");

        var listed = await KubectlAsync("get", "xlb", "-A", "-o", "name");
        Assert.Equal(["loadbalancerpool.xlb.io/demo", "portmapping.xlb.io/web", "vipshard.xlb.io/edge"],
            listed.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal));
        var yaml = await KubectlAsync("get", "xpm", "web", "-n", "demo", "-o", "yaml", "--show-managed-fields");
        Assert.Contains("manager: kubectl", yaml, StringComparison.Ordinal);
        Assert.Contains("operation: Apply", yaml, StringComparison.Ordinal);
        Assert.Contains("shardRef: edge", yaml, StringComparison.Ordinal);

        // A second apply of unchanged manifests is a no-op: no new resourceVersion.
        var before = _server.Store.Get(PortMappings, "demo", "web")!["metadata"]!["resourceVersion"]!.GetValue<string>();
        await KubectlAsync("apply", "--server-side", "-k", ".");
        Assert.Equal(before, _server.Store.Get(PortMappings, "demo", "web")!["metadata"]!["resourceVersion"]!.GetValue<string>());

        await KubectlAsync("delete", "-k", ".");
        await KubectlAsync("delete", "-f", "00-node.yaml");
        Assert.Null(_server.Store.Get(PortMappings, "demo", "web"));
        Assert.Empty((await KubectlAsync("get", "xlb", "-A", "-o", "name")).Trim());
    }

    [Fact]
    public async Task Kubectl_applies_the_recipes_with_kustomize_as_the_tests_read_them()
    {
        if (!HaveKubectl())
        {
            Toolchain.Missing("kubectl is not installed");
        }
        await File.WriteAllTextAsync(Path.Combine(_config, "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n", Ct);
        await KubectlAsync("apply", "--server-side", "-f", Path.Combine(_config, "ns.yaml"));
        var applied = await KubectlAsync("apply", "--server-side", "-k", Examples.Dir("recipes"));
        // kustomize's output is what the other tests of the recipes read (Examples.Kustomized).
        var expected = Examples.Kustomized(Examples.Dir("recipes"))
            .Select(o => $"{o["kind"]!.GetValue<string>().ToLowerInvariant()}{(o["apiVersion"]!.GetValue<string>().Contains('/') ? "." + o["apiVersion"]!.GetValue<string>().Split('/')[0] : "")}/{o["metadata"]!["name"]!.GetValue<string>()} serverside-applied")
            .Order(StringComparer.Ordinal);
        Assert.Equal(expected, applied.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal));
        foreach (var o in Examples.Kustomized(Examples.Dir("recipes")).Where(o => o["apiVersion"]!.GetValue<string>().StartsWith("xlb.io/", StringComparison.Ordinal)))
        {
            var type = ResourceType.XlbKinds.Single(t => t.Kind == o["kind"]!.GetValue<string>());
            var stored = _server.Store.Get(type, o["metadata"]!["namespace"]?.GetValue<string>(), o["metadata"]!["name"]!.GetValue<string>())!;
            var sent = o.DeepClone().AsObject();
            Validation.Default(type.Schema!, sent);
            Assert.True(JsonNode.DeepEquals(sent["spec"], stored["spec"]), $"{o["kind"]} {o["metadata"]!["name"]}: {stored["spec"]!.ToJsonString()} against {sent["spec"]!.ToJsonString()}");
        }
    }

    private static readonly ResourceType PortMappings = ResourceType.XlbKinds.Single(t => t.Kind == "PortMapping");

    [Fact]
    public void The_BGP_example_renders_with_kustomize_and_programs_sessions_and_flow_sync()
    {
        if (!HaveKubectl())
        {
            Toolchain.Missing("kubectl is not installed");
        }
        using var process = Process.Start(new ProcessStartInfo("kubectl", ["kustomize", Examples.Dir("bgp")]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var yaml = process.StandardOutput.ReadToEnd();
        var stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, stderr);
        var set = Xlb.Crds.Serialization.Manifests.Read(yaml, "examples/bgp");
        Assert.Empty(set.Errors);
        Xlb.Crds.Node Lb(string name, string address) => new()
        {
            Metadata = new Xlb.Crds.ObjectMeta { Name = name, Labels = new() { ["xlb.io/lb-node"] = "true" } },
            Status = new Xlb.Crds.KubeNodeStatus { Addresses = [new Xlb.Crds.NodeAddress { Type = "InternalIP", Address = address }] },
        };
        var plan = Xlb.Operator.Core.Planner.Plan(new Xlb.Operator.Core.PlanInput
        {
            Pools = set.Pools, Shards = set.Shards, PortMappings = set.PortMappings, Nodes = [Lb("lb-1", "10.0.0.11"), Lb("lb-2", "10.0.0.12")], Now = DateTimeOffset.UnixEpoch,
        });
        Assert.Empty(plan.Problems);
        var config = plan.NodeConfigs.Single(c => c.Spec.NodeName == "lb-1");
        var peer = Assert.Single(config.Spec.BgpPeers);
        Assert.Equal(("10.0.0.1", 64512L, 64513L), (peer.Address, peer.Asn, peer.MyAsn));
        Assert.Equal(["edge"], peer.Shards);
        Assert.Equal("10.0.0.12", config.Spec.FlowSyncPeers.Single().Address);
        Assert.All(config.Spec.Listeners, l => Assert.True(l.FlowSync));
    }
}
