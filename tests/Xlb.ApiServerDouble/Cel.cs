using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Xlb.ApiServerDouble;

/// <summary>A CEL expression that does not parse, or an evaluation that fails (no such key, a type that does not fit).</summary>
public sealed class CelException(string message) : Exception(message);

/// <summary>
/// The part of CEL (cel.dev, and the Kubernetes library of it) that CRD validation rules are
/// written in here: literals, self and oldSelf, field selection, has(), size(), in, the logical
/// and relational operators, ?:, list literals, the macros all, exists and exists_one, and the
/// Kubernetes functions duration() and isIP(). && and || are commutative as in CEL: an error on
/// one side is absorbed when the other side decides. Values are JSON values as the object has
/// them: string, long, double, bool, null, JsonObject (a map) and List (a list); and TimeSpan.
/// </summary>
public static class Cel
{
    private abstract record Node;
    private sealed record Literal(object? Value) : Node;
    private sealed record Ident(string Name) : Node;
    private sealed record Select(Node Target, string Field) : Node;
    private sealed record Index(Node Target, Node Key) : Node;
    private sealed record Call(string Function, Node? Target, List<Node> Args) : Node;
    private sealed record Unary(string Op, Node Operand) : Node;
    private sealed record Binary(string Op, Node Left, Node Right) : Node;
    private sealed record Conditional(Node Condition, Node Then, Node Else) : Node;
    private sealed record ListOf(List<Node> Items) : Node;

    private static readonly Dictionary<string, Node> Parsed = [];

    /// <summary>Whether <paramref name="rule"/> holds for <paramref name="self"/> (and <paramref name="oldSelf"/>, the value before an update).</summary>
    public static bool Holds(string rule, JsonNode? self, JsonNode? oldSelf = null)
    {
        Node ast;
        lock (Parsed)
        {
            if (!Parsed.TryGetValue(rule, out ast!))
            {
                Parsed[rule] = ast = new Parser(rule).ParseAll();
            }
        }
        var vars = new Dictionary<string, object?>(StringComparer.Ordinal) { ["self"] = Of(self), ["oldSelf"] = Of(oldSelf) };
        return Eval(ast, vars) is bool b ? b : throw new CelException("the rule does not give a bool");
    }

    /// <summary>Whether <paramref name="rule"/> reads oldSelf (a transition rule: evaluated on updates only).</summary>
    public static bool IsTransition(string rule) => new Parser(rule).Tokens.Any(t => t == "oldSelf");

    private static object? Of(JsonNode? node) => node switch
    {
        null => null,
        JsonObject o => o,
        JsonArray a => a.Select(Of).ToList(),
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => v.GetValue<string>(),
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Number => IsInteger(v) ? long.Parse(v.ToJsonString(), CultureInfo.InvariantCulture) : double.Parse(v.ToJsonString(), CultureInfo.InvariantCulture),
            _ => null,
        },
        _ => null,
    };

    /// <summary>Whether a JSON number is an integer, held as parsed JSON or as a CLR value alike (which converts to no other type).</summary>
    public static bool IsInteger(JsonValue v) =>
        v.TryGetValue<JsonElement>(out var e) ? e.TryGetInt64(out _) : long.TryParse(v.ToJsonString(), CultureInfo.InvariantCulture, out _);

    private static object? Eval(Node node, Dictionary<string, object?> vars)
    {
        switch (node)
        {
            case Literal l:
                return l.Value;
            case Ident id:
                return vars.TryGetValue(id.Name, out var v) ? v : throw new CelException($"undeclared reference to '{id.Name}'");
            case Select s:
                return Eval(s.Target, vars) is JsonObject o
                    ? o.TryGetPropertyValue(s.Field, out var f) ? Of(f) : throw new CelException($"no such key: {s.Field}")
                    : throw new CelException($"no such key: {s.Field}");
            case Index ix:
                {
                    var target = Eval(ix.Target, vars);
                    var key = Eval(ix.Key, vars);
                    return target switch
                    {
                        List<object?> list when key is long i && i >= 0 && i < list.Count => list[(int)i],
                        JsonObject map when key is string k && map.TryGetPropertyValue(k, out var entry) => Of(entry),
                        _ => throw new CelException("no such key"),
                    };
                }
            case ListOf lo:
                return lo.Items.Select(i => Eval(i, vars)).ToList();
            case Conditional c:
                return Eval(c.Condition, vars) is bool cond ? Eval(cond ? c.Then : c.Else, vars) : throw new CelException("no matching overload for _?_:_");
            case Unary { Op: "!" } u:
                return Eval(u.Operand, vars) is bool b ? !b : throw new CelException("no matching overload for !_");
            case Unary { Op: "-" } u:
                return Eval(u.Operand, vars) switch { long l => -l, double d => -d, _ => throw new CelException("no matching overload for -_") };
            case Binary { Op: "&&" or "||" } logical:
                return Logical(logical.Op == "&&", () => Eval(logical.Left, vars), () => Eval(logical.Right, vars));
            case Binary relation:
                return Relation(relation.Op, Eval(relation.Left, vars), Eval(relation.Right, vars));
            case Call c:
                return Invoke(c, vars);
            default:
                throw new CelException("unknown expression");
        }
    }

    /// <summary>&& and ||, commutative: the side that decides wins over an error on the other.</summary>
    private static bool Logical(bool and, Func<object?> left, Func<object?> right)
    {
        CelException? error = null;
        foreach (var side in (Func<object?>[])[left, right])
        {
            try
            {
                switch (side())
                {
                    case bool b when b != and:
                        return b;
                    case bool:
                        break;
                    default:
                        error ??= new CelException($"no matching overload for _{(and ? "&&" : "||")}_");
                        break;
                }
            }
            catch (CelException e)
            {
                error ??= e;
            }
        }
        return error is null ? and : throw error;
    }

    private static object Relation(string op, object? a, object? b)
    {
        if (op == "in")
        {
            return b is List<object?> list ? list.Any(x => Same(a, x))
                : b is JsonObject map && a is string key ? map.ContainsKey(key)
                : throw new CelException("no matching overload for @in");
        }
        if (op is "==" or "!=")
        {
            return Same(a, b) == (op == "==");
        }
        int order = (a, b) switch
        {
            (long x, long y) => x.CompareTo(y),
            (double x, double y) => x.CompareTo(y),
            (long x, double y) => ((double)x).CompareTo(y),
            (double x, long y) => x.CompareTo(y),
            (string x, string y) => string.CompareOrdinal(x, y),
            (TimeSpan x, TimeSpan y) => x.CompareTo(y),
            _ => throw new CelException($"no matching overload for _{op}_"),
        };
        return op switch
        {
            "<" => order < 0,
            "<=" => order <= 0,
            ">" => order > 0,
            ">=" => order >= 0,
            _ => throw new CelException($"unknown operator {op}"),
        };
    }

    private static bool Same(object? a, object? b) => (a, b) switch
    {
        (null, null) => true,
        (long x, double y) => x == y,
        (double x, long y) => x == y,
        (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => Same(p.First, p.Second)),
        (JsonObject x, JsonObject y) => JsonNode.DeepEquals(x, y),
        _ => Equals(a, b),
    };

    private static object? Invoke(Call c, Dictionary<string, object?> vars)
    {
        switch (c.Function)
        {
            case "has" when c.Target is null && c.Args is [Select s]:
                return Eval(s.Target, vars) is JsonObject o ? o.ContainsKey(s.Field) : throw new CelException("invalid argument to has() macro");
            case "all" or "exists" or "exists_one" when c.Target is not null && c.Args is [Ident variable, var predicate]:
                {
                    if (Eval(c.Target, vars) is not List<object?> list)
                    {
                        throw new CelException($"no matching overload for {c.Function}");
                    }
                    var count = 0;
                    CelException? error = null;
                    foreach (var item in list)
                    {
                        var scope = new Dictionary<string, object?>(vars, StringComparer.Ordinal) { [variable.Name] = item };
                        try
                        {
                            if (Eval(predicate, scope) is not bool b)
                            {
                                throw new CelException($"no matching overload for {c.Function}");
                            }
                            count += b ? 1 : 0;
                            if (c.Function == "all" && !b)
                            {
                                return false;
                            }
                            if (c.Function == "exists" && b)
                            {
                                return true;
                            }
                        }
                        catch (CelException e)
                        {
                            error ??= e;
                        }
                    }
                    if (error is not null)
                    {
                        throw error;
                    }
                    return c.Function switch { "all" => true, "exists" => false, _ => count == 1 };
                }
        }
        var args = c.Args.Select(a => Eval(a, vars)).ToList();
        var target = c.Target is null ? null : Eval(c.Target, vars);
        return (c.Function, c.Target is null ? args : [target, .. args]) switch
        {
            ("size", [string s]) => (long)s.EnumerateRunes().Count(),
            ("size", [List<object?> l]) => (long)l.Count,
            ("size", [JsonObject o]) => (long)o.Count,
            ("duration", [string s]) => Duration(s),
            ("isIP", [string s]) => IsIP(s),
            _ => throw new CelException($"found no matching overload for '{c.Function}'"),
        };
    }

    /// <summary>
    /// A Go duration string ("250ms", "1h30m", "-2s"): a sequence of decimal numbers, each with a
    /// unit (ns, us, µs, ms, s, m, h). The server's grammar, wider than Xlb.Crds.Duration's, and
    /// written apart from it: the double checks what the product writes, it does not share its parser.
    /// </summary>
    public static TimeSpan Duration(string s)
    {
        var at = 0;
        var negative = s.StartsWith('-');
        if (negative || s.StartsWith('+'))
        {
            at++;
        }
        if (at == s.Length)
        {
            throw new CelException($"invalid duration '{s}'");
        }
        if (s[at..] == "0")
        {
            return TimeSpan.Zero;
        }
        double ticks = 0;
        while (at < s.Length)
        {
            var start = at;
            while (at < s.Length && (char.IsAsciiDigit(s[at]) || s[at] == '.'))
            {
                at++;
            }
            if (start == at || !double.TryParse(s[start..at], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number))
            {
                throw new CelException($"invalid duration '{s}'");
            }
            var unitStart = at;
            while (at < s.Length && !char.IsAsciiDigit(s[at]) && s[at] != '.')
            {
                at++;
            }
            ticks += number * (s[unitStart..at] switch
            {
                "ns" => 0.01,
                "us" or "µs" => 10,
                "ms" => TimeSpan.TicksPerMillisecond,
                "s" => TimeSpan.TicksPerSecond,
                "m" => TimeSpan.TicksPerMinute,
                "h" => TimeSpan.TicksPerHour,
                _ => throw new CelException($"invalid duration '{s}'"),
            });
        }
        return TimeSpan.FromTicks((long)Math.Round(negative ? -ticks : ticks));
    }

    /// <summary>
    /// The Kubernetes isIP(): an IPv4 address in dotted decimal without leading zeros, or an IPv6
    /// address without a zone and not IPv4-mapped.
    /// </summary>
    public static bool IsIP(string s)
    {
        if (s.Contains(':', StringComparison.Ordinal))
        {
            return !s.Contains('%', StringComparison.Ordinal) && IPAddress.TryParse(s, out var a6)
                && a6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 && !a6.IsIPv4MappedToIPv6;
        }
        var parts = s.Split('.');
        return parts.Length == 4 && parts.All(p => p.Length is > 0 and <= 3 && p.All(char.IsAsciiDigit) && (p.Length == 1 || p[0] != '0') && int.Parse(p, CultureInfo.InvariantCulture) <= 255);
    }

    /// <summary>A recursive-descent parser over the expression's tokens.</summary>
    private sealed class Parser
    {
        public List<string> Tokens { get; } = [];
        private int _at;

        public Parser(string text)
        {
            var i = 0;
            while (i < text.Length)
            {
                var c = text[i];
                if (char.IsWhiteSpace(c))
                {
                    i++;
                }
                else if (c is '\'' or '"')
                {
                    var sb = new System.Text.StringBuilder("'");
                    i++;
                    while (i < text.Length && text[i] != c)
                    {
                        if (text[i] == '\\' && i + 1 < text.Length)
                        {
                            i++;
                        }
                        sb.Append(text[i++]);
                    }
                    if (i++ >= text.Length)
                    {
                        throw new CelException("unterminated string");
                    }
                    Tokens.Add(sb.ToString());
                }
                else if (char.IsAsciiDigit(c))
                {
                    var start = i;
                    while (i < text.Length && (char.IsAsciiDigit(text[i]) || text[i] == '.'))
                    {
                        i++;
                    }
                    Tokens.Add(text[start..i]);
                }
                else if (char.IsAsciiLetter(c) || c == '_')
                {
                    var start = i;
                    while (i < text.Length && (char.IsAsciiLetterOrDigit(text[i]) || text[i] == '_'))
                    {
                        i++;
                    }
                    Tokens.Add(text[start..i]);
                }
                else if (i + 1 < text.Length && text.Substring(i, 2) is "==" or "!=" or "<=" or ">=" or "&&" or "||")
                {
                    Tokens.Add(text.Substring(i, 2));
                    i += 2;
                }
                else if ("<>!?:()[],.-".Contains(c, StringComparison.Ordinal))
                {
                    Tokens.Add(c.ToString());
                    i++;
                }
                else
                {
                    throw new CelException($"unexpected character '{c}'");
                }
            }
        }

        private string? Peek => _at < Tokens.Count ? Tokens[_at] : null;

        private string Next() => _at < Tokens.Count ? Tokens[_at++] : throw new CelException("unexpected end of expression");

        private void Expect(string token)
        {
            if (Next() != token)
            {
                throw new CelException($"expected '{token}'");
            }
        }

        public Node ParseAll()
        {
            var e = Expression();
            return Peek is null ? e : throw new CelException($"unexpected '{Peek}'");
        }

        private Node Expression()
        {
            var condition = Or();
            if (Peek != "?")
            {
                return condition;
            }
            Next();
            var then = Or();
            Expect(":");
            return new Conditional(condition, then, Expression());
        }

        private Node Or()
        {
            var left = And();
            while (Peek == "||")
            {
                Next();
                left = new Binary("||", left, And());
            }
            return left;
        }

        private Node And()
        {
            var left = RelationExpr();
            while (Peek == "&&")
            {
                Next();
                left = new Binary("&&", left, RelationExpr());
            }
            return left;
        }

        private Node RelationExpr()
        {
            var left = UnaryExpr();
            while (Peek is "==" or "!=" or "<" or "<=" or ">" or ">=" or "in")
            {
                left = new Binary(Next(), left, UnaryExpr());
            }
            return left;
        }

        private Node UnaryExpr() => Peek is "!" or "-" ? new Unary(Next(), UnaryExpr()) : Postfix();

        private Node Postfix()
        {
            var e = Primary();
            while (true)
            {
                if (Peek == ".")
                {
                    Next();
                    var name = Next();
                    if (Peek == "(")
                    {
                        e = new Call(name, e, Arguments(")"));
                    }
                    else
                    {
                        e = new Select(e, name);
                    }
                }
                else if (Peek == "[")
                {
                    Next();
                    var key = Expression();
                    Expect("]");
                    e = new Index(e, key);
                }
                else
                {
                    return e;
                }
            }
        }

        private List<Node> Arguments(string close)
        {
            Next(); // the opening bracket
            var args = new List<Node>();
            while (Peek != close)
            {
                args.Add(Expression());
                if (Peek == ",")
                {
                    Next();
                }
                else if (Peek != close)
                {
                    throw new CelException($"expected ',' or '{close}'");
                }
            }
            Next();
            return args;
        }

        private Node Primary()
        {
            var t = Peek ?? throw new CelException("unexpected end of expression");
            if (t == "(")
            {
                Next();
                var e = Expression();
                Expect(")");
                return e;
            }
            if (t == "[")
            {
                return new ListOf(Arguments("]"));
            }
            Next();
            if (t.StartsWith('\''))
            {
                return new Literal(t[1..]);
            }
            if (char.IsAsciiDigit(t[0]))
            {
                return t.Contains('.', StringComparison.Ordinal)
                    ? new Literal(double.Parse(t, CultureInfo.InvariantCulture))
                    : new Literal(long.Parse(t, CultureInfo.InvariantCulture));
            }
            return t switch
            {
                "true" => new Literal(true),
                "false" => new Literal(false),
                "null" => new Literal(null),
                _ when Peek == "(" => new Call(t, null, Arguments(")")),
                _ when char.IsAsciiLetter(t[0]) || t[0] == '_' => new Ident(t),
                _ => throw new CelException($"unexpected '{t}'"),
            };
        }
    }
}
