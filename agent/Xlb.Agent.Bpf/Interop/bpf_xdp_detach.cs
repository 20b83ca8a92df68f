using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static unsafe partial class Libbpf
{
    [LibraryImport(Library, EntryPoint = "bpf_xdp_detach")]
    internal static partial int bpf_xdp_detach(int ifindex, uint flags, BpfXdpAttachOpts* opts);
}
