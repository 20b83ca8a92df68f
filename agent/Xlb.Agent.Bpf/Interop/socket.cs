using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static partial class LibC
{
    [LibraryImport("libc", EntryPoint = "socket", SetLastError = true)]
    internal static partial int socket(int domain, int type, int protocol);
}
