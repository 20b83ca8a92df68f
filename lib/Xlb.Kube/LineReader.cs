namespace Xlb.Kube;

/// <summary>
/// Reads newline-terminated lines from a stream as bytes (a watch stream is UTF-8, and a newline
/// byte never occurs inside a multi-byte character). A line is valid until the next read.
/// </summary>
public sealed class LineReader(Stream stream)
{
    private byte[] _buffer = new byte[16 * 1024];
    private int _start;
    private int _end;

    /// <summary>The next line without its terminator (and a carriage return before it); null at the end of the stream.</summary>
    public async ValueTask<ReadOnlyMemory<byte>?> ReadLineAsync(CancellationToken ct)
    {
        var searched = 0;
        while (true)
        {
            var newline = _buffer.AsSpan(_start + searched, _end - _start - searched).IndexOf((byte)'\n');
            if (newline >= 0)
            {
                var length = searched + newline;
                var line = _buffer.AsMemory(_start, length > 0 && _buffer[_start + length - 1] == '\r' ? length - 1 : length);
                _start += length + 1;
                return line;
            }
            searched = _end - _start;
            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                (_end, _start) = (_end - _start, 0);
            }
            if (_end == _buffer.Length)
            {
                Array.Resize(ref _buffer, _buffer.Length * 2);
            }
            var read = await stream.ReadAsync(_buffer.AsMemory(_end), ct);
            if (read == 0)
            {
                if (_end == _start)
                {
                    return null;
                }
                var rest = _buffer.AsMemory(_start, _end - _start);
                _start = _end;
                return rest;
            }
            _end += read;
        }
    }
}
