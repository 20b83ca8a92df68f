using System.Net;
using System.Text;
using Xlb.ApiServerDouble;
using Xlb.Kube;
using Xlb.Tests.Support;

namespace Xlb.Tests.Kube;

/// <summary>Finding and using an API server: kubeconfig, in-cluster service account, precedence, TLS and tokens, against an HTTPS double.</summary>
public sealed class KubeConfigTests : IAsyncLifetime
{
    private readonly TestCertificates _certs = new();
    private readonly string _dir = Directory.CreateTempSubdirectory("xlb-kubeconfig-").FullName;
    private ApiServer _server = null!;
    private ApiSecurity _security = null!;
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync()
    {
        _security = new ApiSecurity(_certs.Server) { ClientCa = _certs.Ca, Tokens = new HashSet<string> { "token-1" } };
        _server = await ApiServer.StartAsync(security: _security);
    }

    public async ValueTask DisposeAsync()
    {
        await _server.DisposeAsync();
        _certs.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private static string B64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    private string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    private string Kubeconfig(string name, string cluster, string user, string? ns = "team-a") => Write(name, $"""
        apiVersion: v1
        kind: Config
        current-context: main
        contexts:
          - name: main
            context: {"{"}cluster: c, user: u{(ns is null ? "" : $", namespace: {ns}")}{"}"}
          - name: other
            context: {"{"}cluster: c, user: u, namespace: team-b{"}"}
        clusters:
          - name: c
            cluster:
              server: {_server.Url}
        {cluster}
        users:
          - name: u
            user:
        {user}
        """);

    private static async Task<int> NamespaceCountAsync(KubeConnection connection)
    {
        using var client = new KubeClient(connection, new KubeClientOptions { Retry = new RetryPolicy { MaxAttempts = 1 } });
        return (await client.ListAsync<KubeObject>(KubeResource.Namespaces, null, ct: Ct)).Items.Count;
    }

    [Fact]
    public async Task A_token_and_inline_CA_reach_the_server_and_the_context_namespace_applies()
    {
        var path = Kubeconfig("token.yaml",
            $"      certificate-authority-data: {B64(_certs.CaPem)}",
            "      token: token-1");
        var connection = KubeConfigLoader.Load(path);
        Assert.Equal("team-a", connection.Namespace);
        Assert.Contains("context main", connection.Source, StringComparison.Ordinal);
        Assert.True(await NamespaceCountAsync(connection) >= 4);
        Assert.Equal("team-b", KubeConfigLoader.Load(path, context: "other").Namespace);
    }

    [Fact]
    public async Task A_client_certificate_from_files_relative_to_the_kubeconfig_authenticates()
    {
        Write("ca.crt", _certs.CaPem);
        Write("client.crt", _certs.ClientPem);
        Write("client.key", _certs.ClientKeyPem);
        var path = Kubeconfig("cert.yaml",
            "      certificate-authority: ca.crt",
            "      client-certificate: client.crt\n      client-key: client.key");
        Assert.True(await NamespaceCountAsync(KubeConfigLoader.Load(path)) >= 4);
    }

    [Fact]
    public async Task A_server_certificate_from_another_CA_is_refused_unless_verification_is_skipped()
    {
        using var stranger = new TestCertificates("some-other-ca");
        var wrongCa = Kubeconfig("wrong.yaml", $"      certificate-authority-data: {B64(stranger.CaPem)}", "      token: token-1");
        var e = await Assert.ThrowsAsync<KubeApiException>(() => NamespaceCountAsync(KubeConfigLoader.Load(wrongCa)));
        Assert.Equal("Unreachable", e.Reason);
        var insecure = Kubeconfig("insecure.yaml", "      insecure-skip-tls-verify: true", "      token: token-1");
        Assert.True(await NamespaceCountAsync(KubeConfigLoader.Load(insecure)) >= 4);
    }

    [Fact]
    public async Task A_wrong_token_is_Unauthorized()
    {
        var path = Kubeconfig("bad.yaml", $"      certificate-authority-data: {B64(_certs.CaPem)}", "      token: not-the-token");
        var e = await Assert.ThrowsAsync<KubeApiException>(() => NamespaceCountAsync(KubeConfigLoader.Load(path)));
        Assert.Equal(HttpStatusCode.Unauthorized, e.Code);
    }

    [Fact]
    public async Task In_cluster_the_service_account_token_is_reread_when_it_rotates()
    {
        var sa = Directory.CreateDirectory(Path.Combine(_dir, "serviceaccount")).FullName;
        File.WriteAllText(Path.Combine(sa, "token"), "token-1");
        File.WriteAllText(Path.Combine(sa, "ca.crt"), _certs.CaPem);
        File.WriteAllText(Path.Combine(sa, "namespace"), "xlb-system");
        var env = new KubeConfigLoader.Environment(
            v => v switch { "KUBERNETES_SERVICE_HOST" => "127.0.0.1", "KUBERNETES_SERVICE_PORT" => _server.Url.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), _ => null },
            sa, null);
        var connection = KubeConfigLoader.Load(env: env);
        Assert.Equal("xlb-system", connection.Namespace);
        using var client = new KubeClient(connection);
        Assert.NotEmpty((await client.ListAsync<KubeObject>(KubeResource.Namespaces, null, ct: Ct)).Items);
        _security.Tokens = new HashSet<string> { "token-2" };
        File.WriteAllText(Path.Combine(sa, "token"), "token-2");
        File.SetLastWriteTimeUtc(Path.Combine(sa, "token"), DateTime.UtcNow.AddSeconds(5));
        Assert.NotEmpty((await client.ListAsync<KubeObject>(KubeResource.Namespaces, null, ct: Ct)).Items);
    }

    [Fact]
    public void The_flag_wins_over_KUBECONFIG_which_wins_over_in_cluster_and_nothing_found_is_an_error()
    {
        var flag = Kubeconfig("flag.yaml", "", "      token: a", ns: "from-flag");
        var env = Kubeconfig("env.yaml", "", "      token: b", ns: "from-env");
        var sa = Directory.CreateDirectory(Path.Combine(_dir, "sa")).FullName;
        File.WriteAllText(Path.Combine(sa, "token"), "t");
        File.WriteAllText(Path.Combine(sa, "namespace"), "from-pod");
        KubeConfigLoader.Environment With(string? kubeconfig, bool inPod) => new(
            v => v switch { "KUBECONFIG" => kubeconfig, "KUBERNETES_SERVICE_HOST" when inPod => "10.96.0.1", _ => null },
            sa, _dir);
        Assert.Equal("from-flag", KubeConfigLoader.Load(flag, env: With(env, true)).Namespace);
        Assert.Equal("from-env", KubeConfigLoader.Load(env: With($"{Path.Combine(_dir, "missing.yaml")}:{env}", true)).Namespace);
        Assert.Equal("from-pod", KubeConfigLoader.Load(env: With(null, true)).Namespace);
        var none = Assert.Throws<KubeConfigException>(() => KubeConfigLoader.Load(env: With(null, false)));
        Assert.Contains("--kubeconfig", none.Message, StringComparison.Ordinal);
        Assert.Contains("KUBECONFIG", none.Message, StringComparison.Ordinal);
        Assert.Contains("KUBERNETES_SERVICE_HOST", none.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("      exec: {command: aws}", "exec")]
    [InlineData("      client-certificate-data: aGVsbG8=", "client-key")]
    public void Unusable_users_are_explained(string user, string expected)
    {
        var path = Kubeconfig("odd.yaml", "", user);
        var e = Assert.Throws<KubeConfigException>(() => KubeConfigLoader.Load(path));
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_file_or_context_is_explained()
    {
        Assert.Contains("does not exist", Assert.Throws<KubeConfigException>(() => KubeConfigLoader.Load(Path.Combine(_dir, "nope.yaml"))).Message, StringComparison.Ordinal);
        var path = Kubeconfig("ctx.yaml", "", "      token: a");
        Assert.Contains("context \"prod\" does not exist", Assert.Throws<KubeConfigException>(() => KubeConfigLoader.Load(path, context: "prod")).Message, StringComparison.Ordinal);
    }
}
