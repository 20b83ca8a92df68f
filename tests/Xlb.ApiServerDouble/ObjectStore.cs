using System.Globalization;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace Xlb.ApiServerDouble;

/// <summary>One change, as the watch cache records it: the object after the change and before it.</summary>
public sealed record StoredEvent(long ResourceVersion, ResourceType Type, string Key, string EventType, JsonObject Object, JsonObject? Previous);

/// <summary>A watch event ready to be written: ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.</summary>
public sealed record WatchFrame(string Type, JsonObject Object);

/// <summary>
/// The double's storage: every object of every registered resource behind one lock, one
/// cluster-wide resourceVersion counter (like etcd's revision), and a bounded log of changes
/// that serves watches from a resourceVersion and consistent list pages. Everything older than
/// the log is "compacted": watching or continuing from there yields 410 Expired.
/// </summary>
public sealed class ObjectStore(TimeProvider time)
{
    private readonly Lock _gate = new();
    private readonly Dictionary<ResourceType, SortedDictionary<string, JsonObject>> _objects = [];
    private readonly List<StoredEvent> _log = [];
    private readonly List<Watcher> _watchers = [];
    private readonly ConditionalWeakTable<JsonObject, byte[]> _serialized = new();
    private readonly ConditionalWeakTable<JsonObject, byte[]> _serializedMetadata = new();
    private long _rv;
    private long _compactedRv;

    /// <summary>How many changes the log keeps before the oldest are compacted away.</summary>
    public int RetainedEvents { get; set; } = 100_000;

    public long ResourceVersion { get { lock (_gate) { return _rv; } } }

    public TimeProvider Time => time;

    public string Now() => time.GetUtcNow().UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    public static string KeyOf(string? ns, string name) => ns is null ? name : ns + "/" + name;

    private SortedDictionary<string, JsonObject> Bucket(ResourceType type)
    {
        if (!_objects.TryGetValue(type, out var bucket))
        {
            bucket = new SortedDictionary<string, JsonObject>(StringComparer.Ordinal);
            _objects[type] = bucket;
        }
        return bucket;
    }

    /// <summary>
    /// The JSON of a stored object, serialized once: a stored object is never changed in place
    /// (every write stores a new copy), so lists and gets serve the same bytes until it changes.
    /// </summary>
    private byte[] Serialized(JsonObject stored) => _serialized.GetValue(stored, o => JsonSerializer.SerializeToUtf8Bytes(o));

    /// <summary>The object as a PartialObjectMetadata (meta.k8s.io/v1): its metadata alone, serialized once too.</summary>
    private byte[] SerializedMetadata(JsonObject stored) => _serializedMetadata.GetValue(stored, o => JsonSerializer.SerializeToUtf8Bytes(PartialObjectMetadata(o)));

    /// <summary>A stored object (or a watch frame's object) as PartialObjectMetadata: kind, apiVersion and metadata.</summary>
    public static JsonObject PartialObjectMetadata(JsonObject obj) => new()
    {
        ["kind"] = "PartialObjectMetadata",
        ["apiVersion"] = "meta.k8s.io/v1",
        ["metadata"] = obj["metadata"]?.DeepClone(),
    };

    /// <summary>One object as JSON (as PartialObjectMetadata with <paramref name="metadataOnly"/>), or null when it does not exist.</summary>
    public byte[]? GetJson(ResourceType type, string? ns, string name, bool metadataOnly = false)
    {
        lock (_gate)
        {
            return Bucket(type).TryGetValue(KeyOf(ns, name), out var obj) ? metadataOnly ? SerializedMetadata(obj) : Serialized(obj) : null;
        }
    }

    public JsonObject? Get(ResourceType type, string? ns, string name)
    {
        lock (_gate)
        {
            return Bucket(type).TryGetValue(KeyOf(ns, name), out var obj) ? obj.DeepClone().AsObject() : null;
        }
    }

    /// <summary>Drops every change recorded so far: older resourceVersions become too old to watch from.</summary>
    public void Compact()
    {
        lock (_gate)
        {
            _compactedRv = _rv;
            _log.Clear();
        }
    }

    /// <summary>A page: its items as JSON, its snapshot, and where the next page starts.</summary>
    public sealed record ListResult(List<byte[]> Items, long ResourceVersion, string? Continue, long? Remaining);

    /// <summary>
    /// A list, optionally one page of it (API Concepts, "Retrieving large results sets in chunks"):
    /// every page is served from the snapshot at the first page's resourceVersion, and a continue
    /// token older than the log is a 410 Expired.
    /// </summary>
    public ListResult List(ResourceType type, string? ns, LabelSelector labels, FieldSelector fields, int limit, string? continueToken, long? exactRv, bool metadataOnly = false)
    {
        lock (_gate)
        {
            var (snapshotRv, after) = continueToken is null ? (exactRv ?? _rv, null) : ContinueToken.Decode(continueToken);
            if (snapshotRv < _compactedRv)
            {
                throw continueToken is null
                    ? ApiError.Expired($"too old resource version: {snapshotRv} ({_compactedRv})")
                    : ApiError.Expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.");
            }
            // A page starts after the last key served (the dictionary is sorted by key) and ends at
            // the limit. Past it, without selectors, the objects are counted (remainingItemCount);
            // with selectors the count is unknown and left out (ListMeta), so the page ends at the
            // first further match.
            var selective = !labels.IsEmpty || !fields.IsEmpty;
            var page = new List<KeyValuePair<string, JsonObject>>();
            var remaining = 0L;
            var prefix = ns is null ? null : ns + "/";
            foreach (var kv in Snapshot(type, snapshotRv))
            {
                if ((after is not null && string.CompareOrdinal(kv.Key, after) <= 0)
                    || (prefix is not null && !kv.Key.StartsWith(prefix, StringComparison.Ordinal)))
                {
                    continue;
                }
                if (limit > 0 && page.Count == limit && !selective)
                {
                    remaining++;
                    continue;
                }
                if (!labels.Matches(kv.Value) || !fields.Matches(kv.Value))
                {
                    continue;
                }
                if (limit > 0 && page.Count == limit)
                {
                    remaining = 1;
                    break;
                }
                page.Add(kv);
            }
            var more = remaining > 0;
            return new ListResult(
                [.. page.Select(kv => metadataOnly ? SerializedMetadata(kv.Value) : Serialized(kv.Value))],
                snapshotRv,
                more ? ContinueToken.Encode(snapshotRv, page[^1].Key) : null,
                more && !selective ? remaining : null);
        }
    }

    /// <summary>The objects as they were at a resourceVersion: the current state with newer changes undone.</summary>
    private SortedDictionary<string, JsonObject> Snapshot(ResourceType type, long rv)
    {
        var current = Bucket(type);
        if (rv >= _rv || !_log.Any(e => e.ResourceVersion > rv && e.Type == type))
        {
            return current; // nothing of this type changed since rv (other kinds may have)
        }
        var state = new SortedDictionary<string, JsonObject>(current, StringComparer.Ordinal);
        for (var i = _log.Count - 1; i >= 0 && _log[i].ResourceVersion > rv; i--)
        {
            var e = _log[i];
            if (e.Type != type)
            {
                continue;
            }
            if (e.Previous is null)
            {
                state.Remove(e.Key);
            }
            else
            {
                state[e.Key] = e.Previous;
            }
        }
        return state;
    }

    /// <summary>
    /// Whether custom resources are pruned, defaulted and checked against their schema on every
    /// write (<see cref="Validation"/>), as the API server does. A bench that measures a client
    /// beside the double on one machine may turn it off: it is the server's own work, which a
    /// real cluster does elsewhere.
    /// </summary>
    public bool CheckCustomResources { get; set; } = true;

    /// <summary>A custom resource as the API server stores it: the fields its schema does not know pruned, its defaults filled in.</summary>
    private void Normalize(ResourceType type, JsonObject obj)
    {
        if (type.Schema is { } schema && CheckCustomResources)
        {
            Validation.Prune(schema, obj);
            Validation.Default(schema, obj);
        }
    }

    /// <summary>
    /// What the API server checks before it stores a write (after <see cref="Normalize"/>): every
    /// object's metadata and the built-in kinds' own rules (<see cref="ObjectRules"/>), a custom
    /// resource's schema and validation rules.
    /// </summary>
    private void Validate(ResourceType type, string name, JsonObject next, JsonObject? before)
    {
        var errors = ObjectRules.Check(type, next);
        if (type.Schema is { } schema && CheckCustomResources)
        {
            errors.AddRange(Validation.Check(schema, next, before));
        }
        if (errors.Count > 0)
        {
            throw ApiError.Invalid(type, name, errors);
        }
    }

    /// <summary>Stores a new object; the caller has set everything but the server-owned metadata.</summary>
    public JsonObject Create(ResourceType type, string? ns, JsonObject obj)
    {
        lock (_gate)
        {
            var meta = (JsonObject)obj["metadata"]!;
            var name = meta["name"]!.GetValue<string>();
            if (type.Namespaced && !Bucket(ResourceType.Namespaces).ContainsKey(ns!))
            {
                throw new ApiError(HttpStatusCode.NotFound, "NotFound", $"namespaces \"{ns}\" not found",
                    new JsonObject { ["name"] = ns, ["kind"] = "namespaces" });
            }
            var bucket = Bucket(type);
            var key = KeyOf(ns, name);
            if (bucket.ContainsKey(key))
            {
                throw ApiError.AlreadyExists(type, name);
            }
            Normalize(type, obj);
            if (ObjectRules.Name(type.NameRule, name) is { Count: > 0 } wrongName)
            {
                throw ApiError.Invalid(type, name, wrongName);
            }
            Validate(type, name, obj, null);
            meta["uid"] = Guid.NewGuid().ToString();
            meta["creationTimestamp"] = Now();
            meta["generation"] = 1L;
            meta["resourceVersion"] = (++_rv).ToString(CultureInfo.InvariantCulture);
            meta.Remove("deletionTimestamp");
            meta.Remove("deletionGracePeriodSeconds");
            bucket[key] = obj.DeepClone().AsObject();
            Publish(new StoredEvent(_rv, type, key, "ADDED", bucket[key], null));
            return obj;
        }
    }

    /// <summary>
    /// Read-modify-write of one object under the store's lock. <paramref name="change"/> gets a
    /// copy of the current object and returns the candidate; the store then enforces what the
    /// server owns: optimistic concurrency, immutable metadata, generation, finalizers and
    /// deletion once the last finalizer is gone. Returns the stored object; an unchanged object
    /// keeps its resourceVersion and produces no event.
    /// </summary>
    public JsonObject Update(ResourceType type, string? ns, string name, Func<JsonObject, JsonObject> change, bool requireResourceVersion = false)
    {
        lock (_gate)
        {
            var bucket = Bucket(type);
            var key = KeyOf(ns, name);
            if (!bucket.TryGetValue(key, out var before))
            {
                throw ApiError.NotFound(type, name);
            }
            var next = change(before.DeepClone().AsObject());
            Normalize(type, next);
            var meta = (JsonObject)next["metadata"]!;
            var oldMeta = (JsonObject)before["metadata"]!;
            var currentRv = oldMeta["resourceVersion"]!.GetValue<string>();
            switch (meta["resourceVersion"]?.GetValue<string>())
            {
                case null or "" when requireResourceVersion:
                    throw ApiError.Invalid(type, name, "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update");
                case { Length: > 0 } given when given != currentRv:
                    throw ApiError.Conflict(type, name, "the object has been modified; please apply your changes to the latest version and try again");
            }
            foreach (var field in new[] { "uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "name" })
            {
                meta[field] = oldMeta[field]?.DeepClone();
                if (meta[field] is null)
                {
                    meta.Remove(field);
                }
            }
            meta["resourceVersion"] = oldMeta["resourceVersion"]!.DeepClone();
            if (oldMeta["deletionTimestamp"] is not null)
            {
                var had = Finalizers(before);
                var added = Finalizers(next).Where(f => !had.Contains(f)).ToList();
                if (added.Count > 0)
                {
                    throw ApiError.Invalid(type, name, "metadata.finalizers",
                        $"Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers [{string.Join(" ", added)}]");
                }
            }
            if (SameButTimes(next, before))
            {
                return before.DeepClone().AsObject();
            }
            Validate(type, name, next, before);
            if (!SameExcept(next, before, f => f is "metadata" or "status"))
            {
                meta["generation"] = Long(oldMeta["generation"]) + 1;
            }
            meta["resourceVersion"] = (++_rv).ToString(CultureInfo.InvariantCulture);
            if (meta["deletionTimestamp"] is not null && Finalizers(next).Count == 0)
            {
                bucket.Remove(key);
                Publish(new StoredEvent(_rv, type, key, "DELETED", next.DeepClone().AsObject(), before));
                return next;
            }
            bucket[key] = next.DeepClone().AsObject();
            Publish(new StoredEvent(_rv, type, key, "MODIFIED", bucket[key], before));
            return next;
        }
    }

    public sealed record DeleteResult(JsonObject Object, bool Deleted);

    /// <summary>
    /// Deletion (API Concepts, "Finalizers"; Using Finalizers to Control Deletion): preconditions
    /// first; with finalizers the object only gets a deletionTimestamp (and a new generation) and
    /// stays until the last finalizer is removed.
    /// </summary>
    public DeleteResult Delete(ResourceType type, string? ns, string name, string? uid, string? rv)
    {
        lock (_gate)
        {
            var bucket = Bucket(type);
            var key = KeyOf(ns, name);
            if (!bucket.TryGetValue(key, out var before))
            {
                throw ApiError.NotFound(type, name);
            }
            var meta = (JsonObject)before["metadata"]!;
            var actualUid = meta["uid"]!.GetValue<string>();
            if (uid is not null && uid != actualUid)
            {
                throw ApiError.Conflict(type, name, $"Precondition failed: UID in precondition: {uid}, UID in object meta: {actualUid}");
            }
            var actualRv = meta["resourceVersion"]!.GetValue<string>();
            if (rv is not null && rv != actualRv)
            {
                throw ApiError.Conflict(type, name, $"Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actualRv}");
            }
            if (type == ResourceType.Namespaces)
            {
                // The namespace controller empties a deleted namespace; the double does it at once.
                foreach (var (t, objects) in _objects.Where(o => o.Key.Namespaced))
                {
                    foreach (var k in objects.Keys.Where(k => k.StartsWith(name + "/", StringComparison.Ordinal)).ToList())
                    {
                        var gone = objects[k];
                        objects.Remove(k);
                        var copy = gone.DeepClone().AsObject();
                        copy["metadata"]!["resourceVersion"] = (++_rv).ToString(CultureInfo.InvariantCulture);
                        Publish(new StoredEvent(_rv, t, k, "DELETED", copy, gone));
                    }
                }
            }
            if (Finalizers(before).Count > 0)
            {
                if (meta["deletionTimestamp"] is not null)
                {
                    return new DeleteResult(before.DeepClone().AsObject(), false);
                }
                var next = before.DeepClone().AsObject();
                var m = (JsonObject)next["metadata"]!;
                m["deletionTimestamp"] = Now();
                m["deletionGracePeriodSeconds"] = 0;
                m["generation"] = Long(m["generation"]) + 1;
                m["resourceVersion"] = (++_rv).ToString(CultureInfo.InvariantCulture);
                bucket[key] = next;
                Publish(new StoredEvent(_rv, type, key, "MODIFIED", next, before));
                return new DeleteResult(next.DeepClone().AsObject(), false);
            }
            bucket.Remove(key);
            var deleted = before.DeepClone().AsObject();
            deleted["metadata"]!["resourceVersion"] = (++_rv).ToString(CultureInfo.InvariantCulture);
            Publish(new StoredEvent(_rv, type, key, "DELETED", deleted, before));
            return new DeleteResult(deleted.DeepClone().AsObject(), true);
        }
    }

    /// <summary>A number node, however it was built (parsed JSON or a CLR int).</summary>
    private static long Long(JsonNode? node) => node is null ? 0 : long.Parse(node.ToJsonString(), CultureInfo.InvariantCulture);

    private static List<string> Finalizers(JsonObject obj) =>
        obj["metadata"]?["finalizers"] is JsonArray list ? [.. list.Select(f => f?.GetValue<string>() ?? "")] : [];

    /// <summary>Whether two objects have the same fields with equal values, but for the top-level fields <paramref name="skip"/> names (no copies are made).</summary>
    private static bool SameExcept(JsonObject a, JsonObject b, Func<string, bool> skip, Func<string, JsonNode?, JsonNode?, bool>? same = null)
    {
        var count = 0;
        foreach (var (name, value) in a)
        {
            if (skip(name))
            {
                continue;
            }
            count++;
            if (!b.TryGetPropertyValue(name, out var other) || !(same?.Invoke(name, value, other) ?? JsonNode.DeepEquals(value, other)))
            {
                return false;
            }
        }
        return count == b.Count(p => !skip(p.Key));
    }

    /// <summary>A write that changes nothing but managedFields timestamps is a no-op.</summary>
    private static bool SameButTimes(JsonObject a, JsonObject b) =>
        SameExcept(a, b, _ => false, (name, x, y) => name == "metadata" && x is JsonObject ma && y is JsonObject mb
            ? SameExcept(ma, mb, _ => false, (field, p, q) => field == "managedFields" ? SameEntriesButTimes(p, q) : JsonNode.DeepEquals(p, q))
            : JsonNode.DeepEquals(x, y));

    private static bool SameEntriesButTimes(JsonNode? a, JsonNode? b)
    {
        if (a is not JsonArray x || b is not JsonArray y)
        {
            return JsonNode.DeepEquals(a, b);
        }
        if (x.Count != y.Count)
        {
            return false;
        }
        for (var i = 0; i < x.Count; i++)
        {
            var same = x[i] is JsonObject p && y[i] is JsonObject q ? SameExcept(p, q, f => f == "time") : JsonNode.DeepEquals(x[i], y[i]);
            if (!same)
            {
                return false;
            }
        }
        return true;
    }

    private void Publish(StoredEvent e)
    {
        _log.Add(e);
        if (_log.Count > RetainedEvents)
        {
            var drop = _log.Count - RetainedEvents;
            _compactedRv = _log[drop - 1].ResourceVersion;
            _log.RemoveRange(0, drop);
        }
        foreach (var w in _watchers)
        {
            w.Offer(e);
        }
    }

    /// <summary>
    /// Opens a watch (API Concepts, "Efficient detection of changes" and "Semantics for watch"):
    /// without a resourceVersion (or "0") it starts with a synthetic ADDED per existing object;
    /// with one it replays every later change; one older than the log gets a single ERROR event
    /// with a 410 Expired status inside the stream, as the watch cache does.
    /// </summary>
    public Watcher Watch(ResourceType type, string? ns, LabelSelector labels, FieldSelector fields, string? resourceVersion)
    {
        lock (_gate)
        {
            var watcher = new Watcher(this, type, ns, labels, fields);
            if (string.IsNullOrEmpty(resourceVersion) || resourceVersion == "0")
            {
                foreach (var (key, obj) in Bucket(type))
                {
                    if (watcher.InNamespace(key) && labels.Matches(obj) && fields.Matches(obj))
                    {
                        watcher.Enqueue(new WatchFrame("ADDED", obj.DeepClone().AsObject()));
                    }
                }
            }
            else
            {
                if (!long.TryParse(resourceVersion, NumberStyles.None, CultureInfo.InvariantCulture, out var from))
                {
                    throw ApiError.BadRequest($"invalid resource version \"{resourceVersion}\"");
                }
                if (from < _compactedRv)
                {
                    watcher.Enqueue(new WatchFrame("ERROR", ApiError.Status(HttpStatusCode.Gone, "Expired", $"too old resource version: {from} ({_compactedRv})")));
                    watcher.Complete(abort: false);
                    return watcher;
                }
                foreach (var e in _log.Where(e => e.ResourceVersion > from))
                {
                    watcher.Offer(e);
                }
            }
            _watchers.Add(watcher);
            return watcher;
        }
    }

    internal void Bookmark(Watcher watcher)
    {
        lock (_gate)
        {
            if (watcher.Silenced)
            {
                return;
            }
            watcher.Enqueue(new WatchFrame("BOOKMARK", new JsonObject
            {
                ["kind"] = watcher.Type.Kind,
                ["apiVersion"] = watcher.Type.ApiVersion,
                ["metadata"] = new JsonObject
                {
                    ["resourceVersion"] = _rv.ToString(CultureInfo.InvariantCulture),
                    ["annotations"] = new JsonObject { ["k8s.io/initial-events-end"] = "false" },
                },
            }));
        }
    }

    internal void Remove(Watcher watcher)
    {
        lock (_gate)
        {
            _watchers.Remove(watcher);
        }
    }

    /// <summary>Ends every open watch: abruptly (the connection is reset) or as a clean end of stream.</summary>
    public void EndWatches(bool abort)
    {
        lock (_gate)
        {
            foreach (var w in _watchers.ToList())
            {
                w.Complete(abort);
            }
            _watchers.Clear();
        }
    }

    /// <summary>Open watches keep their connections but receive nothing more: a stream gone silent.</summary>
    public void SilenceWatches()
    {
        lock (_gate)
        {
            foreach (var w in _watchers)
            {
                w.Silenced = true;
            }
        }
    }

    public int OpenWatches { get { lock (_gate) { return _watchers.Count; } } }
}

/// <summary>One open watch: filters changes the way the watch cache does and queues frames for the HTTP stream.</summary>
public sealed class Watcher
{
    private readonly ObjectStore _store;
    private readonly string? _ns;
    private readonly LabelSelector _labels;
    private readonly FieldSelector _fields;
    private readonly Channel<WatchFrame> _frames = Channel.CreateUnbounded<WatchFrame>();

    internal Watcher(ObjectStore store, ResourceType type, string? ns, LabelSelector labels, FieldSelector fields)
    {
        (_store, Type, _ns, _labels, _fields) = (store, type, ns, labels, fields);
    }

    public ResourceType Type { get; }
    public bool Aborted { get; private set; }
    internal bool Silenced { get; set; }
    public ChannelReader<WatchFrame> Frames => _frames.Reader;

    internal bool InNamespace(string key) => _ns is null || key.StartsWith(_ns + "/", StringComparison.Ordinal);

    private bool Passes(JsonObject? obj) => obj is not null && _labels.Matches(obj) && _fields.Matches(obj);

    /// <summary>
    /// An object that starts matching the selectors arrives as ADDED, one that stops matching as
    /// DELETED (carrying its previous state at the new resourceVersion), as the watch cache does.
    /// </summary>
    internal void Offer(StoredEvent e)
    {
        if (Silenced || e.Type != Type || !InNamespace(e.Key))
        {
            return;
        }
        var now = e.EventType != "DELETED" && Passes(e.Object);
        var was = e.EventType == "DELETED" ? Passes(e.Object) : Passes(e.Previous);
        var frame = (e.EventType, was, now) switch
        {
            ("DELETED", true, _) => new WatchFrame("DELETED", e.Object),
            ("ADDED", _, true) => new WatchFrame("ADDED", e.Object),
            ("MODIFIED", true, true) => new WatchFrame("MODIFIED", e.Object),
            ("MODIFIED", false, true) => new WatchFrame("ADDED", e.Object),
            ("MODIFIED", true, false) => new WatchFrame("DELETED", AtVersion(e.Previous!, e.ResourceVersion)),
            _ => null,
        };
        if (frame is not null)
        {
            Enqueue(frame with { Object = frame.Object.DeepClone().AsObject() });
        }
    }

    private static JsonObject AtVersion(JsonObject obj, long rv)
    {
        var copy = obj.DeepClone().AsObject();
        copy["metadata"]!["resourceVersion"] = rv.ToString(CultureInfo.InvariantCulture);
        return copy;
    }

    internal void Enqueue(WatchFrame frame) => _frames.Writer.TryWrite(frame);

    internal void Complete(bool abort)
    {
        Aborted |= abort;
        _frames.Writer.TryComplete();
    }

    public void RequestBookmark() => _store.Bookmark(this);

    public void Close() => _store.Remove(this);
}

/// <summary>An opaque continue token: the snapshot's resourceVersion and the last key served.</summary>
internal static class ContinueToken
{
    public static string Encode(long rv, string lastKey) =>
        Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(new JsonObject { ["rv"] = rv, ["start"] = lastKey }.ToJsonString()));

    public static (long Rv, string After) Decode(string token)
    {
        try
        {
            var obj = JsonNode.Parse(System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(token)))!.AsObject();
            return (obj["rv"]!.GetValue<long>(), obj["start"]!.GetValue<string>());
        }
        catch (Exception e) when (e is FormatException or System.Text.Json.JsonException or NullReferenceException or InvalidOperationException)
        {
            throw ApiError.BadRequest("continue key is not valid: " + e.Message);
        }
    }
}
