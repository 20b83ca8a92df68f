using System.Net;
using System.Text.Json.Nodes;
using Xlb.ApiServerDouble;
using Xlb.Kube;
using Xlb.Tests.Support;

namespace Xlb.Tests.Kube;

public sealed class LeaderElectionTests : IAsyncLifetime
{
    private ApiServer _server = null!;
    private KubeClient _client = null!;
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync()
    {
        _server = await ApiServer.StartAsync();
        _client = new KubeClient(new KubeConnection { Server = _server.Url },
            new KubeClientOptions { Retry = new RetryPolicy { MaxAttempts = 2, BaseDelay = TimeSpan.FromMilliseconds(10) } });
    }

    public async ValueTask DisposeAsync()
    {
        _client.Dispose();
        await _server.DisposeAsync();
    }

    private static LeaderElectionOptions Options(string identity) => new()
    {
        Namespace = "kube-system",
        LeaseName = "xlb-operator",
        Identity = identity,
        LeaseDuration = TimeSpan.FromSeconds(2),
        RenewDeadline = TimeSpan.FromSeconds(1),
        RetryPeriod = TimeSpan.FromMilliseconds(100),
    };

    private async Task<JsonObject> LeaseSpecAsync() =>
        (await _client.GetAsync<JsonObject>(KubeResource.Leases, "kube-system", "xlb-operator", Ct))!["spec"]!.AsObject();

    [Fact]
    public async Task One_leader_at_a_time_and_a_released_lease_passes_on_without_waiting_for_expiry()
    {
        var a = new LeaderElector(_client, Options("pod-a"));
        var b = new LeaderElector(_client, Options("pod-b"));
        using var stopA = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        using var stopB = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var bLed = new TaskCompletionSource();
        var runA = a.RunAsync(ct => Task.Delay(Timeout.Infinite, ct), stopA.Token);
        await Eventually.TrueAsync(() => a.IsLeader, "pod-a leads");
        var runB = b.RunAsync(ct => { bLed.TrySetResult(); return Task.Delay(Timeout.Infinite, ct); }, stopB.Token);
        await Task.Delay(TimeSpan.FromSeconds(2.5), Ct);
        Assert.False(b.IsLeader, "pod-b must not lead while pod-a renews");
        Assert.Equal("pod-a", (await LeaseSpecAsync())["holderIdentity"]!.GetValue<string>());
        await stopA.CancelAsync();
        await runA;
        await bLed.Task.WaitAsync(TimeSpan.FromSeconds(1), Ct);
        var spec = await LeaseSpecAsync();
        Assert.Equal("pod-b", spec["holderIdentity"]!.GetValue<string>());
        Assert.Equal(1, spec["leaseTransitions"]!.GetValue<int>());
        await stopB.CancelAsync();
        await runB;
    }

    [Fact]
    public async Task A_leader_that_cannot_renew_steps_down_and_its_work_is_cancelled()
    {
        var a = new LeaderElector(_client, Options("pod-a"));
        var workCancelled = false;
        var run = a.RunAsync(async ct =>
        {
            try
            {
                await Task.Delay(Timeout.Infinite, ct);
            }
            catch (OperationCanceledException)
            {
                workCancelled = true;
                throw;
            }
        }, Ct);
        await Eventually.TrueAsync(() => a.IsLeader, "pod-a leads");
        _server.Faults.FailNext(1000, HttpStatusCode.InternalServerError, pathContains: "/leases/xlb-operator");
        await run.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        Assert.False(a.IsLeader);
        Assert.True(workCancelled);
    }

    [Fact]
    public async Task An_abandoned_lease_is_taken_over_only_after_its_duration()
    {
        await _client.CreateAsync(KubeResource.Leases, new JsonObject
        {
            ["apiVersion"] = "coordination.k8s.io/v1",
            ["kind"] = "Lease",
            ["metadata"] = new JsonObject { ["name"] = "xlb-operator", ["namespace"] = "kube-system" },
            ["spec"] = new JsonObject { ["holderIdentity"] = "crashed-pod", ["leaseDurationSeconds"] = 2, ["leaseTransitions"] = 3 },
        }, ct: Ct);
        var b = new LeaderElector(_client, Options("pod-b"));
        Assert.False(await b.TryAcquireOrRenewAsync(Ct));
        var started = DateTime.UtcNow;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var run = b.RunAsync(ct => Task.Delay(Timeout.Infinite, ct), stop.Token);
        await Eventually.TrueAsync(() => b.IsLeader, "pod-b takes over");
        Assert.True(DateTime.UtcNow - started >= TimeSpan.FromSeconds(1.5), "took over before the lease duration passed");
        Assert.Equal(4, (await LeaseSpecAsync())["leaseTransitions"]!.GetValue<int>());
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task Repeated_events_fold_into_one_series_and_different_ones_do_not()
    {
        var recorder = new EventRecorder(_client, "xlb.io/operator", "operator-0");
        var pm = new ObjectReference("xlb.io/v1alpha1", "PortMapping", "default", "web", "uid-1");
        for (var i = 0; i < 3; i++)
        {
            await recorder.RecordAsync(pm, EventRecorder.Normal, "VipAllocated", "Allocate", "allocated 10.250.0.10", Ct);
        }
        await recorder.RecordAsync(pm, EventRecorder.Warning, "PortConflict", "Program", "port 80 is taken", Ct);
        var events = (await _client.ListAsync<JsonObject>(KubeResource.Events, "default", ct: Ct)).Items;
        Assert.Equal(2, events.Count);
        var allocated = events.Single(e => e["reason"]!.GetValue<string>() == "VipAllocated");
        Assert.Equal(3, allocated["series"]!["count"]!.GetValue<int>());
        Assert.Equal("web", allocated["regarding"]!["name"]!.GetValue<string>());
        Assert.Equal("xlb.io/operator", allocated["reportingController"]!.GetValue<string>());
        Assert.Null(events.Single(e => e["reason"]!.GetValue<string>() == "PortConflict")["series"]);
    }

    [Fact]
    public async Task The_recorder_remembers_a_bounded_number_of_events_and_forgets_the_oldest_first()
    {
        var recorder = new EventRecorder(_client, "xlb.io/operator", "operator-0") { Remembered = 8 };
        var pm = new ObjectReference("xlb.io/v1alpha1", "PortMapping", "default", "web", "uid-1");
        Task Allocated(int i) => recorder.RecordAsync(pm, EventRecorder.Normal, "VipAllocated", "Allocate", $"allocated 10.250.0.{i}", Ct);
        for (var i = 0; i < 20; i++)
        {
            await Allocated(i);
            Assert.InRange(recorder.Count, 1, 8);
        }
        // The latest is still folded; the first, long forgotten, is a new Event.
        await Allocated(19);
        await Allocated(0);
        var events = (await _client.ListAsync<JsonObject>(KubeResource.Events, "default", ct: Ct)).Items;
        Assert.Equal(21, events.Count);
        Assert.Equal(2, events.Single(e => e["note"]!.GetValue<string>() == "allocated 10.250.0.19")["series"]!["count"]!.GetValue<int>());
        Assert.Equal(2, events.Count(e => e["note"]!.GetValue<string>() == "allocated 10.250.0.0"));
    }

    [Fact]
    public async Task Events_past_the_window_are_forgotten_when_room_is_made()
    {
        var time = new SetClock(new DateTimeOffset(2026, 11, 22, 10, 0, 0, TimeSpan.Zero));
        var recorder = new EventRecorder(_client, "xlb.io/operator", "operator-0", time) { Remembered = 4 };
        var pm = new ObjectReference("xlb.io/v1alpha1", "PortMapping", "default", "web", "uid-1");
        for (var i = 0; i < 4; i++)
        {
            await recorder.RecordAsync(pm, EventRecorder.Normal, "VipAllocated", "Allocate", $"allocated 10.250.0.{i}", Ct);
        }
        time.Advance(recorder.Window);
        await recorder.RecordAsync(pm, EventRecorder.Normal, "VipAllocated", "Allocate", "allocated 10.250.0.9", Ct);
        Assert.Equal(1, recorder.Count);
    }
}
