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
        using var topology = LbTopology.Create(LbTopology.NewPrefix("e"), backends: 3);
        var backends = new List<HttpBackend>();
        var manifests = Directory.CreateTempSubdirectory("xlb-e2e-manifests-").FullName;
        var log = new StringWriter();
        try
        {
            foreach (var f in Directory.GetFiles(Examples.Dir("demo"), "*.yaml"))
            {
                File.Copy(f, Path.Combine(manifests, Path.GetFileName(f)));
            }
            for (var i = 1; i <= 3; i++)
            {
                backends.Add(HttpBackend.Start(topology.Backends[i - 1], $"backend-{i}", IPAddress.Parse(LbTopology.BackendAddress(i)), 8080));
            }
            using var stack = StandaloneStack.Start(topology, manifests, "lb-1", log);
            var config = await stack.WaitAppliedAsync(1, TimeSpan.FromSeconds(60), ct);
            var listener = Assert.Single(config.Spec.Listeners);
            var vip = new IPEndPoint(IPAddress.Parse(listener.Vip), listener.Port);

            var result = await HttpProbe.RunAsync(topology.Client, vip, count: 150, parallel: 6, ct);
            Assert.True(result.Failed == 0, $"{result.Failed} of 150 failed: {string.Join("; ", result.Errors)}");
            Assert.Equal(["backend-1", "backend-2", "backend-3"], result.ByBackend.Keys.Order(StringComparer.Ordinal));
            Assert.Equal(150, backends.Sum(b => b.Served));

            // Take backend 3 out in the manifest: the operator renders revision 2, the agent applies it.
            var web = Path.Combine(manifests, "30-web.yaml");
            await File.WriteAllTextAsync(web, (await File.ReadAllTextAsync(web, ct)).Replace("      - address: 10.201.3.2\n", "", StringComparison.Ordinal), ct);
            var second = await stack.WaitAppliedAsync(2, TimeSpan.FromSeconds(60), ct);
            Assert.Equal(2, second.Spec.Listeners.Single().Backends.Count);

            var served3 = backends[2].Served;
            var after = await HttpProbe.RunAsync(topology.Client, vip, count: 60, parallel: 6, ct);
            Assert.True(after.Failed == 0, $"{after.Failed} of 60 failed after the change: {string.Join("; ", after.Errors)}");
            Assert.Equal(["backend-1", "backend-2"], after.ByBackend.Keys.Order(StringComparer.Ordinal));
            Assert.Equal(served3, backends[2].Served);
        }
        finally
        {
            foreach (var b in backends)
            {
                await b.DisposeAsync();
            }
            Directory.Delete(manifests, recursive: true);
            output.WriteLine(log.ToString());
        }
    }
}
