using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Xlb.ApiServerDouble;
using Xlb.Kube;
using Xlb.Operator;
using Xlb.Tests.Kube;
using Xlb.Tests.Support;

namespace Xlb.Tests.ControlPlane;

/// <summary>The operator's own writes come back through its informers; only the changes of others start a plan.</summary>
public sealed class OwnWritesTests
{
    private const string Ns = "default";
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Echoes_of_own_writes_are_recognised_and_every_other_change_is_passed_on()
    {
        await using var server = await ApiServer.StartAsync();
        using var client = new KubeClient(new KubeConnection { Server = server.Url });
        var foreignAfterWrite = 0;
        var own = new OwnWrites(() => Interlocked.Increment(ref foreignAfterWrite));
        var planned = new ConcurrentQueue<string>();
        var informer = new Informer<KubeObject>(client, KubeResource.Leases, Ns);
        informer.AddHandler(e =>
        {
            if (!own.IsEcho(KubeResource.Leases, e))
            {
                planned.Enqueue($"{e.Type} {e.Object.Metadata.Name}");
            }
        });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = Task.Run(() => informer.RunAsync(stop.Token), Ct);
        await informer.WaitForSyncAsync(Ct);

        async Task<string?> Apply(string name, string holder, string manager) =>
            (await client.ApplyAsync<JsonObject>(KubeResource.Leases, Leases.Of(Ns, name, holder), manager, force: true, ct: Ct))["metadata"]!["resourceVersion"]!.GetValue<string>();

        // Ours: a create, an update and a delete, each seen by the informer and each an echo.
        await own.WriteAsync(KubeResource.Leases, $"{Ns}/mine", () => Apply("mine", "a", "xlb-operator"));
        await own.WriteAsync(KubeResource.Leases, $"{Ns}/mine", () => Apply("mine", "b", "xlb-operator"));
        await Eventually.TrueAsync(() => informer.Get($"{Ns}/mine")?.Fields["spec"].GetProperty("holderIdentity").GetString() == "b", "the update reached the cache");
        await own.WriteAsync(KubeResource.Leases, $"{Ns}/mine", async () =>
        {
            await client.DeleteAsync(KubeResource.Leases, Ns, "mine", ct: Ct);
            return null;
        });
        await Eventually.TrueAsync(() => informer.Get($"{Ns}/mine") is null, "the delete reached the cache");
        // Another writer's changes, including one to an object we wrote before: each starts a plan.
        await own.WriteAsync(KubeResource.Leases, $"{Ns}/shared", () => Apply("shared", "a", "xlb-operator"));
        await Apply("shared", "c", "kubectl");
        await Apply("theirs", "a", "kubectl");
        await Eventually.TrueAsync(() => planned.Count == 2, "two foreign changes planned");
        await Task.Delay(300, Ct); // nothing more arrives

        Assert.Equal(["MODIFIED shared", "ADDED theirs"], planned);
        Assert.Equal(4, own.Echoes);
        Assert.Equal(0, foreignAfterWrite);
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task Events_that_arrive_while_a_write_is_in_flight_are_judged_when_it_returns()
    {
        var foreign = 0;
        var own = new OwnWrites(() => Interlocked.Increment(ref foreign));
        static InformerEvent<KubeObject> Modified(string rv) =>
            new(WatchEvent<KubeObject>.Modified, new KubeObject { Metadata = new Xlb.Crds.ObjectMeta { Name = "x", Namespace = Ns, ResourceVersion = rv } });

        // Its own echo before the response: held, then counted as an echo.
        var echoed = false;
        await own.WriteAsync(KubeResource.Leases, $"{Ns}/x", () =>
        {
            echoed = own.IsEcho(KubeResource.Leases, Modified("7"));
            return Task.FromResult<string?>("7");
        });
        Assert.True(echoed);
        Assert.Equal((1, 0), (own.Echoes, foreign));

        // Someone else's change, seen before our response: passed on when the write returns.
        await own.WriteAsync(KubeResource.Leases, $"{Ns}/x", () =>
        {
            own.IsEcho(KubeResource.Leases, Modified("8"));
            return Task.FromResult<string?>("9");
        });
        Assert.Equal((1, 1), (own.Echoes, foreign));

        // A failed write passes on whatever was held.
        await Assert.ThrowsAsync<InvalidOperationException>(() => own.WriteAsync(KubeResource.Leases, $"{Ns}/x", () =>
        {
            own.IsEcho(KubeResource.Leases, Modified("10"));
            throw new InvalidOperationException("refused");
        }));
        Assert.Equal(2, foreign);
        // After a write that returned 9, an event showing 9 is its echo; one showing 11 is not.
        Assert.True(own.IsEcho(KubeResource.Leases, Modified("9")));
        Assert.False(own.IsEcho(KubeResource.Leases, Modified("11")));

        // Two writes in a row, the first one's echo arriving while the second is in flight: both echoes.
        await own.WriteAsync(KubeResource.Leases, $"{Ns}/x", () => Task.FromResult<string?>("12"));
        await own.WriteAsync(KubeResource.Leases, $"{Ns}/x", () =>
        {
            own.IsEcho(KubeResource.Leases, Modified("12"));
            return Task.FromResult<string?>("13");
        });
        Assert.True(own.IsEcho(KubeResource.Leases, Modified("13")));
        Assert.Equal((4, 2), (own.Echoes, foreign));
    }
}
