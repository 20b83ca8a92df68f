using System.Net;

namespace Xlb.Cli.Testbed;

/// <summary>A topology with an HTTP backend in each backend namespace, named backend-1..N, and a log for the processes.</summary>
public sealed class Testbed : IAsyncDisposable
{
    public const int BackendPort = 8080;

    private readonly HttpBackend?[] _backends;

    public LbTopology Topology { get; }
    public StringWriter Log { get; } = new();

    private Testbed(LbTopology topology)
    {
        Topology = topology;
        _backends = new HttpBackend?[topology.Backends.Count];
    }

    public static Testbed Create(string tag, int backends)
    {
        var bed = new Testbed(LbTopology.Create(LbTopology.NewPrefix(tag), backends));
        for (var i = 1; i <= backends; i++)
        {
            bed.StartBackend(i);
        }
        return bed;
    }

    /// <summary>Backend <paramref name="i"/> (1-based); null while stopped.</summary>
    public HttpBackend? Backend(int i) => _backends[i - 1];

    public int Served => _backends.Sum(b => b?.Served ?? 0);

    public void StartBackend(int i) =>
        _backends[i - 1] = HttpBackend.Start(Topology.Backends[i - 1], $"backend-{i}", IPAddress.Parse(LbTopology.BackendAddress(i)), BackendPort);

    public async Task StopBackendAsync(int i)
    {
        if (_backends[i - 1] is { } b)
        {
            _backends[i - 1] = null;
            await b.DisposeAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        for (var i = 1; i <= _backends.Length; i++)
        {
            await StopBackendAsync(i);
        }
        Topology.Dispose();
    }
}
