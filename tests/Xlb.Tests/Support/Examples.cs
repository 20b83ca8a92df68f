using System.Text.Json.Nodes;
using Xlb.ApiServerDouble;
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

    /// <summary>
    /// What `kubectl apply -k <paramref name="dir"/>` sends, for the kustomizations examples/ has:
    /// its resources (files, or folders of their own), with its patches merged onto the object of
    /// the same kind and name.
    /// </summary>
    public static List<JsonObject> Kustomized(string dir)
    {
        var k = Yaml.ReadDocuments(File.ReadAllText(Path.Combine(dir, "kustomization.yaml")))[0]!;
        var objects = new List<JsonObject>();
        foreach (var resource in k["resources"]!.AsArray().Select(r => Path.Combine(dir, r!.GetValue<string>())))
        {
            objects.AddRange(Directory.Exists(resource) ? Kustomized(resource) : Yaml.ReadDocuments(File.ReadAllText(resource)).OfType<JsonObject>());
        }
        foreach (var patchPath in (k["patches"] as JsonArray ?? []).Select(p => Path.Combine(dir, p!["path"]!.GetValue<string>())))
        {
            var patch = Yaml.ReadDocuments(File.ReadAllText(patchPath))[0]!.AsObject();
            var i = objects.FindIndex(o => o["kind"]?.GetValue<string>() == patch["kind"]?.GetValue<string>() && o["metadata"]?["name"]?.GetValue<string>() == patch["metadata"]?["name"]?.GetValue<string>());
            Assert.True(i >= 0, $"{patchPath} patches nothing");
            objects[i] = MergePatch.Apply(objects[i].DeepClone(), patch)!.AsObject();
        }
        return objects;
    }
}
