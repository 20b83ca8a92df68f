using System.Net;
using Xlb.Cli.Testbed;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Hosting;

namespace Xlb.Tests.Support;

/// <summary>
/// A testbed of three backends with the demo applied by a standalone stack, then its operator
/// stopped: from there on a test writes the node config itself (the operator would write its own
/// back), starting from the one the operator rendered, with its one listener and that listener's
/// VIP endpoint. Disposing it stops the stack and removes the testbed.
/// </summary>
public sealed class HandWrittenConfig : IAsyncDisposable
{
    private HandWrittenConfig(Testbed bed, StandaloneStack stack, XlbNodeConfig first)
    {
        (Bed, Stack, First) = (bed, stack, first);
        Listener = first.Spec.Listeners.Single();
        Vip = new IPEndPoint(IPAddress.Parse(Listener.Vip), Listener.Port);
    }

    public Testbed Bed { get; }
    public StandaloneStack Stack { get; }
    public XlbNodeConfig First { get; }
    public Listener Listener { get; }
    public IPEndPoint Vip { get; }

    public static async Task<HandWrittenConfig> StartAsync(string prefix, CancellationToken ct)
    {
        var bed = Testbed.Create(prefix, backends: 3);
        StandaloneStack? stack = null;
        try
        {
            stack = StandaloneStack.Start(bed.Topology, Examples.Dir("demo"), "lb-1", bed.Log);
            var first = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            Netns.Stop(stack.Operator, TimeSpan.FromSeconds(10));
            return new HandWrittenConfig(bed, stack, first);
        }
        catch
        {
            stack?.Dispose();
            await bed.DisposeAsync();
            throw;
        }
    }

    /// <summary>Writes <paramref name="spec"/> as the node config the agent reads (atomically: the agent never reads half of it).</summary>
    public void Write(XlbNodeConfigSpec spec) => AtomicFile.Write(Stack.NodeConfigPath, Manifests.ToYaml(First with { Spec = spec }));

    public async ValueTask DisposeAsync()
    {
        Stack.Dispose();
        await Bed.DisposeAsync();
    }
}
