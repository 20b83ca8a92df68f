using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Xlb.ApiServerDouble;
using Xlb.Kube;
using Xlb.Tests.Support;

namespace Xlb.Tests.Kube;

/// <summary>The double reads an apply body as YAML (of which JSON is a subset), as the API server does.</summary>
public sealed class ApplyBodyTests(DoubleTarget target) : IClassFixture<DoubleTarget>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task<HttpStatusCode> ApplyAsync(string ns, string name, string body)
    {
        using var http = new HttpClient { BaseAddress = target.Server.Url };
        using var content = new StringContent(body, Encoding.UTF8);
        content.Headers.ContentType = new("application/apply-patch+yaml");
        using var response = await http.PatchAsync($"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}?fieldManager=yaml-test", content, Ct);
        return response.StatusCode;
    }

    [Fact]
    public async Task A_yaml_body_and_a_json_body_apply_the_same_fields()
    {
        var ns = await target.NewNamespaceAsync(Ct);
        var yaml = $"""
            apiVersion: coordination.k8s.io/v1
            kind: Lease
            metadata:
              name: by-yaml
              namespace: {ns}
              labels: {"{"}tier: "1", flow: yes{"}"}
            spec:
              holderIdentity: a   # a comment
              leaseDurationSeconds: 15
            """;
        var json = "  {\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{\"name\":\"by-json\",\"namespace\":\"" + ns
            + "\",\"labels\":{\"tier\":\"1\",\"flow\":\"yes\"}},\"spec\":{\"holderIdentity\":\"a\",\"leaseDurationSeconds\":15}}";
        Assert.Equal(HttpStatusCode.Created, await ApplyAsync(ns, "by-yaml", yaml));
        Assert.Equal(HttpStatusCode.Created, await ApplyAsync(ns, "by-json", json));
        // A YAML flow mapping also starts with a brace but is not JSON.
        Assert.Equal(HttpStatusCode.Created, await ApplyAsync(ns, "by-flow", $"{{apiVersion: coordination.k8s.io/v1, kind: Lease, metadata: {{name: by-flow, namespace: {ns}}}, spec: {{holderIdentity: a}}}}"));
        var byYaml = await target.Client.GetAsync<JsonObject>(KubeResource.Leases, ns, "by-yaml", Ct);
        var byJson = await target.Client.GetAsync<JsonObject>(KubeResource.Leases, ns, "by-json", Ct);
        var byFlow = await target.Client.GetAsync<JsonObject>(KubeResource.Leases, ns, "by-flow", Ct);
        Assert.Equal(byJson!["spec"]!.ToJsonString(), byYaml!["spec"]!.ToJsonString());
        Assert.Equal(byJson["metadata"]!["labels"]!.ToJsonString(), byYaml["metadata"]!["labels"]!.ToJsonString());
        Assert.Equal("a", byFlow!["spec"]!["holderIdentity"]!.GetValue<string>());
    }

    [Fact]
    public async Task An_apply_that_changes_only_its_managed_fields_time_is_a_no_op_and_a_spec_change_moves_the_generation()
    {
        var clock = new SetClock(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        await using var server = await ApiServer.StartAsync(time: clock);
        using var client = new KubeClient(new KubeConnection { Server = server.Url });
        await client.CreateAsync(KubeResource.Namespaces, new JsonObject { ["apiVersion"] = "v1", ["kind"] = "Namespace", ["metadata"] = new JsonObject { ["name"] = "t" } }, ct: Ct);
        JsonObject Lease(int seconds) => new()
        {
            ["apiVersion"] = "coordination.k8s.io/v1",
            ["kind"] = "Lease",
            ["metadata"] = new JsonObject { ["name"] = "l", ["namespace"] = "t" },
            ["spec"] = new JsonObject { ["holderIdentity"] = "a", ["leaseDurationSeconds"] = seconds },
        };
        var first = await client.ApplyAsync<JsonObject>(KubeResource.Leases, Lease(15), "m", ct: Ct);
        clock.Now += TimeSpan.FromMinutes(1);
        var again = await client.ApplyAsync<JsonObject>(KubeResource.Leases, Lease(15), "m", ct: Ct);
        Assert.Equal(first["metadata"]!["resourceVersion"]!.GetValue<string>(), again["metadata"]!["resourceVersion"]!.GetValue<string>());
        var changed = await client.ApplyAsync<JsonObject>(KubeResource.Leases, Lease(20), "m", ct: Ct);
        Assert.NotEqual(first["metadata"]!["resourceVersion"]!.GetValue<string>(), changed["metadata"]!["resourceVersion"]!.GetValue<string>());
        Assert.Equal(first["metadata"]!["generation"]!.GetValue<long>() + 1, changed["metadata"]!["generation"]!.GetValue<long>());
    }
}
