using System.Collections;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Xml.Linq;
using Xlb.Crds.Serialization;

namespace Xlb.Crds.Schema;

/// <summary>
/// Writes CustomResourceDefinitions from XLB's C# API types, which are the source of truth:
/// property names from the JSON contract, descriptions from the /// summaries, defaults from
/// the property initializers, required from C# `required`, and the rest from the attributes in
/// this namespace. Pure: the documentation XML is passed in.
/// </summary>
public sealed class CrdGenerator
{
    /// <summary>Every kind XLB serves, in the order the files are listed.</summary>
    public static IReadOnlyList<Type> Kinds { get; } = [typeof(LoadBalancerPool), typeof(VipShard), typeof(PortMapping), typeof(XlbNodeConfig), typeof(XlbNodeConfigChunk)];

    private readonly Dictionary<string, string> _docs;

    /// <param name="documentationXml">The compiler's XML documentation of Xlb.Crds (Xlb.Crds.xml).</param>
    public CrdGenerator(string documentationXml)
    {
        _docs = XDocument.Parse(documentationXml).Descendants("member")
            .Where(m => m.Element("summary") is not null)
            .ToDictionary(m => (string)m.Attribute("name")!, m => Normalize(m.Element("summary")!), StringComparer.Ordinal);
    }

    /// <summary>The file name a kind's CRD is written to (controller-gen's convention).</summary>
    public static string FileName(Type kind) => $"{XlbApi.Group}_{Crd(kind).Plural}.yaml";

    public JsonObject Generate(Type kind)
    {
        var crd = Crd(kind);
        var kindName = kind.Name;
        var version = new JsonObject
        {
            ["name"] = XlbApi.Version,
            ["served"] = true,
            ["storage"] = true,
            ["additionalPrinterColumns"] = new JsonArray([.. kind.GetCustomAttributes<PrinterColumnAttribute>().Select(Column)]),
            ["schema"] = new JsonObject { ["openAPIV3Schema"] = RootSchema(kind) },
        };
        if (kind.GetProperty("Status") is not null)
        {
            version["subresources"] = new JsonObject { ["status"] = new JsonObject() };
        }
        var names = new JsonObject
        {
            ["kind"] = kindName,
            ["listKind"] = kindName + "List",
            ["plural"] = crd.Plural,
            ["singular"] = kindName.ToLowerInvariant(),
            ["shortNames"] = new JsonArray([.. crd.ShortNames.Select(s => (JsonNode)JsonValue.Create(s))]),
            ["categories"] = new JsonArray("xlb"),
        };
        return new JsonObject
        {
            ["apiVersion"] = "apiextensions.k8s.io/v1",
            ["kind"] = "CustomResourceDefinition",
            ["metadata"] = new JsonObject { ["name"] = $"{crd.Plural}.{XlbApi.Group}" },
            ["spec"] = new JsonObject
            {
                ["group"] = XlbApi.Group,
                ["names"] = names,
                ["scope"] = crd.Scope.ToString(),
                ["versions"] = new JsonArray(version),
            },
        };
    }

    private static CrdAttribute Crd(Type kind) =>
        kind.GetCustomAttribute<CrdAttribute>() ?? throw new ArgumentException($"{kind.Name} has no [Crd] attribute", nameof(kind));

    private static JsonNode Column(PrinterColumnAttribute c)
    {
        var o = new JsonObject { ["name"] = c.Name, ["type"] = c.Type, ["jsonPath"] = c.JsonPath };
        if (c.Description is { } d)
        {
            o["description"] = d;
        }
        if (c.Priority != 0)
        {
            o["priority"] = c.Priority;
        }
        return o;
    }

    private JsonObject RootSchema(Type kind)
    {
        var properties = new JsonObject
        {
            ["apiVersion"] = new JsonObject { ["type"] = "string", ["description"] = "The versioned schema of this representation of an object." },
            ["kind"] = new JsonObject { ["type"] = "string", ["description"] = "The REST resource this object represents." },
            ["metadata"] = new JsonObject { ["type"] = "object" },
        };
        var required = new JsonArray();
        foreach (var p in new[] { "Spec", "Status" }.Select(kind.GetProperty).OfType<PropertyInfo>())
        {
            var name = p.Name;
            var schema = Schema(p.PropertyType, p, inStatus: name == "Status", depth: 0);
            properties[JsonName(p)] = schema;
            if (IsRequired(p))
            {
                required.Add(JsonName(p));
            }
        }
        var root = new JsonObject { ["description"] = Doc("T:" + kind.FullName), ["type"] = "object" };
        root["properties"] = properties;
        if (required.Count > 0)
        {
            root["required"] = required;
        }
        return root;
    }

    private JsonObject Schema(Type type, PropertyInfo? property, bool inStatus, int depth)
    {
        if (depth > 16)
        {
            throw new InvalidOperationException($"{type.Name}: the type graph is too deep (recursive?)");
        }
        type = Nullable.GetUnderlyingType(type) ?? type;
        var schema = new JsonObject();
        var description = property is null ? null : Doc($"P:{property.DeclaringType!.FullName}.{property.Name}") ?? Doc("T:" + type.FullName);
        if (description is not null)
        {
            schema["description"] = description;
        }
        if (type == typeof(IntOrString))
        {
            schema["x-kubernetes-int-or-string"] = true;
        }
        else if (type == typeof(string))
        {
            schema["type"] = "string";
        }
        else if (type == typeof(Duration))
        {
            schema["type"] = "string";
            schema["pattern"] = Duration.Pattern;
        }
        else if (type == typeof(int) || type == typeof(long))
        {
            schema["type"] = "integer";
            schema["format"] = type == typeof(int) ? "int32" : "int64";
        }
        else if (type == typeof(bool))
        {
            schema["type"] = "boolean";
        }
        else if (type.IsEnum)
        {
            schema["type"] = "string";
            schema["enum"] = new JsonArray([.. Enum.GetNames(type).Select(n => (JsonNode)JsonValue.Create(n))]);
        }
        else if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(Dictionary<,>))
        {
            schema["type"] = "object";
            schema["additionalProperties"] = Schema(type.GetGenericArguments()[1], null, inStatus, depth + 1);
        }
        else if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(List<>))
        {
            schema["type"] = "array";
            schema["items"] = Schema(type.GetGenericArguments()[0], null, inStatus, depth + 1);
        }
        else if ((type.IsClass || type.IsValueType) && type.Namespace == typeof(XlbApi).Namespace)
        {
            ObjectSchema(type, schema, inStatus, depth);
        }
        else
        {
            throw new InvalidOperationException($"{property?.DeclaringType?.Name}.{property?.Name}: no schema mapping for {type.Name}");
        }
        if (property is not null)
        {
            Annotate(property, schema, inStatus);
        }
        return schema;
    }

    private void ObjectSchema(Type type, JsonObject schema, bool inStatus, int depth)
    {
        schema["type"] = "object";
        var properties = new JsonObject();
        var required = new JsonArray();
        foreach (var p in ContractProperties(type))
        {
            properties[JsonName(p)] = Schema(p.PropertyType, p, inStatus, depth + 1);
            if (IsRequired(p))
            {
                required.Add(JsonName(p));
            }
        }
        schema["properties"] = properties;
        if (required.Count > 0)
        {
            schema["required"] = required;
        }
        Validations(type.GetCustomAttributes<ValidationAttribute>(), schema);
    }

    private static IEnumerable<PropertyInfo> ContractProperties(Type type) =>
        XlbJson.Options.GetTypeInfo(type).Properties
            .Select(p => (PropertyInfo)p.AttributeProvider!)
            .Where(p => p.GetCustomAttribute<System.Text.Json.Serialization.JsonIgnoreAttribute>() is null);

    private void Annotate(PropertyInfo p, JsonObject schema, bool inStatus)
    {
        if (p.GetCustomAttribute<RangeAttribute>() is { } range)
        {
            schema["minimum"] = range.Minimum;
            schema["maximum"] = range.Maximum;
        }
        if (p.GetCustomAttribute<LengthAttribute>() is { } length)
        {
            var isList = schema["type"]?.GetValue<string>() == "array";
            schema[isList ? "minItems" : "minLength"] = length.Minimum;
            schema[isList ? "maxItems" : "maxLength"] = length.Maximum;
        }
        if (p.GetCustomAttribute<PatternAttribute>() is { } pattern)
        {
            schema["pattern"] = pattern.Pattern;
        }
        if (p.GetCustomAttribute<FormatAttribute>() is { } format)
        {
            schema["format"] = format.Format;
        }
        if (p.GetCustomAttribute<ListMapAttribute>() is { } listMap)
        {
            schema["x-kubernetes-list-type"] = "map";
            schema["x-kubernetes-list-map-keys"] = new JsonArray([.. listMap.Keys.Select(k => (JsonNode)JsonValue.Create(k))]);
        }
        if (p.GetCustomAttribute<ListSetAttribute>() is not null)
        {
            schema["x-kubernetes-list-type"] = "set";
        }
        if (!inStatus && DefaultOf(p) is { } value)
        {
            schema["default"] = value;
        }
        var rules = p.GetCustomAttributes<ValidationAttribute>().ToList();
        if (p.GetCustomAttribute<ImmutableAttribute>() is { } immutable)
        {
            rules.Insert(0, new ValidationAttribute("self == oldSelf", immutable.Message));
        }
        Validations(rules, schema);
    }

    private static void Validations(IEnumerable<ValidationAttribute> rules, JsonObject schema)
    {
        var list = new JsonArray();
        foreach (var r in rules)
        {
            var o = new JsonObject { ["rule"] = r.Rule, ["message"] = r.Message };
            if (r.FieldPath is { } path)
            {
                o["fieldPath"] = path;
            }
            if (r.Reason is { } reason)
            {
                o["reason"] = reason;
            }
            list.Add(o);
        }
        if (list.Count > 0)
        {
            schema["x-kubernetes-validations"] = list;
        }
    }

    /// <summary>
    /// The value a fresh instance carries: scalars as themselves (empty strings and nulls are no
    /// default), nested objects as {} so the API server defaults their fields too. Lists have none.
    /// </summary>
    private static JsonNode? DefaultOf(PropertyInfo p)
    {
        if (IsRequired(p) || p.GetCustomAttribute<NoDefaultAttribute>() is not null || Nullable.GetUnderlyingType(p.PropertyType) is not null)
        {
            return null;
        }
        var owner = Activator.CreateInstance(p.DeclaringType!);
        var value = p.GetValue(owner);
        return value switch
        {
            null or "" or IList or IDictionary => null,
            _ when p.PropertyType.IsClass && p.PropertyType != typeof(string) => new JsonObject(),
            _ => JsonSerializer.SerializeToNode(value, p.PropertyType, XlbJson.Options),
        };
    }

    private static bool IsRequired(PropertyInfo p) => p.GetCustomAttribute<RequiredMemberAttribute>() is not null;

    private static string JsonName(PropertyInfo p) => XlbJson.Options.PropertyNamingPolicy!.ConvertName(p.Name);

    private string? Doc(string id) => _docs.GetValueOrDefault(id);

    /// <summary>Summary text with &lt;see cref&gt; turned into the member's name and whitespace folded.</summary>
    private static string Normalize(XElement summary)
    {
        var parts = summary.Nodes().Select(n => n switch
        {
            XText t => t.Value,
            XElement { Name.LocalName: "see" } e => ((string?)e.Attribute("cref"))?.Split('.').Last() ?? e.Value,
            XElement e => e.Value,
            _ => "",
        });
        return string.Join(' ', string.Concat(parts).Split((char[])[' ', '\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries));
    }
}
