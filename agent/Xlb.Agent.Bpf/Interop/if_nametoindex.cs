using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static partial class LibC
{
    [LibraryImport("libc", EntryPoint = "if_nametoindex", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial uint if_nametoindex(string name);
}
