using System.Buffers;
using System.Text.Json;
using Xlb.Crds.Serialization;

namespace Xlb.Kube;

/// <summary>
/// Bytes written into arrays rented from the shared pool, returned on dispose: request bodies are
/// sent and forgotten, and a node config chunk is hundreds of kilobytes, so a fresh array for each
/// would be large-object garbage on every write.
/// </summary>
public sealed class PooledBuffer : IBufferWriter<byte>, IDisposable
{
    private byte[] _array;
    private int _written;

    public PooledBuffer(int initialSize = 4096) => _array = ArrayPool<byte>.Shared.Rent(initialSize);

    public ReadOnlyMemory<byte> Written => _array.AsMemory(0, _written);

    /// <summary>A value as JSON under <paramref name="options"/>, written into a pooled buffer.</summary>
    public static PooledBuffer Json<T>(T value, JsonSerializerOptions options)
    {
        var buffer = new PooledBuffer();
        using var writer = new Utf8JsonWriter(buffer, XlbJson.WriterOptions(options));
        JsonSerializer.Serialize(writer, value, options);
        return buffer;
    }

    public void Advance(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (_written + count > _array.Length)
        {
            throw new InvalidOperationException("advanced past the end of the buffer");
        }
        _written += count;
    }

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        Grow(sizeHint);
        return _array.AsMemory(_written);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        Grow(sizeHint);
        return _array.AsSpan(_written);
    }

    private void Grow(int sizeHint)
    {
        var need = _written + Math.Max(sizeHint, 1);
        if (need <= _array.Length)
        {
            return;
        }
        var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(need, _array.Length * 2));
        _array.AsSpan(0, _written).CopyTo(bigger);
        ArrayPool<byte>.Shared.Return(_array);
        _array = bigger;
    }

    public void Dispose()
    {
        if (_array.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(_array);
            _array = [];
            _written = 0;
        }
    }
}
