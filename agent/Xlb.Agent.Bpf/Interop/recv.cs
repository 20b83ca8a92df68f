using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static unsafe partial class LibC
{
    [LibraryImport("libc", EntryPoint = "recv", SetLastError = true)]
    internal static partial nint recv(int fd, byte* buf, nuint len, int flags);
}
