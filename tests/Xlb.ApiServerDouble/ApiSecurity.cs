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
}

public sealed partial class ApiServer
{
    private static async Task<bool> AuthenticateAsync(HttpContext ctx, ApiSecurity security)
    {
        var header = ctx.Request.Headers.Authorization.ToString();
        if (header.StartsWith("Bearer ", StringComparison.Ordinal) && security.Tokens.Contains(header["Bearer ".Length..]))
        {
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
        return chain.Build(cert);
    }
}
