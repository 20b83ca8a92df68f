using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Xlb.ApiServerDouble;

/// <summary>How a kind's object names are checked (the kind's strategy in the real server).</summary>
public enum NameRule
{
    /// <summary>RFC 1123 subdomain, at most 253 characters: most kinds, every custom resource.</summary>
    Subdomain,
    /// <summary>RFC 1123 label, at most 63 characters: Namespace.</summary>
    Label,
    /// <summary>DNS-1035 label (starts with a letter), at most 63 characters: Service.</summary>
    Dns1035Label,
}

/// <summary>
/// What the API server checks of every object beside its kind's schema: the object's metadata
/// (apimachinery's ValidateObjectMeta: name, label keys and values, annotation keys and their
/// total size, finalizers, owner references), and of the built-in kinds XLB writes or reads, the
/// rules of their strategies that a client can break: an events.k8s.io Event's required fields and
/// lengths, a Lease's durations, an EndpointSlice's address type and addresses, a Service's ports
/// and the addresses in its load-balancer status. Errors are (field, message) in the server's
/// wording ("Invalid value: "x": ..."), and refuse the whole write as 422 Invalid.
/// </summary>
public static partial class ObjectRules
{
    public const int LabelValueMax = 63;
    public const int SubdomainMax = 253;
    public const int AnnotationsMaxBytes = 256 * 1024;

    private const string SubdomainMessage = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    private const string LabelMessage = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    private const string Dns1035Message = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
    private const string LabelValueMessage = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    private const string NamePartMessage = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    private const string QualifiedMessage = "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")]
    private static partial Regex Subdomain();

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    private static partial Regex Label();

    [GeneratedRegex("^[a-z]([-a-z0-9]*[a-z0-9])?$")]
    private static partial Regex Dns1035();

    [GeneratedRegex("^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")]
    private static partial Regex NamePart();

    /// <summary>The errors of an object's name under its kind's rule (checked when it is created; a name never changes).</summary>
    public static List<(string Field, string Message)> Name(NameRule rule, string name)
    {
        var errors = new List<(string, string)>();
        var (max, pattern, message) = rule switch
        {
            NameRule.Label => (LabelValueMax, Label(), LabelMessage),
            NameRule.Dns1035Label => (LabelValueMax, Dns1035(), Dns1035Message),
            _ => (SubdomainMax, Subdomain(), SubdomainMessage),
        };
        if (name.Length > max)
        {
            errors.Add(("metadata.name", Invalid(name, $"must be no more than {max} characters")));
        }
        if (!pattern.IsMatch(name))
        {
            errors.Add(("metadata.name", Invalid(name, message)));
        }
        return errors;
    }

    /// <summary>The errors of <paramref name="obj"/>'s metadata, and of its spec and status where its kind has rules here.</summary>
    public static List<(string Field, string Message)> Check(ResourceType type, JsonObject obj)
    {
        var errors = new List<(string, string)>();
        if (obj["metadata"] is JsonObject meta)
        {
            Metadata(meta, errors);
        }
        switch (type.ApiVersion, type.Kind)
        {
            case ("events.k8s.io/v1", "Event"): Event(obj, errors); break;
            case ("coordination.k8s.io/v1", "Lease"): Lease(obj, errors); break;
            case ("discovery.k8s.io/v1", "EndpointSlice"): EndpointSlice(obj, errors); break;
            case ("v1", "Service"): Service(obj, errors); break;
        }
        return errors;
    }

    private static void Metadata(JsonObject meta, List<(string, string)> errors)
    {
        if (meta["labels"] is JsonObject labels)
        {
            foreach (var (key, value) in labels)
            {
                QualifiedName("metadata.labels", key, errors);
                var text = Text(value);
                if (text.Length > LabelValueMax)
                {
                    errors.Add(("metadata.labels", Invalid(text, $"must be no more than {LabelValueMax} characters")));
                }
                if (text.Length > 0 && !NamePart().IsMatch(text))
                {
                    errors.Add(("metadata.labels", Invalid(text, LabelValueMessage)));
                }
            }
        }
        if (meta["annotations"] is JsonObject annotations)
        {
            var bytes = 0;
            foreach (var (key, value) in annotations)
            {
                QualifiedName("metadata.annotations", key.ToLowerInvariant(), errors);
                bytes += Encoding.UTF8.GetByteCount(key) + Encoding.UTF8.GetByteCount(Text(value));
            }
            if (bytes > AnnotationsMaxBytes)
            {
                errors.Add(("metadata.annotations", $"Too long: must have at most {AnnotationsMaxBytes} bytes"));
            }
        }
        if (meta["finalizers"] is JsonArray finalizers)
        {
            for (var i = 0; i < finalizers.Count; i++)
            {
                QualifiedName($"metadata.finalizers[{i}]", Text(finalizers[i]), errors);
            }
        }
        if (meta["ownerReferences"] is JsonArray owners)
        {
            var controllers = 0;
            foreach (var owner in owners.OfType<JsonObject>())
            {
                foreach (var (field, what) in new[] { ("apiVersion", "version"), ("kind", "kind"), ("name", "name"), ("uid", "uid") })
                {
                    if (Text(owner[field]).Length == 0)
                    {
                        errors.Add(($"metadata.ownerReferences.{field}", Invalid("", $"{what} must not be empty")));
                    }
                }
                if (owner["controller"] is JsonValue c && c.TryGetValue<bool>(out var controller) && controller)
                {
                    controllers++;
                }
            }
            if (controllers > 1)
            {
                errors.Add(("metadata.ownerReferences", $"Invalid value: {owners.ToJsonString()}: Only one reference can have Controller set to true. Found \"true\" in references for {controllers} owners"));
            }
        }
    }

    /// <summary>A qualified name (label or annotation key, finalizer): an optional DNS subdomain prefix and '/', then a name part of at most 63 characters.</summary>
    private static void QualifiedName(string field, string value, List<(string, string)> errors)
    {
        var parts = value.Split('/');
        string name;
        switch (parts.Length)
        {
            case 1:
                name = parts[0];
                break;
            case 2:
                name = parts[1];
                if (parts[0].Length == 0)
                {
                    errors.Add((field, Invalid(value, "prefix part must be non-empty")));
                }
                else if (parts[0].Length > SubdomainMax || !Subdomain().IsMatch(parts[0]))
                {
                    errors.Add((field, Invalid(value, "prefix part " + (parts[0].Length > SubdomainMax ? $"must be no more than {SubdomainMax} characters" : SubdomainMessage))));
                }
                break;
            default:
                errors.Add((field, Invalid(value, QualifiedMessage)));
                return;
        }
        if (name.Length == 0)
        {
            errors.Add((field, Invalid(value, "name part must be non-empty")));
            return;
        }
        if (name.Length > LabelValueMax)
        {
            errors.Add((field, Invalid(value, $"name part must be no more than {LabelValueMax} characters")));
        }
        if (!NamePart().IsMatch(name))
        {
            errors.Add((field, Invalid(value, NamePartMessage)));
        }
    }

    /// <summary>events.k8s.io/v1 (the API server's ValidateEventCreate for that group): lengths count bytes, as Go's len does.</summary>
    private static void Event(JsonObject e, List<(string, string)> errors)
    {
        if (Text(e["eventTime"]).Length == 0)
        {
            errors.Add(("eventTime", "Required value"));
        }
        var type = Text(e["type"]);
        if (type is not ("Normal" or "Warning"))
        {
            errors.Add(("type", Invalid(type, $"has invalid value: {type}")));
        }
        var controller = Text(e["reportingController"]);
        if (controller.Length == 0)
        {
            errors.Add(("reportingController", "Required value"));
        }
        else
        {
            QualifiedName("reportingController", controller, errors);
        }
        foreach (var field in new[] { "reportingInstance", "action", "reason" })
        {
            var value = Text(e[field]);
            if (value.Length == 0)
            {
                errors.Add((field, "Required value"));
            }
            if (Encoding.UTF8.GetByteCount(value) > 128)
            {
                errors.Add((field, Invalid("", "can have at most 128 characters")));
            }
        }
        if (Encoding.UTF8.GetByteCount(Text(e["note"])) > 1024)
        {
            errors.Add(("note", Invalid("", "can have at most 1024 characters")));
        }
    }

    private static void Lease(JsonObject lease, List<(string, string)> errors)
    {
        if (lease["spec"]?["leaseDurationSeconds"] is JsonValue d && Number(d) is { } duration && duration <= 0)
        {
            errors.Add(("spec.leaseDurationSeconds", $"Invalid value: {duration}: must be greater than 0"));
        }
        if (lease["spec"]?["leaseTransitions"] is JsonValue t && Number(t) is { } transitions && transitions < 0)
        {
            errors.Add(("spec.leaseTransitions", $"Invalid value: {transitions}: must be greater than or equal to 0"));
        }
    }

    private static void EndpointSlice(JsonObject slice, List<(string, string)> errors)
    {
        var type = Text(slice["addressType"]);
        if (type is not ("IPv4" or "IPv6" or "FQDN"))
        {
            errors.Add(("addressType", $"Unsupported value: \"{type}\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""));
            return;
        }
        var endpoints = slice["endpoints"] as JsonArray ?? [];
        if (endpoints.Count > 1000)
        {
            errors.Add(("endpoints", $"Too many: {endpoints.Count}: must have at most 1000 items"));
        }
        for (var i = 0; i < endpoints.Count; i++)
        {
            var addresses = endpoints[i]?["addresses"] as JsonArray ?? [];
            var at = $"endpoints[{i}].addresses";
            if (addresses.Count is 0 or > 100)
            {
                errors.Add((at, addresses.Count == 0 ? "Required value: must contain at least 1 address" : $"Too many: {addresses.Count}: must have at most 100 items"));
            }
            for (var j = 0; j < addresses.Count; j++)
            {
                var address = Text(addresses[j]);
                var family = type == "IPv4" ? AddressFamily.InterNetwork : AddressFamily.InterNetworkV6;
                var ok = type == "FQDN"
                    ? address.Length <= SubdomainMax && Subdomain().IsMatch(address)
                    : IPAddress.TryParse(address, out var ip) && ip.AddressFamily == family && ip.ToString() == address;
                if (!ok)
                {
                    errors.Add(($"{at}[{j}]", Invalid(address, type == "FQDN" ? SubdomainMessage : $"must be a valid {type} address")));
                }
            }
        }
    }

    private static void Service(JsonObject service, List<(string, string)> errors)
    {
        var ports = service["spec"]?["ports"] as JsonArray ?? [];
        for (var i = 0; i < ports.Count; i++)
        {
            if (ports[i]?["port"] is JsonValue p && Number(p) is { } port && port is < 1 or > 65535)
            {
                errors.Add(($"spec.ports[{i}].port", $"Invalid value: {port}: must be between 1 and 65535, inclusive"));
            }
            var protocol = Text(ports[i]?["protocol"]);
            if (protocol.Length > 0 && protocol is not ("TCP" or "UDP" or "SCTP"))
            {
                errors.Add(($"spec.ports[{i}].protocol", $"Unsupported value: \"{protocol}\": supported values: \"SCTP\", \"TCP\", \"UDP\""));
            }
        }
        var ingress = service["status"]?["loadBalancer"]?["ingress"] as JsonArray ?? [];
        for (var i = 0; i < ingress.Count; i++)
        {
            var ip = Text(ingress[i]?["ip"]);
            if (ip.Length > 0 && !(IPAddress.TryParse(ip, out var parsed) && parsed.ToString() == ip))
            {
                errors.Add(($"status.loadBalancer.ingress[{i}].ip", Invalid(ip, "must be a valid IP address")));
            }
            var hostname = Text(ingress[i]?["hostname"]);
            if (hostname.Length > 0 && IPAddress.TryParse(hostname, out _))
            {
                errors.Add(($"status.loadBalancer.ingress[{i}].hostname", Invalid(hostname, "must be a DNS name, not an IP address")));
            }
            if (ingress[i]?["ipMode"] is not null && ip.Length == 0)
            {
                errors.Add(($"status.loadBalancer.ingress[{i}].ipMode", "Forbidden: may not be specified when `ip` is not set"));
            }
        }
    }

    private static string Invalid(string value, string message) => $"Invalid value: \"{value}\": {message}";

    private static string Text(JsonNode? node) => node is JsonValue v && v.TryGetValue<string>(out var s) ? s : "";

    /// <summary>A JSON number however it is held (a parsed element or a CLR number).</summary>
    private static long? Number(JsonValue value) =>
        long.TryParse(value.ToJsonString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : null;
}
