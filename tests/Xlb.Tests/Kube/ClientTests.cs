using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Xlb.Kube;

namespace Xlb.Tests.Kube;

/// <summary>The client against the double's fault injection, and the double's semantics that only a test server can provoke (compaction, bookmarks).</summary>
public sealed class ClientTests(DoubleTarget target) : IClassFixture<DoubleTarget>, IAsyncLifetime
{
    private KubeClient Client => target.Client;
    private string _ns = "";
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync()
    {
        target.Server.Faults.Clear();
        _ns = await target.NewNamespaceAsync(Ct);
    }

    public ValueTask DisposeAsync()
    {
        target.Server.Faults.Clear();
        return ValueTask.CompletedTask;
    }

    private JsonObject Lease(string name) => Leases.Of(_ns, name);

    [Fact]
    public async Task Server_errors_and_throttling_are_retried_and_Retry_After_is_honoured()
    {
        await Client.CreateAsync(KubeResource.Leases, Lease("r"), ct: Ct);
        target.Server.Faults.FailNext(2, HttpStatusCode.InternalServerError, pathContains: "/leases/r");
        Assert.NotNull(await Client.GetAsync<JsonObject>(KubeResource.Leases, _ns, "r", Ct));
        target.Server.Faults.FailNext(1, HttpStatusCode.TooManyRequests, TimeSpan.FromSeconds(1), "/leases/r");
        var clock = Stopwatch.StartNew();
        Assert.NotNull(await Client.GetAsync<JsonObject>(KubeResource.Leases, _ns, "r", Ct));
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(950), $"retried after {clock.ElapsedMilliseconds} ms, before Retry-After: 1");
        Assert.Equal(3, target.Server.Faults.Served);
    }

    [Fact]
    public async Task EndpointSlices_read_through_list_and_watch_keep_every_field_xlb_reads_and_share_conditions_and_node_names()
    {
        JsonObject Endpoint(string address, JsonObject conditions, string node) => new()
        {
            ["addresses"] = new JsonArray(address, address + "0"),
            ["conditions"] = conditions,
            ["nodeName"] = node,
            ["zone"] = "z1",
            ["targetRef"] = new JsonObject { ["kind"] = "Pod", ["name"] = "p-" + address },
        };
        JsonObject Slice(string name, params JsonObject[] endpoints) => new()
        {
            ["apiVersion"] = "discovery.k8s.io/v1",
            ["kind"] = "EndpointSlice",
            ["metadata"] = new JsonObject { ["name"] = name, ["namespace"] = _ns, ["labels"] = new JsonObject { ["kubernetes.io/service-name"] = "web" } },
            ["addressType"] = "IPv4",
            ["ports"] = new JsonArray(new JsonObject { ["name"] = "http", ["port"] = 8080, ["protocol"] = "TCP" }),
            ["endpoints"] = new JsonArray(endpoints),
        };
        var list = await Client.ListAsync<Xlb.Crds.EndpointSlice>(KubeResource.EndpointSlices, _ns, ct: Ct);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        cts.CancelAfter(TimeSpan.FromSeconds(10));
        var watched = Client.WatchAsync<Xlb.Crds.EndpointSlice>(KubeResource.EndpointSlices, _ns, new WatchOptions { ResourceVersion = list.ResourceVersion }, cts.Token).GetAsyncEnumerator(cts.Token);
        await Client.CreateAsync(KubeResource.EndpointSlices, Slice("a",
            Endpoint("10.0.0.1", new JsonObject { ["ready"] = true }, "node-1"),
            Endpoint("10.0.0.2", new JsonObject { ["ready"] = false, ["serving"] = true, ["terminating"] = true }, "node-2")), ct: Ct);
        await Client.CreateAsync(KubeResource.EndpointSlices, Slice("b",
            Endpoint("10.0.0.3", new JsonObject { ["ready"] = true }, "node-1"),
            Endpoint("10.0.0.4", new JsonObject(), "node-2")), ct: Ct);

        var listed = (await Client.ListAsync<Xlb.Crds.EndpointSlice>(KubeResource.EndpointSlices, _ns, ct: Ct)).Items.OrderBy(s => s.Metadata.Name).ToList();
        Assert.True(await watched.MoveNextAsync());
        var fromWatch = watched.Current.Object!;
        await watched.DisposeAsync();
        Assert.Equal("a", fromWatch.Metadata.Name);
        foreach (var a in new[] { listed[0], fromWatch })
        {
            Assert.Equal(["10.0.0.1", "10.0.0.10"], a.Endpoints[0].Addresses);
            Assert.Equal((true, (bool?)null, (bool?)null), (a.Endpoints[0].Conditions.Ready!.Value, a.Endpoints[0].Conditions.Serving, a.Endpoints[0].Conditions.Terminating));
            Assert.Equal(new Xlb.Crds.EndpointConditions { Ready = false, Serving = true, Terminating = true }, a.Endpoints[1].Conditions);
            Assert.Equal(8080, a.Ports.Single().Port);
        }
        var b = listed[1];
        Assert.Equal(Xlb.Crds.EndpointConditions.Unset, b.Endpoints[1].Conditions);
        // One object per combination of conditions and one string per node name, across slices and reads.
        Assert.Same(listed[0].Endpoints[0].Conditions, b.Endpoints[0].Conditions);
        Assert.Same(fromWatch.Endpoints[0].Conditions, b.Endpoints[0].Conditions);
        Assert.Same(listed[0].Endpoints[0].NodeName, b.Endpoints[0].NodeName);
        Assert.Same(fromWatch.Endpoints[1].NodeName, b.Endpoints[1].NodeName);
        Assert.Equal("node-2", b.Endpoints[1].NodeName);
        // Each slice's endpoints are a list of exactly their number.
        Assert.All(listed.Append(fromWatch), s => Assert.Equal(s.Endpoints.Count, s.Endpoints.Capacity));

        // A Service with no endpoints: the API server writes its slice's lists as null.
        var empty = Slice("c");
        empty["endpoints"] = null;
        empty["ports"] = null;
        await Client.CreateAsync(KubeResource.EndpointSlices, empty, ct: Ct);
        var c = (await Client.GetAsync<Xlb.Crds.EndpointSlice>(KubeResource.EndpointSlices, _ns, "c", Ct))!;
        Assert.Empty(c.Endpoints);
        Assert.Empty(c.Ports);
        Assert.Equal(3, (await Client.ListAsync<Xlb.Crds.EndpointSlice>(KubeResource.EndpointSlices, _ns, ct: Ct)).Items.Count);
    }

    [Fact]
    public async Task A_list_whose_answer_breaks_off_is_asked_again_and_a_list_that_never_completes_times_out()
    {
        await Client.CreateAsync(KubeResource.Leases, Lease("l1"), ct: Ct);
        await Client.CreateAsync(KubeResource.Leases, Lease("l2"), ct: Ct);
        target.Server.Faults.BreakNext(2, pathContains: "/leases");
        var list = await Client.ListAsync<JsonObject>(KubeResource.Leases, _ns, ct: Ct);
        Assert.Equal(["l1", "l2"], list.Items.Select(i => i["metadata"]!["name"]!.GetValue<string>()).Order());
        Assert.Equal(2, target.Server.Faults.Served);

        using var impatient = new KubeClient(Client.Connection, new KubeClientOptions
        {
            RequestTimeout = TimeSpan.FromMilliseconds(200),
            Retry = new RetryPolicy { MaxAttempts = 2, BaseDelay = TimeSpan.FromMilliseconds(10) },
        });
        target.Server.Faults.BreakNext(2, pathContains: "/leases");
        var broken = await Assert.ThrowsAsync<KubeApiException>(() => impatient.ListAsync<JsonObject>(KubeResource.Leases, _ns, ct: Ct));
        Assert.Equal("Unreachable", broken.Reason);
        target.Server.Faults.Latency = TimeSpan.FromSeconds(3);
        var slow = await Assert.ThrowsAsync<KubeApiException>(() => impatient.ListAsync<JsonObject>(KubeResource.Leases, _ns, ct: Ct));
        Assert.Equal("Timeout", slow.Reason);
    }

    [Fact]
    public async Task A_create_that_failed_with_500_is_not_retried()
    {
        target.Server.Faults.FailNext(1, HttpStatusCode.InternalServerError, pathContains: "/leases");
        var e = await Assert.ThrowsAsync<KubeApiException>(() => Client.CreateAsync(KubeResource.Leases, Lease("once"), ct: Ct));
        Assert.Equal(HttpStatusCode.InternalServerError, e.Code);
        Assert.Null(await Client.GetAsync<JsonObject>(KubeResource.Leases, _ns, "once", Ct));
    }

    [Fact]
    public async Task Retries_stop_after_the_policy_s_attempts()
    {
        target.Server.Faults.FailNext(10, HttpStatusCode.ServiceUnavailable, pathContains: "/leases/gone");
        var e = await Assert.ThrowsAsync<KubeApiException>(() => Client.GetAsync<JsonObject>(KubeResource.Leases, _ns, "gone", Ct));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, e.Code);
        Assert.Equal(new RetryPolicy().MaxAttempts, target.Server.Faults.Served);
    }

    [Fact]
    public async Task A_slow_server_hits_the_request_timeout_and_cancellation_is_prompt()
    {
        using var impatient = new KubeClient(Client.Connection, new KubeClientOptions
        {
            RequestTimeout = TimeSpan.FromMilliseconds(200),
            Retry = new RetryPolicy { MaxAttempts = 1 },
        });
        target.Server.Faults.Latency = TimeSpan.FromSeconds(3);
        var e = await Assert.ThrowsAsync<KubeApiException>(() => impatient.GetAsync<JsonObject>(KubeResource.Leases, _ns, "x", Ct));
        Assert.Equal("Timeout", e.Reason);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        cancel.CancelAfter(TimeSpan.FromMilliseconds(100));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Client.GetAsync<JsonObject>(KubeResource.Leases, _ns, "x", cancel.Token));
    }

    [Fact]
    public async Task A_paged_list_whose_continue_token_expired_starts_over_and_is_complete()
    {
        for (var i = 0; i < 25; i++)
        {
            await Client.CreateAsync(KubeResource.Leases, Lease($"l{i:D2}"), ct: Ct);
        }
        var firstPages = 0;
        var compacted = false;
        target.Server.Faults.BeforeRequest = path =>
        {
            if (!path.Contains("/leases", StringComparison.Ordinal))
            {
                return;
            }
            if (!path.Contains("continue=", StringComparison.Ordinal))
            {
                Interlocked.Increment(ref firstPages);
            }
            else if (!compacted)
            {
                // A change after the first page, then compaction: the first page's snapshot is gone.
                compacted = true;
                target.Server.Seed(ApiServerDouble.ResourceType.Leases, Lease("l99-late"));
                target.Server.Store.Compact();
            }
        };
        var list = await Client.ListAllAsync<JsonObject>(KubeResource.Leases, _ns, new ListOptions { Limit = 10 }, Ct);
        Assert.Equal([.. Enumerable.Range(0, 25).Select(i => $"l{i:D2}"), "l99-late"], list.Items.Select(i => i["metadata"]!["name"]!.GetValue<string>()));
        Assert.Equal(2, firstPages);
    }

    [Fact]
    public async Task A_watch_from_a_compacted_resourceVersion_gets_410_Expired_inside_the_stream()
    {
        var old = await Client.CreateAsync(KubeResource.Leases, Lease("old"), ct: Ct);
        await Client.CreateAsync(KubeResource.Leases, Lease("new"), ct: Ct);
        target.Server.Store.Compact();
        var events = new List<WatchEvent<JsonObject>>();
        await foreach (var e in Client.WatchAsync<JsonObject>(KubeResource.Leases, _ns,
            new WatchOptions { ResourceVersion = old["metadata"]!["resourceVersion"]!.GetValue<string>() }, Ct))
        {
            events.Add(e);
        }
        var error = Assert.Single(events);
        Assert.Equal(WatchEvent<JsonObject>.Error, error.Type);
        Assert.True(KubeApiException.FromStatus(error.Status, HttpStatusCode.OK, "watch").IsExpired);
    }

    [Fact]
    public async Task An_idle_watch_gets_bookmarks_that_carry_the_cluster_s_resourceVersion()
    {
        var list = await Client.ListAsync<JsonObject>(KubeResource.Leases, _ns, ct: Ct);
        var elsewhere = await Client.CreateAsync(KubeResource.Services, new JsonObject
        {
            ["apiVersion"] = "v1",
            ["kind"] = "Service",
            ["metadata"] = new JsonObject { ["name"] = "elsewhere", ["namespace"] = _ns },
        }, ct: Ct);
        var bumped = long.Parse(elsewhere["metadata"]!["resourceVersion"]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        cts.CancelAfter(TimeSpan.FromSeconds(10));
        await foreach (var e in Client.WatchAsync<JsonObject>(KubeResource.Leases, _ns, new WatchOptions { ResourceVersion = list.ResourceVersion }, cts.Token))
        {
            Assert.Equal(WatchEvent<JsonObject>.Bookmark, e.Type);
            Assert.True(long.Parse(e.ResourceVersion!, System.Globalization.CultureInfo.InvariantCulture) >= bumped);
            return;
        }
        Assert.Fail("the watch ended without a bookmark");
    }

    [Fact]
    public async Task Errors_carry_the_server_s_reason_and_message()
    {
        var e = await Assert.ThrowsAsync<KubeApiException>(() => Client.CreateAsync(KubeResource.Leases, new JsonObject
        {
            ["apiVersion"] = "coordination.k8s.io/v1",
            ["kind"] = "Lease",
            ["metadata"] = new JsonObject { ["name"] = "Not_A_Name", ["namespace"] = _ns },
        }, ct: Ct));
        Assert.Equal((HttpStatusCode.UnprocessableEntity, "Invalid"), (e.Code, e.Reason));
        Assert.Contains("metadata.name", e.ServerMessage, StringComparison.Ordinal);
        var missing = await Assert.ThrowsAsync<KubeApiException>(() => Client.CreateAsync(KubeResource.Leases, new JsonObject
        {
            ["metadata"] = new JsonObject { ["name"] = "x", ["namespace"] = "no-such-namespace" },
        }, ct: Ct));
        Assert.Equal(HttpStatusCode.NotFound, missing.Code);
        Assert.Contains("no-such-namespace", missing.ServerMessage, StringComparison.Ordinal);
    }
}
