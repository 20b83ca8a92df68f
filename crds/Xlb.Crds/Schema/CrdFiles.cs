using System.Text;
using Xlb.Crds.Serialization;

namespace Xlb.Crds.Schema;

/// <summary>The checked-in crds/ folder as it must be: one CRD per kind plus a kustomization listing them.</summary>
public static class CrdFiles
{
    public const string Header = "# Generated from the C# types in crds/Xlb.Crds by `xlb crds --out crds`. Do not edit.\n";

    public static IReadOnlyDictionary<string, string> Render(string documentationXml)
    {
        var generator = new CrdGenerator(documentationXml);
        var files = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var kind in CrdGenerator.Kinds)
        {
            files[CrdGenerator.FileName(kind)] = Header + Yaml.Write(generator.Generate(kind));
        }
        var kustomization = new StringBuilder(Header)
            .Append("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n");
        foreach (var kind in CrdGenerator.Kinds)
        {
            kustomization.Append("  - ").Append(CrdGenerator.FileName(kind)).Append('\n');
        }
        files["kustomization.yaml"] = kustomization.ToString();
        return files;
    }
}
