using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Xlb.Tests.Support;

/// <summary>Keeps log lines of a component under test, so a failing test can show them.</summary>
public sealed class TestLogger : ILogger
{
    public ConcurrentQueue<string> Lines { get; } = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (IsEnabled(logLevel))
        {
            Lines.Enqueue($"{logLevel}: {formatter(state, exception)}{(exception is null ? "" : " " + exception.GetType().Name + ": " + exception.Message)}");
        }
    }

    public override string ToString() => string.Join('\n', Lines);
}
