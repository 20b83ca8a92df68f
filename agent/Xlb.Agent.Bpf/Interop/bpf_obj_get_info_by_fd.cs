using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static unsafe partial class Libbpf
{
    [LibraryImport(Library, EntryPoint = "bpf_obj_get_info_by_fd")]
    internal static partial int bpf_obj_get_info_by_fd(int fd, void* info, uint* infoLen);
}
