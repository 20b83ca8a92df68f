using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Xlb.Crds;

/// <summary>A port given by number or by name, as Kubernetes' IntOrString.</summary>
[JsonConverter(typeof(IntOrStringConverter))]
public readonly record struct IntOrString
{
    public int? Number { get; }
    public string? Name { get; }

    public IntOrString(int number) => Number = number;

    public IntOrString(string name) => Name = name;

    public static implicit operator IntOrString(int number) => new(number);

    public override string ToString() => Number?.ToString(CultureInfo.InvariantCulture) ?? Name ?? "";
}

public sealed class IntOrStringConverter : JsonConverter<IntOrString>
{
    public override IntOrString Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType switch
        {
            JsonTokenType.Number => new IntOrString(reader.GetInt32()),
            JsonTokenType.String => SharedStringConverter.Share(ref reader) is var text && int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n)
                ? new IntOrString(n)
                : new IntOrString(text),
            _ => throw new JsonException("expected a port number or a port name"),
        };

    public override void Write(Utf8JsonWriter writer, IntOrString value, JsonSerializerOptions options)
    {
        if (value.Number is { } n)
        {
            writer.WriteNumberValue(n);
        }
        else
        {
            writer.WriteStringValue(value.Name);
        }
    }
}
