using Microsoft.Extensions.Logging.Abstractions;
using Xlb.Crds;
using Xlb.Crds.Serialization;
using Xlb.Operator;
using Xlb.Tests.Support;

namespace Xlb.Tests.ControlPlane;

/// <summary>The standalone operator over a folder of manifests, looked at as its loop looks at it (<see cref="StandaloneOperator.Poll"/>).</summary>
public sealed class StandaloneOperatorTests
{
    [Fact]
    public void A_manifest_caught_half_written_is_not_planned_and_the_folder_is_once_it_reads_the_same_twice()
    {
        var manifests = Examples.CopyToTemp("demo");
        var state = Directory.CreateTempSubdirectory("xlb-state-").FullName;
        try
        {
            var op = new StandaloneOperator(new OperatorOptions { ManifestDir = manifests, OutputDir = state }, NullLogger<StandaloneOperator>.Instance, TimeProvider.System);
            XlbNodeConfig Config() => Manifests.Read(File.ReadAllText(Path.Combine(state, "lb-1.yaml")), "lb-1.yaml").NodeConfigs.Single();
            // The first look plans at once; a look at an unchanged folder plans nothing.
            Assert.True(op.Poll());
            Assert.Equal((1L, 3), (Config().Spec.Revision, Config().Spec.Listeners.Single().Backends.Count));
            Assert.False(op.Poll());

            // An editor's write in place, seen after its truncation and again when done.
            var web = Path.Combine(manifests, "30-web.yaml");
            var text = File.ReadAllText(web);
            File.WriteAllText(web, "");
            Assert.False(op.Poll());
            File.WriteAllText(web, text.Replace("      - address: 10.201.3.2\n", "", StringComparison.Ordinal));
            Assert.False(op.Poll());
            Assert.Equal(1L, Config().Spec.Revision);
            Assert.True(op.Poll());
            Assert.Equal((2L, 2), (Config().Spec.Revision, Config().Spec.Listeners.Single().Backends.Count));

            // A file emptied on purpose is planned as well, a look later.
            File.WriteAllText(web, "");
            Assert.False(op.Poll());
            Assert.True(op.Poll());
            Assert.Empty(Config().Spec.Listeners);
        }
        finally
        {
            Directory.Delete(manifests, recursive: true);
            Directory.Delete(state, recursive: true);
        }
    }
}
