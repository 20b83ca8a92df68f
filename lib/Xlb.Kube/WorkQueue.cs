namespace Xlb.Kube;

/// <summary>
/// A work queue with client-go's semantics: a key is queued at most once; a key is never handed
/// to two workers at once; a key added while it is being processed is processed again after
/// Done. Failed keys come back with per-key exponential backoff, bounded by a global token
/// bucket (the larger delay wins, as in client-go's default controller rate limiter).
/// </summary>
public sealed class WorkQueue : IDisposable
{
    private readonly Lock _gate = new();
    private readonly Queue<string> _queue = new();
    private readonly HashSet<string> _dirty = new(StringComparer.Ordinal);
    private readonly HashSet<string> _processing = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _failures = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _ready = new(0);
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly TimeSpan _baseDelay;
    private readonly TimeSpan _maxDelay;
    private readonly double _rate;
    private readonly double _burst;
    private double _tokens;
    private DateTimeOffset _last;

    public WorkQueue(TimeProvider? time = null, TimeSpan? baseDelay = null, TimeSpan? maxDelay = null, double ratePerSecond = 10, int burst = 100)
    {
        _time = time ?? TimeProvider.System;
        _baseDelay = baseDelay ?? TimeSpan.FromMilliseconds(5);
        _maxDelay = maxDelay ?? TimeSpan.FromSeconds(1000);
        (_rate, _burst, _tokens) = (ratePerSecond, burst, burst);
        _last = _time.GetUtcNow();
    }

    public bool ShuttingDown => _shutdown.IsCancellationRequested;

    /// <summary>Keys waiting to be handed out (not those in progress or delayed).</summary>
    public int Length { get { lock (_gate) { return _queue.Count; } } }

    public void Add(string key)
    {
        lock (_gate)
        {
            if (ShuttingDown || !_dirty.Add(key))
            {
                return;
            }
            if (_processing.Contains(key))
            {
                return;
            }
            _queue.Enqueue(key);
        }
        _ready.Release();
    }

    /// <summary>Adds the key after a delay (a reconcile's "requeue after").</summary>
    public void AddAfter(string key, TimeSpan delay)
    {
        if (delay <= TimeSpan.Zero)
        {
            Add(key);
            return;
        }
        _ = DelayThenAddAsync(key, delay);
    }

    private async Task DelayThenAddAsync(string key, TimeSpan delay)
    {
        try
        {
            await Task.Delay(delay, _time, _shutdown.Token);
            Add(key);
        }
        catch (OperationCanceledException)
        {
            // Shut down while waiting.
        }
    }

    /// <summary>Adds the key after its backoff: base·2^failures per key, or the global bucket's wait if longer.</summary>
    public TimeSpan AddRateLimited(string key)
    {
        TimeSpan delay;
        lock (_gate)
        {
            var failures = _failures.GetValueOrDefault(key);
            _failures[key] = failures + 1;
            var perKey = Math.Min(_maxDelay.TotalMilliseconds, _baseDelay.TotalMilliseconds * Math.Pow(2, failures));
            delay = TimeSpan.FromMilliseconds(Math.Max(perKey, Reserve()));
        }
        AddAfter(key, delay);
        return delay;
    }

    /// <summary>Takes one token from the global bucket; returns how long the caller must wait for it (ms).</summary>
    private double Reserve()
    {
        var now = _time.GetUtcNow();
        _tokens = Math.Min(_burst, _tokens + (now - _last).TotalSeconds * _rate);
        _last = now;
        _tokens -= 1;
        return _tokens >= 0 ? 0 : -_tokens / _rate * 1000;
    }

    /// <summary>The key succeeded (or failed for good): its backoff starts over.</summary>
    public void Forget(string key)
    {
        lock (_gate)
        {
            _failures.Remove(key);
        }
    }

    public int Requeues(string key)
    {
        lock (_gate)
        {
            return _failures.GetValueOrDefault(key);
        }
    }

    /// <summary>The next key, marked in progress; null once the queue is shut down.</summary>
    public async Task<string?> GetAsync(CancellationToken ct)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, _shutdown.Token);
        try
        {
            await _ready.WaitAsync(linked.Token);
        }
        catch (OperationCanceledException) when (ShuttingDown)
        {
            return null;
        }
        lock (_gate)
        {
            var key = _queue.Dequeue();
            _dirty.Remove(key);
            _processing.Add(key);
            return key;
        }
    }

    /// <summary>Processing of the key ended; if it was added meanwhile, it is queued again now.</summary>
    public void Done(string key)
    {
        var again = false;
        lock (_gate)
        {
            _processing.Remove(key);
            if (_dirty.Contains(key) && !ShuttingDown)
            {
                _queue.Enqueue(key);
                again = true;
            }
        }
        if (again)
        {
            _ready.Release();
        }
    }

    public void ShutDown() => _shutdown.Cancel();

    public void Dispose()
    {
        _shutdown.Cancel();
        _shutdown.Dispose();
        _ready.Dispose();
    }
}
