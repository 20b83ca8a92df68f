using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Xlb.Crds.Schema;

/// <summary>
/// Checks a CRD against the rules the API server enforces on structural schemas
/// (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema)
/// and the ones that only show up at run time: list-map keys that may be absent, defaults that
/// do not fit their schema, and CEL rules that touch a field that may be absent without has().
/// </summary>
public static partial class SchemaLint
{
    public static IReadOnlyList<string> Check(JsonObject crd)
    {
        var errors = new List<string>();
        foreach (var version in crd["spec"]?["versions"]?.AsArray() ?? [])
        {
            var root = version?["schema"]?["openAPIV3Schema"] as JsonObject;
            if (root is null)
            {
                errors.Add("a version without schema.openAPIV3Schema");
                continue;
            }
            if (root["properties"]?["metadata"] is JsonObject meta && meta.Any(kv => kv.Key is not ("type" or "description")))
            {
                errors.Add("metadata: only type and description may be set at the root (names are validated by the API server)");
            }
            Node(root, "", errors);
            foreach (var column in version!["additionalPrinterColumns"]?.AsArray() ?? [])
            {
                var path = column?["jsonPath"]?.GetValue<string>() ?? "";
                if (!ResolvesIn(root, path))
                {
                    errors.Add($"printer column {column?["name"]}: {path} names no field of the schema");
                }
            }
        }
        return errors;
    }

    private static void Node(JsonObject s, string path, List<string> errors)
    {
        var type = s["type"]?.GetValue<string>();
        var intOrString = s["x-kubernetes-int-or-string"]?.GetValue<bool>() == true;
        var preserve = s["x-kubernetes-preserve-unknown-fields"]?.GetValue<bool>() == true;
        if (string.IsNullOrEmpty(type) && !intOrString && !preserve)
        {
            errors.Add($"{Where(path)}: no type (a structural schema types every node)");
        }
        if (intOrString && type is not null)
        {
            errors.Add($"{Where(path)}: x-kubernetes-int-or-string takes no type");
        }
        if (s.ContainsKey("properties") && s.ContainsKey("additionalProperties"))
        {
            errors.Add($"{Where(path)}: properties and additionalProperties exclude each other");
        }
        if (s.ContainsKey("$ref") || s.ContainsKey("nullable") && type is null)
        {
            errors.Add($"{Where(path)}: $ref and an untyped nullable are not structural");
        }
        if (s["enum"] is JsonArray values && s["default"] is JsonValue d && !values.Any(v => JsonNode.DeepEquals(v, d)))
        {
            errors.Add($"{Where(path)}: default {d.ToJsonString()} is not one of the enum values");
        }
        if (s["default"] is { } def && !FitsType(def, type, intOrString))
        {
            errors.Add($"{Where(path)}: default {def.ToJsonString()} is not a {type}");
        }
        if (s["default"] is JsonValue dv && s["pattern"] is JsonValue pv && dv.TryGetValue<string>(out var ds) && !Regex.IsMatch(ds, pv.GetValue<string>()))
        {
            errors.Add($"{Where(path)}: default '{ds}' does not match the pattern");
        }
        if (s["properties"] is JsonObject props)
        {
            foreach (var name in s["required"]?.AsArray().Select(r => r!.GetValue<string>()) ?? [])
            {
                if (!props.ContainsKey(name))
                {
                    errors.Add($"{Where(path)}: required field {name} is not a property");
                }
            }
            foreach (var (name, child) in props)
            {
                Node(child!.AsObject(), $"{path}.{name}", errors);
            }
        }
        if (type == "array")
        {
            if (s["items"] is not JsonObject items)
            {
                errors.Add($"{Where(path)}: an array needs items");
                return;
            }
            ListType(s, items, path, errors);
            Node(items, path + "[]", errors);
        }
        if (s["additionalProperties"] is JsonObject additional)
        {
            Node(additional, path + "{}", errors);
        }
        foreach (var rule in s["x-kubernetes-validations"]?.AsArray() ?? [])
        {
            Rule(s, rule!["rule"]!.GetValue<string>(), path, errors);
        }
    }

    private static void ListType(JsonObject s, JsonObject items, string path, List<string> errors)
    {
        switch (s["x-kubernetes-list-type"]?.GetValue<string>())
        {
            case "map":
                if (items["type"]?.GetValue<string>() != "object" || items["properties"] is not JsonObject props)
                {
                    errors.Add($"{Where(path)}: list-type map needs object items");
                    return;
                }
                var required = items["required"]?.AsArray().Select(r => r!.GetValue<string>()).ToHashSet() ?? [];
                foreach (var key in s["x-kubernetes-list-map-keys"]?.AsArray().Select(k => k!.GetValue<string>()) ?? [])
                {
                    if (props[key] is not JsonObject keySchema)
                    {
                        errors.Add($"{Where(path)}: list-map key {key} is not a property of the items");
                    }
                    else if (!required.Contains(key) && !keySchema.ContainsKey("default"))
                    {
                        errors.Add($"{Where(path)}: list-map key {key} must be required or defaulted");
                    }
                    else if (keySchema["type"]?.GetValue<string>() is "object" or "array")
                    {
                        errors.Add($"{Where(path)}: list-map key {key} must be a scalar");
                    }
                }
                break;
            case "set":
                if (items["type"]?.GetValue<string>() is "object" or "array")
                {
                    errors.Add($"{Where(path)}: list-type set needs scalar items");
                }
                break;
        }
    }

    /// <summary>
    /// Every self.field a rule reads must exist, and a field that may be absent (neither required
    /// nor defaulted) must be guarded with has(self.field): otherwise the rule errors at run time.
    /// </summary>
    private static void Rule(JsonObject s, string rule, string path, List<string> errors)
    {
        if (s["properties"] is not JsonObject props)
        {
            return;
        }
        var required = s["required"]?.AsArray().Select(r => r!.GetValue<string>()).ToHashSet() ?? [];
        foreach (Match m in SelfField().Matches(rule))
        {
            var field = m.Groups[1].Value;
            if (props[field] is not JsonObject fieldSchema)
            {
                errors.Add($"{Where(path)}: rule '{rule}' reads self.{field}, which is not a property");
                continue;
            }
            if (!required.Contains(field) && !fieldSchema.ContainsKey("default") && !rule.Contains($"has(self.{field})", StringComparison.Ordinal))
            {
                errors.Add($"{Where(path)}: rule '{rule}' reads self.{field}, which may be absent, without has(self.{field})");
            }
        }
    }

    private static bool FitsType(JsonNode value, string? type, bool intOrString) => (type, value) switch
    {
        (_, JsonValue v) when intOrString => v.TryGetValue<long>(out _) || v.TryGetValue<string>(out _),
        ("string", JsonValue v) => v.TryGetValue<string>(out _),
        ("integer", JsonValue v) => v.TryGetValue<long>(out _),
        ("number", JsonValue v) => v.TryGetValue<double>(out _),
        ("boolean", JsonValue v) => v.TryGetValue<bool>(out _),
        ("object", JsonObject) => true,
        ("array", JsonArray) => true,
        _ => false,
    };

    /// <summary>Whether a simple JSONPath (.a.b[0].c, [?(...)] filters) names fields of the schema.</summary>
    private static bool ResolvesIn(JsonObject root, string jsonPath)
    {
        JsonObject? node = root;
        var cleaned = Filter().Replace(jsonPath, "[]");
        foreach (var segment in cleaned.Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            var name = segment;
            var indexed = name.EndsWith(']');
            if (indexed)
            {
                name = name[..name.IndexOf('[', StringComparison.Ordinal)];
            }
            node = name == "metadata" && node == root ? null : node?["properties"]?[name] as JsonObject;
            if (name == "metadata" && node is null)
            {
                return true; // metadata fields are the API server's, not ours.
            }
            if (indexed)
            {
                node = node?["items"] as JsonObject;
            }
            if (node is null)
            {
                return false;
            }
        }
        return true;
    }

    private static string Where(string path) => path.Length == 0 ? "(root)" : path.TrimStart('.');

    [GeneratedRegex(@"\bself\.([A-Za-z_][A-Za-z0-9_]*)")]
    private static partial Regex SelfField();

    [GeneratedRegex(@"\[[^\]]*\]")]
    private static partial Regex Filter();
}
