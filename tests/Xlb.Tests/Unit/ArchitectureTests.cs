using System.Reflection;

namespace Xlb.Tests.Unit;

/// <summary>Dependencies point one way: hosts → shells → pure cores → API types.</summary>
public class ArchitectureTests
{
    public static TheoryData<string, string[]> Allowed => new()
    {
        { "Xlb.Crds", [] },
        { "Xlb.DataPlane", [] },
        { "Xlb.Operator.Core", ["Xlb.Crds"] },
        { "Xlb.Agent.Core", ["Xlb.Crds", "Xlb.DataPlane"] },
        { "Xlb.Agent.Bpf", ["Xlb.DataPlane"] },
        { "Xlb.Hosting", [] },
        { "Xlb.Kube", ["Xlb.Crds"] },
    };

    [Theory]
    [MemberData(nameof(Allowed))]
    public void Projects_reference_only_what_lies_below_them(string assembly, string[] allowed)
    {
        var references = Assembly.Load(assembly).GetReferencedAssemblies()
            .Select(a => a.Name!)
            .Where(n => n.StartsWith("Xlb", StringComparison.Ordinal) || n == "xlb")
            .Order(StringComparer.Ordinal);
        Assert.Subset(allowed.ToHashSet(), references.ToHashSet());
    }
}
