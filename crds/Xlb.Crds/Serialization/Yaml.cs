using System.Globalization;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.RepresentationModel;

namespace Xlb.Crds.Serialization;

/// <summary>
/// YAML as a notation for JSON trees, with the YAML 1.2 core schema for plain scalars
/// (the schema Kubernetes' YAML decoder resolves with): null, booleans, integers and floats
/// are typed, everything quoted is a string.
/// </summary>
public static partial class Yaml
{
    /// <summary>Every document of a (multi-document) YAML text, as JSON; empty documents are skipped.</summary>
    public static IReadOnlyList<JsonNode> ReadDocuments(string yaml)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(yaml));
        var docs = new List<JsonNode>();
        foreach (var doc in stream.Documents)
        {
            if (ToJson(doc.RootNode) is { } node)
            {
                docs.Add(node);
            }
        }
        return docs;
    }

    public static JsonNode? ToJson(YamlNode node) => node switch
    {
        YamlMappingNode map => MappingToJson(map),
        YamlSequenceNode seq => new JsonArray([.. seq.Children.Select(ToJson)]),
        YamlScalarNode scalar => ScalarToJson(scalar),
        _ => throw new YamlException(node.Start, node.End, "unsupported YAML node"),
    };

    private static JsonObject MappingToJson(YamlMappingNode map)
    {
        var obj = new JsonObject();
        foreach (var (key, value) in map.Children)
        {
            if (key is not YamlScalarNode { Value: { } name })
            {
                throw new YamlException(key.Start, key.End, "mapping keys must be plain strings");
            }
            if (obj.ContainsKey(name))
            {
                throw new YamlException(key.Start, key.End, $"duplicate key '{name}'");
            }
            obj[name] = ToJson(value);
        }
        return obj;
    }

    private static JsonNode? ScalarToJson(YamlScalarNode scalar)
    {
        var text = scalar.Value ?? "";
        if (scalar.Style is not (ScalarStyle.Plain or ScalarStyle.Any))
        {
            return JsonValue.Create(text);
        }
        return ResolvePlain(text) switch
        {
            null when IsNull(text) => null,
            bool b => JsonValue.Create(b),
            long l => JsonValue.Create(l),
            double d => JsonValue.Create(d),
            _ => JsonValue.Create(text),
        };
    }

    private static bool IsNull(string text) => text is "" or "~" or "null" or "Null" or "NULL";

    /// <summary>What a plain scalar means under the core schema; a string stays a string.</summary>
    private static object? ResolvePlain(string text)
    {
        if (IsNull(text))
        {
            return null;
        }
        if (text is "true" or "True" or "TRUE")
        {
            return true;
        }
        if (text is "false" or "False" or "FALSE")
        {
            return false;
        }
        if (IntPattern().IsMatch(text))
        {
            return long.Parse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
        }
        if (text.StartsWith("0x", StringComparison.Ordinal) && long.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var hex))
        {
            return hex;
        }
        if (FloatPattern().IsMatch(text))
        {
            return double.Parse(text, CultureInfo.InvariantCulture);
        }
        return text;
    }

    [GeneratedRegex(@"^[-+]?[0-9]+$")]
    private static partial Regex IntPattern();

    [GeneratedRegex(@"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")]
    private static partial Regex FloatPattern();

    /// <summary>Writes JSON trees as YAML documents, quoting every string a reader would type otherwise.</summary>
    public static string Write(params JsonNode?[] documents)
    {
        var sw = new StringWriter(CultureInfo.InvariantCulture);
        var emitter = new Emitter(sw);
        emitter.Emit(new StreamStart());
        foreach (var doc in documents)
        {
            emitter.Emit(new DocumentStart(null, null, isImplicit: documents.Length == 1));
            Emit(emitter, doc);
            emitter.Emit(new DocumentEnd(isImplicit: true));
        }
        emitter.Emit(new StreamEnd());
        return sw.ToString();
    }

    private static void Emit(IEmitter emitter, JsonNode? node)
    {
        switch (node)
        {
            case null:
                emitter.Emit(new Scalar(null, null, "null", ScalarStyle.Plain, true, false));
                break;
            case JsonObject obj:
                emitter.Emit(new MappingStart(null, null, true, MappingStyle.Block));
                foreach (var (key, value) in obj)
                {
                    EmitString(emitter, key);
                    Emit(emitter, value);
                }
                emitter.Emit(new MappingEnd());
                break;
            case JsonArray arr:
                emitter.Emit(new SequenceStart(null, null, true, arr.Count == 0 ? SequenceStyle.Flow : SequenceStyle.Block));
                foreach (var item in arr)
                {
                    Emit(emitter, item);
                }
                emitter.Emit(new SequenceEnd());
                break;
            case JsonValue value when value.TryGetValue<string>(out var s):
                EmitString(emitter, s);
                break;
            default:
                // Numbers and booleans: their JSON text is their plain YAML form.
                emitter.Emit(new Scalar(null, null, node.ToJsonString(), ScalarStyle.Plain, true, false));
                break;
        }
    }

    private static void EmitString(IEmitter emitter, string s)
    {
        var plainIsString = ResolvePlain(s) is string && s.Length > 0 && s.Trim() == s;
        emitter.Emit(new Scalar(null, null, s, plainIsString ? ScalarStyle.Any : ScalarStyle.DoubleQuoted, true, true));
    }
}
