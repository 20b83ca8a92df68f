using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Xlb.Crds;

namespace Xlb.Kube;

/// <summary>The object an event is about.</summary>
public sealed record ObjectReference(string ApiVersion, string Kind, string? Namespace, string Name, string? Uid = null);

/// <summary>
/// Writes events.k8s.io/v1 Events. The same event (same object, type, reason, action and note)
/// within the de-duplication window is not created again: the first one's series count and
/// lastObservedTime are patched instead, as client-go's events library does. The events it
/// remembers for that are bounded: those past the window are forgotten, and past
/// <see cref="Remembered"/> the oldest go first. Failures are logged, never thrown: an event
/// must not fail a reconcile.
/// </summary>
public sealed partial class EventRecorder(KubeClient client, string controller, string instance, TimeProvider? time = null, ILogger? logger = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly ILogger _log = logger ?? NullLogger.Instance;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, (string Namespace, string Name, int Count, DateTimeOffset First)> _seen = [];

    /// <summary>How long a repeated event is folded into the first one (client-go: 6 minutes).</summary>
    public TimeSpan Window { get; init; } = TimeSpan.FromMinutes(6);

    /// <summary>How many distinct events are remembered for folding (client-go's correlator keeps 4,096).</summary>
    public int Remembered { get; init; } = 4096;

    /// <summary>How many distinct events are remembered now.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _seen.Count;
            }
        }
    }

    /// <summary>The API server takes a note of at most 1,024 bytes (of UTF-8): a longer one is cut there, between characters.</summary>
    public const int NoteMaxBytes = 1024;

    public static string Note(string note)
    {
        if (System.Text.Encoding.UTF8.GetByteCount(note) <= NoteMaxBytes)
        {
            return note;
        }
        var bytes = 0;
        var end = 0;
        foreach (var rune in note.EnumerateRunes())
        {
            if (bytes + rune.Utf8SequenceLength > NoteMaxBytes)
            {
                break;
            }
            bytes += rune.Utf8SequenceLength;
            end += rune.Utf16SequenceLength;
        }
        return note[..end];
    }

    public const string Normal = "Normal";
    public const string Warning = "Warning";

    public async Task RecordAsync(ObjectReference regarding, string type, string reason, string action, string note, CancellationToken ct = default)
    {
        var now = _time.GetUtcNow();
        var key = string.Join('\u0001', regarding.Kind, regarding.Namespace, regarding.Name, regarding.Uid, type, reason, action, note);
        (string Namespace, string Name, int Count, DateTimeOffset First) seen;
        bool repeat;
        lock (_gate)
        {
            repeat = _seen.TryGetValue(key, out seen) && now - seen.First < Window;
            if (repeat)
            {
                seen.Count++;
                _seen[key] = seen;
            }
        }
        try
        {
            if (repeat)
            {
                await client.MergePatchAsync<JsonObject>(KubeResource.Events, seen.Namespace, seen.Name, new JsonObject
                {
                    ["series"] = new JsonObject { ["count"] = seen.Count, ["lastObservedTime"] = MicroTime.Format(now) },
                }, ct: ct);
                return;
            }
            var ns = regarding.Namespace ?? "default";
            var name = XlbApi.ObjectName("", regarding.Name, $".{now.ToUnixTimeMilliseconds() * 1_000_000 + Random.Shared.Next(1_000_000):x}");
            var reference = new JsonObject { ["apiVersion"] = regarding.ApiVersion, ["kind"] = regarding.Kind, ["name"] = regarding.Name };
            if (regarding.Namespace is not null)
            {
                reference["namespace"] = regarding.Namespace;
            }
            if (regarding.Uid is not null)
            {
                reference["uid"] = regarding.Uid;
            }
            await client.CreateAsync(KubeResource.Events, new JsonObject
            {
                ["apiVersion"] = "events.k8s.io/v1",
                ["kind"] = "Event",
                ["metadata"] = new JsonObject { ["name"] = name, ["namespace"] = ns },
                ["eventTime"] = MicroTime.Format(now),
                ["reportingController"] = controller,
                ["reportingInstance"] = instance,
                ["action"] = action,
                ["reason"] = reason,
                ["type"] = type,
                ["note"] = Note(note),
                ["regarding"] = reference,
            }, ct: ct);
            lock (_gate)
            {
                if (_seen.Count >= Remembered && !_seen.ContainsKey(key))
                {
                    Forget(now);
                }
                _seen[key] = (ns, name, 1, now);
            }
        }
        catch (KubeApiException e)
        {
            LogFailed(_log, reason, regarding.Kind, regarding.Name, e.Message);
        }
    }

    /// <summary>Makes room: every event past the window goes, and if that is not a quarter of the bound, the oldest until it is.</summary>
    private void Forget(DateTimeOffset now)
    {
        foreach (var (key, seen) in _seen)
        {
            if (now - seen.First >= Window)
            {
                _seen.Remove(key);
            }
        }
        var keep = Remembered - Math.Max(1, Remembered / 4);
        if (_seen.Count > keep)
        {
            foreach (var key in _seen.OrderBy(e => e.Value.First).Take(_seen.Count - keep).Select(e => e.Key).ToList())
            {
                _seen.Remove(key);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "event {Reason} on {Kind} {Name} not recorded: {Why}")]
    private static partial void LogFailed(ILogger logger, string reason, string kind, string name, string why);
}
