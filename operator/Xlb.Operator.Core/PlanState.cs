using System.Net;
using Xlb.Crds;

namespace Xlb.Operator.Core;

public static partial class Planner
{
    /// <summary>The input looked up by name: namespace labels, Services, and each Service's EndpointSlices.</summary>
    internal sealed class InputIndex
    {
        public required Dictionary<string, Dictionary<string, string>?> Namespaces { get; init; }
        public required Dictionary<(string Namespace, string Name), Service> Services { get; init; }
        public required Dictionary<(string Namespace, string Name), List<EndpointSlice>> Slices { get; init; }
        /// <summary>Every EndpointSlice by namespace and name (how an informer tells them apart).</summary>
        public required HashSet<(string? Namespace, string? Name)> SliceNames { get; init; }

        public static InputIndex Of(PlanInput input)
        {
            var services = new Dictionary<(string Namespace, string Name), Service>(input.Services.Count);
            foreach (var s in input.Services)
            {
                services[ServiceKey(s)] = s;
            }
            var names = new HashSet<(string?, string?)>(input.EndpointSlices.Count);
            foreach (var s in input.EndpointSlices)
            {
                names.Add((s.Metadata.Namespace, s.Metadata.Name));
            }
            return new InputIndex
            {
                Namespaces = input.Namespaces.ToDictionary(n => n.Metadata.Name ?? "", n => n.Metadata.Labels, StringComparer.Ordinal),
                Services = services,
                Slices = Backends.IndexSlices(input.EndpointSlices),
                SliceNames = names,
            };
        }

        public static (string Namespace, string Name) ServiceKey(Service s) => (s.Metadata.Namespace ?? "default", s.Metadata.Name ?? "");

        /// <summary>The Service an EndpointSlice belongs to, by namespace and name (null: it names none).</summary>
        public static (string Namespace, string Name)? OwnerOf(EndpointSlice s) =>
            s.Metadata.Labels?.GetValueOrDefault(EndpointSlice.ServiceNameLabel) is { } service ? (s.Metadata.Namespace ?? "default", service) : null;
    }

    /// <summary>Where one mapping's outcome sits in a plan: its object, its validation, and its place among the valid mappings or the problems.</summary>
    internal sealed class MappingSlot
    {
        public required PortMapping Object { get; set; }
        public ValidMapping? Valid { get; set; }
        /// <summary>Index among the valid mappings (-1: not valid).</summary>
        public int Index { get; set; } = -1;
        /// <summary>Index of its validation problem among the plan's problems (-1: it validated).</summary>
        public int Problem { get; set; } = -1;
    }

    /// <summary>What one plan leaves for the next to continue from (see <see cref="Continue"/>). Owned by the memo.</summary>
    internal sealed class PlanState
    {
        public required PlanInput Input { get; set; }
        public required Dictionary<string, ResolvedPool> Pools { get; init; }
        public required Dictionary<string, ResolvedShard> Shards { get; init; }
        public required InputIndex Index { get; init; }
        public required List<Problem> Problems { get; set; }
        public required List<ValidMapping> Mappings { get; init; }
        public required Dictionary<string, MappingSlot> Slots { get; init; }
        public required Ipam.Result Vips { get; init; }
        public required Dictionary<IPAddress, PlacedVip> Placements { get; set; }
        public required List<NodeRender> Nodes { get; init; }
        public required Dictionary<(string Mapping, string Node), string> Digests { get; init; }
        public required PlanResult Result { get; set; }
        public required StatusTrack Track { get; init; }
        /// <summary>Whether a later plan may continue from this one at all (see <see cref="Continuable"/>).</summary>
        public required bool Continuable { get; init; }
        /// <summary>
        /// Mappings that got a VIP their status does not record yet (a first plan's, all of them): a
        /// later plan continues only once each of them records the very VIP it got (see <see cref="Continue"/>).
        /// </summary>
        public required HashSet<string> Unrecorded { get; set; }
        /// <summary>The mappings that take their backends from each Service.</summary>
        public Dictionary<(string Namespace, string Name), List<string>> MappingsByService { get; } = [];

        public PlanState IndexServices()
        {
            foreach (var (key, slot) in Slots)
            {
                if (ServiceOf(slot.Object) is { } service)
                {
                    if (!MappingsByService.TryGetValue(service, out var keys))
                    {
                        MappingsByService[service] = keys = [];
                    }
                    keys.Add(key);
                }
            }
            return this;
        }
    }

    /// <summary>The Service a mapping takes its backends from, by namespace and name.</summary>
    private static (string Namespace, string Name)? ServiceOf(PortMapping pm) =>
        pm.Spec.Backend.ServiceRef is { } svc ? (pm.Metadata.Namespace ?? "default", svc.Name) : null;

    /// <summary>The address a mapping's status records as its VIP (what allocation keeps it to), if any.</summary>
    internal static IPAddress? StatusVip(PortMapping pm) =>
        pm.Status?.Vips is [var first, ..] && IPAddress.TryParse(first, out var vip) ? vip : null;

    /// <summary>
    /// Whether a plan's allocation can be carried over to a later plan whose mappings record the same
    /// VIPs in their status: every object has its own name, and allocation read no VIP from the node
    /// configs (only mappings without a recorded VIP do that). Mappings that got a VIP without
    /// recording it (see <see cref="Unrecorded"/>) must record it before a plan continues.
    /// </summary>
    private static bool Continuable(PlanInput input, InputIndex index, Dictionary<string, MappingSlot> slots, Ipam.Result vips) =>
        slots.Count == input.PortMappings.Count
        && index.SliceNames.Count == input.EndpointSlices.Count && index.Services.Count == input.Services.Count
        && !vips.FromConfigs;

    /// <summary>The mappings that got a VIP their status does not record.</summary>
    private static HashSet<string> Unrecorded(Ipam.Result vips) =>
        vips.Unrecorded.Count == 0 ? [] : vips.Assigned.Keys.Select(m => m.Key).Where(vips.Unrecorded.Contains).ToHashSet(StringComparer.Ordinal);
}
