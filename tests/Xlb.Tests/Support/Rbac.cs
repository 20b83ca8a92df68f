using System.Text.Json.Nodes;
using Xlb.ApiServerDouble;

namespace Xlb.Tests.Support;

/// <summary>
/// Kubernetes RBAC over a set of Roles, ClusterRoles and their bindings, as the API server
/// evaluates it: a request is allowed when some rule bound to the user matches its API group,
/// resource (with subresource as "resource/sub"), verb and, where a rule names them, the object
/// name. A ClusterRoleBinding grants everywhere; a RoleBinding grants only in its namespace.
/// Service accounts authenticate as system:serviceaccount:NAMESPACE:NAME.
/// </summary>
public sealed class Rbac
{
    private sealed record Rule(string[] Groups, string[] Resources, string[] Verbs, string[] Names);

    private readonly List<(string User, string? Namespace, Rule Rule)> _grants = [];

    public Rbac(IEnumerable<JsonObject> objects)
    {
        var all = objects.ToList();
        List<Rule> RulesOf(string kind, string name, string? ns) =>
            [.. all.Where(o => o["kind"]?.GetValue<string>() == kind && o["metadata"]?["name"]?.GetValue<string>() == name
                    && (kind == "ClusterRole" || o["metadata"]?["namespace"]?.GetValue<string>() == ns))
                .SelectMany(o => o["rules"]?.AsArray() ?? [])
                .Select(r => new Rule(Strings(r!["apiGroups"]), Strings(r["resources"]), Strings(r["verbs"]), Strings(r["resourceNames"])))];
        foreach (var binding in all.Where(o => o["kind"]?.GetValue<string>() is "RoleBinding" or "ClusterRoleBinding"))
        {
            var scope = binding["kind"]!.GetValue<string>() == "RoleBinding" ? binding["metadata"]?["namespace"]?.GetValue<string>() ?? throw new InvalidOperationException($"RoleBinding {binding["metadata"]?["name"]} has no namespace") : null;
            var role = binding["roleRef"]!;
            var rules = RulesOf(role["kind"]!.GetValue<string>(), role["name"]!.GetValue<string>(), scope);
            foreach (var subject in binding["subjects"]?.AsArray() ?? [])
            {
                var user = subject!["kind"]!.GetValue<string>() == "ServiceAccount"
                    ? $"system:serviceaccount:{subject["namespace"]?.GetValue<string>() ?? scope}:{subject["name"]!.GetValue<string>()}"
                    : subject["name"]!.GetValue<string>();
                _grants.AddRange(rules.Select(r => (user, scope, r)));
            }
        }
    }

    private static string[] Strings(JsonNode? node) => node?.AsArray().Select(n => n!.GetValue<string>()).ToArray() ?? [];

    private static bool Has(string[] values, string value) => values.Contains("*") || values.Contains(value);

    public bool Allows(AccessRequest r)
    {
        var resource = r.Subresource is null ? r.Resource : $"{r.Resource}/{r.Subresource}";
        return _grants.Any(g => g.User == r.User
            && (g.Namespace is null || g.Namespace == r.Namespace)
            && Has(g.Rule.Groups, r.Group) && Has(g.Rule.Resources, resource) && Has(g.Rule.Verbs, r.Verb)
            && (g.Rule.Names.Length == 0 || (r.Name is not null && g.Rule.Names.Contains(r.Name))));
    }
}
