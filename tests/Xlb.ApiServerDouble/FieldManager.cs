using System.Net;
using System.Text.Json.Nodes;

namespace Xlb.ApiServerDouble;

/// <summary>
/// Field ownership (Server-Side Apply, "Field Management" and "Conflicts"), the subset the double
/// honours:
/// - ownership is tracked per (manager, operation, subresource) in metadata.managedFields as
///   FieldsV1; objects are granular, lists are atomic unless the resource declares list-map keys,
///   metadata.finalizers is a set;
/// - an apply conflicts when it sets a field another manager owns to a different value; force
///   takes the field over; equal values make the field shared;
/// - fields a manager applied before and no longer applies are removed, unless someone else owns
///   them;
/// - an update (create, PUT, merge patch) moves ownership of every field it changes to its manager.
/// Not modelled: apiVersion conversion of managed fields, managedFields sent by clients (the
/// server's own record is kept), the "before-first-apply" update entry.
/// </summary>
public static class FieldManager
{
    private const char Sep = '\n';

    /// <summary>metadata fields the server sets; they are never owned by a manager.</summary>
    private static readonly HashSet<string> ServerMetadata =
    [
        "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
        "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink",
    ];

    public sealed record Entry(string Manager, string Operation, string? Subresource, HashSet<string> Fields)
    {
        public bool SameSlot(Entry other) => Manager == other.Manager && Operation == other.Operation && Subresource == other.Subresource;
    }

    /// <summary>The fields a manager may touch through an endpoint: only status on /status, all but status on the main resource of a type with a status subresource.</summary>
    public static bool InScope(ResourceType type, string? subresource, string topField) =>
        subresource == "status" ? topField == "status" : !(type.StatusSubresource && topField == "status");

    public static HashSet<string> Collect(JsonObject? obj, ResourceType type, string? subresource)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        if (obj is null)
        {
            return set;
        }
        foreach (var (name, value) in obj)
        {
            if (name is "apiVersion" or "kind" || !InScope(type, subresource, name))
            {
                continue;
            }
            if (name == "metadata" && value is JsonObject meta)
            {
                foreach (var (field, v) in meta)
                {
                    if (!ServerMetadata.Contains(field))
                    {
                        Walk(v, type, "metadata." + field, $"f:metadata{Sep}f:{field}", set);
                    }
                }
                continue;
            }
            Walk(value, type, name, "f:" + name, set);
        }
        return set;
    }

    private static void Walk(JsonNode? node, ResourceType type, string schemaPath, string path, HashSet<string> set)
    {
        switch (node)
        {
            case JsonObject obj when obj.Count > 0:
                foreach (var (name, value) in obj)
                {
                    Walk(value, type, schemaPath + "." + name, path + Sep + "f:" + name, set);
                }
                break;
            case JsonArray list when type.ListMapKeys.TryGetValue(schemaPath, out var keys):
                foreach (var item in list.OfType<JsonObject>())
                {
                    var element = path + Sep + ElementKey(item, keys);
                    set.Add(element + Sep + ".");
                    foreach (var (name, value) in item)
                    {
                        Walk(value, type, schemaPath + "." + name, element + Sep + "f:" + name, set);
                    }
                }
                break;
            case JsonArray list when schemaPath == "metadata.finalizers":
                foreach (var item in list)
                {
                    set.Add(path + Sep + "v:" + (item?.ToJsonString() ?? "null"));
                }
                break;
            default:
                set.Add(path);
                break;
        }
    }

    private static string ElementKey(JsonObject item, string[] keys)
    {
        var key = new JsonObject();
        foreach (var k in keys.Order(StringComparer.Ordinal))
        {
            key[k] = item[k]?.DeepClone();
        }
        return "k:" + key.ToJsonString();
    }

    /// <summary>The node a field path names, or false when the object has no such field.</summary>
    public static bool TryGet(JsonNode? root, string path, out JsonNode? value)
    {
        value = root;
        foreach (var seg in path.Split(Sep))
        {
            if (seg == ".")
            {
                continue;
            }
            if (!Step(value, seg, out value, out _, out _))
            {
                return false;
            }
        }
        return true;
    }

    private static bool Step(JsonNode? node, string seg, out JsonNode? child, out JsonNode? parent, out int index)
    {
        parent = node;
        index = -1;
        child = null;
        if (seg.StartsWith("f:", StringComparison.Ordinal))
        {
            return node is JsonObject obj && obj.TryGetPropertyValue(seg[2..], out child);
        }
        if (node is not JsonArray list)
        {
            return false;
        }
        if (seg.StartsWith("k:", StringComparison.Ordinal))
        {
            var key = JsonNode.Parse(seg[2..])!.AsObject();
            for (var i = 0; i < list.Count; i++)
            {
                if (list[i] is JsonObject item && key.All(k => JsonNode.DeepEquals(item[k.Key], k.Value)))
                {
                    (child, index) = (item, i);
                    return true;
                }
            }
            return false;
        }
        if (seg.StartsWith("v:", StringComparison.Ordinal))
        {
            var wanted = JsonNode.Parse(seg[2..]);
            for (var i = 0; i < list.Count; i++)
            {
                if (JsonNode.DeepEquals(list[i], wanted))
                {
                    (child, index) = (list[i], i);
                    return true;
                }
            }
        }
        return false;
    }

    /// <summary>Removes the field (or list element) a path names; empty maps it leaves behind go too.</summary>
    public static void Remove(JsonObject root, string path)
    {
        var segs = path.Split(Sep).Where(s => s != ".").ToArray();
        var chain = new List<JsonNode?> { root };
        JsonNode? node = root;
        foreach (var seg in segs)
        {
            if (!Step(node, seg, out node, out _, out _))
            {
                return;
            }
            chain.Add(node);
        }
        for (var depth = segs.Length; depth >= 1; depth--)
        {
            var parent = chain[depth - 1];
            var seg = segs[depth - 1];
            if (parent is JsonObject obj)
            {
                obj.Remove(seg[2..]);
            }
            else if (parent is JsonArray list && Step(list, seg, out _, out _, out var i))
            {
                list.RemoveAt(i);
            }
            // Keep climbing only while the container just emptied is a map below the top level.
            if (depth - 1 < 2 || parent is not JsonObject { Count: 0 })
            {
                break;
            }
        }
    }

    /// <summary>Merges an applied configuration into the live object: maps per key, list-maps per element, sets as unions, the rest replaced.</summary>
    public static void Merge(JsonObject live, JsonObject applied, ResourceType type, string schemaPath = "")
    {
        foreach (var (name, value) in applied)
        {
            var path = schemaPath.Length == 0 ? name : schemaPath + "." + name;
            var current = live[name];
            if (value is JsonObject a && current is JsonObject l)
            {
                Merge(l, a, type, path);
            }
            else if (value is JsonArray items && current is JsonArray existing && type.ListMapKeys.TryGetValue(path, out var keys))
            {
                // Elements by their key (the first of equal keys), so a long list merges in linear time.
                var byKey = new Dictionary<string, JsonObject>(StringComparer.Ordinal);
                foreach (var e in existing.OfType<JsonObject>())
                {
                    byKey.TryAdd(ElementKey(e, keys), e);
                }
                foreach (var item in items.OfType<JsonObject>())
                {
                    var key = ElementKey(item, keys);
                    if (byKey.TryGetValue(key, out var match))
                    {
                        Merge(match, item, type, path);
                    }
                    else
                    {
                        var added = item.DeepClone().AsObject();
                        existing.Add(added);
                        byKey.Add(key, added);
                    }
                }
            }
            else if (value is JsonArray set && current is JsonArray have && path == "metadata.finalizers")
            {
                foreach (var item in set.Where(i => !have.Any(h => JsonNode.DeepEquals(h, i))))
                {
                    have.Add(item?.DeepClone());
                }
            }
            else
            {
                live[name] = value?.DeepClone();
            }
        }
    }

    public static List<Entry> Read(JsonObject obj)
    {
        var entries = new List<Entry>();
        if (obj["metadata"]?["managedFields"] is not JsonArray list)
        {
            return entries;
        }
        foreach (var item in list.OfType<JsonObject>())
        {
            var fields = new HashSet<string>(StringComparer.Ordinal);
            if (item["fieldsV1"] is JsonObject tree)
            {
                Flatten(tree, "", fields);
            }
            entries.Add(new Entry(
                item["manager"]?.GetValue<string>() ?? "",
                item["operation"]?.GetValue<string>() ?? "Update",
                item["subresource"]?.GetValue<string>(),
                fields));
        }
        return entries;
    }

    private static void Flatten(JsonObject tree, string prefix, HashSet<string> into)
    {
        foreach (var (key, child) in tree)
        {
            var path = prefix.Length == 0 ? key : prefix + Sep + key;
            if (key == "." || child is not JsonObject { Count: > 0 } sub)
            {
                into.Add(path);
            }
            else
            {
                Flatten(sub, path, into);
            }
        }
    }

    public static void Write(JsonObject obj, IEnumerable<Entry> entries, string apiVersion, string time)
    {
        var list = new JsonArray();
        foreach (var e in entries.Where(e => e.Fields.Count > 0))
        {
            var tree = new JsonObject();
            foreach (var path in e.Fields.Order(StringComparer.Ordinal))
            {
                var node = tree;
                foreach (var seg in path.Split(Sep))
                {
                    if (node[seg] is not JsonObject next)
                    {
                        next = new JsonObject();
                        node[seg] = next;
                    }
                    node = next;
                }
            }
            var entry = new JsonObject
            {
                ["manager"] = e.Manager,
                ["operation"] = e.Operation,
                ["apiVersion"] = apiVersion,
                ["time"] = time,
                ["fieldsType"] = "FieldsV1",
                ["fieldsV1"] = tree,
            };
            if (e.Subresource is not null)
            {
                entry["subresource"] = e.Subresource;
            }
            list.Add(entry);
        }
        var meta = (JsonObject)obj["metadata"]!;
        if (list.Count == 0)
        {
            meta.Remove("managedFields");
        }
        else
        {
            meta["managedFields"] = list;
        }
    }

    /// <summary>
    /// Server-side apply of <paramref name="applied"/> onto <paramref name="live"/> (null when the
    /// object does not exist yet). Returns the merged object with its managed fields; throws a 409
    /// naming every conflicting field and its owner unless <paramref name="force"/>.
    /// </summary>
    public static JsonObject Apply(JsonObject? live, JsonObject applied, ResourceType type, string manager, bool force, string? subresource, string time)
    {
        var result = live?.DeepClone().AsObject() ?? new JsonObject { ["metadata"] = new JsonObject() };
        var entries = Read(result);
        var me = new Entry(manager, "Apply", subresource, Collect(applied, type, subresource));
        var others = entries.Where(e => !e.SameSlot(me)).ToList();
        var conflicts = new List<(string Path, string Manager)>();
        foreach (var other in others)
        {
            foreach (var path in other.Fields.Intersect(me.Fields).Where(p => !p.EndsWith(Sep + ".", StringComparison.Ordinal)))
            {
                var hasLive = TryGet(result, path, out var liveValue);
                TryGet(applied, path, out var appliedValue);
                if (hasLive && !JsonNode.DeepEquals(liveValue, appliedValue))
                {
                    conflicts.Add((path, other.Manager));
                }
            }
        }
        if (conflicts.Count > 0 && !force)
        {
            throw ConflictError(type, applied["metadata"]?["name"]?.GetValue<string>() ?? "", conflicts);
        }
        foreach (var (path, _) in conflicts)
        {
            foreach (var other in others)
            {
                other.Fields.Remove(path);
            }
        }
        var previous = entries.FirstOrDefault(e => e.SameSlot(me))?.Fields ?? [];
        var ownedByOthers = others.SelectMany(o => o.Fields).ToHashSet(StringComparer.Ordinal);
        var removed = previous.Where(p => !me.Fields.Contains(p) && !ownedByOthers.Contains(p))
            .Where(p => !p.EndsWith(Sep + ".", StringComparison.Ordinal)
                || !ownedByOthers.Any(o => o.StartsWith(p[..^1], StringComparison.Ordinal)))
            .OrderByDescending(p => p.Count(c => c == Sep));
        foreach (var path in removed)
        {
            Remove(result, path);
        }
        var body = applied.DeepClone().AsObject();
        if (body["metadata"] is JsonObject appliedMeta)
        {
            foreach (var field in ServerMetadata)
            {
                appliedMeta.Remove(field);
            }
        }
        foreach (var (name, _) in body.ToList())
        {
            if (name is not ("apiVersion" or "kind" or "metadata") && !InScope(type, subresource, name))
            {
                body.Remove(name);
            }
        }
        Merge(result, body, type);
        Write(result, [.. others, me], type.ApiVersion, time);
        return result;
    }

    /// <summary>Ownership after an update: the manager takes every field it changed, every other manager loses it.</summary>
    public static void RecordUpdate(JsonObject? before, JsonObject after, ResourceType type, string manager, string? subresource, string time)
    {
        var entries = before is null ? [] : Read(before);
        var old = Collect(before, type, subresource);
        var now = Collect(after, type, subresource);
        var changed = now.Where(p => !old.Contains(p) || !Same(before, after, p)).ToHashSet(StringComparer.Ordinal);
        var gone = old.Where(p => !now.Contains(p)).ToList();
        var me = new Entry(manager, "Update", subresource, new HashSet<string>(StringComparer.Ordinal));
        foreach (var e in entries)
        {
            e.Fields.ExceptWith(changed);
            e.Fields.ExceptWith(gone);
        }
        var mine = entries.FirstOrDefault(e => e.SameSlot(me));
        if (mine is null)
        {
            entries.Add(me);
            mine = me;
        }
        mine.Fields.UnionWith(changed);
        Write(after, entries, type.ApiVersion, time);
    }

    private static bool Same(JsonObject? a, JsonObject b, string path) =>
        TryGet(a, path, out var x) && TryGet(b, path, out var y) && JsonNode.DeepEquals(x, y);

    private static ApiError ConflictError(ResourceType type, string name, List<(string Path, string Manager)> conflicts)
    {
        var causes = new JsonArray();
        foreach (var (path, owner) in conflicts)
        {
            causes.Add(new JsonObject
            {
                ["reason"] = "FieldManagerConflict",
                ["message"] = $"conflict with \"{owner}\"",
                ["field"] = Readable(path),
            });
        }
        var lines = conflicts.GroupBy(c => c.Manager)
            .Select(g => $"conflict with \"{g.Key}\": " + string.Join(", ", g.Select(c => Readable(c.Path))));
        var message = $"Apply failed with {conflicts.Count} conflict{(conflicts.Count == 1 ? "" : "s")}: " + string.Join("; ", lines);
        return new ApiError(HttpStatusCode.Conflict, "Conflict", message, new JsonObject
        {
            ["name"] = name,
            ["group"] = type.Group,
            ["kind"] = type.Plural,
            ["causes"] = causes,
        });
    }

    /// <summary>".spec.ports[port=80,protocol=\"TCP\"].targetPort", the notation of the real server's conflict messages.</summary>
    public static string Readable(string path)
    {
        var text = new System.Text.StringBuilder();
        foreach (var seg in path.Split(Sep))
        {
            if (seg.StartsWith("f:", StringComparison.Ordinal))
            {
                text.Append('.').Append(seg[2..]);
            }
            else if (seg.StartsWith("k:", StringComparison.Ordinal))
            {
                var key = JsonNode.Parse(seg[2..])!.AsObject();
                text.Append('[').Append(string.Join(",", key.Select(k => $"{k.Key}={k.Value?.ToJsonString()}"))).Append(']');
            }
            else if (seg.StartsWith("v:", StringComparison.Ordinal))
            {
                text.Append('[').Append(seg[2..]).Append(']');
            }
        }
        return text.ToString();
    }
}
