using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static partial class LibC
{
    [LibraryImport("libc", EntryPoint = "mount", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int mount(string source, string target, string fstype, ulong flags, nint data);
}
