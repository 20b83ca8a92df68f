using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static partial class LibC
{
    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    internal static partial int close(int fd);
}
