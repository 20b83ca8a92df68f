using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Xlb.Agent.Bpf.Interop;

namespace Xlb.Agent.Bpf;

/// <summary>Receives one record of a BPF ring buffer; the span is valid only during the call.</summary>
public delegate void RingRecordHandler(ReadOnlySpan<byte> record);

/// <summary>
/// A consumer of a BPF_MAP_TYPE_RINGBUF map through libbpf's ring_buffer API. One thread polls;
/// each record is handed to the handler on that thread. The map's fd must outlive this object.
/// </summary>
public sealed unsafe class BpfRingBuffer : IDisposable
{
    private readonly RingRecordHandler _handler;
    private readonly object? _owner;
    private GCHandle _self;
    private nint _rb;
    private Exception? _failed;

    public BpfRingBuffer(int mapFd, RingRecordHandler handler, object? owner = null)
    {
        _handler = handler;
        _owner = owner;
        _self = GCHandle.Alloc(this);
        _rb = Libbpf.ring_buffer__new(mapFd, &OnRecord, GCHandle.ToIntPtr(_self), null);
        if (_rb == 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            _self.Free();
            throw new BpfException("ring_buffer__new", errno, $"map fd {mapFd}");
        }
    }

    /// <summary>Waits up to <paramref name="timeout"/> for records and hands each to the handler.</summary>
    /// <returns>How many records were consumed (0 on timeout or a signal).</returns>
    public int Poll(TimeSpan timeout)
    {
        ObjectDisposedException.ThrowIf(_rb == 0, this);
        var n = Libbpf.ring_buffer__poll(_rb, (int)Math.Clamp(timeout.TotalMilliseconds, 0, int.MaxValue));
        GC.KeepAlive(_owner);
        if (_failed is { } e)
        {
            _failed = null;
            throw new InvalidOperationException("a ring buffer record handler failed", e);
        }
        if (n == -Errnos.EINTR)
        {
            return 0;
        }
        if (n < 0)
        {
            throw new BpfException("ring_buffer__poll", -n, "");
        }
        return n;
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int OnRecord(nint ctx, void* data, nuint size)
    {
        var self = (BpfRingBuffer)GCHandle.FromIntPtr(ctx).Target!;
        try
        {
            self._handler(new ReadOnlySpan<byte>(data, (int)size));
            return 0;
        }
        catch (Exception e)
        {
            // Never across the native frame: kept, and thrown by Poll. A negative return stops this poll.
            self._failed = e;
            return -1;
        }
    }

    public void Dispose()
    {
        if (_rb != 0)
        {
            Libbpf.ring_buffer__free(_rb);
            _rb = 0;
            _self.Free();
        }
    }
}
