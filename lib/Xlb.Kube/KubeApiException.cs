using System.Net;
using System.Text.Json.Nodes;

namespace Xlb.Kube;

/// <summary>A request the API server answered with a failure Status (or a transport failure that exhausted its retries).</summary>
public sealed class KubeApiException(HttpStatusCode code, string reason, string message, string operation, JsonObject? status = null)
    : Exception($"{operation}: {(int)code} {reason}: {message}")
{
    public HttpStatusCode Code { get; } = code;
    /// <summary>The Status reason: NotFound, AlreadyExists, Conflict, Invalid, Expired, TooManyRequests...</summary>
    public string Reason { get; } = reason;
    public string ServerMessage { get; } = message;
    public JsonObject? Status { get; } = status;

    public bool IsNotFound => Code == HttpStatusCode.NotFound;
    public bool IsConflict => Code == HttpStatusCode.Conflict;
    /// <summary>410 Gone, or reason Expired: the resourceVersion or continue token is older than the server keeps.</summary>
    public bool IsExpired => Code == HttpStatusCode.Gone || Reason is "Expired" or "Gone";

    public static KubeApiException FromStatus(JsonObject? status, HttpStatusCode fallback, string operation) => new(
        status?["code"] is JsonValue c && c.TryGetValue<int>(out var code) ? (HttpStatusCode)code : fallback,
        status?["reason"]?.GetValue<string>() ?? fallback.ToString(),
        status?["message"]?.GetValue<string>() ?? "",
        operation,
        status);
}
