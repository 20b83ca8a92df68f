using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static unsafe partial class Libbpf
{
    /// <summary>Called by ring_buffer__poll for each record: (ctx, data, size) → 0 to go on.</summary>
    [LibraryImport(Library, EntryPoint = "ring_buffer__new", SetLastError = true)]
    internal static partial nint ring_buffer__new(int mapFd, delegate* unmanaged[Cdecl]<nint, void*, nuint, int> sampleCb, nint ctx, void* opts);

    [LibraryImport(Library, EntryPoint = "ring_buffer__poll")]
    internal static partial int ring_buffer__poll(nint rb, int timeoutMs);

    [LibraryImport(Library, EntryPoint = "ring_buffer__free")]
    internal static partial void ring_buffer__free(nint rb);
}
