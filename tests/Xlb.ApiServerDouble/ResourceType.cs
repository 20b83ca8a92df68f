namespace Xlb.ApiServerDouble;

/// <summary>
/// A resource the double serves. What the real server learns from a CRD or a built-in type's
/// strategy is stated here: scope, the status subresource, list-map keys for server-side apply,
/// selectable fields and whether an update may omit metadata.resourceVersion.
/// </summary>
public sealed record ResourceType
{
    /// <summary>"" for the core group.</summary>
    public required string Group { get; init; }
    public required string Version { get; init; }
    public required string Kind { get; init; }
    /// <summary>The lower-case plural used in URLs.</summary>
    public required string Plural { get; init; }
    public required bool Namespaced { get; init; }
    public bool StatusSubresource { get; init; }
    public IReadOnlyList<string> ShortNames { get; init; } = [];
    public IReadOnlyList<string> Categories { get; init; } = [];

    /// <summary>
    /// Lists merged per element by server-side apply (x-kubernetes-list-type: map), keyed by the
    /// given fields. Paths are dot-separated from the object root. Every other list is atomic,
    /// except metadata.finalizers, which is a set.
    /// </summary>
    public IReadOnlyDictionary<string, string[]> ListMapKeys { get; init; } = new Dictionary<string, string[]>();

    /// <summary>
    /// Field selectors beyond metadata.name and metadata.namespace (which every resource has);
    /// CRDs declare these as selectableFields. Dot-separated paths.
    /// </summary>
    public IReadOnlyList<string> SelectableFields { get; init; } = [];

    /// <summary>
    /// Built-in types mostly allow a PUT without resourceVersion (last write wins); custom
    /// resources do not (the request fails with 422 Invalid).
    /// </summary>
    public bool AllowUnconditionalUpdate { get; init; } = true;

    /// <summary>How the kind's object names are checked: a subdomain unless the kind says otherwise.</summary>
    public NameRule NameRule { get; init; } = NameRule.Subdomain;

    /// <summary>A CRD's openAPIV3Schema: its x-kubernetes-validations are checked on every write (<see cref="Validation"/>).</summary>
    public System.Text.Json.Nodes.JsonObject? Schema { get; init; }

    public string ApiVersion => Group.Length == 0 ? Version : $"{Group}/{Version}";
    public string GroupVersion => ApiVersion;
    public string Singular => Kind.ToLowerInvariant();
    /// <summary>Group-qualified plural, as it appears in error messages ("services", "portmappings.xlb.io").</summary>
    public string QualifiedName => Group.Length == 0 ? Plural : $"{Plural}.{Group}";

    private static readonly Dictionary<string, string[]> Conditions = new() { ["status.conditions"] = ["type"] };

    public static ResourceType Namespaces { get; } = new()
    {
        Group = "", Version = "v1", Kind = "Namespace", Plural = "namespaces", Namespaced = false,
        StatusSubresource = true, ShortNames = ["ns"], NameRule = NameRule.Label,
    };

    public static ResourceType Nodes { get; } = new()
    {
        Group = "", Version = "v1", Kind = "Node", Plural = "nodes", Namespaced = false,
        StatusSubresource = true, ShortNames = ["no"],
        ListMapKeys = new Dictionary<string, string[]> { ["status.conditions"] = ["type"], ["status.addresses"] = ["type"] },
    };

    public static ResourceType Services { get; } = new()
    {
        Group = "", Version = "v1", Kind = "Service", Plural = "services", Namespaced = true,
        StatusSubresource = true, ShortNames = ["svc"], Categories = ["all"], NameRule = NameRule.Dns1035Label,
        ListMapKeys = new Dictionary<string, string[]> { ["spec.ports"] = ["port", "protocol"], ["status.conditions"] = ["type"] },
    };

    public static ResourceType Events { get; } = new()
    {
        Group = "events.k8s.io", Version = "v1", Kind = "Event", Plural = "events", Namespaced = true,
        ShortNames = ["ev"],
    };

    public static ResourceType EndpointSlices { get; } = new()
    {
        Group = "discovery.k8s.io", Version = "v1", Kind = "EndpointSlice", Plural = "endpointslices", Namespaced = true,
    };

    public static ResourceType Leases { get; } = new()
    {
        Group = "coordination.k8s.io", Version = "v1", Kind = "Lease", Plural = "leases", Namespaced = true,
    };

    /// <summary>
    /// A custom resource as its CRD declares it: names, scope, status subresource, and the
    /// list-map keys of every list reachable without crossing another list.
    /// </summary>
    public static ResourceType FromCrd(System.Text.Json.Nodes.JsonObject crd)
    {
        var spec = crd["spec"]!;
        var names = spec["names"]!;
        var version = spec["versions"]!.AsArray().First(v => v!["storage"]!.GetValue<bool>())!;
        var keys = new Dictionary<string, string[]>();
        Collect(version["schema"]!["openAPIV3Schema"]!.AsObject(), "");
        return new ResourceType
        {
            Group = spec["group"]!.GetValue<string>(),
            Version = version["name"]!.GetValue<string>(),
            Kind = names["kind"]!.GetValue<string>(),
            Plural = names["plural"]!.GetValue<string>(),
            Namespaced = spec["scope"]!.GetValue<string>() == "Namespaced",
            StatusSubresource = version["subresources"]?["status"] is not null,
            ShortNames = [.. names["shortNames"]?.AsArray().Select(n => n!.GetValue<string>()) ?? []],
            Categories = [.. names["categories"]?.AsArray().Select(n => n!.GetValue<string>()) ?? []],
            ListMapKeys = keys,
            AllowUnconditionalUpdate = false,
            Schema = version["schema"]!["openAPIV3Schema"]!.DeepClone().AsObject(),
        };

        void Collect(System.Text.Json.Nodes.JsonObject schema, string path)
        {
            foreach (var (name, child) in schema["properties"]?.AsObject() ?? [])
            {
                var at = path.Length == 0 ? name : $"{path}.{name}";
                if (child!["x-kubernetes-list-type"]?.GetValue<string>() == "map")
                {
                    keys[at] = [.. child["x-kubernetes-list-map-keys"]!.AsArray().Select(k => k!.GetValue<string>())];
                }
                if (child["type"]?.GetValue<string>() == "object")
                {
                    Collect(child.AsObject(), at);
                }
            }
        }
    }

    /// <summary>XLB's kinds, from the CRDs the types generate (the same ones crds/ holds).</summary>
    public static IReadOnlyList<ResourceType> XlbKinds { get; } =
        [.. Crds.Schema.CrdGenerator.Kinds.Select(k => FromCrd(new Crds.Schema.CrdGenerator("<doc/>").Generate(k)))];

    /// <summary>What a fresh double serves: the built-in kinds XLB reads and XLB's own kinds.</summary>
    public static IReadOnlyList<ResourceType> Defaults { get; } =
        [Namespaces, Nodes, Services, Events, EndpointSlices, Leases, .. XlbKinds];
}
