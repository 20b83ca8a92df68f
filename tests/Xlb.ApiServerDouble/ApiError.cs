using System.Net;
using System.Text.Json.Nodes;

namespace Xlb.ApiServerDouble;

/// <summary>
/// A failed request, rendered as a metav1.Status object with the reason and code the real server
/// uses (API conventions, "Response Status Kind").
/// </summary>
public sealed class ApiError(HttpStatusCode code, string reason, string message, JsonObject? details = null) : Exception(message)
{
    public HttpStatusCode Code { get; } = code;
    public string Reason { get; } = reason;
    public JsonObject? Details { get; } = details;

    public JsonObject ToStatus() => Status(Code, Reason, Message, Details);

    public static JsonObject Status(HttpStatusCode code, string reason, string message, JsonObject? details = null)
    {
        var status = new JsonObject
        {
            ["kind"] = "Status",
            ["apiVersion"] = "v1",
            ["metadata"] = new JsonObject(),
            ["status"] = "Failure",
            ["message"] = message,
            ["reason"] = reason,
            ["code"] = (int)code,
        };
        if (details is not null)
        {
            status["details"] = details;
        }
        return status;
    }

    private static JsonObject Named(ResourceType type, string name) => new()
    {
        ["name"] = name,
        ["group"] = type.Group,
        ["kind"] = type.Plural,
    };

    public static ApiError NotFound(ResourceType type, string name) =>
        new(HttpStatusCode.NotFound, "NotFound", $"{type.QualifiedName} \"{name}\" not found", Named(type, name));

    public static ApiError AlreadyExists(ResourceType type, string name) =>
        new(HttpStatusCode.Conflict, "AlreadyExists", $"{type.QualifiedName} \"{name}\" already exists", Named(type, name));

    /// <summary>Optimistic concurrency failure; the message is the one clients and users see from the real server.</summary>
    public static ApiError Conflict(ResourceType type, string name, string why) =>
        new(HttpStatusCode.Conflict, "Conflict", $"Operation cannot be fulfilled on {type.QualifiedName} \"{name}\": {why}", Named(type, name));

    public static ApiError Invalid(ResourceType type, string name, string field, string why) => Invalid(type, name, [(field, why)]);

    /// <summary>
    /// 422 Invalid with a cause per field error, the message as the server words it:
    /// "Kind.group "name" is invalid: field: why", several errors in brackets, comma-separated.
    /// </summary>
    public static ApiError Invalid(ResourceType type, string name, IReadOnlyList<(string Field, string Why)> errors)
    {
        var details = Named(type, name);
        details["causes"] = new JsonArray([.. errors.Select(e => (JsonNode)new JsonObject { ["reason"] = "FieldValueInvalid", ["message"] = e.Why, ["field"] = e.Field })]);
        var each = errors.Select(e => $"{e.Field}: {e.Why}").ToList();
        var kind = type.Group.Length == 0 ? type.Kind : $"{type.Kind}.{type.Group}";
        return new(HttpStatusCode.UnprocessableEntity, "Invalid", $"{kind} \"{name}\" is invalid: {(each.Count == 1 ? each[0] : "[" + string.Join(", ", each) + "]")}", details);
    }

    public static ApiError BadRequest(string message) => new(HttpStatusCode.BadRequest, "BadRequest", message);

    public static ApiError MethodNotAllowed(string message) => new(HttpStatusCode.MethodNotAllowed, "MethodNotAllowed", message);

    /// <summary>410 Gone with reason Expired: a watch or continue token older than the compaction window.</summary>
    public static ApiError Expired(string message) => new(HttpStatusCode.Gone, "Expired", message);
}
