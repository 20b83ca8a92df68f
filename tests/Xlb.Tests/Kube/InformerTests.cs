using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using Xlb.ApiServerDouble;
using Xlb.Kube;
using Xlb.Tests.Support;

namespace Xlb.Tests.Kube;

/// <summary>Informers against a double that drops, silences and compacts their watches.</summary>
public sealed class InformerTests : IAsyncLifetime
{
    private ApiServer _server = null!;
    private KubeClient _client = null!;
    private const string Ns = "default";
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync()
    {
        _server = await ApiServer.StartAsync();
        _server.BookmarkInterval = TimeSpan.FromMilliseconds(200);
        _client = new KubeClient(new KubeConnection { Server = _server.Url });
    }

    public async ValueTask DisposeAsync()
    {
        _client.Dispose();
        await _server.DisposeAsync();
    }

    private static JsonObject Lease(string name, string holder = "a") => Leases.Of(Ns, name, holder);

    private sealed class Recorder
    {
        public ConcurrentQueue<string> Events { get; } = new();
        public void Handle(InformerEvent<KubeObject> e) =>
            Events.Enqueue($"{e.Type}{(e.Synthesized ? "*" : "")} {e.Object.Metadata.Name}");
    }

    private (Informer<KubeObject> Informer, Recorder Log, Task Run, CancellationTokenSource Stop) Start(InformerOptions? options = null)
    {
        var informer = new Informer<KubeObject>(_client, KubeResource.Leases, Ns, options);
        var log = new Recorder();
        informer.AddHandler(log.Handle);
        var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        return (informer, log, Task.Run(() => informer.RunAsync(stop.Token), Ct), stop);
    }

    private async Task<List<string>> ServerNamesAsync() =>
        [.. (await _client.ListAsync<KubeObject>(KubeResource.Leases, Ns, ct: Ct)).Items.Select(i => i.Metadata.Name!).Order(StringComparer.Ordinal)];

    private static List<string> CacheNames(Informer<KubeObject> informer) =>
        [.. informer.List().Select(i => i.Metadata.Name!).Order(StringComparer.Ordinal)];

    [Fact]
    public async Task It_syncs_then_follows_adds_updates_and_deletes()
    {
        await _client.CreateAsync(KubeResource.Leases, Lease("a"), ct: Ct);
        await _client.CreateAsync(KubeResource.Leases, Lease("b"), ct: Ct);
        var (informer, log, run, stop) = Start();
        await informer.WaitForSyncAsync(Ct);
        Assert.Equal(["a", "b"], CacheNames(informer));
        await _client.MergePatchAsync<JsonObject>(KubeResource.Leases, Ns, "a", JsonNode.Parse("""{"spec":{"holderIdentity":"z"}}""")!, ct: Ct);
        await _client.DeleteAsync(KubeResource.Leases, Ns, "b", ct: Ct);
        await _client.CreateAsync(KubeResource.Leases, Lease("c"), ct: Ct);
        await Eventually.TrueAsync(() => log.Events.Count == 5, "five events");
        Assert.Equal(["ADDED a", "ADDED b", "MODIFIED a", "DELETED b", "ADDED c"], log.Events);
        Assert.Equal(await ServerNamesAsync(), CacheNames(informer));
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task Dropped_watch_streams_never_lose_or_repeat_an_event()
    {
        var (informer, log, run, stop) = Start();
        await informer.WaitForSyncAsync(Ct);
        for (var i = 0; i < 60; i++)
        {
            await _client.CreateAsync(KubeResource.Leases, Lease($"n{i:D2}"), ct: Ct);
            if (i % 10 == 9)
            {
                _server.Store.EndWatches(abort: i % 20 == 9);
            }
        }
        await Eventually.TrueAsync(() => informer.List().Count == 60, "all 60 objects in the cache");
        Assert.Equal(Enumerable.Range(0, 60).Select(i => $"ADDED n{i:D2}"), log.Events);
        Assert.True(informer.Watches > 1, "the watch was re-opened");
        Assert.Equal(1, informer.Lists);
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task A_410_relists_and_reports_what_vanished_meanwhile_as_deletes()
    {
        await _client.CreateAsync(KubeResource.Leases, Lease("keep"), ct: Ct);
        await _client.CreateAsync(KubeResource.Leases, Lease("doomed"), ct: Ct);
        var (informer, log, run, stop) = Start();
        await informer.WaitForSyncAsync(Ct);
        await Eventually.TrueAsync(() => _server.Store.OpenWatches == 1, "the informer's watch is open");
        _server.Store.SilenceWatches();
        await _client.DeleteAsync(KubeResource.Leases, Ns, "doomed", ct: Ct);
        await _client.CreateAsync(KubeResource.Leases, Lease("born"), ct: Ct);
        _server.Store.Compact();
        _server.Store.EndWatches(abort: true);
        await Eventually.TrueAsync(() => informer.Lists == 2 && informer.Get($"{Ns}/born") is not null, "a relist that finds the new object");
        Assert.Equal(await ServerNamesAsync(), CacheNames(informer));
        Assert.Equal(["ADDED doomed", "ADDED keep", "ADDED born", "DELETED* doomed"], log.Events);
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task A_watchdog_restarts_a_stream_that_went_silent()
    {
        var (informer, log, run, stop) = Start(new InformerOptions { Watchdog = TimeSpan.FromSeconds(1) });
        await informer.WaitForSyncAsync(Ct);
        await Eventually.TrueAsync(() => _server.Store.OpenWatches == 1, "the informer's watch is open");
        _server.Store.SilenceWatches();
        await _client.CreateAsync(KubeResource.Leases, Lease("late"), ct: Ct);
        await Eventually.TrueAsync(() => informer.Get($"{Ns}/late") is not null, "the object created while the stream was silent");
        Assert.True(informer.Watches >= 2);
        Assert.Equal(1, informer.Lists);
        Assert.Equal(["ADDED late"], log.Events);
        await stop.CancelAsync();
        await run;
    }
}
