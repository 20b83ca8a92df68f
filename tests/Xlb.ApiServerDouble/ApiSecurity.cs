using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Http;

namespace Xlb.ApiServerDouble;

/// <summary>
/// HTTPS and authentication for the double: a request passes with a bearer token from
/// <see cref="Tokens"/> or with a client certificate issued by <see cref="ClientCa"/>.
/// Tokens can be replaced while the server runs (service account token rotation).
/// </summary>
public sealed class ApiSecurity(X509Certificate2 serverCertificate)
{
    public X509Certificate2 ServerCertificate { get; } = serverCertificate;
    public X509Certificate2? ClientCa { get; init; }
    public IReadOnlySet<string> Tokens { get; set; } = new HashSet<string>();
    /// <summary>The user each token authenticates as (a token not listed here is user "token-user").</summary>
    public IReadOnlyDictionary<string, string> Users { get; set; } = new Dictionary<string, string>();
}

/// <summary>What an authorizer decides on: who asks to do what to which object (Kubernetes' request attributes).</summary>
public sealed record AccessRequest(string User, string Verb, string Group, string Resource, string? Subresource, string? Namespace, string? Name)
{
    public override string ToString() =>
        $"{User} {Verb} {(Group.Length == 0 ? "" : Group + "/")}{Resource}{(Subresource is null ? "" : "/" + Subresource)}{(Namespace is null ? "" : " in " + Namespace)}{(Name is null ? "" : " " + Name)}";
}

public sealed partial class ApiServer
{
    private static async Task<bool> AuthenticateAsync(HttpContext ctx, ApiSecurity security)
    {
        var header = ctx.Request.Headers.Authorization.ToString();
        if (header.StartsWith("Bearer ", StringComparison.Ordinal) && security.Tokens.Contains(header["Bearer ".Length..]))
        {
            ctx.Items[UserKey] = security.Users.GetValueOrDefault(header["Bearer ".Length..], "token-user");
            return true;
        }
        if (security.ClientCa is null || await ctx.Connection.GetClientCertificateAsync(ctx.RequestAborted) is not { } cert)
        {
            return false;
        }
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(security.ClientCa);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        ctx.Items[UserKey] = cert.GetNameInfo(X509NameType.SimpleName, forIssuer: false);
        return chain.Build(cert);
    }

    private const string UserKey = "xlb.user";

    /// <summary>The verb RBAC checks for a request (Kubernetes' mapping of HTTP methods onto API verbs).</summary>
    private static string Verb(HttpContext ctx, string? name) => ctx.Request.Method switch
    {
        "GET" or "HEAD" when ctx.Request.Query["watch"] is ["true" or "1"] => "watch",
        "GET" or "HEAD" => name is null ? "list" : "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => name is null ? "deletecollection" : "delete",
        _ => ctx.Request.Method.ToLowerInvariant(),
    };

    private void Authorize(HttpContext ctx, Target t)
    {
        if (Authorizer is not { } authorize)
        {
            return;
        }
        var user = ctx.Items.TryGetValue(UserKey, out var u) && u is string s ? s : "system:anonymous";
        var request = new AccessRequest(user, Verb(ctx, t.Name), t.Type.Group, t.Type.Plural, t.Subresource, t.Namespace, t.Name);
        if (!authorize(request))
        {
            var what = t.Subresource is null ? t.Type.Plural : $"{t.Type.Plural}/{t.Subresource}";
            var group = t.Type.Group.Length == 0 ? "" : "." + t.Type.Group;
            throw new ApiError(System.Net.HttpStatusCode.Forbidden, "Forbidden",
                $"{t.Type.Plural}{group}{(t.Name is null ? "" : $" \"{t.Name}\"")} is forbidden: User \"{user}\" cannot {request.Verb} resource \"{what}\" in API group \"{t.Type.Group}\"{(t.Namespace is null ? " at the cluster scope" : $" in the namespace \"{t.Namespace}\"")}");
        }
    }
}
