using System.Runtime.InteropServices;
using Xlb.Agent.Bpf.Interop;

namespace Xlb.Agent.Bpf;

/// <summary>
/// A BPF array of signed 64-bit counters created with BPF_F_MMAPABLE, mapped into this process:
/// a read or an atomic add here works on the very memory the program's atomic adds work on, so
/// the two never lose each other's changes (a syscall update would write over them).
/// </summary>
public sealed unsafe class BpfCounterArray : IDisposable
{
    private nint _base;
    private readonly nuint _bytes;

    internal BpfCounterArray(int fd, int length, string name)
    {
        Length = length;
        _bytes = (nuint)(length * sizeof(long));
        _base = LibC.mmap(0, _bytes, LibC.ProtRead | LibC.ProtWrite, LibC.MapShared, fd, 0);
        if (_base == -1)
        {
            throw new BpfException("mmap", Marshal.GetLastPInvokeError(), $"map {name} ({length} counters): is it BPF_F_MMAPABLE?");
        }
        Name = name;
    }

    public string Name { get; }

    /// <summary>How many counters (the map's max_entries).</summary>
    public int Length { get; }

    public long Read(int index) => Volatile.Read(ref Slot(index));

    /// <summary>Adds atomically (a locked add, as the program's); returns the new value.</summary>
    public long Add(int index, long delta) => Interlocked.Add(ref Slot(index), delta);

    private ref long Slot(int index)
    {
        ObjectDisposedException.ThrowIf(_base == 0, this);
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Length);
        return ref ((long*)_base)[index];
    }

    public void Dispose()
    {
        if (_base != 0)
        {
            _ = LibC.munmap(_base, _bytes);
            _base = 0;
        }
    }
}
