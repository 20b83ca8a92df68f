using System.Runtime.InteropServices;

namespace Xlb.Agent.Bpf.Interop;

internal static unsafe partial class Libbpf
{
    [LibraryImport(Library, EntryPoint = "bpf_xdp_attach")]
    internal static partial int bpf_xdp_attach(int ifindex, int progFd, uint flags, BpfXdpAttachOpts* opts);
}
