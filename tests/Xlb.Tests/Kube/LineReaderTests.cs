using System.Text;
using Xlb.Kube;

namespace Xlb.Tests.Kube;

/// <summary>The watch stream's line reader: lines as bytes, whatever sizes the transport delivers them in.</summary>
public class LineReaderTests
{
    /// <summary>A stream that hands out at most a few bytes per read, as a slow connection does.</summary>
    private sealed class Trickle(byte[] data, int seed) : Stream
    {
        private readonly Random _random = new(seed);
        private int _at;
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => data.Length;
        public override long Position { get => _at; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count)
        {
            var n = Math.Min(Math.Min(count, _random.Next(1, 8)), data.Length - _at);
            Array.Copy(data, _at, buffer, offset, n);
            _at += n;
            return n;
        }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Lines_come_out_whole_across_reads_of_any_size(int seed)
    {
        var long1 = new string('x', 100_000) + "é";
        string[] lines = ["{\"type\":\"ADDED\"}", "", "naïve ünïcödé 名前", long1, "crlf", "last without newline"];
        var text = $"{lines[0]}\n{lines[1]}\n{lines[2]}\n{lines[3]}\n{lines[4]}\r\n{lines[5]}";
        var reader = new LineReader(new Trickle(Encoding.UTF8.GetBytes(text), seed));
        var read = new List<string>();
        while (await reader.ReadLineAsync(CancellationToken.None) is { } line)
        {
            read.Add(Encoding.UTF8.GetString(line.Span));
        }
        Assert.Equal(lines, read);
    }

    [Fact]
    public async Task An_empty_stream_has_no_lines_and_a_final_newline_adds_none()
    {
        Assert.Null(await new LineReader(new MemoryStream([])).ReadLineAsync(CancellationToken.None));
        var reader = new LineReader(new MemoryStream("a\n"u8.ToArray()));
        Assert.Equal("a", Encoding.UTF8.GetString((await reader.ReadLineAsync(CancellationToken.None))!.Value.Span));
        Assert.Null(await reader.ReadLineAsync(CancellationToken.None));
    }
}
