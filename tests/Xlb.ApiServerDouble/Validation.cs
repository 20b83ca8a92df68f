using System.Text.Json.Nodes;

namespace Xlb.ApiServerDouble;

/// <summary>
/// A custom resource's defaults and x-kubernetes-validations, as the API server applies and checks them on every write:
/// each rule where its schema node has a value, with self that value; a transition rule (one
/// that reads oldSelf) only on an update, where the old object has a value at the same place
/// (list elements correlate only in lists of type map, by their keys). A rule that fails gives
/// "&lt;path&gt;: Invalid value: "&lt;type&gt;": &lt;message&gt;"; one that cannot be evaluated, the error and the rule.
/// </summary>
public static class Validation
{
    /// <summary>The field errors of <paramref name="next"/> (replacing <paramref name="before"/>, null on a create) under <paramref name="schema"/>: (path, message).</summary>
    public static List<(string Field, string Message)> Check(JsonObject schema, JsonNode next, JsonNode? before)
    {
        var errors = new List<(string, string)>();
        Walk(schema, next, before, "", errors);
        return errors;
    }

    private static void Walk(JsonObject schema, JsonNode? value, JsonNode? old, string path, List<(string, string)> errors)
    {
        if (value is null)
        {
            return;
        }
        var type = schema["type"]?.GetValue<string>() ?? "object";
        if (!Structural(schema, value, type, path, errors))
        {
            return;
        }
        foreach (var validation in schema["x-kubernetes-validations"]?.AsArray() ?? [])
        {
            var rule = validation!["rule"]!.GetValue<string>();
            var transition = Cel.IsTransition(rule);
            if (transition && old is null)
            {
                continue;
            }
            try
            {
                if (!Cel.Holds(rule, value, transition ? old : null))
                {
                    errors.Add((path, $"Invalid value: \"{type}\": {validation["message"]?.GetValue<string>() ?? "failed rule: " + rule}"));
                }
            }
            catch (CelException e)
            {
                errors.Add((path, $"Invalid value: \"{type}\": {e.Message} evaluating rule: {rule}"));
            }
        }
        switch (value)
        {
            case JsonObject o:
                foreach (var (name, child) in schema["properties"]?.AsObject() ?? [])
                {
                    Walk(child!.AsObject(), o[name], (old as JsonObject)?[name], Join(path, name), errors);
                }
                if (schema["additionalProperties"] is JsonObject each)
                {
                    foreach (var (name, child) in o)
                    {
                        Walk(each, child, (old as JsonObject)?[name], Join(path, name), errors);
                    }
                }
                break;
            case JsonArray a when schema["items"] is JsonObject items:
                var keys = schema["x-kubernetes-list-type"]?.GetValue<string>() == "map"
                    ? schema["x-kubernetes-list-map-keys"]?.AsArray().Select(k => k!.GetValue<string>()).ToArray()
                    : null;
                for (var i = 0; i < a.Count; i++)
                {
                    var twin = keys is null ? null : (old as JsonArray)?.FirstOrDefault(e => keys.All(k => JsonNode.DeepEquals(e?[k], a[i]?[k])));
                    Walk(items, a[i], twin, $"{path}[{i}]", errors);
                }
                break;
        }
    }

    private static string Join(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";

    /// <summary>
    /// The OpenAPI checks of one value, worded as the API server words them: type (an
    /// int-or-string takes either), required properties, enum, minimum and maximum, lengths, item
    /// counts and pattern. False when the type is wrong: nothing below it is checked.
    /// </summary>
    private static bool Structural(JsonObject schema, JsonNode value, string type, string path, List<(string, string)> errors)
    {
        var kind = value switch
        {
            JsonObject => "object",
            JsonArray => "array",
            _ => value.GetValueKind() switch
            {
                System.Text.Json.JsonValueKind.String => "string",
                System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False => "boolean",
                System.Text.Json.JsonValueKind.Number => Cel.IsInteger(value.AsValue()) ? "integer" : "number",
                _ => "null",
            },
        };
        var intOrString = schema["x-kubernetes-int-or-string"]?.GetValue<bool>() == true;
        var fits = intOrString ? kind is "integer" or "string" : kind == type || (type == "number" && kind == "integer") || (kind == "null" && schema["nullable"]?.GetValue<bool>() == true);
        if (!fits)
        {
            errors.Add((path, $"Invalid value: \"{kind}\": {path} in body must be of type {type}: \"{kind}\""));
            return false;
        }
        if (value is JsonObject o)
        {
            foreach (var name in schema["required"]?.AsArray().Select(r => r!.GetValue<string>()) ?? [])
            {
                if (!o.ContainsKey(name))
                {
                    errors.Add((Join(path, name), "Required value"));
                }
            }
        }
        if (schema["enum"] is JsonArray allowed && !allowed.Any(a => JsonNode.DeepEquals(a, value)))
        {
            errors.Add((path, $"Unsupported value: {value.ToJsonString()}: supported values: {string.Join(", ", allowed.Select(a => a!.ToJsonString()))}"));
        }
        if (kind is "integer" or "number")
        {
            var number = Num(value);
            if (Num(schema["minimum"]) is { } min && number < min)
            {
                errors.Add((path, $"Invalid value: {value.ToJsonString()}: {path} in body should be greater than or equal to {schema["minimum"]!.ToJsonString()}"));
            }
            if (Num(schema["maximum"]) is { } max && number > max)
            {
                errors.Add((path, $"Invalid value: {value.ToJsonString()}: {path} in body should be less than or equal to {schema["maximum"]!.ToJsonString()}"));
            }
        }
        if (kind == "string")
        {
            var text = value.GetValue<string>();
            var length = schema["minLength"] is null && schema["maxLength"] is null ? 0 : text.EnumerateRunes().Count();
            if (Num(schema["minLength"]) is { } shortest && length < shortest)
            {
                errors.Add((path, $"Invalid value: {value.ToJsonString()}: {path} in body should be at least {shortest:0} chars long"));
            }
            if (Num(schema["maxLength"]) is { } longest && length > longest)
            {
                errors.Add((path, $"Too long: may not be longer than {longest:0}"));
            }
            if (schema["pattern"]?.GetValue<string>() is { } pattern && !Patterns.GetOrAdd(pattern, p => new System.Text.RegularExpressions.Regex(p, System.Text.RegularExpressions.RegexOptions.ECMAScript)).IsMatch(text))
            {
                errors.Add((path, $"Invalid value: {value.ToJsonString()}: {path} in body should match '{pattern}'"));
            }
            if (schema["format"]?.GetValue<string>() is "date-time" or "datetime" && !IsDateTime(text))
            {
                errors.Add((path, $"Invalid value: {value.ToJsonString()}: {path} in body must be of type date-time: {value.ToJsonString()}"));
            }
        }
        if (value is JsonArray a)
        {
            if (Num(schema["minItems"]) is { } fewest && a.Count < fewest)
            {
                errors.Add((path, $"Invalid value: {a.Count}: {path} in body should have at least {fewest:0} items"));
            }
            if (Num(schema["maxItems"]) is { } most && a.Count > most)
            {
                errors.Add((path, $"Too many: {a.Count}: must have at most {most:0} items"));
            }
        }
        return true;
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, System.Text.RegularExpressions.Regex> Patterns = new(StringComparer.Ordinal);

    private static readonly System.Text.RegularExpressions.Regex DateTime = new(
        @"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", System.Text.RegularExpressions.RegexOptions.CultureInvariant);

    /// <summary>
    /// The one string format XLB's CRDs use, checked as the API server checks it: an RFC 3339
    /// date-time (a real date, hours to 23, minutes and seconds to 59, a zone: Z or ±hh:mm).
    /// </summary>
    private static bool IsDateTime(string text)
    {
        var m = DateTime.Match(text);
        if (!m.Success)
        {
            return false;
        }
        int Part(int i) => int.Parse(m.Groups[i].ValueSpan, System.Globalization.CultureInfo.InvariantCulture);
        var (year, month, day) = (Part(1), Part(2), Part(3));
        return year >= 1 && month is >= 1 and <= 12 && day >= 1 && day <= System.DateTime.DaysInMonth(year, month)
            && Part(4) <= 23 && Part(5) <= 59 && Part(6) <= 59;
    }

    /// <summary>A number of the schema or the object, however it is held (a CLR number or parsed JSON).</summary>
    private static double? Num(JsonNode? node) =>
        node is null ? null : double.Parse(node.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// Pruning, as the API server does for a structural schema: a field the schema does not know
    /// is dropped (in objects with properties and no additionalProperties, not under
    /// x-kubernetes-preserve-unknown-fields); metadata is the server's own and is left alone.
    /// </summary>
    public static void Prune(JsonObject schema, JsonNode? value, string path = "")
    {
        if (schema["x-kubernetes-preserve-unknown-fields"]?.GetValue<bool>() == true || path == "metadata")
        {
            return;
        }
        switch (value)
        {
            case JsonObject o when schema["additionalProperties"] is JsonObject each:
                foreach (var (name, child) in o.ToList())
                {
                    Prune(each, child, Join(path, name));
                }
                break;
            case JsonObject o when schema["properties"] is JsonObject properties:
                foreach (var (name, child) in o.ToList())
                {
                    if (properties[name] is JsonObject known)
                    {
                        Prune(known, child, Join(path, name));
                    }
                    else if (path.Length > 0 || name is not ("apiVersion" or "kind"))
                    {
                        o.Remove(name);
                    }
                }
                break;
            case JsonArray a when schema["items"] is JsonObject items:
                foreach (var element in a)
                {
                    Prune(items, element, path + "[]");
                }
                break;
        }
    }

    /// <summary>
    /// Structural defaulting, as the API server does before it validates and stores: every absent
    /// property with a default gets it (a copy), in every object present, list element and map
    /// value; a default of {} makes an object whose own properties are then defaulted.
    /// </summary>
    public static void Default(JsonObject schema, JsonNode? value) => Default(schema, value, keysOnly: false);

    /// <summary>
    /// Server-side apply's defaulting of an applied configuration: only the keys of list-map
    /// elements that have a default (a Service port's protocol), so that an element the applier
    /// gave without its key field is the same element as the stored, defaulted one.
    /// </summary>
    public static void DefaultKeys(JsonObject schema, JsonNode? applied) => Default(schema, applied, keysOnly: true);

    private static void Default(JsonObject schema, JsonNode? value, bool keysOnly)
    {
        switch (value)
        {
            case JsonObject o:
                foreach (var (name, child) in schema["properties"]?.AsObject() ?? [])
                {
                    if (!keysOnly && !o.ContainsKey(name) && child!["default"] is { } d)
                    {
                        o[name] = d.DeepClone();
                    }
                    Default(child!.AsObject(), o[name], keysOnly);
                }
                if (schema["additionalProperties"] is JsonObject each)
                {
                    foreach (var (_, child) in o.ToList())
                    {
                        Default(each, child, keysOnly);
                    }
                }
                break;
            case JsonArray a when schema["items"] is JsonObject items:
                var keys = schema["x-kubernetes-list-type"]?.GetValue<string>() == "map" ? schema["x-kubernetes-list-map-keys"]?.AsArray() : null;
                foreach (var element in a)
                {
                    if (keysOnly && element is JsonObject item)
                    {
                        foreach (var key in keys?.Select(k => k!.GetValue<string>()) ?? [])
                        {
                            if (!item.ContainsKey(key) && items["properties"]?[key]?["default"] is { } d)
                            {
                                item[key] = d.DeepClone();
                            }
                        }
                    }
                    Default(items, element, keysOnly);
                }
                break;
        }
    }
}
