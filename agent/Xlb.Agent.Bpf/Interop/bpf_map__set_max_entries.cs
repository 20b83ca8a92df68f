using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static unsafe partial class Libbpf
{
    [LibraryImport(Library, EntryPoint = "bpf_map__set_max_entries")]
    internal static partial int bpf_map__set_max_entries(nint map, uint maxEntries);
}
