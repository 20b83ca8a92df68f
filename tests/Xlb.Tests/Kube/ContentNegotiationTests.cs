using System.Net;
using System.Text.Json.Nodes;
using Xlb.Tests.Support;

namespace Xlb.Tests.Kube;

/// <summary>The double's reads honour the Accept header as the API server does: full objects, their metadata alone, or 406.</summary>
public sealed class ContentNegotiationTests(DoubleTarget target) : IClassFixture<DoubleTarget>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task<(HttpStatusCode Code, string? Type, JsonObject? Body)> GetAsync(string path, string? accept)
    {
        using var http = new HttpClient { BaseAddress = target.Server.Url };
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        if (accept is not null)
        {
            request.Headers.TryAddWithoutValidation("Accept", accept);
        }
        using var response = await http.SendAsync(request, Ct);
        var text = await response.Content.ReadAsStringAsync(Ct);
        return (response.StatusCode, response.Content.Headers.ContentType?.ToString(), JsonNode.Parse(text) as JsonObject);
    }

    [Fact]
    public async Task The_first_servable_media_type_of_the_Accept_header_decides_and_none_is_a_406()
    {
        var ns = await target.NewNamespaceAsync(Ct);
        await target.Client.CreateAsync(Xlb.Kube.KubeResource.Leases, Leases.Of(ns, "n0"), ct: Ct);
        var list = $"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases";
        const string meta = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        const string metaList = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

        var full = await GetAsync(list, null);
        Assert.Equal("LeaseList", full.Body!["kind"]!.GetValue<string>());
        Assert.NotNull(full.Body["items"]![0]!["spec"]);

        var partial = await GetAsync(list, metaList + ", application/json");
        Assert.Equal(HttpStatusCode.OK, partial.Code);
        Assert.Equal(metaList, partial.Type!.Replace(" ", "", StringComparison.Ordinal));
        Assert.Equal("PartialObjectMetadataList", partial.Body!["kind"]!.GetValue<string>());
        Assert.Null(partial.Body["items"]![0]!["spec"]);

        // Order decides: plain JSON first is the full list.
        Assert.Equal("LeaseList", (await GetAsync(list, "application/json, " + metaList)).Body!["kind"]!.GetValue<string>());
        // A list asked as a single object's metadata, alone, is not servable; with a fallback it is the full list.
        Assert.Equal(HttpStatusCode.NotAcceptable, (await GetAsync(list, meta)).Code);
        Assert.Equal("LeaseList", (await GetAsync(list, meta + ", application/json")).Body!["kind"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.NotAcceptable, (await GetAsync(list, "application/json;as=Table;g=meta.k8s.io;v=v1")).Code);

        var one = await GetAsync(list + "/n0", meta);
        Assert.Equal(("PartialObjectMetadata", "n0"), (one.Body!["kind"]!.GetValue<string>(), one.Body["metadata"]!["name"]!.GetValue<string>()));
        Assert.Null(one.Body["spec"]);
    }
}
