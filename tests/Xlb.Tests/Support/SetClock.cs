namespace Xlb.Tests.Support;

/// <summary>A clock that stands still until a test sets or advances it.</summary>
public sealed class SetClock(DateTimeOffset start) : TimeProvider
{
    public DateTimeOffset Now { get; set; } = start;

    public override DateTimeOffset GetUtcNow() => Now;

    public void Advance(TimeSpan by) => Now += by;
}
