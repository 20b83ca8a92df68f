using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static unsafe partial class LibC
{
    [LibraryImport("libc", EntryPoint = "sendto", SetLastError = true)]
    internal static partial nint sendto(int fd, byte* buf, nuint len, int flags, void* addr, uint addrlen);
}
