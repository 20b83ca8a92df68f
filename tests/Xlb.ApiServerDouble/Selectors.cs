using System.Text.Json.Nodes;

namespace Xlb.ApiServerDouble;

/// <summary>
/// Label selectors with the grammar of k8s.io/apimachinery/pkg/labels (Labels and Selectors:
/// equality-based =, ==, != and set-based in, notin, exists, !exists). A != or notin requirement
/// also matches objects that lack the key, as the documentation says.
/// </summary>
public sealed class LabelSelector
{
    private readonly List<Func<IReadOnlyDictionary<string, string>, bool>> _requirements = [];

    public static LabelSelector Everything { get; } = new();

    /// <summary>Whether the selector selects everything (no requirement).</summary>
    public bool IsEmpty => _requirements.Count == 0;

    public bool Matches(JsonObject obj)
    {
        if (IsEmpty)
        {
            return true;
        }
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        if (obj["metadata"]?["labels"] is JsonObject map)
        {
            foreach (var (key, value) in map)
            {
                labels[key] = value?.GetValue<string>() ?? "";
            }
        }
        return _requirements.All(r => r(labels));
    }

    public static LabelSelector Parse(string? text)
    {
        var selector = new LabelSelector();
        if (string.IsNullOrWhiteSpace(text))
        {
            return selector;
        }
        foreach (var raw in SplitTopLevel(text))
        {
            var term = raw.Trim();
            if (term.Length == 0)
            {
                throw ApiError.BadRequest($"unable to parse requirement: empty term in label selector \"{text}\"");
            }
            selector._requirements.Add(ParseRequirement(term, text));
        }
        return selector;
    }

    private static Func<IReadOnlyDictionary<string, string>, bool> ParseRequirement(string term, string whole)
    {
        if (term.StartsWith('!'))
        {
            var key = Key(term[1..].Trim(), whole);
            return l => !l.ContainsKey(key);
        }
        foreach (var (op, negate) in new[] { (" notin ", true), (" in ", false) })
        {
            var at = term.IndexOf(op, StringComparison.Ordinal);
            if (at > 0)
            {
                var key = Key(term[..at].Trim(), whole);
                var set = term[(at + op.Length)..].Trim();
                if (!set.StartsWith('(') || !set.EndsWith(')'))
                {
                    throw ApiError.BadRequest($"unable to parse requirement: found '{set}', expected: '(' ... ')' in \"{whole}\"");
                }
                var values = set[1..^1].Split(',', StringSplitOptions.TrimEntries).ToHashSet(StringComparer.Ordinal);
                return negate
                    ? l => !l.TryGetValue(key, out var v) || !values.Contains(v)
                    : l => l.TryGetValue(key, out var v) && values.Contains(v);
            }
        }
        foreach (var op in new[] { "!=", "==", "=" })
        {
            var at = term.IndexOf(op, StringComparison.Ordinal);
            if (at > 0)
            {
                var key = Key(term[..at].Trim(), whole);
                var value = term[(at + op.Length)..].Trim();
                return op == "!="
                    ? l => !l.TryGetValue(key, out var v) || v != value
                    : l => l.TryGetValue(key, out var v) && v == value;
            }
        }
        var exists = Key(term, whole);
        return l => l.ContainsKey(exists);
    }

    private static string Key(string key, string whole) =>
        key.Length == 0 || key.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '/'))
            ? throw ApiError.BadRequest($"unable to parse requirement: invalid label key \"{key}\" in \"{whole}\"")
            : key;

    /// <summary>Commas inside "( ... )" belong to a set, not to the list of requirements.</summary>
    private static IEnumerable<string> SplitTopLevel(string text)
    {
        var depth = 0;
        var start = 0;
        for (var i = 0; i < text.Length; i++)
        {
            depth += text[i] switch { '(' => 1, ')' => -1, _ => 0 };
            if (text[i] == ',' && depth == 0)
            {
                yield return text[start..i];
                start = i + 1;
            }
        }
        yield return text[start..];
    }
}

/// <summary>
/// Field selectors (Field Selectors): =, == and != over metadata.name, metadata.namespace and
/// the fields a resource declares selectable; any other field is a 400, as on a real server.
/// </summary>
public sealed class FieldSelector
{
    private readonly List<(string Path, string Value, bool Negate)> _terms = [];

    public static FieldSelector Everything { get; } = new();

    /// <summary>The name the selector pins with metadata.name=..., if any (kubectl wait and delete watch this way).</summary>
    public string? Name => _terms.FirstOrDefault(t => t.Path == "metadata.name" && !t.Negate).Value;

    /// <summary>Whether the selector selects everything (no term).</summary>
    public bool IsEmpty => _terms.Count == 0;

    public bool Matches(JsonObject obj) => _terms.All(t => (Read(obj, t.Path) == t.Value) != t.Negate);

    public static FieldSelector Parse(string? text, ResourceType type)
    {
        var selector = new FieldSelector();
        if (string.IsNullOrWhiteSpace(text))
        {
            return selector;
        }
        foreach (var raw in text.Split(','))
        {
            var term = raw.Trim();
            var (op, at) = term.IndexOf("!=", StringComparison.Ordinal) is var ne and > 0 ? ("!=", ne)
                : term.IndexOf("==", StringComparison.Ordinal) is var eqeq and > 0 ? ("==", eqeq)
                : ("=", term.IndexOf('=', StringComparison.Ordinal));
            if (at <= 0)
            {
                throw ApiError.BadRequest($"invalid selector: '{text}'; can't understand '{term}'");
            }
            var path = term[..at].Trim();
            if (path is not ("metadata.name" or "metadata.namespace") && !type.SelectableFields.Contains(path))
            {
                throw ApiError.BadRequest($"field label not supported: {path}");
            }
            selector._terms.Add((path, term[(at + op.Length)..].Trim(), op == "!="));
        }
        return selector;
    }

    private static string Read(JsonObject obj, string path)
    {
        JsonNode? node = obj;
        foreach (var part in path.Split('.'))
        {
            node = node is JsonObject o ? o[part] : null;
        }
        return node switch
        {
            null => "",
            JsonValue v when v.TryGetValue<string>(out var s) => s,
            _ => node.ToJsonString(),
        };
    }
}
