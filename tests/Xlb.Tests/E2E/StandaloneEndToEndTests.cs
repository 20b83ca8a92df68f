using System.Net;
using Xlb.Cli.Testbed;
using Xlb.Tests.Support;

namespace Xlb.Tests.E2E;

/// <summary>
/// The whole chain as a user runs it: manifests folder → xlb operator → node config file →
/// xlb agent in the LB namespace → XDP → real TCP connections from a client namespace.
/// </summary>
public sealed class StandaloneEndToEndTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Every_request_is_answered_through_xdp_by_all_backends_and_a_manifest_change_is_applied()
    {
        Privileged.Require();
        var ct = TestContext.Current.CancellationToken;
        await using var bed = Testbed.Create("e", backends: 3);
        var topology = bed.Topology;
        var manifests = Examples.CopyToTemp("demo");
        try
        {
            using var stack = StandaloneStack.Start(topology, manifests, "lb-1", bed.Log);
            var config = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            var listener = Assert.Single(config.Spec.Listeners);
            var vip = new IPEndPoint(IPAddress.Parse(listener.Vip), listener.Port);

            var result = await HttpProbe.RunAsync(topology.Client, vip, count: 150, parallel: 6, ct);
            Assert.True(result.Failed == 0, $"{result.Failed} of 150 failed: {string.Join("; ", result.Errors)}");
            Assert.Equal(["backend-1", "backend-2", "backend-3"], result.ByBackend.Keys.Order(StringComparer.Ordinal));
            Assert.Equal(150, bed.Served);

            // Take backend 3 out in the manifest: the operator renders revision 2, the agent applies it.
            var web = Path.Combine(manifests, "30-web.yaml");
            await File.WriteAllTextAsync(web, (await File.ReadAllTextAsync(web, ct)).Replace("      - address: 10.201.3.2\n", "", StringComparison.Ordinal), ct);
            var second = await stack.WaitAppliedAsync(2, TimeSpan.FromSeconds(60), ct);
            Assert.Equal(2, second.Spec.Listeners.Single().Backends.Count);

            var served3 = bed.Backend(3)!.Served;
            var after = await HttpProbe.RunAsync(topology.Client, vip, count: 60, parallel: 6, ct);
            Assert.True(after.Failed == 0, $"{after.Failed} of 60 failed after the change: {string.Join("; ", after.Errors)}");
            Assert.Equal(["backend-1", "backend-2"], after.ByBackend.Keys.Order(StringComparer.Ordinal));
            Assert.Equal(served3, bed.Backend(3)!.Served);
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(bed.Log.ToString());
        }
    }
}
