using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static unsafe partial class Libbpf
{
    [LibraryImport(Library, EntryPoint = "bpf_map_delete_batch")]
    internal static partial int bpf_map_delete_batch(int fd, void* keys, uint* count, BpfMapBatchOpts* opts);
}
