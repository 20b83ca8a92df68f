using System.Text.Json.Nodes;
using Xlb.ApiServerDouble;
using Xlb.Kube;

namespace Xlb.Tests.Kube;

/// <summary>Where the API contract runs: the in-process double, or a real cluster from KUBECONFIG.</summary>
public abstract class ApiTarget : IAsyncLifetime
{
    public KubeClient Client { get; protected set; } = null!;
    public bool Available => Client is not null;

    public abstract ValueTask InitializeAsync();

    public virtual ValueTask DisposeAsync()
    {
        Client?.Dispose();
        GC.SuppressFinalize(this);
        return ValueTask.CompletedTask;
    }

    /// <summary>A fresh namespace for one test; deleted by the test's own DisposeAsync.</summary>
    public async Task<string> NewNamespaceAsync(CancellationToken ct)
    {
        var name = "xlb-contract-" + Guid.NewGuid().ToString("N")[..8];
        await Client.CreateAsync(KubeResource.Namespaces, new JsonObject
        {
            ["apiVersion"] = "v1",
            ["kind"] = "Namespace",
            ["metadata"] = new JsonObject { ["name"] = name },
        }, ct: ct);
        return name;
    }
}

public sealed class DoubleTarget : ApiTarget
{
    public ApiServer Server { get; private set; } = null!;

    public override async ValueTask InitializeAsync()
    {
        Server = await ApiServer.StartAsync();
        Server.BookmarkInterval = TimeSpan.FromMilliseconds(200);
        Client = new KubeClient(new KubeConnection { Server = Server.Url },
            new KubeClientOptions { Retry = new RetryPolicy { BaseDelay = TimeSpan.FromMilliseconds(20) } });
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        await Server.DisposeAsync();
    }
}

/// <summary>A real cluster, only when KUBECONFIG is set; the suite then creates and deletes one namespace there.</summary>
public sealed class ClusterTarget : ApiTarget
{
    public static string? Kubeconfig => Environment.GetEnvironmentVariable("KUBECONFIG") is { Length: > 0 } k ? k : null;

    public override async ValueTask InitializeAsync()
    {
        if (Kubeconfig is null)
        {
            return;
        }
        Client = new KubeClient(KubeConfigLoader.Load(Kubeconfig));
        await Task.CompletedTask;
    }
}
