using System.Net;
using System.Text.Json.Nodes;
using Xlb.Kube;

namespace Xlb.Tests.Kube;

/// <summary>
/// The API semantics XLB relies on, stated against the client so that they hold for the double
/// and for a real cluster alike (API Concepts; Server-Side Apply; Finalizers). Only core kinds
/// that any cluster has are used: Leases (no status subresource) and Services (with one).
/// </summary>
public abstract class ApiContract<TTarget>(TTarget target) : IAsyncLifetime where TTarget : ApiTarget
{
    protected KubeClient Client => target.Client;
    protected string Ns { get; private set; } = "";
    protected static CancellationToken Ct => TestContext.Current.CancellationToken;

    protected virtual void SkipIfUnavailable() { }

    public async ValueTask InitializeAsync()
    {
        if (target.Available)
        {
            Ns = await target.NewNamespaceAsync(Ct);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (target.Available)
        {
            await Client.DeleteAsync(KubeResource.Namespaces, null, Ns, ct: CancellationToken.None);
        }
        GC.SuppressFinalize(this);
    }

    protected JsonObject Lease(string name, Dictionary<string, string>? labels = null, string holder = "a") =>
        Leases.Of(Ns, name, holder, labels);

    protected JsonObject Service(string name) => new()
    {
        ["apiVersion"] = "v1",
        ["kind"] = "Service",
        ["metadata"] = new JsonObject { ["name"] = name, ["namespace"] = Ns },
        ["spec"] = new JsonObject
        {
            ["type"] = "LoadBalancer",
            ["loadBalancerClass"] = "xlb.io/contract-test",
            ["ports"] = new JsonArray(new JsonObject { ["port"] = 80, ["protocol"] = "TCP", ["targetPort"] = 8080 }),
        },
    };

    protected static string Rv(JsonObject o) => o["metadata"]!["resourceVersion"]!.GetValue<string>();
    protected static long Generation(JsonObject o) => o["metadata"]!["generation"]!.GetValue<long>();

    [Fact]
    public async Task Create_sets_server_metadata_and_a_second_create_is_AlreadyExists()
    {
        SkipIfUnavailable();
        var created = await Client.CreateAsync(KubeResource.Leases, Lease("one"), ct: Ct);
        Assert.False(string.IsNullOrEmpty(Rv(created)));
        Assert.Equal(1, Generation(created));
        Assert.NotNull(created["metadata"]!["uid"]);
        Assert.NotNull(created["metadata"]!["creationTimestamp"]);
        var read = await Client.GetAsync<JsonObject>(KubeResource.Leases, Ns, "one", Ct);
        Assert.Equal(Rv(created), Rv(read!));
        var again = await Assert.ThrowsAsync<KubeApiException>(() => Client.CreateAsync(KubeResource.Leases, Lease("one"), ct: Ct));
        Assert.Equal((HttpStatusCode.Conflict, "AlreadyExists"), (again.Code, again.Reason));
        Assert.Null(await Client.GetAsync<JsonObject>(KubeResource.Leases, Ns, "absent", Ct));
    }

    [Fact]
    public async Task An_update_with_a_stale_resourceVersion_is_a_Conflict()
    {
        SkipIfUnavailable();
        var v1 = await Client.CreateAsync(KubeResource.Leases, Lease("cas"), ct: Ct);
        var first = v1.DeepClone().AsObject();
        first["spec"]!["holderIdentity"] = "b";
        var v2 = await Client.ReplaceAsync(KubeResource.Leases, first, ct: Ct);
        Assert.NotEqual(Rv(v1), Rv(v2));
        var stale = v1.DeepClone().AsObject();
        stale["spec"]!["holderIdentity"] = "c";
        var e = await Assert.ThrowsAsync<KubeApiException>(() => Client.ReplaceAsync(KubeResource.Leases, stale, ct: Ct));
        Assert.Equal((HttpStatusCode.Conflict, "Conflict"), (e.Code, e.Reason));
        Assert.Equal("b", (await Client.GetAsync<JsonObject>(KubeResource.Leases, Ns, "cas", Ct))!["spec"]!["holderIdentity"]!.GetValue<string>());
    }

    [Fact]
    public async Task Generation_counts_spec_changes_only()
    {
        SkipIfUnavailable();
        var v1 = await Client.CreateAsync(KubeResource.Services, Service("gen"), ct: Ct);
        var labelled = await Client.MergePatchAsync<JsonObject>(KubeResource.Services, Ns, "gen",
            JsonNode.Parse("""{"metadata":{"labels":{"tier":"edge"}}}""")!, ct: Ct);
        Assert.Equal(Generation(v1), Generation(labelled));
        var respec = await Client.MergePatchAsync<JsonObject>(KubeResource.Services, Ns, "gen",
            JsonNode.Parse("""{"spec":{"ports":[{"port":81,"protocol":"TCP","targetPort":8080}]}}""")!, ct: Ct);
        Assert.Equal(Generation(v1) + 1, Generation(respec));
        var status = await Client.MergePatchAsync<JsonObject>(KubeResource.Services, Ns, "gen",
            JsonNode.Parse("""{"status":{"loadBalancer":{"ingress":[{"ip":"10.250.0.10"}]}}}""")!, "status", ct: Ct);
        Assert.Equal(Generation(respec), Generation(status));
    }

    [Fact]
    public async Task The_status_subresource_separates_spec_from_status()
    {
        SkipIfUnavailable();
        await Client.CreateAsync(KubeResource.Services, Service("split"), ct: Ct);
        var main = await Client.MergePatchAsync<JsonObject>(KubeResource.Services, Ns, "split",
            JsonNode.Parse("""{"status":{"loadBalancer":{"ingress":[{"ip":"10.250.0.11"}]}}}""")!, ct: Ct);
        Assert.Null(main["status"]?["loadBalancer"]?["ingress"]);
        var status = await Client.MergePatchAsync<JsonObject>(KubeResource.Services, Ns, "split",
            JsonNode.Parse("""{"spec":{"loadBalancerClass":"other"},"status":{"loadBalancer":{"ingress":[{"ip":"10.250.0.11"}]}}}""")!, "status", ct: Ct);
        Assert.Equal("10.250.0.11", status["status"]!["loadBalancer"]!["ingress"]![0]!["ip"]!.GetValue<string>());
        Assert.Equal("xlb.io/contract-test", status["spec"]!["loadBalancerClass"]!.GetValue<string>());
    }

    [Fact]
    public async Task Finalizers_hold_a_deleted_object_until_the_last_is_removed()
    {
        SkipIfUnavailable();
        var lease = Lease("held");
        lease["metadata"]!["finalizers"] = new JsonArray("xlb.io/test");
        await Client.CreateAsync(KubeResource.Leases, lease, ct: Ct);
        Assert.Equal(DeleteOutcome.Pending, await Client.DeleteAsync(KubeResource.Leases, Ns, "held", ct: Ct));
        var pending = (await Client.GetAsync<JsonObject>(KubeResource.Leases, Ns, "held", Ct))!;
        Assert.NotNull(pending["metadata"]!["deletionTimestamp"]);
        var add = await Assert.ThrowsAsync<KubeApiException>(() => Client.MergePatchAsync<JsonObject>(KubeResource.Leases, Ns, "held",
            JsonNode.Parse("""{"metadata":{"finalizers":["xlb.io/test","xlb.io/late"]}}""")!, ct: Ct));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, add.Code);
        await Client.MergePatchAsync<JsonObject>(KubeResource.Leases, Ns, "held", JsonNode.Parse("""{"metadata":{"finalizers":null}}""")!, ct: Ct);
        Assert.Null(await Client.GetAsync<JsonObject>(KubeResource.Leases, Ns, "held", Ct));
    }

    [Fact]
    public async Task Finalizer_helpers_keep_other_writers_finalizers_and_release_a_deleted_object()
    {
        SkipIfUnavailable();
        await Client.CreateAsync(KubeResource.Leases, Lease("fin"), ct: Ct);
        await Client.AddFinalizerAsync(KubeResource.Leases, Ns, "fin", "xlb.io/one", Ct);
        await Client.AddFinalizerAsync(KubeResource.Leases, Ns, "fin", "example.com/other", Ct);
        await Client.AddFinalizerAsync(KubeResource.Leases, Ns, "fin", "xlb.io/one", Ct);
        Assert.Equal(DeleteOutcome.Pending, await Client.DeleteAsync(KubeResource.Leases, Ns, "fin", ct: Ct));
        var left = await Client.RemoveFinalizerAsync(KubeResource.Leases, Ns, "fin", "xlb.io/one", Ct);
        Assert.Equal("[\"example.com/other\"]", left!["metadata"]!["finalizers"]!.ToJsonString());
        await Client.RemoveFinalizerAsync(KubeResource.Leases, Ns, "fin", "example.com/other", Ct);
        Assert.Null(await Client.GetAsync<JsonObject>(KubeResource.Leases, Ns, "fin", Ct));
        Assert.Null(await Client.RemoveFinalizerAsync(KubeResource.Leases, Ns, "fin", "xlb.io/one", Ct));
    }

    [Fact]
    public async Task Delete_preconditions_protect_against_deleting_a_newer_object()
    {
        SkipIfUnavailable();
        var v1 = await Client.CreateAsync(KubeResource.Leases, Lease("pre"), ct: Ct);
        var wrongUid = await Assert.ThrowsAsync<KubeApiException>(() => Client.DeleteAsync(KubeResource.Leases, Ns, "pre", uid: Guid.NewGuid().ToString(), ct: Ct));
        Assert.Equal(HttpStatusCode.Conflict, wrongUid.Code);
        await Client.MergePatchAsync<JsonObject>(KubeResource.Leases, Ns, "pre", JsonNode.Parse("""{"spec":{"holderIdentity":"z"}}""")!, ct: Ct);
        var staleRv = await Assert.ThrowsAsync<KubeApiException>(() => Client.DeleteAsync(KubeResource.Leases, Ns, "pre", resourceVersion: Rv(v1), ct: Ct));
        Assert.Equal(HttpStatusCode.Conflict, staleRv.Code);
        var uid = v1["metadata"]!["uid"]!.GetValue<string>();
        Assert.Equal(DeleteOutcome.Deleted, await Client.DeleteAsync(KubeResource.Leases, Ns, "pre", uid: uid, ct: Ct));
        Assert.Equal(DeleteOutcome.NotFound, await Client.DeleteAsync(KubeResource.Leases, Ns, "pre", ct: Ct));
    }

    [Theory]
    [InlineData("app=a", "a1,a2")]
    [InlineData("app==a,tier=edge", "a1")]
    [InlineData("app!=a", "b1,none")]
    [InlineData("app in (a,b)", "a1,a2,b1")]
    [InlineData("app notin (a)", "b1,none")]
    [InlineData("app", "a1,a2,b1")]
    [InlineData("!app", "none")]
    public async Task Label_selectors_filter_lists(string selector, string expected)
    {
        SkipIfUnavailable();
        await Client.CreateAsync(KubeResource.Leases, Lease("a1", new() { ["app"] = "a", ["tier"] = "edge" }), ct: Ct);
        await Client.CreateAsync(KubeResource.Leases, Lease("a2", new() { ["app"] = "a" }), ct: Ct);
        await Client.CreateAsync(KubeResource.Leases, Lease("b1", new() { ["app"] = "b" }), ct: Ct);
        await Client.CreateAsync(KubeResource.Leases, Lease("none"), ct: Ct);
        var list = await Client.ListAsync<JsonObject>(KubeResource.Leases, Ns, new ListOptions { LabelSelector = selector }, Ct);
        Assert.Equal(expected, string.Join(",", list.Items.Select(i => i["metadata"]!["name"]!.GetValue<string>()).Order(StringComparer.Ordinal)));
    }

    [Fact]
    public async Task Field_selectors_filter_by_name_and_reject_unknown_fields()
    {
        SkipIfUnavailable();
        await Client.CreateAsync(KubeResource.Leases, Lease("x"), ct: Ct);
        await Client.CreateAsync(KubeResource.Leases, Lease("y"), ct: Ct);
        var list = await Client.ListAsync<JsonObject>(KubeResource.Leases, Ns, new ListOptions { FieldSelector = "metadata.name=y" }, Ct);
        Assert.Equal("y", Assert.Single(list.Items)["metadata"]!["name"]!.GetValue<string>());
        var e = await Assert.ThrowsAsync<KubeApiException>(() => Client.ListAsync<JsonObject>(KubeResource.Leases, Ns, new ListOptions { FieldSelector = "spec.holderIdentity=a" }, Ct));
        Assert.Equal(HttpStatusCode.BadRequest, e.Code);
    }

    [Fact]
    public async Task Pages_of_a_list_come_from_one_snapshot()
    {
        SkipIfUnavailable();
        for (var i = 0; i < 7; i++)
        {
            await Client.CreateAsync(KubeResource.Leases, Lease($"p{i}"), ct: Ct);
        }
        var first = await Client.ListAsync<JsonObject>(KubeResource.Leases, Ns, new ListOptions { Limit = 3 }, Ct);
        Assert.Equal(3, first.Items.Count);
        Assert.NotNull(first.Continue);
        await Client.CreateAsync(KubeResource.Leases, Lease("p9-late"), ct: Ct);
        await Client.DeleteAsync(KubeResource.Leases, Ns, "p6", ct: Ct);
        var names = first.Items.Select(Name).ToList();
        var token = first.Continue;
        while (token is not null)
        {
            var page = await Client.ListAsync<JsonObject>(KubeResource.Leases, Ns, new ListOptions { Limit = 3, Continue = token }, Ct);
            Assert.Equal(first.ResourceVersion, page.ResourceVersion);
            names.AddRange(page.Items.Select(Name));
            token = page.Continue;
        }
        Assert.Equal(Enumerable.Range(0, 7).Select(i => $"p{i}"), names);
    }

    [Fact]
    public async Task Pages_of_a_selective_list_hold_every_match_and_leave_the_remaining_count_out()
    {
        SkipIfUnavailable();
        for (var i = 0; i < 7; i++)
        {
            await Client.CreateAsync(KubeResource.Leases, Lease($"s{i}", i % 2 == 0 ? new() { ["app"] = "sel" } : null), ct: Ct);
        }
        var plain = await Client.ListAsync<JsonObject>(KubeResource.Leases, Ns, new ListOptions { Limit = 3 }, Ct);
        Assert.Equal(4, plain.RemainingItemCount);
        var names = new List<string>();
        string? token = null;
        var pages = 0;
        do
        {
            var page = await Client.ListAsync<JsonObject>(KubeResource.Leases, Ns, new ListOptions { Limit = 2, LabelSelector = "app=sel", Continue = token }, Ct);
            // ListMeta: "If the list request contained label or field selectors, then the number
            // of remaining items is unknown and the field will be left unset".
            Assert.Null(page.RemainingItemCount);
            names.AddRange(page.Items.Select(Name));
            token = page.Continue;
            pages++;
        }
        while (token is not null && pages < 10);
        Assert.Equal(["s0", "s2", "s4", "s6"], names);
        var last = await Client.ListAsync<JsonObject>(KubeResource.Leases, Ns, new ListOptions { Limit = 10 }, Ct);
        Assert.Null(last.Continue);
        Assert.Null(last.RemainingItemCount);
    }

    [Fact]
    public async Task A_metadata_only_list_and_watch_carry_each_objects_metadata_and_nothing_else()
    {
        SkipIfUnavailable();
        var annotated = Lease("m0", new() { ["app"] = "meta" });
        annotated["metadata"]!["annotations"] = new JsonObject { ["note"] = "kept" };
        await Client.CreateAsync(KubeResource.Leases, annotated, ct: Ct);
        await Client.CreateAsync(KubeResource.Leases, Lease("m1", new() { ["app"] = "meta" }), ct: Ct);
        var list = await Client.ListAsync<JsonObject>(KubeResource.Leases, Ns, new ListOptions { LabelSelector = "app=meta", MetadataOnly = true }, Ct);
        Assert.Equal(["m0", "m1"], list.Items.Select(Name).Order(StringComparer.Ordinal));
        Assert.All(list.Items, o =>
        {
            Assert.Equal("PartialObjectMetadata", o["kind"]!.GetValue<string>());
            Assert.Equal("meta.k8s.io/v1", o["apiVersion"]!.GetValue<string>());
            Assert.Null(o["spec"]);
            Assert.NotNull(o["metadata"]!["resourceVersion"]);
            Assert.Equal("meta", o["metadata"]!["labels"]!["app"]!.GetValue<string>());
        });
        Assert.Equal("kept", list.Items.Single(o => Name(o) == "m0")["metadata"]!["annotations"]!["note"]!.GetValue<string>());

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        cts.CancelAfter(TimeSpan.FromSeconds(20));
        var events = new List<(string Type, JsonObject Object)>();
        var watching = Task.Run(async () =>
        {
            try
            {
                await foreach (var e in Client.WatchAsync<JsonObject>(KubeResource.Leases, Ns,
                    new WatchOptions { ResourceVersion = list.ResourceVersion, LabelSelector = "app=meta", MetadataOnly = true }, cts.Token))
                {
                    if (e.Type != WatchEvent<JsonObject>.Bookmark)
                    {
                        events.Add((e.Type, e.Object!));
                    }
                    if (events.Count == 2)
                    {
                        return;
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
        }, Ct);
        var changed = await Client.GetAsync<JsonObject>(KubeResource.Leases, Ns, "m1", Ct);
        changed!["spec"]!["holderIdentity"] = "b";
        await Client.ReplaceAsync(KubeResource.Leases, changed, ct: Ct);
        await Client.DeleteAsync(KubeResource.Leases, Ns, "m0", ct: Ct);
        await watching;
        Assert.Equal([("MODIFIED", "m1"), ("DELETED", "m0")], events.Select(e => (e.Type, Name(e.Object))));
        Assert.All(events, e =>
        {
            Assert.Equal("PartialObjectMetadata", e.Object["kind"]!.GetValue<string>());
            Assert.Null(e.Object["spec"]);
        });
    }

    protected static string Name(JsonObject o) => o["metadata"]!["name"]!.GetValue<string>();

    [Fact]
    public async Task A_watch_from_a_list_sees_every_later_change_in_order_and_selectors_turn_relabels_into_adds_and_deletes()
    {
        SkipIfUnavailable();
        await Client.CreateAsync(KubeResource.Leases, Lease("w0", new() { ["app"] = "a" }), ct: Ct);
        var list = await Client.ListAsync<JsonObject>(KubeResource.Leases, Ns, new ListOptions { LabelSelector = "app=a" }, Ct);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        cts.CancelAfter(TimeSpan.FromSeconds(20));
        var seen = new List<string>();
        var watching = Task.Run(async () =>
        {
            try
            {
                await foreach (var e in Client.WatchAsync<JsonObject>(KubeResource.Leases, Ns,
                    new WatchOptions { ResourceVersion = list.ResourceVersion, LabelSelector = "app=a" }, cts.Token))
                {
                    if (e.Type != WatchEvent<JsonObject>.Bookmark)
                    {
                        seen.Add($"{e.Type} {Name(e.Object!)}");
                    }
                    if (seen.Count == 5)
                    {
                        return;
                    }
                }
            }
            catch (OperationCanceledException)
            {
                // Timed out: the assertion below shows what was missing.
            }
        }, Ct);
        await Client.CreateAsync(KubeResource.Leases, Lease("w1", new() { ["app"] = "a" }), ct: Ct);
        await Client.CreateAsync(KubeResource.Leases, Lease("w2", new() { ["app"] = "b" }), ct: Ct);
        await Client.MergePatchAsync<JsonObject>(KubeResource.Leases, Ns, "w1", JsonNode.Parse("""{"spec":{"holderIdentity":"q"}}""")!, ct: Ct);
        await Client.MergePatchAsync<JsonObject>(KubeResource.Leases, Ns, "w2", JsonNode.Parse("""{"metadata":{"labels":{"app":"a"}}}""")!, ct: Ct);
        await Client.MergePatchAsync<JsonObject>(KubeResource.Leases, Ns, "w0", JsonNode.Parse("""{"metadata":{"labels":{"app":"c"}}}""")!, ct: Ct);
        await Client.DeleteAsync(KubeResource.Leases, Ns, "w1", ct: Ct);
        await watching;
        Assert.Equal(["ADDED w1", "MODIFIED w1", "ADDED w2", "DELETED w0", "DELETED w1"], seen);
    }

    [Fact]
    public async Task Server_side_apply_tracks_owners_reports_conflicts_and_removes_dropped_fields()
    {
        SkipIfUnavailable();
        var mine = Lease("ssa", new() { ["a"] = "1", ["b"] = "2" });
        await Client.ApplyAsync<JsonObject>(KubeResource.Leases, mine, "xlb-one", ct: Ct);
        var theirs = Lease("ssa", holder: "other");
        ((JsonObject)theirs["metadata"]!).Remove("labels");
        var conflict = await Assert.ThrowsAsync<KubeApiException>(() => Client.ApplyAsync<JsonObject>(KubeResource.Leases, theirs, "xlb-two", ct: Ct));
        Assert.Equal(HttpStatusCode.Conflict, conflict.Code);
        Assert.Contains("xlb-one", conflict.ServerMessage, StringComparison.Ordinal);
        Assert.Contains(".spec.holderIdentity", conflict.ServerMessage, StringComparison.Ordinal);

        var shared = Lease("ssa", new() { ["b"] = "2" });
        var afterShare = await Client.ApplyAsync<JsonObject>(KubeResource.Leases, shared, "xlb-two", ct: Ct);
        Assert.Equal(["xlb-one", "xlb-two"], Managers(afterShare));

        var forced = await Client.ApplyAsync<JsonObject>(KubeResource.Leases, theirs, "xlb-two", force: true, ct: Ct);
        Assert.Equal("other", forced["spec"]!["holderIdentity"]!.GetValue<string>());

        var fewer = Lease("ssa", new() { ["b"] = "2" }, holder: "other");
        ((JsonObject)fewer["spec"]!).Remove("holderIdentity");
        var pruned = await Client.ApplyAsync<JsonObject>(KubeResource.Leases, fewer, "xlb-one", ct: Ct);
        var labels = pruned["metadata"]!["labels"]!.AsObject();
        Assert.False(labels.ContainsKey("a"));
        Assert.Equal("2", labels["b"]!.GetValue<string>());
        Assert.Equal("other", pruned["spec"]!["holderIdentity"]!.GetValue<string>());
    }

    private static List<string> Managers(JsonObject o) =>
        [.. (o["metadata"]!["managedFields"] as JsonArray ?? []).Select(e => e!["manager"]!.GetValue<string>()).Distinct().Order(StringComparer.Ordinal)];

    /// <summary>XLB's PortMapping <paramref name="name"/> in the test's namespace with these ports (JSON), to a static endpoint.</summary>
    private JsonObject PortMapping(string name, string ports) => new()
    {
        ["apiVersion"] = "xlb.io/v1alpha1",
        ["kind"] = "PortMapping",
        ["metadata"] = new JsonObject { ["name"] = name, ["namespace"] = Ns },
        ["spec"] = new JsonObject
        {
            ["shardRef"] = "edge",
            ["ports"] = JsonNode.Parse(ports),
            ["backend"] = new JsonObject { ["endpoints"] = new JsonArray(new JsonObject { ["address"] = "10.0.0.1" }) },
        },
    };

    /// <summary>Custom resources need XLB's CRDs: a cluster without them (crds/ not applied) skips, saying so.</summary>
    protected virtual Task SkipWithoutXlbCrdsAsync() => Task.CompletedTask;

    [Fact]
    public async Task A_custom_resource_is_defaulted_and_a_write_that_breaks_its_schema_or_rules_is_Invalid()
    {
        SkipIfUnavailable();
        await SkipWithoutXlbCrdsAsync();
        // Two ports of one name: refused whole, naming the field and the CEL rule's message.
        var twice = await Assert.ThrowsAsync<KubeApiException>(() =>
            Client.CreateAsync(KubeResource.PortMappings, PortMapping("twice", """[{"name":"http","port":80},{"name":"http","port":81}]"""), ct: Ct));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, twice.Code);
        Assert.Contains("spec.ports: Invalid value: \"array\": port names must be unique", twice.ServerMessage, StringComparison.Ordinal);
        Assert.Null(await Client.GetAsync<JsonObject>(KubeResource.PortMappings, Ns, "twice", Ct));
        // A value out of its enum: refused, with the values it may take.
        var sctp = await Assert.ThrowsAsync<KubeApiException>(() =>
            Client.CreateAsync(KubeResource.PortMappings, PortMapping("sctp", """[{"name":"s","port":80,"protocol":"SCTP"}]"""), ct: Ct));
        Assert.Contains("spec.ports[0].protocol: Unsupported value: \"SCTP\"", sctp.ServerMessage, StringComparison.Ordinal);

        // A valid one is stored with the schema's defaults filled in.
        var web = await Client.CreateAsync(KubeResource.PortMappings, PortMapping("web", """[{"name":"http","port":80}]"""), ct: Ct);
        Assert.Equal("TCP", web["spec"]!["ports"]![0]!["protocol"]!.GetValue<string>());
        Assert.Equal("FullNAT", web["spec"]!["nat"]!["mode"]!.GetValue<string>());
        Assert.Equal("Auto", web["spec"]!["vip"]!.GetValue<string>());
        // shardRef is immutable (a transition rule): a change is refused with the message that says what to do.
        var moved = await Assert.ThrowsAsync<KubeApiException>(() =>
            Client.MergePatchAsync<JsonObject>(KubeResource.PortMappings, Ns, "web", JsonNode.Parse("""{"spec":{"shardRef":"core"}}""")!, ct: Ct));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, moved.Code);
        Assert.Contains("Delete the PortMapping and create it again with the new shardRef", moved.ServerMessage, StringComparison.Ordinal);
        var renamed = await Client.MergePatchAsync<JsonObject>(KubeResource.PortMappings, Ns, "web", JsonNode.Parse("""{"spec":{"ports":[{"name":"web","port":80}]}}""")!, ct: Ct);
        Assert.Equal("web", renamed["spec"]!["ports"]![0]!["name"]!.GetValue<string>());
    }

    [Fact]
    public async Task Metadata_and_the_built_in_kinds_rules_refuse_a_write_that_breaks_them_as_Invalid()
    {
        SkipIfUnavailable();
        async Task<string> Refused(Func<Task> write, string field)
        {
            var e = await Assert.ThrowsAsync<KubeApiException>(write);
            Assert.Equal(HttpStatusCode.UnprocessableEntity, e.Code);
            Assert.Contains(field + ": ", e.ServerMessage, StringComparison.Ordinal);
            return e.ServerMessage;
        }
        // A label value holds 63 characters: a node's name may be longer.
        var longValue = new string('n', 64);
        Assert.Contains("must be no more than 63 characters", await Refused(() => Client.CreateAsync(KubeResource.Leases, Lease("long", new() { ["xlb.io/agent-node"] = longValue }), ct: Ct), "metadata.labels"), StringComparison.Ordinal);
        Assert.Null(await Client.GetAsync<JsonObject>(KubeResource.Leases, Ns, "long", Ct));
        // A label key is a qualified name; so is a finalizer.
        await Refused(() => Client.CreateAsync(KubeResource.Leases, Lease("key", new() { ["a/b/c"] = "x" }), ct: Ct), "metadata.labels");
        var fin = Lease("fin");
        fin["metadata"]!["finalizers"] = new JsonArray("xlb.io/ok", "not ok");
        await Refused(() => Client.CreateAsync(KubeResource.Leases, fin, ct: Ct), "metadata.finalizers[1]");
        // An update is checked too: a label value with a space.
        await Client.CreateAsync(KubeResource.Leases, Lease("upd"), ct: Ct);
        await Refused(() => Client.MergePatchAsync<JsonObject>(KubeResource.Leases, Ns, "upd", JsonNode.Parse("""{"metadata":{"labels":{"a":"b c"}}}""")!, ct: Ct), "metadata.labels");
        // Names: a subdomain ends with an alphanumeric character; a Service's name is a DNS-1035 label.
        await Refused(() => Client.CreateAsync(KubeResource.Leases, Lease("ends-with-dot."), ct: Ct), "metadata.name");
        await Refused(() => Client.CreateAsync(KubeResource.Services, Service("1st"), ct: Ct), "metadata.name");
        // A Lease lasts a positive time.
        var zero = Lease("zero");
        zero["spec"]!["leaseDurationSeconds"] = 0;
        await Refused(() => Client.CreateAsync(KubeResource.Leases, zero, ct: Ct), "spec.leaseDurationSeconds");
        // An event's note holds 1,024 bytes: 600 two-byte characters are too many.
        var note = new JsonObject
        {
            ["apiVersion"] = "events.k8s.io/v1", ["kind"] = "Event",
            ["metadata"] = new JsonObject { ["name"] = "ev.1", ["namespace"] = Ns },
            ["eventTime"] = MicroTime.Format(DateTimeOffset.UtcNow), ["reportingController"] = "xlb.io/operator", ["reportingInstance"] = "op-1",
            ["action"] = "Allocate", ["reason"] = "VipAllocated", ["type"] = "Normal", ["note"] = new string('×', 600),
            ["regarding"] = new JsonObject { ["apiVersion"] = "v1", ["kind"] = "Namespace", ["name"] = Ns },
        };
        await Refused(() => Client.CreateAsync(KubeResource.Events, note, ct: Ct), "note");
        note["note"] = EventRecorder.Note(new string('×', 600));
        await Client.CreateAsync(KubeResource.Events, note, ct: Ct);
        // An EndpointSlice's addresses are of its address type.
        var slice = JsonNode.Parse($$"""
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "s", "namespace": "{{Ns}}"},
             "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["fd00::1"]}]}
            """)!.AsObject();
        await Refused(() => Client.CreateAsync(KubeResource.EndpointSlices, slice, ct: Ct), "endpoints[1].addresses[0]");
    }

    [Fact]
    public async Task A_merge_patch_null_removes_a_field()
    {
        SkipIfUnavailable();
        await Client.CreateAsync(KubeResource.Leases, Lease("mp", new() { ["a"] = "1", ["b"] = "2" }), ct: Ct);
        var patched = await Client.MergePatchAsync<JsonObject>(KubeResource.Leases, Ns, "mp", JsonNode.Parse("""{"metadata":{"labels":{"a":null}}}""")!, ct: Ct);
        Assert.Equal("""{"b":"2"}""", patched["metadata"]!["labels"]!.ToJsonString());
    }
}

public sealed class DoubleApiContractTests(DoubleTarget target) : ApiContract<DoubleTarget>(target), IClassFixture<DoubleTarget>;

public sealed class ClusterApiContractTests(ClusterTarget target) : ApiContract<ClusterTarget>(target), IClassFixture<ClusterTarget>
{
    protected override void SkipIfUnavailable() =>
        Assert.SkipWhen(ClusterTarget.Kubeconfig is null, "KUBECONFIG is not set: the API contract runs against the in-process double only");

    protected override async Task SkipWithoutXlbCrdsAsync()
    {
        var crd = await Client.GetAsync<JsonObject>(new KubeResource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", false),
            null, "portmappings.xlb.io", Ct);
        Assert.SkipWhen(crd is null, "the cluster has no XLB CRDs: kubectl apply --server-side -f crds/ to run the custom resource contract there");
    }
}
