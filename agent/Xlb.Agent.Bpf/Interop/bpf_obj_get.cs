using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static unsafe partial class Libbpf
{
    [LibraryImport(Library, EntryPoint = "bpf_obj_get", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int bpf_obj_get(string pathname);
}
