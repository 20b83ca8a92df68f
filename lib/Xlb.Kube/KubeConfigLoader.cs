using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Nodes;
using Xlb.Crds.Serialization;

namespace Xlb.Kube;

/// <summary>
/// Finds the API server in a fixed order and says which source it used: the --kubeconfig flag,
/// then $KUBECONFIG, then the pod's service account, then ~/.kube/config (controller-runtime's
/// order). Nothing found is an error that lists what was tried; there is no localhost default.
/// </summary>
public static class KubeConfigLoader
{
    public const string ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

    public sealed record Environment(
        Func<string, string?> Variable,
        string ServiceAccountDirectory,
        string? Home)
    {
        public static Environment Process { get; } = new(
            System.Environment.GetEnvironmentVariable,
            ServiceAccountDir,
            System.Environment.GetFolderPath(System.Environment.SpecialFolder.UserProfile));
    }

    public static KubeConnection Load(string? kubeconfigFlag = null, string? context = null, Environment? env = null)
    {
        env ??= Environment.Process;
        if (!string.IsNullOrEmpty(kubeconfigFlag))
        {
            return FromKubeconfig([kubeconfigFlag], context, "--kubeconfig");
        }
        if (env.Variable("KUBECONFIG") is { Length: > 0 } list)
        {
            var files = list.Split(':', StringSplitOptions.RemoveEmptyEntries);
            return FromKubeconfig(files, context, "KUBECONFIG");
        }
        if (env.Variable("KUBERNETES_SERVICE_HOST") is { Length: > 0 } host)
        {
            return InCluster(host, env.Variable("KUBERNETES_SERVICE_PORT") ?? "443", env.ServiceAccountDirectory);
        }
        var home = env.Home is { Length: > 0 } h ? Path.Combine(h, ".kube", "config") : null;
        if (home is not null && File.Exists(home))
        {
            return FromKubeconfig([home], context, "~/.kube/config");
        }
        throw new KubeConfigException(
            "no Kubernetes API server configured: --kubeconfig was not given, KUBECONFIG is not set, " +
            "KUBERNETES_SERVICE_HOST is not set (not running in a pod)" +
            (home is null ? "" : $", and {home} does not exist"));
    }

    /// <summary>The pod's own service account: token (re-read on rotation), cluster CA and namespace.</summary>
    public static KubeConnection InCluster(string host, string port, string dir)
    {
        var token = Path.Combine(dir, "token");
        var ca = Path.Combine(dir, "ca.crt");
        if (!File.Exists(token))
        {
            throw new KubeConfigException($"in-cluster configuration: KUBERNETES_SERVICE_HOST is set but {token} does not exist (is automountServiceAccountToken off?)");
        }
        var authority = host.Contains(':') ? $"[{host}]" : host;
        var nsFile = Path.Combine(dir, "namespace");
        var roots = new X509Certificate2Collection();
        if (File.Exists(ca))
        {
            roots.ImportFromPemFile(ca);
        }
        return new KubeConnection
        {
            Server = new Uri($"https://{authority}:{port}"),
            Namespace = File.Exists(nsFile) ? File.ReadAllText(nsFile).Trim() : "default",
            CertificateAuthority = roots.Count > 0 ? roots : null,
            Token = new FileToken(token),
            Source = $"in-cluster service account ({dir})",
        };
    }

    /// <summary>
    /// Kubeconfig files merged as kubectl merges them: for every named cluster, user and context
    /// the first file that defines it wins, and so does the first current-context.
    /// </summary>
    public static KubeConnection FromKubeconfig(IReadOnlyList<string> files, string? contextName, string via)
    {
        var clusters = new Dictionary<string, (JsonObject Body, string Dir)>();
        var users = new Dictionary<string, (JsonObject Body, string Dir)>();
        var contexts = new Dictionary<string, JsonObject>();
        string? current = null;
        var read = 0;
        foreach (var file in files)
        {
            if (!File.Exists(file))
            {
                if (files.Count == 1)
                {
                    throw new KubeConfigException($"kubeconfig {file} (from {via}) does not exist");
                }
                continue;
            }
            read++;
            JsonObject doc;
            try
            {
                doc = Yaml.ReadDocuments(File.ReadAllText(file)).FirstOrDefault() as JsonObject ?? [];
            }
            catch (Exception e) when (e is YamlDotNet.Core.YamlException or IOException)
            {
                throw new KubeConfigException($"kubeconfig {file}: {e.Message}", e);
            }
            var dir = Path.GetDirectoryName(Path.GetFullPath(file))!;
            Collect(doc["clusters"], "cluster", dir, clusters);
            Collect(doc["users"], "user", dir, users);
            foreach (var (name, body, _) in Named(doc["contexts"], "context", dir))
            {
                contexts.TryAdd(name, body);
            }
            if (current is null && doc["current-context"]?.GetValue<string>() is { Length: > 0 } cc)
            {
                current = cc;
            }
        }
        if (read == 0)
        {
            throw new KubeConfigException($"none of the kubeconfig files in {via} exist: {string.Join(", ", files)}");
        }
        var where = $"kubeconfig {string.Join(":", files)} (from {via})";
        var ctxName = contextName ?? current ?? throw new KubeConfigException($"{where}: no current-context is set and no context was given");
        if (!contexts.TryGetValue(ctxName, out var ctx))
        {
            throw new KubeConfigException($"{where}: context \"{ctxName}\" does not exist");
        }
        var clusterName = ctx["cluster"]?.GetValue<string>() ?? "";
        if (!clusters.TryGetValue(clusterName, out var cluster))
        {
            throw new KubeConfigException($"{where}: context \"{ctxName}\" names cluster \"{clusterName}\", which does not exist");
        }
        var server = cluster.Body["server"]?.GetValue<string>();
        if (string.IsNullOrEmpty(server) || !Uri.TryCreate(server, UriKind.Absolute, out var uri))
        {
            throw new KubeConfigException($"{where}: cluster \"{clusterName}\" has no valid server URL");
        }
        var connection = new KubeConnection
        {
            Server = uri,
            Namespace = ctx["namespace"]?.GetValue<string>() is { Length: > 0 } ns ? ns : "default",
            InsecureSkipTlsVerify = cluster.Body["insecure-skip-tls-verify"]?.GetValue<bool>() ?? false,
            TlsServerName = cluster.Body["tls-server-name"]?.GetValue<string>(),
            CertificateAuthority = Certificates(cluster.Body, "certificate-authority", cluster.Dir, where),
            Source = $"{where}, context {ctxName}",
        };
        var userName = ctx["user"]?.GetValue<string>();
        if (userName is null)
        {
            return connection;
        }
        if (!users.TryGetValue(userName, out var user))
        {
            throw new KubeConfigException($"{where}: context \"{ctxName}\" names user \"{userName}\", which does not exist");
        }
        if (user.Body["exec"] is not null || user.Body["auth-provider"] is not null)
        {
            throw new KubeConfigException($"{where}: user \"{userName}\" uses an exec or auth-provider plugin, which XLB does not run; use a token or a client certificate");
        }
        return connection with
        {
            Token = user.Body["token"]?.GetValue<string>() is { Length: > 0 } token ? new StaticToken(token)
                : user.Body["tokenFile"]?.GetValue<string>() is { Length: > 0 } tokenFile ? new FileToken(Resolve(tokenFile, user.Dir))
                : null,
            ClientCertificate = ClientCertificate(user.Body, user.Dir, where),
        };
    }

    private static void Collect(JsonNode? list, string field, string dir, Dictionary<string, (JsonObject, string)> into)
    {
        foreach (var (name, body, d) in Named(list, field, dir))
        {
            into.TryAdd(name, (body, d));
        }
    }

    private static IEnumerable<(string Name, JsonObject Body, string Dir)> Named(JsonNode? list, string field, string dir)
    {
        foreach (var item in (list as JsonArray ?? []).OfType<JsonObject>())
        {
            if (item["name"]?.GetValue<string>() is { } name && item[field] is JsonObject body)
            {
                yield return (name, body, dir);
            }
        }
    }

    private static string Resolve(string path, string dir) => Path.IsPathRooted(path) ? path : Path.Combine(dir, path);

    /// <summary>PEM from "{field}-data" (base64) or the file "{field}".</summary>
    private static string? Pem(JsonObject body, string field, string dir, string where)
    {
        if (body[field + "-data"]?.GetValue<string>() is { Length: > 0 } data)
        {
            try
            {
                return Encoding.UTF8.GetString(Convert.FromBase64String(data));
            }
            catch (FormatException e)
            {
                throw new KubeConfigException($"{where}: {field}-data is not base64", e);
            }
        }
        if (body[field]?.GetValue<string>() is { Length: > 0 } file)
        {
            var path = Resolve(file, dir);
            return File.Exists(path) ? File.ReadAllText(path) : throw new KubeConfigException($"{where}: {field} {path} does not exist");
        }
        return null;
    }

    private static X509Certificate2Collection? Certificates(JsonObject body, string field, string dir, string where)
    {
        if (Pem(body, field, dir, where) is not { } pem)
        {
            return null;
        }
        var certs = new X509Certificate2Collection();
        certs.ImportFromPem(pem);
        return certs.Count > 0 ? certs : throw new KubeConfigException($"{where}: {field} holds no PEM certificate");
    }

    private static X509Certificate2? ClientCertificate(JsonObject user, string dir, string where)
    {
        var cert = Pem(user, "client-certificate", dir, where);
        var key = Pem(user, "client-key", dir, where);
        if (cert is null && key is null)
        {
            return null;
        }
        if (cert is null || key is null)
        {
            throw new KubeConfigException($"{where}: a client certificate needs both client-certificate and client-key");
        }
        try
        {
            return X509Certificate2.CreateFromPem(cert, key);
        }
        catch (System.Security.Cryptography.CryptographicException e)
        {
            throw new KubeConfigException($"{where}: the client certificate or key is not usable: {e.Message}", e);
        }
    }
}
