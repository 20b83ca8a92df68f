using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Xlb.Crds;

/// <summary>
/// A duration written as Kubernetes APIs write them (metav1.Duration, Go's time.ParseDuration):
/// "500ms", "5s", "1m30s". Units: ms, s, m, h.
/// </summary>
[JsonConverter(typeof(DurationConverter))]
public readonly record struct Duration(TimeSpan Value)
{
    /// <summary>What the CRD schema accepts, and what CEL's duration() parses.</summary>
    public const string Pattern = @"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

    public static bool TryParse(string text, out Duration duration)
    {
        duration = default;
        var total = TimeSpan.Zero;
        var i = 0;
        if (string.IsNullOrEmpty(text))
        {
            return false;
        }
        while (i < text.Length)
        {
            var start = i;
            while (i < text.Length && (char.IsAsciiDigit(text[i]) || text[i] == '.'))
            {
                i++;
            }
            if (start == i || !double.TryParse(text.AsSpan(start, i - start), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var n))
            {
                return false;
            }
            var unitStart = i;
            while (i < text.Length && char.IsAsciiLetter(text[i]))
            {
                i++;
            }
            var step = text[unitStart..i] switch
            {
                "ms" => TimeSpan.FromMilliseconds(n),
                "s" => TimeSpan.FromSeconds(n),
                "m" => TimeSpan.FromMinutes(n),
                "h" => TimeSpan.FromHours(n),
                _ => (TimeSpan?)null,
            };
            if (step is null)
            {
                return false;
            }
            total += step.Value;
        }
        duration = new Duration(total);
        return true;
    }

    public override string ToString() =>
        Value.TotalMilliseconds % 1000 == 0
            ? string.Create(CultureInfo.InvariantCulture, $"{(long)Value.TotalSeconds}s")
            : string.Create(CultureInfo.InvariantCulture, $"{(long)Value.TotalMilliseconds}ms");
}

public sealed class DurationConverter : JsonConverter<Duration>
{
    public override Duration Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        var text = reader.TokenType == JsonTokenType.String ? reader.GetString()! : throw new JsonException("expected a duration such as \"5s\" or \"500ms\"");
        return Duration.TryParse(text, out var d) ? d : throw new JsonException($"'{text}' is not a duration (e.g. \"5s\", \"500ms\", \"1m30s\")");
    }

    public override void Write(Utf8JsonWriter writer, Duration value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString());
}
