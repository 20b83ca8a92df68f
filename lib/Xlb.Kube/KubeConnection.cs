using System.Security.Cryptography.X509Certificates;

namespace Xlb.Kube;

/// <summary>Everything needed to reach one API server as one identity.</summary>
public sealed record KubeConnection
{
    public required Uri Server { get; init; }
    /// <summary>The namespace of the context (or of the pod): where namespaced objects go by default.</summary>
    public string Namespace { get; init; } = "default";
    /// <summary>Trusted roots for the server's certificate; null means the system store.</summary>
    public X509Certificate2Collection? CertificateAuthority { get; init; }
    public bool InsecureSkipTlsVerify { get; init; }
    public string? TlsServerName { get; init; }
    public X509Certificate2? ClientCertificate { get; init; }
    public ITokenSource? Token { get; init; }
    /// <summary>Where this came from, for log lines and errors ("kubeconfig /root/.kube/config, context kind").</summary>
    public string Source { get; init; } = "explicit";
}

/// <summary>A bearer token; a file-backed one is re-read when the file changes (bound service account tokens rotate).</summary>
public interface ITokenSource
{
    string? Current();
    /// <summary>The server said 401: read again before the retry.</summary>
    void Invalidate();
}

public sealed class StaticToken(string token) : ITokenSource
{
    public string? Current() => token;
    public void Invalidate() { }
}

/// <summary>
/// A token file that is re-read when its modification time changes, or after a 401; kubelet
/// rewrites projected service account tokens well before they expire.
/// </summary>
public sealed class FileToken(string path) : ITokenSource
{
    private readonly Lock _gate = new();
    private string? _token;
    private DateTime _stamp;

    public string Path => path;

    public string? Current()
    {
        lock (_gate)
        {
            var stamp = File.GetLastWriteTimeUtc(path);
            if (_token is null || stamp != _stamp)
            {
                _token = File.ReadAllText(path).Trim();
                _stamp = stamp;
            }
            return _token;
        }
    }

    public void Invalidate()
    {
        lock (_gate)
        {
            _token = null;
        }
    }
}

/// <summary>No way to reach an API server was found, or the one named is unusable.</summary>
public sealed class KubeConfigException(string message, Exception? inner = null) : Exception(message, inner);
