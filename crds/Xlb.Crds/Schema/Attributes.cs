namespace Xlb.Crds.Schema;

// Schema facts that C# types cannot say by themselves. The CRD generator reads them; the
// descriptions come from the /// summaries (the XML documentation file beside the assembly).

public enum CrdScope
{
    Cluster,
    Namespaced,
}

/// <summary>Marks a top-level kind: its plural, scope and short names. Every XLB kind is in category "xlb".</summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class CrdAttribute(string plural, CrdScope scope) : Attribute
{
    public string Plural { get; } = plural;
    public CrdScope Scope { get; } = scope;
    public string[] ShortNames { get; init; } = [];
}

/// <summary>A column of `kubectl get` (additionalPrinterColumns).</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true)]
public sealed class PrinterColumnAttribute(string name, string type, string jsonPath) : Attribute
{
    public string Name { get; } = name;
    public string Type { get; } = type;
    public string JsonPath { get; } = jsonPath;
    public string? Description { get; init; }
    /// <summary>0: shown always; 1: with -o wide only.</summary>
    public int Priority { get; init; }
}

/// <summary>A CEL rule (x-kubernetes-validations) on the annotated type or property.</summary>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Property, AllowMultiple = true)]
public sealed class ValidationAttribute(string rule, string message) : Attribute
{
    public string Rule { get; } = rule;
    public string Message { get; } = message;
    /// <summary>The field the error is reported on, relative to the annotated node (".ports").</summary>
    public string? FieldPath { get; init; }
    /// <summary>FieldValueInvalid (default), FieldValueForbidden, FieldValueRequired or FieldValueDuplicate.</summary>
    public string? Reason { get; init; }
}

/// <summary>The field cannot change once set; the message tells the user what to do instead.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class ImmutableAttribute(string message) : Attribute
{
    public string Message { get; } = message;
}

/// <summary>Inclusive bounds of a number.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class RangeAttribute(long minimum, long maximum) : Attribute
{
    public long Minimum { get; } = minimum;
    public long Maximum { get; } = maximum;
}

/// <summary>Length bounds of a string or a list (maxItems keeps CEL cost estimates bounded).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class LengthAttribute(int minimum, int maximum) : Attribute
{
    public int Minimum { get; } = minimum;
    public int Maximum { get; } = maximum;
}

/// <summary>A regular expression a string must match (ECMA 262, as the API server checks it).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class PatternAttribute(string pattern) : Attribute
{
    public string Pattern { get; } = pattern;
}

/// <summary>An OpenAPI string format the API server knows ("ipv4", "ipv6", "date-time").</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class FormatAttribute(string format) : Attribute
{
    public string Format { get; } = format;
}

/// <summary>
/// A list whose items are merged by these keys under server-side apply
/// (x-kubernetes-list-type: map); the keys are also unique.
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class ListMapAttribute(params string[] keys) : Attribute
{
    public string[] Keys { get; } = keys;
}

/// <summary>A list of unique scalars merged as a set under server-side apply.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class ListSetAttribute : Attribute;

/// <summary>Written by the system, not the user: left out of defaults and required lists.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class NoDefaultAttribute : Attribute;
