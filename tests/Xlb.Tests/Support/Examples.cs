using Xlb.Crds.Serialization;

namespace Xlb.Tests.Support;

public static class Examples
{
    /// <summary>The demo's pool with an IPv6 block beside the IPv4 one, for dual-stack tests.</summary>
    public const string DualStackPool = """
        apiVersion: xlb.io/v1alpha1
        kind: LoadBalancerPool
        metadata:
          name: demo
        spec:
          blocks:
            - 10.250.0.0/24
            - fd00:250::/64
          reserved:
            - 10.250.0.1-10.250.0.9
        """;

    public static string Dir(string name) => Path.Combine(AppContext.BaseDirectory, "examples", name);

    /// <summary>A temporary copy of an example folder, for tests that edit manifests.</summary>
    public static string CopyToTemp(string name)
    {
        var dir = Directory.CreateTempSubdirectory($"xlb-{name}-").FullName;
        foreach (var f in Directory.GetFiles(Dir(name), "*.yaml"))
        {
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        }
        return dir;
    }

    /// <summary>Every manifest of an example folder, read as the standalone operator reads them.</summary>
    public static ManifestSet Read(string name)
    {
        var set = new ManifestSet();
        foreach (var f in Directory.GetFiles(Dir(name), "*.yaml").Where(f => !f.EndsWith("kustomization.yaml", StringComparison.Ordinal)).Order(StringComparer.Ordinal))
        {
            Manifests.Read(File.ReadAllText(f), Path.GetFileName(f), set);
        }
        return set;
    }
}
